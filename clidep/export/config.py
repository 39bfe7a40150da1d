"""ExportConfig: the settings of ``clidep export``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from clidep.errors import ClidepError
from clidep.export.kv_cache import KV_MODES, KV_PRECISIONS
from clidep.hardware.blockwise import LINEAR_KINDS
from clidep.hardware.kernels import INT4_BLOCK, INT4_EIGHT_BIT, INT4_TABLE_BITS
from clidep.options import Options, flag, option

# The quality gates of the quantised variants, against the fp32 graph on the export's perplexity text: the
# targets the reference teacher's export is held to (tests/test_export.py) and that export --check-arm holds
# every file to on ARM. Perplexity, by precision:
PPL_GATES = {"int8": 0.02, "int4": 0.05, "fp16": 0.001}
# The fewest tokens a gate is scored on. The check is paired, and its standard error falls as 1/sqrt(tokens):
# int4's, the noisiest (0.35% of Δppl at 2,048 tokens, benchmarks/results/ppl_tokens.md), is ~1.0% at 256,
# so its +5% gate stands 5 standard errors from no change (int8's +2% ~17 at 0.12%); at 128 tokens int4's
# error is ~1.4% and a test export's int4 file scored +3.6% on one run and +5.8% on another of the same kind.
MIN_GATE_TOKENS = 256
# and the share of teacher-forced positions where the variant picks the fp32 graph's next token (int8 only).
AGREEMENT_GATES = {"int8": 0.90}
# KL divergence from the fp32 graph (Variant.kld_mean, kld_p99) is recorded for every file and gates none: the
# figure ranks files on one model, but no threshold carries across models (the teacher's int4 file: 0.002
# nats; a student's depends on how peaked its distributions are), as llama.cpp reports it without a gate.


def gate_of(gates: dict, precision: str) -> float | None:
    """PRECISION's entry of GATES (a manifest precision such as 'int4-weight-only'); None if it has none."""
    return next((g for kind, g in gates.items() if precision.startswith(kind)), None)


def gate_misses(precision: str, ppl_delta: float, agreement: float, against: str) -> list[str]:
    """What a file of PRECISION misses of its gates (PPL_GATES, AGREEMENT_GATES) with PPL_DELTA and next-token
    AGREEMENT measured against AGAINST (the fp32 graph, or x86's on ARM), in words; empty where it meets them."""
    limit, agree = gate_of(PPL_GATES, precision), gate_of(AGREEMENT_GATES, precision)
    misses = (
        [f"ppl {ppl_delta:+.2%} against {against} (gate +{limit:.1%})"]
        if limit is not None and ppl_delta > limit
        else []
    )
    if agree is not None and agreement < agree:
        misses.append(f"next-token agreement with {against} {agreement:.1%} (gate {agree:.0%})")
    return misses


#: The opset the ONNX Runtime graph is written at (ort_graph.py; --opset is the traced graph's).
ORT_GRAPH_OPSET = 17


#: The GGUF types export --gguf writes (llama.cpp's names): f32 and f16 by the gguf package's writer, the
#: quantised ones by llama-quantize (export/gguf.py).
GGUF_TYPES = ("f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")

#: The ExecuTorch programs export --executorch writes, by torchao's scheme as optimum-executorch names them
#: (export/executorch.py): fp32 (always written: the reference), 8da8w and 8da4w (int8 dynamic activations with
#: int8 per-channel or int4 group-32 weights). 8w (int8 weights, fp32 activations) is not offered: ExecuTorch
#: 1.5.1's XNNPACK lowering of it gave logits 1.5e3 away from the same quantised model in PyTorch (a 3-layer
#: GPT-2, where 8da8w's were 0.005 away), which the export's gate would refuse every time.
ET_QUANTS = ("fp32", "8da8w", "8da4w")


