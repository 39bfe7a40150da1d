"""Does the file that ships still answer as the teacher does? KL divergence to the teacher and task accuracy.

For the reference teacher and the default student at ratio 2.47 and at ratio 4 (grid, the three seeds
shipped_student.py trained, under runs/shipped_student/ and runs/shipped_student_4x/), each exported as a user
would (export --int4 --gguf --gguf-types q4_0, the int4 table at 8 bits), every shipped file is asked two
questions beside its perplexity:
- clidep eval FILE --reference TEACHER: KL divergence of its next-token distribution from the torch teacher's
  (mean and 99th percentile, nats) and top-1 agreement, on the first --tokens WikiText-test tokens (context 256,
  stride 128, the ablation's protocol); the ONNX files in clidep's runner, the GGUF file in llama.cpp. The
  teacher runs once: eval keeps its answers for the text.
- clidep eval FILE --tasks clidep_lastword,clidep_wikitext: accuracy on clidep's offline LAMBADA-style task
  (252 paragraphs) and word perplexity on the WikiText test articles (--articles of them), through clidep's
  lm-evaluation-harness backend (ONNX Runtime, or llama.cpp for the GGUF file).
One run, one machine.

    python benchmarks/answers.py                                   # teacher + 2 ratios x 3 seeds, ~70 min on 2 cores
    python benchmarks/answers.py --keep-measured                   # measure only the rows the table lacks
    python benchmarks/answers.py --students '' --tokens 4096 --articles 1 --out /tmp/an   # smoke: teacher only

Writes OUT/answers.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import distil_protocol

from clidep.bench import writer
from clidep.bench.writer import Column

ROOT = Path(__file__).resolve().parents[1]
STUDENTS = [f"shipped_student{ratio}/grid-s{seed}" for ratio in ("", "_4x") for seed in (0, 1, 2)]
FILES = (("fp32", "", "onnx"), ("int4", "model.int4.onnx", "onnx"), ("q4_0", "gguf/model.q4_0.gguf", "llamacpp"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--students", default=",".join(STUDENTS), help="folders under --runs")
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument(
        "--tokens", type=int, default=distil_protocol.KLD_TOKENS, help="WikiText-test tokens for KLD and top-1"
    )
    ap.add_argument("--articles", type=int, default=4, help="WikiText-test articles for clidep_wikitext")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument(
        "--keep-measured",
        action="store_true",
        help="keep the rows OUT/answers.json already holds under this protocol (each with its commit); "
        "measure only the models it lacks",
    )
    a = ap.parse_args()

    from clidep.bench.provenance import provenance

    prov, t0 = provenance(), time.perf_counter()
    protocol = {"kld_tokens": a.tokens, "context": 256, "stride": 128, "articles": a.articles}
    models = [("teacher", Path(a.teacher))] + [(_label(s), Path(a.runs) / s) for s in a.students.split(",") if s]
    kept = _kept(Path(a.out), protocol) if a.keep_measured else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in models:
            if all((name, precision) in kept for precision, _, _ in FILES):
                rows += [kept[name, precision] for precision, _, _ in FILES]
                continue
            export = _export(folder, Path(tmp) / name)
            for precision, file, runtime in FILES:
                rows.append({"model": name, "file": precision, "runtime": runtime, "provenance": prov})
                rows[-1].update(_answers(a, export / file if file else export))
                print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
    record = {
        **prov,
        "teacher": a.teacher,
        "protocol": protocol,
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    writer.write(out, "answers", FIELDS, rows, record, title(record))
    (out / "answers.md").write_text(writer.markdown(FIELDS, rows, title(record)))
    print(writer.markdown(FIELDS, rows, title(record)), end="")


def _label(student: str) -> str:
    """A row's model name from its folder under --runs: shipped_student/grid-s0 -> grid 2.47x s0."""
    parent, leaf = student.split("/")
    ratio = parent.removeprefix("shipped_student").removeprefix("_") or "2.47x"
    method, seed = leaf.rsplit("-", 1)
    return f"{method} {ratio} {seed}"


def _kept(out: Path, protocol: dict) -> dict[tuple[str, str], dict]:
    """The rows OUT/answers.json holds, by (model, file), where it was measured under PROTOCOL and the row
    carries every figure (a GGUF row of a run before eval read GGUF files lacks its KLD: measured again)."""
    import json

    path = out / "answers.json"
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    if record["protocol"] != protocol:
        return {}
    return {(r["model"], r["file"]): r for r in record["rows"] if r.get("kld_mean") is not None}


def _export(folder: Path, dst: Path) -> Path:
    from clidep.commands.export import export_artifact

    export_artifact(
        folder, dst, int4=True, gguf=True, gguf_types="q4_0", allow_gate_miss=True, genai=False, ppl_tokens=8192
    )
    return dst


def _answers(a, path: Path) -> dict:
    """PATH's KLD and top-1 agreement against the teacher, and its harness tasks (each file in its own runtime)."""
    from clidep.quality.harness import run_tasks

    found = distil_protocol.kld(a, str(path), a.tokens)
    tasks = run_tasks(path, ["clidep_lastword"])
    wiki = run_tasks(path, ["clidep_wikitext"], limit=a.articles)
    found["lastword_acc"] = tasks["clidep_lastword"]["acc"]
    found["lastword_ppl"] = tasks["clidep_lastword"]["perplexity"]
    found["word_ppl"] = wiki["clidep_wikitext"]["word_perplexity"]
    return found


def title(record: dict) -> str:
    p = record["protocol"]
    return (
        f"Each shipped file against the reference teacher (torch, fp32): KLD (nats, mean and p99) and top-1 "
        f"agreement on {p['kld_tokens']:,} WikiText-test tokens (context {p['context']}, stride {p['stride']}), "
        f"with both perplexities on those tokens; clidep_lastword accuracy and target perplexity (252 paragraphs) "
        f"and clidep_wikitext word perplexity ({p['articles']} articles) through clidep's lm-evaluation-harness "
        f"backend. ONNX files in clidep's runner, GGUF in llama.cpp. Students: grid at ratio 2.47 and 4."
        + _measured_at(record)
    )


def _measured_at(record: dict) -> str:
    """Which commit measured which models, where the rows come from more than one run (--keep-measured)."""
    shas = dict.fromkeys(r["provenance"]["git_sha"] for r in record["rows"])
    if len(shas) < 2:
        return ""
    parts = [
        f"{', '.join(dict.fromkeys(r['model'] for r in record['rows'] if r['provenance']['git_sha'] == sha))} at git {sha}"
        for sha in shas
    ]
    return f" Measured in separate runs: {'; '.join(parts)}."


def _f(key: str, fmt: str):
    return lambda r: "-" if r.get(key) is None else format(r[key], fmt)


FIELDS = [
    Column("model", "model"),
    Column("file", "file"),
    Column("runtime", "runtime"),
    Column("kld_mean", "KLD mean", text=_f("kld_mean", ".4f")),
    Column("kld_p99", "KLD p99", text=_f("kld_p99", ".3f")),
    Column("top1", "top-1 agreement", text=_f("top1", ".1%")),
    Column("ppl", "ppl", text=_f("ppl", ".2f")),
    Column("reference_ppl", "teacher ppl", table=False),
    Column("lastword_acc", "lastword acc", text=_f("lastword_acc", ".1%")),
    Column("lastword_ppl", "lastword ppl", text=_f("lastword_ppl", ",.0f")),
    Column("word_ppl", "wikitext word ppl", text=_f("word_ppl", ",.1f")),
    Column("provenance.host", "machine", table=False),
]


if __name__ == "__main__":
    main()
