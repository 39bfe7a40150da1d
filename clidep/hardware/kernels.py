"""The quantisers' block sizes, in one place: the graph builders, the quantisers and the device budget that
sizes a student at its precision read them here. Each was measured on the kernels it feeds."""

# int4, 128: at GPT-2-medium shapes int4 decodes in 8.2 ms after 32 tokens against 10.3 at 64 and 10.5
# at 32, for teacher perplexity +1.05% / +0.92% / +1.30% (gate +5%): benchmarks/results/decode_kernels.md.
INT4_BLOCK = 128
# int8, 128 (8-bit block-wise weights, MatMulNBits with int8 compute; not a flag): decode after 32 tokens
# 13.4 ms at blocks of 128, 15.8 at 64, 16.1 at 32, against 45.8 for fp32 and 32.1 for the dynamic int8
# written before; teacher perplexity +0.03% / +0.06% / +0.04% (gate +2%), same file.
INT8_BLOCK = 128
# The int4 file's tied embedding/head table, 8 bits (int4's blocks, MatMulNBits/GatherBlockQuantized): at 4
# bits it cost ratio-2.47 students their int4 gate; its cost at GPT-2-medium shapes is beside
# ExportConfig.int4_table_bits (benchmarks/results/int4_table.md).
INT4_TABLE_BITS = 8
# The int4 file's linear layers kept at 8 bits (blockwise.LINEAR_KINDS' names): the QKV projection, as
# llama.cpp's Q4_K_M keeps a fused attn_qkv in Q5_K. Written and scored by export on six grid students of the
# reference teacher (ratios 2.47 and 4, seeds 0-2; benchmarks/results/int4_written.md): int4 Δppl every layer at
# 4 bits +0.48 to +2.26% (3 of 6 over +2%), the QKV projection at 8 bits +1.05 to +1.44% (none), KL divergence
# from the fp32 graph 22-43% lower in every one, for 9-11% more MB. At GPT-2-medium shapes (x86, 2 threads;
# int4_written_speed.md) grid's candidates decode 9-26% slower after 32 tokens; `none` keeps that speed.
INT4_EIGHT_BIT: tuple[str, ...] = ("attn_qkv",)
