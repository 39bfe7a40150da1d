"""One opener for every file an export writes, in the runtime its users run it in: an ONNX graph in clidep's
runner (checked against its manifest and held against replacement), a GGUF file in llama.cpp (its defaults, what a
user of the file gets), an ExecuTorch program in ExecuTorch's runtime. ``clidep eval`` and the lm-evaluation-harness
backend read files through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clidep.errors import ClidepError

#: The runtime of each file type.
RUNTIME_OF = {".onnx": "onnx", ".gguf": "llamacpp", ".pte": "executorch"}


@dataclass
class OpenedFile:
    """A file open in its runtime, read as a causal LM."""

    runtime: str  # "onnx", "llamacpp" or "executorch"
    logits: Callable[[np.ndarray], np.ndarray]  # (B, T) ids -> (B, T, V) float32 logits, each row from position 0
    greedy: Callable[[np.ndarray, int, int | None], np.ndarray]  # (prompt (1, P), new tokens, eos) -> (1, P + n)
    positions: int  # the positions the file holds
    vocab: int  # the width of its logits


@contextlib.contextmanager
def opened(path: Path, log=None) -> Iterator[OpenedFile]:
    """PATH (.onnx, .gguf or .pte) open in its runtime for the block; one ClidepError where it cannot be."""
    runtime = RUNTIME_OF.get(path.suffix)
    if runtime is None:
        raise ClidepError(f"'{path}' is not a file clidep reads (.onnx, .gguf or .pte)")
    if not path.is_file():
        raise ClidepError(f"no file at '{path}'")
    if runtime == "onnx":
        yield from _onnx(path, log)
    elif runtime == "llamacpp":
        yield from _gguf(path)
    else:
        yield _pte(path)


def _onnx(graph: Path, log) -> Iterator[OpenedFile]:
    from clidep.runtime.verify import checked_runner

    with checked_runner(graph, log) as (runner, positions):
        if positions is None:
            raise ClidepError(
                f"cannot tell the positions of '{graph}': no clidep metadata and no config.json beside it"
            )

        def greedy(ids, n, eos=None):
            return runner.generate(ids, max_new_tokens=n, eos_token_id=eos)

        yield OpenedFile("onnx", runner.logits, greedy, positions, runner.vocab)


def _gguf(path: Path) -> Iterator[OpenedFile]:
    from clidep.runtime.llamacpp import LlamaCppModel, gguf_positions

    positions = gguf_positions(path)
    model = LlamaCppModel(path, positions)
    try:
        yield OpenedFile(
            "llamacpp", model.logits, lambda ids, n, eos=None: model.generate(ids, n), positions, model.llm.n_vocab()
        )
    finally:
        model.close()


def _pte(path: Path) -> OpenedFile:
    from clidep.runtime.pte import Program

    try:
        program = Program(path)
    except ImportError as exc:
        raise ClidepError(f"reading '{path}' needs ExecuTorch (pip install 'clidep[executorch]'): {exc}") from None
    except (RuntimeError, ValueError, KeyError) as exc:  # its loader's own errors for a file that is not a program
        raise ClidepError(f"cannot load '{path}' in ExecuTorch's runtime: {exc}") from None
    return OpenedFile(
        "executorch", program.logits, lambda ids, n, eos=None: program.greedy(ids, n), program.context, program.vocab
    )
