"""The KV cache's precision (`clidep export --kv`): decode speed against the context, and what it costs.

Speed at GPT-2-medium shapes (24 x 1024, vocabulary 50,257, random weights: speed does not depend on
them): decode ms/token after prompts of each --depth, through clidep's runner, for the ONNX Runtime
graph's fp32, int8 and int4 weights, each with an fp32, fp16 and int8 cache (int8 per tensor and per
channel; scales calibrated on random prompts through the same weights, which is all speed needs).
Quality on the reference teacher: perplexity on WikiText test, and the next token picked at 8 x 64
teacher-forced decode steps (each read through the cache), of each cache against the same file with
an fp32 cache (calibrated on wiki-en-valid as the export does).
One run, one machine, in one process, ONNX Runtime on --threads threads.

    python benchmarks/kv_cache.py                  # ~15 min on 2 cores
    python benchmarks/kv_cache.py --layers 4 --width 256 --heads 4 --positions 256 --depth 32,200 --tokens 2048 --out /tmp/kv   # smoke (~1 min)

Writes OUT/kv_cache.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gpt2_shapes
import numpy as np
from decode_kernels import _cpu, _prov, _speed

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = [("fp32", None), ("int8", 8), ("int4", 4)]
CACHES = [("fp32", ""), ("fp16", ""), ("int8", "per-tensor"), ("int8", "per-channel")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--depth", default="32,256,512,952")
    ap.add_argument("--steps", type=int, default=17, help="decode steps timed per depth (the first is dropped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32768, help="WikiText-test tokens for the teacher's perplexity")
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    import onnxruntime

    from clidep.bench.provenance import provenance
    from clidep.hardware.kernels import INT4_BLOCK

    depths = tuple(int(d) for d in a.depth.split(","))
    quality = _teacher(a)
    prov = {**provenance(), "onnxruntime": onnxruntime.__version__, "cpu": _cpu()}
    model = gpt2_shapes.random_model(a)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        absmax = _random_calibration(model, Path(tmp), a.positions)
        for weights, bits in WEIGHTS:
            for precision, mode in CACHES:
                path = _write(model, Path(tmp) / "m.onnx", bits, INT4_BLOCK, precision, mode, absmax)
                rows.append(
                    {
                        "weights": weights,
                        "cache": precision,
                        "mode": mode or None,
                        "size_bytes": path.stat().st_size,
                        **_speed(path, a.threads, a.steps, depths),
                        **quality.get((weights, precision, mode), {}),
                        "provenance": _prov(prov),
                    }
                )
                first, last = f"decode_ms_{depths[0]}", f"decode_ms_{depths[-1]}"
                rows[-1]["slowdown"] = rows[-1][last] / rows[-1][first]
                print(writer.markdown(fields(depths), rows[-1:]).splitlines()[-1], flush=True)
    result = {
        **prov,
        "shapes": {"layers": a.layers, "width": a.width, "heads": a.heads, "vocab": a.vocab},
        "threads": a.threads,
        "depths": depths,
        "quality": {
            "teacher": a.teacher,
            "data": "wikitext-test",
            "tokens": a.tokens,
            "calibration": "wiki-en-valid, 32 windows of 512",
        },
        "rows": rows,
    }
    writer.write(Path(a.out), "kv_cache", fields(depths), rows, result, title=title(result))
    print(writer.markdown(fields(depths), rows, title(result)), end="")


def _format(precision: str, mode: str, absmax):
    from clidep.export.kv_cache import CacheFormat, int8_format

    return int8_format(absmax, mode) if precision == "int8" else CacheFormat(precision)


def _write(model, path: Path, bits, block, precision, mode, absmax) -> Path:
    from clidep.export.kv_cache import store_cache
    from clidep.export.ort_graph import export_ort_graph

    graph = export_ort_graph(model, path, bits, block)
    return graph if precision == "fp32" else store_cache(graph, graph, _format(precision, mode, absmax))


def _random_calibration(model, tmp: Path, positions: int):
    """The random model's key/value ranges on random prompts (what its int8 scales are made from)."""
    from clidep.export.kv_cache import calibrate
    from clidep.export.ort_graph import export_ort_graph

    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, min(positions, 256)))
    return calibrate(export_ort_graph(model, tmp / "calib.onnx"), ids)


def _teacher(a) -> dict:
    """{(weights, cache, mode): Δppl and next-token agreement against the same weights with an fp32 cache}."""
    from clidep.data import calibration_batch, load_tokenizer, read_text, tokenize_text
    from clidep.export.kv_cache import calibrate, decode_predictions
    from clidep.hardware.kernels import INT4_BLOCK
    from clidep.model.convert import load_model
    from clidep.perplexity import perplexity
    from clidep.runtime.runner import OnnxCausalLM

    teacher, tokenizer = load_model(a.teacher), load_tokenizer(a.teacher)
    ids = tokenize_text(tokenizer, read_text("wikitext-test")[0])[: a.tokens + 1]
    ctx = teacher.config.n_positions
    windows = ids[: 8 * 80].reshape(8, 80)  # 16 tokens of prompt, then 64 decode steps
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        calib = calibration_batch(tokenizer, "wiki-en-valid", 32, ctx, 0)[0].numpy()
        absmax = calibrate(_write(teacher, Path(tmp) / "calib.onnx", None, INT4_BLOCK, "fp32", "", None), calib)
        for weights, bits in WEIGHTS:
            base_ppl = base_picks = None
            for precision, mode in CACHES:
                path = _write(teacher, Path(tmp) / "q.onnx", bits, INT4_BLOCK, precision, mode, absmax)
                ppl = perplexity(OnnxCausalLM(path, threads=a.threads).logits, ids, ctx, ctx // 2, 4).ppl
                picks = decode_predictions(OnnxCausalLM(path, threads=a.threads), windows, 16)
                if base_ppl is None:
                    base_ppl, base_picks = ppl, picks
                out[(weights, precision, mode)] = {
                    "teacher_ppl": ppl,
                    "teacher_ppl_delta": ppl / base_ppl - 1,
                    "decode_agreement": float((picks == base_picks).mean()),
                }
    return out


def title(result: dict) -> str:
    s = result["shapes"]
    return (
        f"KV-cache precision: decode at {s['layers']} x {s['width']}, vocabulary {s['vocab']:,}, random weights, "
        f"ONNX Runtime {result['onnxruntime']} on {result['threads']} threads of {result['cpu']} (ms/token, "
        f"median ± sd of the decode steps); the teacher's perplexity, and its next token "
        f"at 8 x 64 teacher-forced decode steps, against the same weights with an fp32 cache"
    )


def fields(depths: tuple[int, ...]) -> list:
    def ms(d):
        return writer.Column(
            f"decode_ms_{d}",
            f"decode @{d}",
            text=lambda r, d=d: f"{r[f'decode_ms_{d}']:.1f} ± {r[f'decode_ms_{d}_sd']:.1f}",
        )

    return [
        writer.Column("weights", "weights"),
        writer.Column("cache", "cache"),
        writer.Column("mode", "scales"),
        *[ms(d) for d in depths],
        writer.Column("slowdown", f"@{depths[-1]} / @{depths[0]}", text=lambda r: f"{r['slowdown']:.2f}x"),
        writer.Column("teacher_ppl_delta", "teacher Δppl", "+.3%"),
        writer.Column("decode_agreement", "next token = fp32 cache", ".1%"),
    ]


if __name__ == "__main__":
    main()
