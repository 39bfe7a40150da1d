"""llama.cpp's own path to a GGUF file, the peer of clidep's export --gguf: `convert_hf_to_gguf.py` (its
`gguf-py` rides along in the llama-cpp-python sdist that clidep.runtime.llamacpp builds llama.cpp from)
for F32 and Q8_0, `llama-quantize` for Q4_0. Building and timing live in clidep.runtime.llamacpp.
"""

from __future__ import annotations

import sys
from pathlib import Path

from clidep.runtime import llamacpp


def convert(hf_dir: Path, out: Path, kind: str) -> Path:
    """HF_DIR as a GGUF file at OUT by llama.cpp's own tools: KIND f32 or q8_0 by the converter, q4_0 through
    llama-quantize from F32. Unavailable (the converter's last line) where they refuse the model."""
    if kind == "q4_0":
        f32 = convert(hf_dir, out.with_name(out.stem + ".f32.gguf"), "f32")
        llamacpp.quantize(f32, out, "Q4_0")
        f32.unlink()
        return out
    script = llamacpp.source_dir() / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    llamacpp.run_tool(
        [sys.executable, str(script), str(hf_dir), "--outfile", str(out), "--outtype", kind], "convert_hf_to_gguf.py"
    )
    return out
