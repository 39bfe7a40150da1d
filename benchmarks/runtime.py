"""Speed at paper-scale shapes: GPT-2 medium (24 x 1024, vocab 50,257) original vs CLI (2.47x) vs uniform
vs the stock slim and depth students of the same size, raced against what users would pick instead.

Random weights (speed does not depend on them). clidep's pipeline exports each model and its
int8 and int4 variants; the peer pipeline (`optimum-cli export onnx --task
text-generation-with-past`, then ONNX Runtime's `quantize_dynamic`, run in .venv-peer) exports
the original; clidep's exports also run through ONNX Runtime GenAI (their genai/ folders);
llama.cpp (built from source, see llama_peer.py) runs the original converted to GGUF
at F32, Q8_0 and Q4_0 through `llama-bench`. Every ONNX file is measured by `clidep bench` on this
machine in the same run, each in its own process; decode is timed after prompts of each
--depth length; every row is also given as ratios to the peer's fp32 original.

    python benchmarks/runtime.py                                   # ~70 min on 2 cores (+6 min to build llama.cpp once)
    python benchmarks/runtime.py --layers 8 --width 256 --heads 4 --ratio 1.2 --positions 256 --prompt-lens 128 --depth 32,128 --threads 2 --reps 1 --memory-runs 1 --out /tmp/rt   # smoke (~3 min)
    python benchmarks/runtime.py --threads 8,16                    # a larger machine

Writes OUT/runtime.json, .md, .csv and .jsonl and OUT/runtime_decode_vs_context.png (OUT defaults
to benchmarks/results).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import gpt2_shapes

from clidep.bench import writer as report_writer
from clidep.errors import Unavailable

ROOT = Path(__file__).resolve().parents[1]
STOCK = ("slim", "depth")  # stock GPT-2 students (compress --method slim / depth) at CLI's size
MODELS = ("original", "cli", "uniform", *STOCK)
PEER = ROOT / ".venv-peer" / "bin"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--prompt-lens", default="512")
    # 952 rather than 960: 8 warm-up and 64 timed tokens must still fit in GPT-2's 1,024 positions.
    ap.add_argument("--depth", default="32,256,512,952")
    # Two repetitions at two thread counts keep the run near an hour; llama.cpp's rows take 3 (llama_peer.py).
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-llama", action="store_true", help="leave llama.cpp out")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated: one row each")
    ap.add_argument(
        "--memory-runs", type=int, default=1, help="runner processes per file for peak memory (median; 3 adds ~40 min)"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from clidep.commands.bench import bench
    from clidep.commands.export import export_artifact
    from clidep.hardware import devices

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params, sols = _models(a, work, log)
        exports = {}
        for name in MODELS:
            log(f"clidep export {name} ...")
            exports[name] = work / f"{name}-onnx"
            # 512 tokens: 4 windows of 112 decode steps for the KV cache's agreement gate (16 gave 9 steps, one
            # flip failing it). The stock students race at int4 only, beside the others' int4 rows.
            export_artifact(str(work / name), exports[name], int8=name not in STOCK, int4=True, ppl_tokens=512)
        log("peer export (optimum-cli + quantize_dynamic) ...")
        peer = work / "peer-onnx"
        subprocess.run(
            [
                str(PEER / "optimum-cli"),
                "export",
                "onnx",
                "--model",
                str(work / "original"),
                "--task",
                "text-generation-with-past",
                str(peer),
            ],
            check=True,
            capture_output=True,
        )
        quantize_dynamic(str(peer / "model.onnx"), str(peer / "model.int8.onnx"), weight_type=QuantType.QInt8)
        lens = [int(x) for x in a.prompt_lens.split(",")]
        report = bench(
            [str(exports[n]) for n in MODELS] + [str(peer / "model.onnx"), str(peer / "model.int8.onnx")],
            devices.load("host"),
            prompt_lens=a.prompt_lens,
            gen=a.gen,
            threads=a.threads,
            memory_runs=a.memory_runs,
            depth=a.depth,
            reps=a.reps,
            log=log,
        )
        llama = [
            r for n in a.threads.split(",") for r in _llama_rows(a, work / "original", int(n), params["original"], log)
        ]
    rows = _rows(report, params) + llama
    _vs_peer_fp32(rows)
    result = {
        "machine": report["provenance"]["host"],
        "threads": report["provenance"]["threads"],
        "host_measured": report["host_measured"],
        "provenance": report["provenance"],
        "shapes": {"layers": a.layers, "width": a.width, "heads": a.heads, "vocab": a.vocab, "positions": a.positions},
        "widths": {name: sol.widths for name, sol in sols.items()},
        "rows": rows,
    }
    records = [{**r, "provenance": report["provenance"]} for r in rows]
    fields = table_fields(lens, [int(x) for x in a.depth.split(",")])
    report_writer.write(Path(a.out), "runtime", fields, records, result, title(result), keep=3)
    plot(records, Path(a.out) / "runtime_decode_vs_context.png", title(result))
    print(report_writer.markdown(fields, records, title(result), keep=3), end="")


def _models(a, work: Path, log) -> tuple[dict, dict]:
    """The original GPT-2 with random weights, and CLI and uniform students of its shape, saved in WORK."""
    from clidep import CLIGPT2LMHeadModel
    from clidep.compress import stock
    from clidep.compress.widths import build, solve
    from clidep.data import load_tokenizer
    from clidep.model.convert import config_from_gpt2, to_gpt2
    from clidep.model.params import param_count

    teacher_cfg = config_from_gpt2(gpt2_shapes.save_original(a, work / "original"))
    tok = load_tokenizer("gpt2")
    params = {"original": param_count(teacher_cfg)}
    cli_sol = solve(teacher_cfg, "cli", round(params["original"] / a.ratio), [0, a.layers - 1])
    sols = {"cli": cli_sol, "uniform": solve(teacher_cfg, "uniform", cli_sol.params, [])}
    for name, protect in (("cli", [0, a.layers - 1]), ("uniform", [])):
        CLIGPT2LMHeadModel(build(teacher_cfg, name, sols[name].width, protect)).eval().save_pretrained(work / name)
        tok.save_pretrained(work / name)
        params[name] = sols[name].params
        log(sols[name].arithmetic)
    # The stock students at CLI's size: one narrower width (slim), and fewer full-width blocks (depth).
    shapes = {
        "slim": (stock.slim_width(teacher_cfg, cli_sol.params), a.layers),
        "depth": (a.width, stock.depth_blocks(teacher_cfg, cli_sol.params)),
    }
    for name, (width, blocks) in shapes.items():
        to_gpt2(CLIGPT2LMHeadModel(stock.stock_config(teacher_cfg, width, blocks)).eval()).save_pretrained(work / name)
        tok.save_pretrained(work / name)
        params[name] = stock.size(teacher_cfg, width, blocks)
        log(f"{name}: {blocks} blocks x {width}, {params[name]:,} parameters (a stock GPT-2)")
    return params, sols


def _rows(report: dict, params: dict) -> list[dict]:
    """One row per ONNX file, named by model and pipeline."""
    rows = []
    for r in report["models"]:
        pipeline = (
            "peer" if r["name"].startswith("peer-onnx/") else "clidep" if r["runtime"] == "clidep" else "ORT GenAI"
        )
        model = "original" if pipeline == "peer" else r["name"].removesuffix("-onnx")
        precision = r["precision"] if pipeline != "peer" else ("int8-dynamic" if "int8" in r["name"] else "fp32")
        rows.append(
            {
                "model": model,
                "pipeline": pipeline,
                "precision": precision,
                "params": params[model],
                **{
                    k: r.get(k)
                    for k in (
                        "kv_cache",
                        "threads",
                        "size_bytes",
                        "load_s",
                        "prefill_ms",
                        "decode_ms_p50",
                        "decode_ms_p90",
                        "decode_ms_at",
                        "tg_tps",
                        "pp_tps",
                        "peak_rss_mb",
                        "peak_rss_mb_samples",
                        "roofline_fraction",
                        "bytes_per_token",
                        "error",
                    )
                },
            }
        )
    return rows


def _llama_rows(a, hf_dir: Path, threads: int, params: int, log) -> list[dict]:
    """llama.cpp's rows at THREADS (F32, Q8_0, Q4_0 of the original with its default f16 cache, and Q8_0,
    Q4_0 with a q8_0 cache and flash attention), or one row saying why there are none."""
    import json

    import llama_peer

    from clidep.runtime import llama_bench, llamacpp

    if a.no_llama:
        return []
    depths = [int(x) for x in a.depth.split(",")]
    prompt = max(int(x) for x in a.prompt_lens.split(","))
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(
        json.dumps({**config, "n_ctx": config["n_positions"]})
    )  # the converter reads n_ctx
    rows = []
    try:
        llamacpp.build(log)
        for kind in ("f32", "q8_0", "q4_0"):
            gguf = llama_peer.convert(hf_dir, hf_dir.parent / f"original.{kind}.gguf", kind)
            for cache in (None, "q8_0") if kind != "f32" else (None,):
                log(f"llama.cpp {kind}, {cache or 'f16'} cache, {threads} threads ...")
                r = llama_bench.record(gguf, [prompt], a.gen, threads, depths, 3, cache)
                how = r["runner"]["llama_cpp"]
                rows.append(
                    {
                        "model": "original",
                        "pipeline": "llama.cpp",
                        "precision": kind.upper(),
                        "kv_cache": how["type_k"],
                        "threads": threads,
                        "params": params,
                        "size_bytes": gguf.stat().st_size,
                        "llama_cpp": how,
                        **{
                            k: r[k]
                            for k in (
                                "prefill_ms",
                                "decode_ms_p50",
                                "decode_ms_p90",
                                "decode_ms_at",
                                "tg_tps",
                                "pp_tps",
                                "peak_rss_mb",
                            )
                        },
                    }
                )
            gguf.unlink()
    except Unavailable as exc:
        log(f"llama.cpp left out: {exc}")
        rows.append(
            {
                "model": "original",
                "pipeline": "llama.cpp",
                "precision": "-",
                "threads": threads,
                "params": params,
                "error": str(exc),
            }
        )
    return rows


def _vs_peer_fp32(rows: list[dict]) -> None:
    """Each row's size, decode speed-up, prefill speed-up and peak memory against the peer's fp32 original
    at the same thread count."""
    bases = {r["threads"]: r for r in rows if r["pipeline"] == "peer" and r["precision"] == "fp32"}
    for r in rows:
        base = bases.get(r["threads"], {"error": "no peer row"})
        if r.get("error") or base.get("error"):
            continue
        r["vs_peer_fp32"] = {
            "size": r["size_bytes"] / base["size_bytes"],
            "decode_speedup": base["decode_ms_p50"] / r["decode_ms_p50"],
            "prefill_speedup": {n: base["prefill_ms"][n] / r["prefill_ms"][n] for n in r["prefill_ms"]},
            "peak_rss": r["peak_rss_mb"] / base["peak_rss_mb"] if r.get("peak_rss_mb") else None,
        }


def plot(records: list[dict], path: Path, heading: str) -> None:
    """Decode ms/token against the tokens before it for the original and the CLI student at the most
    threads: colour by weights, line style by runtime, open markers for a quantised cache (the uniform
    student runs as the CLI one does: in the table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    styles = {"clidep": "-", "ORT GenAI": "-.", "peer": "--", "llama.cpp": ":"}
    most = max(r["threads"] for r in records)
    for ax, model in zip(axes, ("original", "cli")):
        for r in records:
            if r["model"] != model or r.get("error") or not r.get("decode_ms_at") or r["threads"] != most:
                continue
            ps = sorted(r["decode_ms_at"], key=int)
            weights = r["precision"].lower()
            color = "C0" if "32" in weights else "C1" if "8" in weights else "C2"
            ax.plot(
                [int(p) for p in ps],
                [r["decode_ms_at"][p] for p in ps],
                styles[r["pipeline"]],
                color=color,
                marker="o",
                markersize=3,
                fillstyle="none" if _quantised_cache(r) else "full",
                label=f"{r['pipeline']} {r['precision']}, {r.get('kv_cache')} cache",
            )
        ax.set_title(f"{model} ({'GPT-2 medium shapes' if model == 'original' else 'CLI student, 2.47x'})", fontsize=9)
        ax.set_xlabel("tokens already in the context")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("decode ms / token (lower is faster); colour: fp32 / 8-bit / 4-bit")
    fig.suptitle(heading, fontsize=7, wrap=True)
    fig.tight_layout()
    from clidep.files import atomic_write

    atomic_write(path, lambda t: fig.savefig(t, dpi=120, format="png"))
    plt.close(fig)


def title(result: dict) -> str:
    prov, shapes = result["provenance"], result["shapes"]
    return (
        f"Measured on {result['machine']}, {result['threads']} threads (plot: the most), ONNX Runtime {prov['onnxruntime']}, "
        f"git {prov['git_sha']}; random weights at {shapes['layers']} x {shapes['width']}, vocab {shapes['vocab']:,}; "
        f"host read bandwidth {result['host_measured']['mem_bandwidth_gbs']:.1f} GB/s (multi-threaded)."
    )


def _quantised_cache(r: dict) -> bool:
    return str(r.get("kv_cache")) in ("int8", "q8_0", "q4_0")


def _vs_peer(r: dict) -> str:
    vs = r.get("vs_peer_fp32")
    return f"{vs['size']:.2f} / {vs['decode_speedup']:.2f}x" if vs else "-"


def table_fields(lens: list[int], depths: list[int]) -> list:
    F = report_writer.Column
    return [
        F("model", "model"),
        F("pipeline", "pipeline"),
        F("precision", "precision"),
        F("kv_cache", "KV cache"),
        F("threads", "threads"),
        F("params", "params", text=lambda r: f"{r['params'] / 1e6:.1f} M"),
        F("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.0f}"),
        *[F(f"prefill_ms.{n}", f"prefill {n} ms", ".0f") for n in lens],
        *[F(f"decode_ms_at.{p}", f"decode @{p} ms", ".1f") for p in depths],
        F("peak_rss_mb", "peak RSS MB", ".0f"),
        F("roofline_fraction", "roofline", ".0%"),
        F("vs_peer_fp32.decode_speedup", "vs peer fp32: size / decode speed-up", text=_vs_peer),
    ]


if __name__ == "__main__":
    main()
