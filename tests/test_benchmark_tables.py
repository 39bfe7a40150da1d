"""The benchmarks' published tables come from the one report writer: each .md in
benchmarks/results/ is printed again, byte for byte, from its .json by its script's fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from clidep.bench import writer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True, scope="module")
def scripts_importable():
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


def _table(name: str) -> str:
    import answers
    import compress_scale
    import decode_kernels
    import export_compare
    import gguf_peer
    import grid_race
    import int4_layers
    import int4_table
    import int4_written
    import layercollapse
    import paper_ablation
    import profile_context
    import profile_decode
    import pte_medium
    import pte_runtimes
    import pte_sdpa
    import runtime
    import shipped_ppl
    import shipped_proxy
    import shipped_student

    result = json.loads((BENCHMARKS / "results" / f"{name}.json").read_text())
    if name.startswith("paper_ablation"):  # the paper's row under the table at its own size
        paper = paper_ablation.PAPER_ROW + "\n" if name == "paper_ablation" else ""
        return writer.markdown(paper_ablation.FIELDS, result["arms"], paper_ablation.title(result)) + paper
    if name.startswith("shipped_student"):
        return writer.markdown(shipped_student.FIELDS, result["arms"], shipped_student.title(result))
    if name == "answers":
        return writer.markdown(answers.FIELDS, result["rows"], answers.title(result))
    if name == "gguf_peer":
        return writer.markdown(gguf_peer.FIELDS, result["rows"], gguf_peer.title(result))
    if name == "layercollapse":
        return writer.markdown(layercollapse.FIELDS, result["arms"], layercollapse.title(result))
    if name == "runtime":
        lens = sorted({int(k) for r in result["rows"] for k in (r.get("prefill_ms") or {})})
        depths = sorted({int(k) for r in result["rows"] for k in (r.get("decode_ms_at") or {})})
        return writer.markdown(runtime.table_fields(lens, depths), result["rows"], runtime.title(result), keep=3)
    if name in ("pte_runtimes", "pte_medium", "pte_sdpa", "compress_scale"):
        module = {"pte_runtimes": pte_runtimes, "pte_medium": pte_medium, "pte_sdpa": pte_sdpa}.get(
            name, compress_scale
        )
        return writer.markdown(module.FIELDS, result["rows"], module.title(result))
    if name == "int4_written_speed":
        return writer.markdown(int4_written.SPEED_FIELDS, result["rows"], int4_written.speed_title(result))
    if name in (
        "decode_kernels", "profile_decode", "int4_table", "grid_race", "shipped_proxy", "int4_layers", "int4_written",
        "shipped_ppl", "profile_context",
    ):  # fmt: skip
        module = {
            "int4_layers": int4_layers,
            "int4_written": int4_written,
            "decode_kernels": decode_kernels,
            "profile_decode": profile_decode,
            "int4_table": int4_table,
            "grid_race": grid_race,
            "shipped_proxy": shipped_proxy,
            "shipped_ppl": shipped_ppl,
            "profile_context": profile_context,
        }[name]
        return writer.markdown(module.FIELDS, result["rows"], module.title(result))
    return writer.markdown(export_compare.FIELDS, [r for r in result["rows"] if "ppl" in r])


@pytest.mark.parametrize(
    "name",
    [
        "paper_ablation",
        "paper_ablation_4x",
        "layercollapse",
        "runtime",
        "export_compare",
        "decode_kernels",
        "profile_decode",
        "gguf_peer",
        "int4_table",
        "shipped_student",
        "shipped_student_4x",
        "answers",
        "pte_runtimes",
        "pte_medium",
        "pte_sdpa",
        "compress_scale",
        "grid_race",
        "shipped_proxy",
        "int4_layers",
        "int4_written",
        "int4_written_speed",
        "shipped_ppl",
        "profile_context",
    ],
)
def test_published_table_is_what_the_writer_prints(name):
    assert _table(name) == (BENCHMARKS / "results" / f"{name}.md").read_text()


def test_the_ablation_scores_a_kept_student_again_only_if_its_search_ranked_by_the_same_file(tmp_path):
    """paper_ablation reuses a finished student instead of retraining it; a grid student whose search ranked its
    trials by the fp32 perplexity is not the int4 table's student, while a slim student (no search) is."""
    import paper_ablation

    def student(method: str, precision: str) -> Path:
        out = tmp_path / f"{method}-{precision}"
        out.mkdir()
        train = {"seed": 1, "batch_size": 16, "seq_len": 256}
        (out / "compress.json").write_text(json.dumps({"method": method, "train": train, "steps": 123, "ratio": 2.5}))
        (out / "run.json").write_text(json.dumps({"options": {"precision": precision}}))
        return out

    tokens = 123 * 16 * 256
    assert paper_ablation._finished(student("grid", "int4"), "grid", 1, tokens, 2.47, "int4")
    assert paper_ablation._finished(student("grid", "fp32"), "grid", 1, tokens, 2.47, "int4") is None
    assert paper_ablation._finished(student("slim", "fp32"), "slim", 1, tokens, 2.47, "int4")
    assert paper_ablation._finished(student("auto", "int4"), "auto", 2, tokens, 2.47, "int4") is None  # seed


def test_the_ablation_names_every_near_tie_swap_its_shipped_files_check_accepted():
    """A GGUF file whose greedy continuation left PyTorch's at a near-tie is written (export accepts it), so the
    table that publishes its perplexity must say which seed's file swapped, and by how little."""
    import paper_ablation

    published = json.loads((BENCHMARKS / "results" / "paper_ablation.json").read_text())
    flip = {"token": 28, "pytorch": 11, "llama_cpp": 12, "pytorch_margin": 3.1e-4, "allowed_margin": 0.044}
    arms = [dict(arm, runs=[dict(run) for run in arm["runs"]]) for arm in published["arms"]]
    for arm in arms:
        for run in arm["runs"]:
            run["shipped"] = {k: v for k, v in (run.get("shipped") or {}).items() if k != "greedy_flips"} or None
    plain = paper_ablation.title({**published, "arms": arms})
    arms[-1]["runs"][-1]["shipped"] = {
        **(arms[-1]["runs"][-1]["shipped"] or {}),
        "greedy_flips": {
            "model.f16.gguf": {**flip, "type": "f16", "max_abs_logit_diff": 0.022},
            # not gated: a Q4 file may part anywhere
            "model.q4_0.gguf": {**flip, "type": "q4_0", "token": 3, "pytorch_margin": 0.05},
        },
    }
    run = arms[-1]["runs"][-1]
    said = paper_ablation.title({**published, "arms": arms})
    assert "near-tie" not in plain
    assert f"{run['method']} seed {run['seed']}'s model.f16.gguf at token 28" in said
    assert "0.00031" in said and "0.022" in said and "0.044" in said and "q4_0" not in said
