"""ExportConfig: the settings of ``clidep export``, declared once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from clidep.errors import ClidepError
from clidep.options import Options, option


# The block sizes, in one place (the graph builders, the quantisers and the device budget read them here).
# int4, 128: at GPT-2-medium shapes int4 decodes in 8.2 ms after 32 tokens against 10.3 at 64 and 10.5
# at 32, for teacher perplexity +1.05% / +0.92% / +1.30% (gate +5%): benchmarks/results/decode_kernels.md.
INT4_BLOCK = 128
# int8, 128 (8-bit block-wise weights, MatMulNBits with int8 compute; not a flag): decode after 32 tokens
# 13.4 ms at blocks of 128, 15.8 at 64, 16.1 at 32, against 45.8 for fp32 and 32.1 for the dynamic int8
# written before; teacher perplexity +0.03% / +0.06% / +0.04% (gate +2%), same file.
INT8_BLOCK = 128
# The quality gates of the quantised variants, against the fp32 graph on the export's perplexity text: the
# targets the reference teacher's export is held to (tests/test_export.py) and that export --check-arm holds
# every file to on ARM. Perplexity, by precision:
PPL_GATES = {"int8": 0.02, "int4": 0.05, "fp16": 0.001}
# and the share of teacher-forced positions where the variant picks the fp32 graph's next token (int8 only).
AGREEMENT_GATES = {"int8": 0.90}
#: The opset the ONNX Runtime graph is written at (fused.py; --opset is the traced graph's).
ORT_GRAPH_OPSET = 17


@dataclass(frozen=True)
class ExportConfig(Options):
    """Which variants to write, and how each is checked."""

    int8: bool = option(False, "Add an int8 variant: 8-bit block-wise weights read in place (MatMulNBits); "
                               "dynamic int8 with --plain-onnx, calibrated QDQ with --static.")
    static: bool = option(False, "Make the int8 variant calibrated QDQ (needs --data).")
    calib_samples: int = option(32, "Calibration windows for --static.", low=1)
    data: str | None = option(None, "Calibration text for --static (wiki-en-valid, a file, a hub name).")
    int4: bool = option(False, "Add a weight-only int4 variant (MatMulNBits) of every linear layer.")
    block_size: int = option(INT4_BLOCK, "int4 quantisation block size: 16, 32, 64, 128 or 256.")
    fp16: bool = option(False, "Add an fp16 variant (fp32 inputs/outputs).")
    plain_onnx: bool = option(False, "Write plain ONNX (standard ops, any runtime, growing KV cache) instead of the "
                                     "ONNX Runtime graph (GroupQueryAttention, MatMulNBits, shared KV buffers).")
    genai: bool = option(True, "Also write an ONNX Runtime GenAI folder per precision (OUT/genai/<precision>/, "
                               "hard links: no extra space) for apps on Android, iOS, C/C#/C++.")
    optimize: bool = option(True, "With --plain-onnx: apply ONNX Runtime's transformer fusions where parity holds.")
    # 17: LayerNormalization; 20: the last opset torch's TorchScript exporter writes.
    opset: int = option(17, "ONNX opset (17-20).", low=17, high=20)
    check_arm: bool = option(False, "Also run every variant on emulated aarch64 cores (Cortex-A76 with dot product, "
                                    "Cortex-A72 without; the environment of scripts/arm64-env.sh) and record its figures "
                                    "there beside x86's; a variant that misses its gates on ARM fails the export.")
    ppl_data: str = option("wikitext-test", "Text for the perplexity check of every variant.")
    ppl_tokens: int = option(32768, "Tokens of --ppl-data for that check (0: the whole text).", low=0)

    def check(self) -> None:
        check_block_size(self.block_size)
        if self.static and not self.data:
            raise ClidepError("--static needs calibration text: add --data wiki-en-valid (or a text file)")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        ignored = [f for f in ("opset", "optimize") if getattr(self, f) != defaults[f]]
        if ignored and not self.plain_onnx:
            raise ClidepError(f"--{'no-optimize' if ignored[0] == 'optimize' else 'opset'} applies to --plain-onnx only: "
                              f"the ONNX Runtime graph is written fused, at opset {ORT_GRAPH_OPSET}")


#: The block sizes ONNX Runtime's MatMulNBits kernels take ("Only block sizes 16, 32, 64, 128, 256 are supported").
BLOCK_SIZES = (16, 32, 64, 128, 256)


def check_block_size(block_size: int) -> None:
    """MatMulNBits takes power-of-two blocks of 16 to 256 weights."""
    if block_size not in BLOCK_SIZES:
        raise ClidepError(f"--block-size must be one of {', '.join(map(str, BLOCK_SIZES))} (what ONNX Runtime's "
                          f"MatMulNBits takes), got {block_size}")
