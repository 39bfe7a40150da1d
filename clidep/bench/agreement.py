"""bench --ppl --baseline: does each file still answer as the baseline does? Beside its perplexity, each file's
next-token distributions against the baseline's fp32 file on the same tokens and windows, as llama.cpp's
``llama-perplexity --kl-divergence`` reports them: mean and 99th-percentile KL divergence, top-1 agreement.

Computed here, each file in its own runtime through the one opener (runtime/opened.py), after the timed runs (and
for --remote rows too: the numbers do not depend on where the arithmetic runs, only on the file); the baseline's
answers are computed once and kept (runtime/reference_logits.py), as eval --reference keeps them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from clidep.bench.config import BenchConfig


def add_agreement(rows: list[dict], c: BenchConfig, log) -> None:
    """Each measured row with a perplexity gets vs_baseline.kld_mean, kld_p99 and top1 against C.baseline's fp32
    graph; a file whose tokenizer splits the text otherwise is left without them, and says so."""
    from clidep.perplexity import agreement, ppl_batch
    from clidep.runtime.opened import opened
    from clidep.runtime.reference_logits import kept_rows

    baseline = Path(c.baseline)
    reference = baseline / "model.onnx" if baseline.is_dir() else baseline
    found: dict[str, dict | None] = {}  # by file: a GenAI row reads the same graph as clidep's row
    texts: dict[Path, np.ndarray] = {}  # by tokenizer folder: an export's files share one tokenisation
    with tempfile.TemporaryDirectory() as tmp, opened(reference) as ref:
        ref_ids = _ids(reference, c, Path(tmp), texts)
        for r in rows:
            if "error" in r or r["is_baseline"] or not r.get("ppl") or "vs_baseline" not in r:
                continue
            if r["file"] not in found:
                file = Path(r["file"])
                ids = _ids(file, c, Path(tmp), texts)
                if not np.array_equal(ids, ref_ids):
                    log(f"{file}: its tokenizer splits {c.ppl_data} otherwise than the baseline's: no KL divergence")
                    found[r["file"]] = None
                    continue
                log(f"{file}: next-token distributions against {reference}")
                with opened(file) as model:
                    context = min(model.positions, ref.positions, 1024)
                    batch = ppl_batch(context, model.vocab)
                    rows = kept_rows(reference, ref.logits, ids, context, context // 2, batch)
                    a = agreement(model.logits, rows, ids, context, context // 2, batch)
                found[r["file"]] = {"kld_mean": a.kld_mean, "kld_p99": a.kld_p99, "top1": a.top1}
            if found[r["file"]]:
                r["vs_baseline"].update(found[r["file"]])


def _ids(file: Path, c: BenchConfig, tmp: Path, texts: dict) -> np.ndarray:
    """The tokens bench --ppl scores FILE on: C's text in the tokenizer of FILE's export (TEXTS: those already
    tokenised, by tokenizer folder)."""
    from clidep.bench.measure import ppl_ids_file
    from clidep.data import tokenizer_folder

    folder = tokenizer_folder(file)
    if folder not in texts:
        texts[folder] = np.load(ppl_ids_file(folder, c.ppl_data, c.ppl_tokens, tmp))
    return texts[folder]
