"""The default student's race at GPT-2-medium shapes: every shape `compress --method grid` would try at the ratio,
against the original, each in the files users ship.

Which of its candidate shapes grid's search picks needs its short distillation on the real teacher (a GPU at
this size), so every candidate is raced: the shapes grid's search distils (compress/stock.py's grid_trials:
up to 4, the nearest of each width first), built as stock GPT-2s (`n_inner` where the MLP is not 4x) with
random weights (speed does not depend on them), and the original GPT-2 medium beside them. Each goes through
`clidep export --int4 --gguf --gguf-types q4_0[,q4_k_m]` (Q4_K_M where a row splits into its blocks; the int4 graph with its default int8 KV cache, no GenAI
folder; `--allow-gate-miss` because random weights say nothing of quality) and every int4 ONNX and GGUF file is
measured by `clidep bench` in the same run, each in its own process: decode ms/token after 32 and 952 tokens
(952 + 8 warm-up + 64 timed fit GPT-2's 1,024 positions), prefill of 128, roofline. The GGUF rows say how many
weight matrices llama-quantize kept off the file's type (rows that do not split into its blocks).

    python benchmarks/grid_race.py                   # ~12 min on 2 cores
    python benchmarks/grid_race.py --layers 4 --width 256 --heads 4 --positions 256 --depth 32,128 --out /tmp/gr   # smoke (~3 min)

Writes OUT/grid_race.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import gpt2_shapes
from decode_kernels import _cpu

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]


def gguf_types(shape: dict) -> tuple[str, ...]:
    """Q4_0 for every shape; Q4_K_M where some weight row splits into the k-quants' blocks (a width or an MLP width
    on 256): elsewhere llama-quantize would put no matrix in Q4_K and export refuses the file."""
    from clidep.export.gguf import BLOCK

    on_block = shape["width"] % BLOCK["q4_k_m"] == 0 or shape["mlp"] % BLOCK["q4_k_m"] == 0
    return ("q4_0", "q4_k_m") if on_block else ("q4_0",)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--depth", default="32,952")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.commands.bench import bench
    from clidep.commands.export import export_artifact
    from clidep.hardware import devices

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        shapes = _models(a, Path(tmp), log)
        files = []
        for s in shapes:
            log(f"clidep export {s['label']} ...")
            out, types = Path(tmp) / f"{s['name']}-onnx", gguf_types(s)
            export_artifact(
                str(Path(tmp) / s["name"]), out, int4=True, gguf=True, gguf_types=types, genai=False,
                allow_gate_miss=True, ppl_tokens=512, log=log,
            )  # fmt: skip
            files += [str(out / "model.int4.onnx"), *(str(out / "gguf" / f"model.{t}.gguf") for t in types)]
        report = bench(
            files, devices.load("host"), runtime="clidep,llamacpp", prompt_lens="128", gen=64, threads=str(a.threads), depth=a.depth,
            reps=a.reps, log=log,
        )  # fmt: skip
        rows = _rows(report, shapes, a.depth.split(","))
    result = race_result(a, report, start, rows)
    writer.write(Path(a.out), "grid_race", FIELDS, rows, result, title=title(result))
    print(writer.markdown(FIELDS, rows, title(result)), end="")


def race_result(a, report: dict, start: float, rows: list[dict]) -> dict:
    """A race's record: bench's provenance, the machine (CPU, L3, read bandwidth), the shapes and ROWS."""
    return {
        "provenance": report["provenance"],
        "cpu": _cpu(),
        "l3_cache": _l3(),
        "read_gbs": report["host_measured"].get("mem_bandwidth_gbs"),
        "ratio": a.ratio,
        "shapes": {"layers": a.layers, "width": a.width, "heads": a.heads, "vocab": a.vocab},
        "wall_seconds": round(time.time() - start),
        "rows": rows,
    }


def _l3() -> str:
    """The last-level cache's size as Linux reports it ("300M"): a file smaller than it may decode from cache,
    faster than the read bandwidth allows (the roofline column over 100%)."""
    try:
        size = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        return "unknown"
    return f"{int(size[:-1]) // 1024}M" if size.endswith("K") and int(size[:-1]) >= 1024 else size


def _models(a, work: Path, log) -> list[dict]:
    """The original (a stock GPT-2 of --layers x --width) and grid's candidate shapes at --ratio, saved in WORK as
    stock GPT-2 folders with random weights: [{name, label, blocks, width, mlp, params}]."""
    from clidep import CLIGPT2LMHeadModel
    from clidep.compress.stock import grid_trials, shape_config
    from clidep.data import load_tokenizer
    from clidep.model.convert import config_from_gpt2, to_gpt2
    from clidep.model.params import param_count

    tconf = config_from_gpt2(gpt2_shapes.save_original(a, work / "original"))
    tok = load_tokenizer("gpt2")
    total = param_count(tconf)
    shapes = [{"name": "original", "blocks": a.layers, "width": a.width, "mlp": 4 * a.width, "params": total}]
    for i, p in enumerate(grid_trials(tconf, round(total / a.ratio))):
        name = f"grid{i}"
        config = shape_config(tconf, p)
        to_gpt2(CLIGPT2LMHeadModel(config).eval()).save_pretrained(work / name)
        tok.save_pretrained(work / name)
        shapes.append(
            {"name": name, "blocks": p["blocks"], "width": p["width"], "mlp": p["mlp_inner"], "params": p["params"]}
        )
    for s in shapes:
        s["label"] = "original" if s["name"] == "original" else f"grid {s['blocks']} x {s['width']}, MLP {s['mlp']}"
        log(f"{s['label']}: {s['params']:,} parameters")
    return shapes


def _rows(report: dict, shapes: list[dict], depths: list[str]) -> list[dict]:
    """One row per measured file, with its speed-up over the original's Q4_0 file at each depth."""
    from clidep.export.gguf import describe

    by_name = {f"{s['name']}-onnx": s for s in shapes}  # bench names each row by its export
    rows = []
    for r in report["models"]:
        shape = by_name[r["name"]]
        gguf = r["file"].endswith(".gguf")
        types = describe(Path(r["file"])) if gguf else None
        first, last = (r["decode_ms_at"][d] for d in (depths[0], depths[-1]))
        rows.append(
            {
                **{k: shape[k] for k in ("label", "blocks", "width", "mlp", "params")},
                "file": Path(r["file"]).name,
                "runtime": r["runtime"],
                "size_bytes": r["size_bytes"],
                "off_type": None if types is None else types["float_matrices"] + types["fallback_matrices"],
                "matrices": None if types is None else types["matrices"],
                "decode_first": first,
                "decode_last": last,
                "slowdown": last / first,
                # projected: the bytes a token reads at the last depth over the first, the slowdown of a device whose
                # decode its read bandwidth alone bounds (a phone or a Pi reading weights from DRAM)
                "bytes_slowdown": r["bytes_per_token_at"][depths[-1]] / r["bytes_per_token_at"][depths[0]],
                "roofline": r.get("roofline_fraction"),
                "prefill_128": r["prefill_ms"]["128"],
                "record": r,
            }
        )
    ref = next(r for r in rows if r["label"] == "original" and r["file"] == "model.q4_0.gguf")
    for r in rows:
        r["vs_q4_first"] = ref["decode_first"] / r["decode_first"]
        r["vs_q4_last"] = ref["decode_last"] / r["decode_last"]
    return rows


