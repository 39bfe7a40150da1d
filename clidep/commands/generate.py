"""``clidep generate``: text in, text out, through the torch-free ONNX runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clidep.errors import ClidepError
from clidep.options import resolve
from clidep.progress import say
from clidep.runtime.config import GenerateConfig


def generate_text(
    artifact: str | Path, prompt: str, config: GenerateConfig | None = None, *, log=None, **options
) -> str:
    """Continue PROMPT with the ONNX model at ARTIFACT (a directory's model.onnx, or an .onnx file in one).

    The graph is checked against the export's manifest first (a folder without one runs as a
    foreign graph, said through LOG), and the export is held against replacement while it runs.
    Generation stops at the model's last position (the graph's cache, else config.json's
    ``n_positions``); LOG, when given, is told how many tokens that left out.
    """
    import numpy as np
    from tokenizers import Tokenizer

    from clidep.data import check_vocab
    from clidep.runtime.verify import checked_runner

    path = Path(artifact)
    onnx_file = path / "model.onnx" if path.is_dir() else path
    folder = onnx_file.parent
    if not onnx_file.is_file():
        raise ClidepError(f"no ONNX model at '{onnx_file}'; give a directory made by clidep export")
    if not (folder / "tokenizer.json").is_file():
        raise ClidepError(f"no tokenizer.json beside '{onnx_file}'; re-run clidep export")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes that are not UTF-8 reach Python's argv as lone surrogates
        raise ClidepError(
            f"--prompt is not valid UTF-8 text (a byte that cannot be decoded at character {exc.start})"
        ) from None
    c = resolve(GenerateConfig, config, options)
    max_new_tokens = c.max_new_tokens
    with checked_runner(onnx_file, log) as (runner, positions):
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        check_vocab(folder, tokenizer.get_vocab_size(), runner.vocab)
        ids = tokenizer.encode(prompt).ids
        if not ids:
            raise ClidepError("--prompt is empty")
        if positions is not None:
            if len(ids) >= positions:
                raise ClidepError(
                    f"the prompt is {len(ids)} tokens; the model has {positions} positions, so it can add none"
                )
            if len(ids) + max_new_tokens > positions:
                if log is not None:
                    log(
                        f"warning: stopped after {positions - len(ids)} of {max_new_tokens} new tokens at the model's "
                        f"{positions} positions"
                    )
                max_new_tokens = positions - len(ids)
        out = runner.generate(
            np.array([ids]), max_new_tokens=max_new_tokens, temperature=c.temperature, top_k=c.top_k, seed=c.seed
        )
    return prompt + tokenizer.decode(out[0, len(ids) :].tolist())


def command(
    model: Annotated[Path, typer.Argument(help="Artifact directory from clidep export, or an .onnx file inside one.")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")],
    *,
    options,
) -> None:
    """Continue PROMPT with an exported model through ONNX Runtime (no torch involved)."""
    print(generate_text(model, prompt, options, log=say))
