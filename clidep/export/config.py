"""ExportConfig: the settings of ``clidep export``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from clidep.errors import ClidepError
from clidep.options import Options, option


@dataclass(frozen=True)
class ExportConfig(Options):
    """Which variants to write, and how each is checked."""

    int8: bool = option(False, "Add an int8 variant (dynamic unless --static).")
    static: bool = option(False, "Make the int8 variant calibrated QDQ (needs --data).")
    calib_samples: int = option(32, "Calibration windows for --static.", low=1)
    data: str | None = option(None, "Calibration text for --static (wiki-en-valid, a file, a hub name).")
    int4: bool = option(False, "Add a weight-only int4 variant (MatMulNBits) of every linear layer.")
    block_size: int = option(32, "int4 quantisation block size (a power of two, 16 or more).")
    fp16: bool = option(False, "Add an fp16 variant (fp32 inputs/outputs).")
    optimize: bool = option(True, "Apply ONNX Runtime's transformer fusions where parity holds.")
    # 17: LayerNormalization; 20: the last opset torch's TorchScript exporter writes.
    opset: int = option(17, "ONNX opset (17-20).", low=17, high=20)
    ppl_data: str = option("wikitext-test", "Text for the perplexity check of every variant.")
    ppl_tokens: int = option(32768, "Tokens of --ppl-data for that check (0: the whole text).", low=0)

    def check(self) -> None:
        from clidep.export.quantize import check_block_size

        check_block_size(self.block_size)
        if self.static and not self.data:
            raise ClidepError("--static needs calibration text: add --data wiki-en-valid (or a text file)")