def title(result: dict) -> str:
    p, s = result["provenance"], result["shapes"]
    return (
        f"grid's candidate students at ratio {result['ratio']} of a GPT-2-medium-shaped original ({s['layers']} x "
        f"{s['width']}, vocabulary {s['vocab']:,}, random weights) in their int4 ONNX and Q4 GGUF files, clidep bench "
        f"on {p['threads']} threads, {p['reps']} repetitions (ms per decoded token, medians), on {p['host']}, "
        f"{result['cpu']} with {result['l3_cache']} of L3 cache, read bandwidth {result['read_gbs']:.1f} GB/s "
        f"(roofline: the bytes a token reads, weights and KV cache, over it), at git {p['git_sha']}. Where a file "
        f"fits in the L3 cache its decode here is bound by arithmetic (roofline over 100%), so the measured slowdown "
        f"with the context is the attention's; a device that reads the weights from DRAM is bound by the bytes, and "
        f"the projected column is its slowdown: the bytes a token reads at 952 tokens of past over those at 32"
    )


FIELDS = [
    writer.Column("label", "model"),
    writer.Column("params", "params", text=lambda r: f"{r['params'] / 1e6:.1f} M"),
    writer.Column("file", "file"),
    writer.Column("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.0f}"),
    writer.Column("off_type", "matrices off the type", text=lambda r: "" if r["off_type"] is None else f"{r['off_type']} / {r['matrices']}"),
    writer.Column("decode_first", "decode ms @32", ".2f"),
    writer.Column("decode_last", "decode ms @952", ".2f"),
    writer.Column("slowdown", "@952 / @32", ".2f"),
    writer.Column("bytes_slowdown", "bytes @952 / @32 (bandwidth-bound, projected)", ".2f"),
    writer.Column("roofline", "roofline", text=lambda r: "" if r["roofline"] is None else f"{r['roofline']:.0%}"),
    writer.Column("vs_q4_first", "vs original Q4_0 @32", text=lambda r: f"{r['vs_q4_first']:.2f}x"),
    writer.Column("vs_q4_last", "vs original Q4_0 @952", text=lambda r: f"{r['vs_q4_last']:.2f}x"),
    writer.Column("prefill_128", "prefill 128 ms", ".0f"),
]  # fmt: skip


if __name__ == "__main__":
    main()
