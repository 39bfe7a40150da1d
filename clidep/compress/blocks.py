"""Which blocks a compress run treats apart: the ones CLI protects at full width (--protect) and the ones whose
MLPs LayerCollapse trains towards linear (--layers), chosen by the teacher's NTK scores, an importance report,
or given by number."""

from __future__ import annotations

from pathlib import Path

from clidep.compress.widths import nearest_size, protected_blocks
from clidep.errors import ClidepError
from clidep.files import read_json


def ntk_report(teacher_path: str) -> dict:
    """A quick NTK analysis of the teacher (analyze.QUICK) for the automatic choices."""
    from clidep.compress.analyze import quick_analysis

    return quick_analysis(teacher_path, "ntk")


def parse_blocks(text: str, n_layer: int, option: str) -> list[int]:
    """The block numbers of TEXT ("0,3"), sorted; a malformed, repeated or out-of-range one refused naming OPTION."""
    from clidep.options import refuse_duplicates

    try:
        given = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ClidepError(f"{option} must be auto or block numbers like 0,{n_layer - 1}; got '{text}'") from None
    refuse_duplicates(given, option)
    chosen = sorted(given)
    bad = [p for p in chosen if not 0 <= p < n_layer]
    if bad:
        raise ClidepError(f"{option} names block {bad[0]}, but the teacher has blocks 0..{n_layer - 1}")
    return chosen


def resolve_protect(protect: str, teacher_path: str, n_layer: int, report=None) -> tuple[list[int], str]:
    """The protected blocks for CLI: ``auto`` (NTK analysis + the last block), an importance.json
    (file or directory from clidep analyze, + the last block), or an explicit comma list."""
    last = n_layer - 1
    if protect == "auto":
        report = report or ntk_report(teacher_path)
        chosen = protected_blocks(report["critical_layers"], n_layer)
        return (
            chosen,
            f"auto: NTK critical layers {report['critical_layers']} ({report['rule']}) plus the last block {last}, which restores the width",
        )
    path = Path(protect)
    if path.is_dir():
        path = path / "importance.json"
    if path.suffix == ".json":
        report = read_json(path, "importance report (--protect)")
        if not isinstance(report.get("critical_layers"), list):
            raise ClidepError(f"--protect: '{path}' holds no critical_layers; re-run clidep analyze")
        return protected_blocks(
            report["critical_layers"], n_layer
        ), f"from {path}: critical layers {report['critical_layers']} plus the last block {last}"
    chosen = parse_blocks(protect, n_layer, "--protect")
    return chosen, f"given: {chosen}"


def resolve_collapse(
    layers: str, teacher_path: str, candidates: list[int], n_layer: int, report=None, size: tuple | None = None
) -> tuple[list[int], str]:
    """The blocks whose MLPs train towards linear, least important (NTK) first: with ``auto`` the
    less important half of CANDIDATES, or, when SIZE = (teacher config, target parameters) is given
    (--method layercollapse with --ratio/--params/--match), the fewest that bring the full-width
    student to the target once collapsed. Otherwise an explicit comma list."""
    if layers != "auto":
        return parse_blocks(layers, n_layer, "--layers"), "given"
    report = report or ntk_report(teacher_path)
    ntk = {s["layer"]: s["ntk"] for s in report["scores"]}
    ranked = sorted(candidates, key=lambda i: ntk[i])
    if size is None:
        chosen = sorted(ranked[: max(1, len(ranked) // 2)])
        return chosen, f"auto: the {len(chosen)} least important of blocks {candidates} by NTK score"
    from clidep.compress.widths import student_config
    from clidep.model.params import param_count

    tconf, target = size
    counts = [
        param_count(
            student_config(
                tconf,
                tconf.layer_widths,
                tconf.layer_head_dims,
                ["collapsed" if i in ranked[:k] else "standard" for i in range(n_layer)],
            )
        )
        for k in range(len(ranked) + 1)
    ]  # counts[k]: the k least important MLPs collapsed
    best = nearest_size([(counts[k], k) for k in range(1, len(counts))], target)
    if best is None:
        raise ClidepError(
            f"layercollapse alone cannot reach {target:,} parameters: collapsing every unprotected MLP {ranked} leaves "
            f"{counts[-1]:,} (largest reachable ratio {counts[0] / counts[-1]:.2f}); use --method cli+layercollapse"
        )
    k = best[1]
    chosen = sorted(ranked[:k])
    return chosen, (
        f"auto: the {k} least important of blocks {candidates} by NTK score, the number whose collapse comes "
        f"nearest {target:,} parameters ({counts[k]:,}, ratio {counts[0] / counts[k]:.3f})"
    )
