"""ExportConfig: the settings of ``clidep export``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from clidep.errors import ClidepError
from clidep.options import Options, option


@dataclass(frozen=True)
class ExportConfig(Options):
    """Which variants to write, and how each is checked."""

    int8: bool = option(False, "Add an int8 variant: 8-bit block-wise weights read in place (MatMulNBits); "
                               "dynamic int8 with --plain-onnx, calibrated QDQ with --static.")
    static: bool = option(False, "Make the int8 variant calibrated QDQ (needs --data).")
    calib_samples: int = option(32, "Calibration windows for --static.", low=1)
    data: str | None = option(None, "Calibration text for --static (wiki-en-valid, a file, a hub name).")
    int4: bool = option(False, "Add a weight-only int4 variant (MatMulNBits) of every linear layer.")
    # 128: at GPT-2-medium shapes int4 decodes in 8.2 ms after 32 tokens against 10.3 at 64 and 10.5
    # at 32, for teacher perplexity +1.05% / +0.92% / +1.30% (gate +5%): benchmarks/results/decode_kernels.md.
    block_size: int = option(128, "int4 quantisation block size: 16, 32, 64, 128 or 256.")
    fp16: bool = option(False, "Add an fp16 variant (fp32 inputs/outputs).")
    plain_onnx: bool = option(False, "Write plain ONNX (standard ops, any runtime, growing KV cache) instead of the "
                                     "ONNX Runtime graph (GroupQueryAttention, MatMulNBits, shared KV buffers).")
    genai: bool = option(True, "Also write an ONNX Runtime GenAI folder per precision (OUT/genai/<precision>/, "
                               "hard links: no extra space) for apps on Android, iOS, C/C#/C++.")
    optimize: bool = option(True, "With --plain-onnx: apply ONNX Runtime's transformer fusions where parity holds.")
    # 17: LayerNormalization; 20: the last opset torch's TorchScript exporter writes.
    opset: int = option(17, "ONNX opset (17-20).", low=17, high=20)
    ppl_data: str = option("wikitext-test", "Text for the perplexity check of every variant.")
    ppl_tokens: int = option(32768, "Tokens of --ppl-data for that check (0: the whole text).", low=0)

    def check(self) -> None:
        from clidep.export.quantize import check_block_size

        check_block_size(self.block_size)
        if self.static and not self.data:
            raise ClidepError("--static needs calibration text: add --data wiki-en-valid (or a text file)")
