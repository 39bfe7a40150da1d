"""How `clidep export` writes quantised weights: bits, block size and MatMulNBits accuracy_level, measured.

Speed at GPT-2-medium shapes (24 x 1024, vocabulary 50,257, random weights: speed does not depend
on them): decode ms/token after a prompt of 32 and of 512 tokens, prefill of 512, file size, for the
ONNX Runtime graph at fp32 and at each candidate, beside the traced graph with the dynamic int8 that
`--int8` wrote before. Quality on the reference teacher: perplexity on WikiText-103 test of each
candidate against the same graph in fp32 (the export gates: int8 +2%, int4 +5%). One run, one machine,
in one process, ONNX Runtime on --threads threads.

    python benchmarks/decode_kernels.py                # ~15 min on 2 cores
    python benchmarks/decode_kernels.py --layers 4 --width 256 --heads 4 --tokens 4096 --out /tmp/dk   # smoke (~1 min)

Writes OUT/decode_kernels.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import gpt2_shapes
import numpy as np

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]

# (label, bits, block, accuracy_level); None bits = fp32. accuracy_level 0: fp32 compute; 4: int8 compute.
CANDIDATES = [
    ("fp32", None, 0, None),
    ("8-bit", 8, 32, 4),
    ("8-bit", 8, 64, 4),
    ("8-bit", 8, 128, 4),
    ("8-bit", 8, 32, 0),
    ("4-bit", 4, 32, 4),
    ("4-bit", 4, 64, 4),
    ("4-bit", 4, 128, 4),
    ("4-bit", 4, 32, 0),
]
SLOW = 0  # accuracy_level 0 at 8 bits is two orders of magnitude slower: fewer decode steps for it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--steps", type=int, default=24, help="decode steps timed per prompt length")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32768, help="WikiText-test tokens for the teacher's perplexity")
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance

    shapes = gpt2_shapes.random_model(a)
    quality = _teacher_ppl(a)
    import onnxruntime

    prov = {**provenance(), "onnxruntime": onnxruntime.__version__, "cpu": _cpu()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, bits, block, acc in CANDIDATES:
            path = _write(shapes, Path(tmp) / "m.onnx", bits, block, acc)
            steps = 3 if (bits == 8 and acc == SLOW) else a.steps
            rows.append(
                {
                    "graph": "ONNX Runtime",
                    "weights": label,
                    "block": block or None,
                    "accuracy_level": acc,
                    "size_bytes": path.stat().st_size,
                    **_speed(path, a.threads, steps),
                    "teacher_ppl_delta": quality.get((bits, block, acc)),
                    "provenance": _prov(prov),
                }
            )
            print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
        rows.append(
            {
                "graph": "traced",
                "weights": "int8 dynamic (before)",
                "block": None,
                "accuracy_level": None,
                **_traced_int8(shapes, Path(tmp), a.threads, a.steps),
                "teacher_ppl_delta": quality.get("dynamic"),
                "provenance": _prov(prov),
            }
        )
    result = {
        **prov,
        "shapes": {"layers": a.layers, "width": a.width, "heads": a.heads, "vocab": a.vocab},
        "threads": a.threads,
        "quality": {"teacher": a.teacher, "data": "wikitext-test", "tokens": a.tokens},
        "rows": rows,
    }
    writer.write(Path(a.out), "decode_kernels", FIELDS, rows, result, title=title(result))
    print(writer.markdown(FIELDS, rows, title(result)), end="")


def _write(model, path: Path, bits, block, acc) -> Path:
    from clidep.export.ort_graph import export_ort_graph

    return export_ort_graph(model, path, bits, block or 32, acc)


def _speed(path: Path, threads: int, steps: int, depths: tuple[int, ...] = (32, 512)) -> dict:
    """Prefill of 512 and decode after each of DEPTHS tokens of prompt, medians with the raw samples kept."""
    from clidep.runtime.runner import OnnxCausalLM

    runner = OnnxCausalLM(path, threads=threads)
    out = {}
    for P in depths:
        ids = np.random.default_rng(P).integers(0, runner.session.get_outputs()[0].shape[-1] or 1000, (1, P))
        mask, pos = np.ones_like(ids), np.arange(P)[None]
        past = runner.empty_past(1, P + steps + 2) if runner.shared else runner.empty_past(1)
        t0 = time.perf_counter()
        logits, past = runner.forward(ids, mask, pos, past, last_only=True)
        prefill = (time.perf_counter() - t0) * 1e3
        samples = []
        for _ in range(steps):
            nxt = logits[:, -1].argmax(-1)[:, None]
            t0 = time.perf_counter()
            logits, mask, pos, past = runner.decode_step(nxt, mask, pos, past)
            samples.append((time.perf_counter() - t0) * 1e3)
        kept = samples[1:] if len(samples) > 2 else samples  # the first step after a prefill warms caches
        out[f"decode_ms_{P}"] = statistics.median(kept)
        out[f"decode_ms_{P}_sd"] = statistics.stdev(kept) if len(kept) > 1 else 0.0
        out[f"decode_ms_{P}_samples"] = samples
        if P == 512:
            out["prefill_ms_512"] = prefill
    return out


def _traced_int8(model, tmp: Path, threads: int, steps: int) -> dict:
    from clidep.export import traced_quantize
    from clidep.export.traced_graph import export_onnx

    fp32 = export_onnx(model, tmp / "traced.onnx")
    q = traced_quantize.int8_dynamic(fp32, tmp / "traced.int8.onnx")
    return {"size_bytes": q.stat().st_size, **_speed(q, threads, steps)}


def _teacher_ppl(a) -> dict:
    """Perplexity change of each quantised candidate of the reference teacher against its fp32 graph."""
    from clidep.data import load_tokenizer, read_text, tokenize_text
    from clidep.export import traced_quantize
    from clidep.export.traced_graph import export_onnx
    from clidep.model.convert import load_model
    from clidep.perplexity import perplexity
    from clidep.runtime.runner import OnnxCausalLM

    teacher = load_model(a.teacher)
    ids = tokenize_text(load_tokenizer(a.teacher), read_text("wikitext-test")[0])[: a.tokens + 1]
    ctx = teacher.config.n_positions

    def ppl(path: Path) -> float:
        return perplexity(OnnxCausalLM(path, threads=a.threads).logits, ids, ctx, ctx // 2, 4).ppl

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = ppl(_write(teacher, Path(tmp) / "fp32.onnx", None, 0, None))
        for _, bits, block, acc in CANDIDATES[1:]:
            out[(bits, block, acc)] = ppl(_write(teacher, Path(tmp) / "q.onnx", bits, block, acc)) / base - 1
        traced = export_onnx(teacher, Path(tmp) / "traced.onnx")
        out["dynamic"] = ppl(traced_quantize.int8_dynamic(traced, Path(tmp) / "traced.int8.onnx")) / ppl(traced) - 1
    return out


def _cpu() -> str:
    """The CPU's model name (Linux), which says which int8 dot-product instructions MLAS can use."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def _prov(p: dict) -> dict:
    return {k: p[k] for k in ("host", "time", "git_sha")}


def title(result: dict) -> str:
    s = result["shapes"]
    return (
        f"Quantised decode kernels: {s['layers']} x {s['width']}, vocabulary {s['vocab']:,}, random weights, "
        f"ONNX Runtime {result['onnxruntime']} on {result['threads']} threads of {result['cpu']} "
        f"(ms, median ± sd of the decode steps)"
    )


FIELDS = [
    writer.Column("graph", "graph"),
    writer.Column("weights", "weights"),
    writer.Column("block", "block"),
    writer.Column("accuracy_level", "accuracy_level"),
    writer.Column("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.0f}"),
    writer.Column("decode_ms_32", "decode @32", text=lambda r: f"{r['decode_ms_32']:.1f} ± {r['decode_ms_32_sd']:.1f}"),
    writer.Column(
        "decode_ms_512", "decode @512", text=lambda r: f"{r['decode_ms_512']:.1f} ± {r['decode_ms_512_sd']:.1f}"
    ),
    writer.Column("prefill_ms_512", "prefill 512", ".0f"),
    writer.Column("teacher_ppl_delta", "teacher Δppl", "+.2%"),
]


if __name__ == "__main__":
    main()
