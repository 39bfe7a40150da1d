"""``clidep analyze``: score every block, pick the critical ones, write importance.json / .png."""

from __future__ import annotations

import time
from pathlib import Path

from clidep.compress.config import IMPORTANCE_METHODS, AnalyzeConfig
from clidep.errors import ClidepError
from clidep.options import resolve

# About a screen: the scorers run in a fixed order on one calibration batch and fill one report.
#: The quick analysis behind compress's automatic choices (--protect auto, --layers auto, the stock and auto
#: searches' scorers) and the demo: 4 samples of 64 tokens, 8 probes, seconds on a CPU.
QUICK = {"samples": 4, "seq_len": 64, "probes": 8}


def quick_analysis(model_path: str | Path, method: str, n_positions: int | None = None, **options) -> dict:
    """analyze() at the QUICK settings (windows no longer than N_POSITIONS, where given)."""
    seq_len = QUICK["seq_len"] if n_positions is None else min(QUICK["seq_len"], n_positions)
    return analyze(model_path, **{**QUICK, "seq_len": seq_len}, method=method, **options)


def analyze(model_path: str | Path, config: AnalyzeConfig | None = None, **options) -> dict:
    """Score every block of MODEL on a calibration batch of SAMPLES x SEQ_LEN tokens from DATA.

    METHOD is ntk, grad, bi, ablation or all; the critical layers are chosen by the largest-gap
    rule on the NTK score (or on the single method asked for). Returns the importance report.
    """
    import torch

    from clidep.compress import importance
    from clidep.data import calibration_batch, load_tokenizer
    from clidep.model.convert import load_model

    c = resolve(AnalyzeConfig, config, options)
    model = load_model(model_path)
    n_pos = model.config.n_positions
    if not 1 < c.seq_len <= n_pos:
        raise ClidepError(f"--seq-len {c.seq_len} must be between 2 and the model's {n_pos} positions")
    torch.manual_seed(c.seed)
    ids, label = calibration_batch(load_tokenizer(model_path), c.data, c.samples, c.seq_len, c.seed)
    t0 = time.perf_counter()
    scores, ntk, base_ppl = _scores(model, ids, c)
    key = "ntk" if c.method == "all" else {"ablation": "ablation_dppl"}.get(c.method, c.method)
    selection = importance.select_critical([s[key] for s in scores], c.min_gap)
    others = [s["ntk"] for s in scores[1:]]
    emb = ntk["embedding"] if ntk else None
    calibration = {"data": label, "samples": c.samples, "seq_len": c.seq_len, "probes": c.probes, "seed": c.seed}
    return {
        "model": str(model_path),
        "method": c.method,
        "selected_by": key,
        "ntk_output": "log-probabilities; trace of J_l J_l^T over the batch divided by its tokens",
        "calibration": calibration,
        "scores": scores,
        "embedding": (
            {"ntk": emb.trace, "ntk_per_param": emb.trace / emb.params, "ntk_rse": emb.rse, "params": emb.params}
            if emb
            else None
        ),
        "batch_ppl": base_ppl,
        "critical_layers": selection.critical,
        "rule": selection.rule,
        "layer0_ratio": scores[0]["ntk"] / max(others) if ntk and others else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _scores(model, ids, c: AnalyzeConfig) -> tuple[list[dict], dict | None, float | None]:
    """(each block's scores by the methods C asks for, the NTK estimates by block and "embedding", the batch's
    perplexity from the ablation pass)."""
    from clidep.compress import importance

    methods = IMPORTANCE_METHODS if c.method == "all" else (c.method,)
    n = model.config.n_layer
    ntk = importance.ntk_traces(model, ids, c.probes, c.seed) if "ntk" in methods else None
    grad = importance.grad_norms(model, ids) if "grad" in methods else [None] * n
    bi = importance.block_influence(model, ids) if "bi" in methods else [None] * n
    base_ppl, dppl = importance.ablation_dppl(model, ids) if "ablation" in methods else (None, [None] * n)
    scores = []
    for i in range(n):
        est = ntk[str(i)] if ntk else None
        scores.append(
            {
                "layer": i,
                "width": model.config.layer_widths[i],
                "params": sum(p.numel() for p in model.transformer.h[i].parameters()),
                "ntk": est.trace if est else None,
                "ntk_per_param": est.trace / est.params if est else None,
                "ntk_rse": est.rse if est else None,
                "grad": grad[i],
                "bi": bi[i],
                "ablation_dppl": dppl[i],
            }
        )
    return scores, ntk, base_ppl


def write_report(report: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``importance.json`` and ``importance.png`` (per-block bars, log scale) into OUT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clidep.files import atomic_write, write_json

    out = Path(out)
    json_path = write_json(out / "importance.json", report)
    columns = [c for c in ("ntk", "ntk_per_param", "grad", "bi", "ablation_dppl") if report["scores"][0][c] is not None]
    fig, axes = plt.subplots(len(columns), 1, figsize=(8, 2.2 * len(columns)), sharex=True, squeeze=False)
    layers = [s["layer"] for s in report["scores"]]
    for ax, col in zip(axes[:, 0], columns):
        values = [s[col] for s in report["scores"]]
        colors = ["tab:red" if i in report["critical_layers"] else "tab:blue" for i in layers]
        ax.bar(layers, [max(v, 1e-12) for v in values], color=colors)
        ax.set_yscale("log")
        ax.set_ylabel(col)
    axes[-1, 0].set_xlabel("block (red: critical)")
    axes[-1, 0].set_xticks(layers)
    fig.suptitle(f"block importance: {Path(report['model']).name}")
    fig.tight_layout()
    png_path = atomic_write(out / "importance.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return json_path, png_path
