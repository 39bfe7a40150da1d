"""Does the file that ships still answer as the teacher does? KL divergence to the teacher and task accuracy.

For the reference teacher and the default student at ratio 2.47 (grid, the three seeds shipped_student.py
trained, under runs/shipped_student/), each exported as a user would (export --int4 --gguf --gguf-types q4_0,
the int4 table at 8 bits), every shipped file is asked two questions beside its perplexity:
- clidep eval FILE --reference TEACHER: KL divergence of its next-token distribution from the torch teacher's
  (mean and 99th percentile, nats) and top-1 agreement, on the first --tokens WikiText-test tokens (context 256,
  stride 128, the ablation's protocol). ONNX files only: eval does not read GGUF files yet.
- clidep eval FILE --tasks clidep_lastword,clidep_wikitext: accuracy on clidep's offline LAMBADA-style task
  (252 paragraphs) and word perplexity on the WikiText test articles (--articles of them), through clidep's
  lm-evaluation-harness backend (ONNX Runtime, or llama.cpp for the GGUF file).
One run, one machine.

    python benchmarks/answers.py                                   # teacher + 3 seeds, ~25 min on 2 cores
    python benchmarks/answers.py --students '' --tokens 4096 --articles 1 --out /tmp/an   # smoke: teacher only

Writes OUT/answers.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from clidep.bench import writer
from clidep.bench.writer import Column

ROOT = Path(__file__).resolve().parents[1]
FILES = (("fp32", "", "onnx"), ("int4", "model.int4.onnx", "onnx"), ("q4_0", "gguf/model.q4_0.gguf", "llamacpp"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--students", default="grid-s0,grid-s1,grid-s2", help="folders under --runs")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "shipped_student"))
    ap.add_argument("--tokens", type=int, default=16384, help="WikiText-test tokens for KLD and top-1")
    ap.add_argument("--articles", type=int, default=4, help="WikiText-test articles for clidep_wikitext")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance

    prov, t0 = provenance(), time.perf_counter()
    models = [("teacher", Path(a.teacher))] + [(s, Path(a.runs) / s) for s in a.students.split(",") if s]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in models:
            export = _export(folder, Path(tmp) / name)
            for precision, file, runtime in FILES:
                rows.append({"model": name, "file": precision, "runtime": runtime, "provenance": prov})
                rows[-1].update(_answers(a, export / file if file else export, precision, runtime))
                print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
    record = {
        **prov,
        "teacher": a.teacher,
        "protocol": {"kld_tokens": a.tokens, "context": 256, "stride": 128, "articles": a.articles},
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    writer.write(out, "answers", FIELDS, rows, record, title(record))
    (out / "answers.md").write_text(writer.markdown(FIELDS, rows, title(record)))
    print(writer.markdown(FIELDS, rows, title(record)), end="")


def _export(folder: Path, dst: Path) -> Path:
    from clidep.commands.export import export_artifact

    export_artifact(
        folder, dst, int4=True, gguf=True, gguf_types="q4_0", allow_gate_miss=True, genai=False, ppl_tokens=8192
    )
    return dst


def _answers(a, path: Path, precision: str, runtime: str) -> dict:
    from clidep.commands.eval import compare
    from clidep.quality.harness import run_tasks

    found = {}
    if runtime == "onnx":
        kld = compare(path, a.teacher, max_tokens=a.tokens, context=256, stride=128, batch_size=8)
        found.update({k: kld[k] for k in ("kld_mean", "kld_p99", "top1", "ppl", "reference_ppl")})
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
        f"backend. GGUF: llama.cpp, no KLD (eval reads ONNX and torch only). Students: grid at ratio 2.47."
    )


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