@dataclass(frozen=True)
class ExportConfig(Options):
    """Which variants to write, and how each is checked."""

    int8: bool = option(
        False,
        "Add an int8 variant: 8-bit block-wise weights read in place (MatMulNBits); "
        "dynamic int8 with --plain-onnx, calibrated QDQ with --static.",
    )
    static: bool = option(False, "Make the int8 variant calibrated QDQ (needs --data).")
    calib_samples: int = option(32, "Calibration windows for --static.", low=1)
    data: str | None = option(
        None,
        "Calibration text for --static (wiki-en-valid, a file, a hub name) and for the "
        "int8 KV cache (default: --ppl-data past the tokens its check scores).",
    )
    int4: bool = option(False, "Add a weight-only int4 variant (MatMulNBits) of every linear layer.")
    block_size: int = option(INT4_BLOCK, "int4 quantisation block size: 16, 32, 64, 128 or 256.")
    # 8 by default, as llama.cpp keeps the output table of its Q4_0 and Q4_K_M files in Q6_K: at 4 bits the
    # table is what cost the students their gate (ratio 2.47 students of the reference teacher, 3 seeds, int4
    # Δppl against their fp32 graph, 4 -> 8 bits: slim +6.47% -> +1.36%, grid +6.87% -> +1.51%; the teacher
    # +1.05% -> -0.03%; benchmarks/results/shipped_student.md, int4_table.md). What it costs at GPT-2-medium shapes
    # (a 50,257-row table read every token; benchmarks/results/int4_table.md): decode after 32 tokens
    # +17% for the teacher's 24 x 1024 (8.43 -> 9.87 ms), +23% for slim's 24 x 624, +8% for grid's 24 x 640,
    # and 16-26 MB. 4 stays for the smallest file where it keeps the gate.
    int4_table_bits: int = option(
        INT4_TABLE_BITS,
        "Bits of the tied embedding/head table in the int4 file: 8 (a narrow student's int4 file keeps its gate; "
        "as llama.cpp's Q4 files keep theirs in 6 bits) or 4 (the smallest, fastest file, where it keeps the gate).",
        low=4,
        high=8,
    )
    int4_8bit_layers: tuple[str, ...] = option(
        INT4_EIGHT_BIT or ("none",),
        "The kinds of linear layer the int4 file keeps at 8 bits, comma-separated, named as llama.cpp names a "
        "GPT-2's tensors: attn_qkv (the default: as llama.cpp's Q4_K_M keeps it in Q5_K, it kept six students' "
        "int4 files within +2%), attn_output, ffn_up, ffn_down, or none (every linear layer at 4 bits: 9-11% "
        "smaller, decoding up to a fifth faster).",
        choices=(*LINEAR_KINDS, "none"),
        items=str.lower,
    )
    fp16: bool = option(False, "Add an fp16 variant (fp32 inputs/outputs).")
    plain_onnx: bool = option(
        False,
        "Write plain ONNX (standard ops, any runtime, growing KV cache) instead of the "
        "ONNX Runtime graph (GroupQueryAttention, MatMulNBits, shared KV buffers).",
    )
    genai: bool = option(
        True,
        "Also write an ONNX Runtime GenAI folder per precision (OUT/genai/<precision>/, "
        "hard links: no extra space) for apps on Android, iOS, C/C#/C++.",
    )
    optimize: bool = option(True, "With --plain-onnx: apply ONNX Runtime's transformer fusions where parity holds.")
    # 17: LayerNormalization; 20: the last opset torch's TorchScript exporter writes.
    opset: int = option(17, "ONNX opset (17-20).", low=17, high=20)
    allow_gate_miss: bool = option(
        False,
        "Write a quantised file that misses its quality gate against its fp32 file (the fp32 graph, the F32 GGUF "
        "file, the fp32 program; int8: +2% perplexity and 90% next-token agreement; int4: +5%; fp16: +0.1%), marked "
        "as such in the manifest; without it such a file fails the export.",
    )
    check_arm: bool = option(
        False,
        "Also run every variant on emulated aarch64 cores (Cortex-A76 with dot product, "
        "Cortex-A72 without; the environment of scripts/arm64-env.sh) and record its figures "
        "there beside x86's; a variant that misses its gates on ARM fails the export.",
    )
    # int8 by default: at GPT-2-medium shapes it took decode at 952 tokens from 12.0 to 9.2 ms (int4 weights)
    # and 16.4 to 14.6 (int8) for +-0.01% teacher perplexity; per channel ties per tensor in speed and picks
    # the fp32 cache's next token more often (99.6% against 98.8-99.0%); fp16 was slower than fp32 on x86
    # (benchmarks/results/kv_cache.md).
    kv: str | None = option(
        None,
        "KV-cache precision of the int8 and int4 files (ONNX Runtime graph): int8 (the "
        "default; scales calibrated on --data), fp16 or fp32. Checked against the same file "
        "with an fp32 cache (perplexity +0.5%, next-token agreement 90%); model.onnx, the "
        "exact reference, keeps fp32, and the fp16 file its fp16 cache.",
        choices=KV_PRECISIONS,
    )
    kv_scales: str = option(
        "per-channel", "int8 cache scales: per-channel (one per head and channel) or per-tensor.", choices=KV_MODES
    )
    kv_calib_windows: int = option(8, "Windows of the model's context that calibrate the int8 cache's scales.", low=1)
    gguf: bool = option(
        False,
        "Also write GGUF files for llama.cpp into OUT/gguf/ (a stock GPT-2 only: the teacher, "
        "--method slim, depth, depth+slim or grid), each checked in llama.cpp itself (its build: "
        "scripts/llamacpp.sh).",
    )
    gguf_types: tuple[str, ...] = option(
        ("f16", "q8_0", "q4_0"),
        "The GGUF types --gguf writes, comma-separated: f16, q8_0, q6_k, q5_k_m, q4_k_m, q4_0 (f32, "
        "the reference the others are checked against, is always written).",
        choices=GGUF_TYPES,
        items=str.lower,
    )
    executorch: bool = option(
        False,
        "Also write ExecuTorch programs for phone apps into OUT/executorch/ (a stock GPT-2 only), lowered to "
        "XNNPACK with ExecuTorch's own KV cache and attention kernels over the model's context, each checked in "
        "ExecuTorch's runtime; 1-3 minutes per program at GPT-2-small to medium sizes (ExecuTorch's lowering).",
    )
    et_quant: tuple[str, ...] = option(
        ("8da4w",),
        "The ExecuTorch programs --executorch writes beside fp32 (always written, the reference), "
        "comma-separated: 8da4w (int4 weights in groups of 32, int8 activations), 8da8w (int8 weights).",
        choices=ET_QUANTS,
        items=str.lower,
    )
    ppl_data: str = option("wikitext-test", "Text for the perplexity check of every variant.")
    # 8,192: the check is paired (the same tokens through both files), and at 8,192 tokens the standard error
    # of the teacher's Δppl was 0.26% for int4 (+1.64%; gate 5%), 0.03% for int8 (gate 2%) and 0.04% for the
    # int8 cache (gate 0.5%): every gate at least 10 standard errors from the figure, for a quarter of the
    # 32,768 tokens' time (benchmarks/results/ppl_tokens.md).
    ppl_tokens: int = option(8192, "Tokens of --ppl-data for that check (0: the whole text).", low=0)

    def check(self) -> None:
        check_block_size(self.block_size)
        if self.int4_table_bits not in (4, 8):
            raise ClidepError(f"--int4-table-bits takes 4 or 8, got {self.int4_table_bits}")
        for name in ("int4_table_bits", "int4_8bit_layers"):
            if self.given(name) and (not self.int4 or self.plain_onnx):
                raise ClidepError(f"{flag(name)} applies to --int4 in the ONNX Runtime graph only")
        if "none" in self.int4_8bit_layers and len(self.int4_8bit_layers) > 1:
            raise ClidepError("--int4-8bit-layers none keeps every linear layer at 4 bits: give it alone")
        if self.static and not self.data:
            raise ClidepError("--static needs calibration text: add --data wiki-en-valid (or a text file)")
        ignored = [f for f in ("opset", "optimize") if self.given(f)]
        if ignored and not self.plain_onnx:
            raise ClidepError(
                f"--{'no-optimize' if ignored[0] == 'optimize' else 'opset'} applies to --plain-onnx only: "
                f"the ONNX Runtime graph is written fused, at opset {ORT_GRAPH_OPSET}"
            )
        if self.kv not in (None, "fp32") and self.plain_onnx:
            raise ClidepError(
                f"--kv {self.kv} needs the ONNX Runtime graph (its GroupQueryAttention stores the cache); "
                "the plain ONNX graph's cache is fp32: drop --plain-onnx or --kv"
            )
        if self.given("calib_samples") and not self.static:
            raise ClidepError(
                "--calib-samples applies to --static only (the int8 KV cache's windows: --kv-calib-windows)"
            )
        if self.given("gguf_types") and not self.gguf:
            raise ClidepError("--gguf-types applies to --gguf only: add --gguf")
        if self.given("et_quant") and not self.executorch:
            raise ClidepError("--et-quant applies to --executorch only: add --executorch")
        int8_options = [f for f in ("kv_scales", "kv_calib_windows") if self.given(f)]
        if int8_options and self.cache_precision != "int8":
            raise ClidepError(
                f"--{int8_options[0].replace('_', '-')} applies to the int8 KV cache only "
                f"(this export's is {self.cache_precision})"
            )

    @property
    def int4_eight_bit(self) -> tuple[str, ...]:
        """The kinds of linear layer (blockwise.LINEAR_KINDS) the int4 file writes at 8 bits."""
        return tuple(k for k in self.int4_8bit_layers if k != "none")

    @property
    def cache_precision(self) -> str:
        """The KV cache the quantised ONNX Runtime graph files get: --kv, else int8 (fp32 with --plain-onnx)."""
        return self.kv or ("fp32" if self.plain_onnx else "int8")


#: The block sizes ONNX Runtime's MatMulNBits kernels take ("Only block sizes 16, 32, 64, 128, 256 are supported").
BLOCK_SIZES = (16, 32, 64, 128, 256)


def check_block_size(block_size: int) -> None:
    """MatMulNBits takes power-of-two blocks of 16 to 256 weights."""
    if block_size not in BLOCK_SIZES:
        raise ClidepError(
            f"--block-size must be one of {', '.join(map(str, BLOCK_SIZES))} (what ONNX Runtime's "
            f"MatMulNBits takes), got {block_size}"
        )
