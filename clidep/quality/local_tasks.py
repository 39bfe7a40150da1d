"""clidep's offline lm-evaluation-harness tasks, built from the offline WikiText test text.

The harness reads a local task as YAML naming a JSON-lines file (``dataset_path: json`` with ``data_files``).
clidep ships the YAML (``task_yaml/``: what each task measures, in its comments) and writes the data beside a
copy of it, under clidep's cache, from ``../shared/data`` (never copied into the package): a folder named by the
text's and the YAML's hashes, so a changed text or task is a new folder.

    clidep_lastword   252 paragraphs, each scored on a last word it holds earlier (LAMBADA's question and metrics)
    clidep_wikitext   64 articles, each scored whole in windows (the harness's wikitext: word perplexity)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clidep.data import EVAL_TEXTS, shared_path
from clidep.errors import ClidepError
from clidep.files import atomic_write, cache_dir

YAML_DIR = Path(__file__).with_name("task_yaml")
TEXT = "wikitext-test"  # the offline detokenised WikiText test split (data.EVAL_TEXTS)


def local_task_names() -> list[str]:
    """The tasks clidep builds itself (one YAML each in task_yaml/)."""
    return sorted(p.stem for p in YAML_DIR.glob("*.yaml"))


def lastword_docs(lines: list[str]) -> list[dict]:
    """Paragraphs (not headings) of 20 to 300 words that end in a word of four or more letters and a full stop,
    and whose last word has already occurred in them as a word: LAMBADA's criterion, a target the passage
    recovers and the sentence alone does not. Kept without the stop: the target is the last word."""
    docs = []
    for line in lines:
        words = line.split(" ")
        if line.startswith("=") or not 20 <= len(words) <= 300 or not line.endswith("."):
            continue
        last = words[-1][:-1]
        if last.isalpha() and len(last) >= 4 and last in words[:-1]:
            docs.append({"text": line[:-1]})
    return docs


def article_docs(lines: list[str]) -> list[dict]:
    """One document per article: a ``= Title =`` line and the lines up to the next, joined by newlines."""
    docs: list[list[str]] = []
    for line in lines:
        if line.startswith("= ") and not line.startswith("= ="):
            docs.append([])
        if docs:
            docs[-1].append(line)
    return [{"text": "\n".join(d)} for d in docs]


BUILDERS = {"clidep_lastword": lastword_docs, "clidep_wikitext": article_docs}


def task_folder() -> Path:
    """The folder of clidep's local tasks (YAML and data), built on first use: the harness's include_path."""
    try:
        source = shared_path(EVAL_TEXTS[TEXT])
    except ClidepError as exc:
        raise ClidepError(f"clidep's local tasks are built from the offline WikiText test text: {exc}") from None
    raw = source.read_bytes()
    digest = hashlib.sha256(raw)
    for name in local_task_names():
        digest.update((YAML_DIR / f"{name}.yaml").read_bytes())
    folder = cache_dir("tasks") / digest.hexdigest()[:16]
    if not (folder / "complete").is_file():
        _build(folder, raw.decode("utf-8"))
    return folder


def _build(folder: Path, text: str) -> None:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for name in local_task_names():
        docs = BUILDERS[name](lines)
        data = folder / f"{name}.jsonl"
        atomic_write(data, lambda p, docs=docs: p.write_text("".join(json.dumps(d) + "\n" for d in docs)))
        spec = yaml.safe_load((YAML_DIR / f"{name}.yaml").read_text())
        spec["dataset_kwargs"] = {"data_files": {"train": str(data)}}
        atomic_write(folder / f"{name}.yaml", lambda p, spec=spec: p.write_text(yaml.safe_dump(spec, sort_keys=False)))
    (folder / "complete").write_text("")
