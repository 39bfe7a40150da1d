"""Where clidep's data comes from: the offline shared folder, local files, or the hub.

Every test, benchmark and command reaches data through this module. The offline folder is
``$CLIDEP_SHARED_DATA`` when set, else ``../shared/data`` beside the project (or the current
directory's ``../shared/data``). Hub names (``wikitext-103``, ``gpt2-medium``) work wherever the
hub is reachable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from clidep import stdlib_docs
from clidep.errors import ClidepError

ENV_VAR = "CLIDEP_SHARED_DATA"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Offline evaluation texts, by name (relative to the shared data folder).
EVAL_TEXTS = {
    "wikitext-test": "wikitext-2-raw/wiki.test.detok.txt",
    "wikitext-test-raw": "wikitext-2-raw/wiki.test.raw",
    "wiki-en-valid": "wiki-en/valid.txt",
}
#: Hub datasets by name: (dataset id, config).
HUB_TEXTS = {
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1"),
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-raw-v1"),
}
#: What an offline name reads on a machine without the offline folder: (hub name, split).
HUB_FALLBACK = {
    "wikitext-test": ("wikitext-103", "test"),
    "wikitext-test-raw": ("wikitext-103", "test"),
    "wiki-en-valid": ("wikitext-103", "validation"),
    "wiki-en": ("wikitext-103", "train"),
}
_said: set[str] = set()


def shared_data_dir() -> Path:
    """The offline data folder; ``ClidepError`` when it cannot be found."""
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
        if not path.is_dir():
            raise ClidepError(f"{ENV_VAR}={path} is not a directory; point it at the folder holding gpt2-tokenizer/")
        return path
    for path in _offline_candidates():
        if path.is_dir():
            return path
    raise ClidepError(
        f"offline data not found at {_PROJECT_ROOT.parent / 'shared' / 'data'}; set {ENV_VAR} to the folder "
        "holding gpt2-tokenizer/ and wikitext-2-raw/, or use hub names where the hub is reachable"
    )


def offline_folder_present() -> bool:
    """Whether this machine has the offline data folder (an explicit $CLIDEP_SHARED_DATA counts, even a wrong one)."""
    if os.environ.get(ENV_VAR):
        return True
    return any(p.is_dir() for p in _offline_candidates())


def _offline_candidates() -> tuple[Path, Path]:
    """Where the offline folder is looked for without $CLIDEP_SHARED_DATA: beside the project, beside the working directory."""
    return _PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"


def hub_fallback(name: str) -> tuple[str, str] | None:
    """(hub name, split) that stands in for the offline NAME on a machine without the offline folder
    (said once on stderr), or None where the folder is present."""
    if name not in HUB_FALLBACK or offline_folder_present():
        return None
    hub, split = HUB_FALLBACK[name]
    note = (
        f"note: no offline data folder (../shared/data or ${ENV_VAR}): '{name}' reads the dataset hub's "
        f"{hub} {split} split instead"
    )
    if note not in _said:
        _said.add(note)
        print(note, file=sys.stderr)
    return hub, split


def shared_path(relative: str) -> Path:
    """A file or folder inside the offline data folder; ``ClidepError`` naming it when missing."""
    path = shared_data_dir() / relative
    if not path.exists():
        raise ClidepError(f"missing offline data file {path}; restore it or set {ENV_VAR} to a complete copy")
    return path


def load_tokenizer(name_or_path: str | Path = "gpt2", vocab_size: int | None = None):
    """A GPT-2 byte-level BPE tokenizer: ``gpt2`` resolves to the offline copy when present. With VOCAB_SIZE
    (the model's embedding rows), a tokenizer with more tokens is refused: its ids past the last row would
    index outside the embedding (ONNX Runtime crashed on one)."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    if name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
        try:
            name = str(shared_path("gpt2-tokenizer"))
        except ClidepError:
            pass  # no offline copy: the hub id itself is the last resort
    folder = Path(name)
    if folder.is_dir() and not ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
        # transformers would build an empty tokenizer from tokenizer_config.json alone
        raise ClidepError(
            f"cannot load a tokenizer from '{name}': it holds no tokenizer.json (or vocab.json and merges.txt)"
        )
    from transformers import AutoConfig

    from clidep.model.config import CLIGPT2Config

    # clidep's own config class (no torch): a cli_gpt2 folder's auto_map and config.py are never consulted
    AutoConfig.register(CLIGPT2Config.model_type, CLIGPT2Config, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ClidepError(
            f"cannot load a tokenizer from '{name}': give a model directory with tokenizer files"
        ) from exc
    if len(tokenizer) < 2:
        raise ClidepError(f"cannot load a tokenizer from '{name}': its vocabulary is empty")
    check_vocab(name, len(tokenizer), vocab_size)
    return tokenizer


def tokenizer_folder(file: Path) -> Path:
    """The export folder whose tokenizer a graph or GGUF file of it reads (GGUF files sit in its gguf/)."""
    folder = file.parent
    return folder.parent if folder.name == "gguf" and not (folder / "tokenizer.json").is_file() else folder


def check_vocab(name, tokens: int, rows: int | None) -> None:
    """ClidepError where the tokenizer in NAME has more TOKENS than the model's embedding ROWS (None: unknown):
    ids past the last row crash a runtime or read another token's row."""
    if rows is not None and tokens > rows:
        raise ClidepError(
            f"the tokenizer in '{name}' has {tokens:,} tokens but the model's embedding {rows:,} rows; "
            "give the model its own tokenizer"
        )


def tokenize_text(tokenizer, text: str):
    """Token ids of a whole text in one pass (no truncation, no special tokens added)."""
    import numpy as np

    return np.asarray(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)


def calibration_batch(tokenizer, data: str, samples: int, seq_len: int, seed: int):
    """``samples`` windows of ``seq_len`` tokens from DATA at seeded random offsets: (N, L) int64."""
    import numpy as np
    import torch

    text, label = read_text(data)
    ids = tokenize_text(tokenizer, text)
    if ids.size <= seq_len:
        raise ClidepError(f"'{data}' has {ids.size} tokens, fewer than one window of --seq-len {seq_len}")
    starts = np.sort(
        np.random.default_rng(seed).choice(ids.size - seq_len, size=samples, replace=samples > ids.size - seq_len)
    )
    return torch.from_numpy(np.stack([ids[s : s + seq_len] for s in starts])), label


def read_text(spec: str) -> tuple[str, str]:
    """An evaluation text and its provenance label from a name, a hub id or a file path.

    ``wikitext-test`` (the default everywhere) is the offline detokenised WikiText test split;
    ``wikitext-103`` / ``wikitext-2`` read the test split from the dataset hub.
    """
    if spec == "python-docs-valid":
        return "\n\n".join(stdlib_docs.python_docs()[1]), "python-docs-valid (standard-library docstrings, held out)"
    fallback = hub_fallback(spec)
    if fallback:
        hub, split = fallback
        return "\n\n".join(_hub_split(hub, split, spec)), f"{spec}: {hub} (hub {HUB_TEXTS[hub][0]}, {split} split)"
    if spec in EVAL_TEXTS:
        path = shared_path(EVAL_TEXTS[spec])
        return path.read_text(encoding="utf-8"), f"{spec} ({EVAL_TEXTS[spec]})"
    if spec in HUB_TEXTS:
        return "\n\n".join(_hub_split(spec, "test")), f"{spec} (hub {HUB_TEXTS[spec][0]}, test split)"
    path = Path(spec).expanduser()
    if path.is_file():
        return read_text_file(path), str(path)
    known = ", ".join([*EVAL_TEXTS, "python-docs-valid", *HUB_TEXTS])
    raise ClidepError(f"no text '{spec}': give a text file or one of {known}")


def read_corpus(spec: str) -> list[str]:
    """Training documents from a text file, a directory of ``*.txt`` files, or a hub dataset name.

    Files are split into documents at blank-line-separated `` = Title = `` headings (the
    Wikipedia dump's article markers) and otherwise kept whole.
    """
    fallback = hub_fallback(spec)
    if fallback:
        return [t for t in _hub_split(*fallback, spec) if t.strip()]
    if spec in HUB_TEXTS:
        return [t for t in _hub_split(spec, "train") if t.strip()]
    if spec == "wiki-en":  # the offline folder's Wikipedia text, by name
        spec = str(shared_path("wiki-en"))
    if spec == "python-docs":
        return stdlib_docs.python_docs()[0]
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.name != "valid.txt")
    elif path.is_file():
        files = [path]
    else:
        raise ClidepError(
            f"no training data at '{spec}': give a text file, a directory of .txt files, python-docs or wikitext-103"
        )
    if not files:
        raise ClidepError(f"no .txt files in '{spec}'")
    docs = []
    for f in files:
        docs += [d for d in read_text_file(f).split("\n\n = ") if d.strip()]
    return docs


def read_text_file(path: Path) -> str:
    """A text file's content; ``ClidepError`` when it is empty, not UTF-8, or binary."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ClidepError(f"'{path}' is not UTF-8 text") from None
    except OSError as exc:
        raise ClidepError(f"cannot read '{path}': {exc.strerror or exc}") from None
    if "\x00" in text:
        raise ClidepError(f"'{path}' is a binary file, not text")
    if not text.strip():
        raise ClidepError(f"'{path}' is empty")
    return text


def _hub_split(name: str, split: str, standing_in: str | None = None) -> list[str]:
    """The texts of hub dataset NAME's SPLIT; STANDING_IN names the offline text it replaces, if any."""
    try:
        from datasets import load_dataset

        dataset_id, config = HUB_TEXTS[name]
        return list(load_dataset(dataset_id, config, split=split)["text"])
    except Exception as exc:  # datasets raises many kinds when offline; all mean the same to the user
        why = next((line.strip() for line in str(exc).splitlines() if line.strip()), "no answer")[:160]
        if standing_in:
            raise ClidepError(
                f"'{standing_in}' needs the offline data folder, which is not here (../shared/data beside clidep, or "
                f"${ENV_VAR}), and the dataset hub's {name} cannot be fetched either ({why}): set {ENV_VAR} to the "
                "offline folder, or run where the hub is reachable, or give a text file"
            ) from None
        raise ClidepError(
            f"cannot fetch '{name}' from the dataset hub ({why}); offline, use --data wikitext-test or a text file"
        ) from None
