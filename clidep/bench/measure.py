"""Measuring one model file: which runtimes time it, each run in its own process (here or over ssh),
the row filled from the runner's record, the ratios against the baseline, and the run's estimated length."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clidep.bench import models
from clidep.bench.config import BenchConfig
from clidep.bench.models import ModelFile
from clidep.bench.projection import project
from clidep.errors import ClidepError, Unavailable
from clidep.hardware.devices import Profile
from clidep.hardware.transport import run_local, run_remote
from clidep.runtime.onnx_io import positions_beside
from clidep.runtime.record import check as check_record
from clidep.runtime.verify import graph_bytes

#: Longest run bench starts without --yes, by its estimate.
MAX_ESTIMATE_S = 2 * 3600


def ppl_ids_file(folder: Path, data: str, tokens: int, tmp: Path) -> Path:
    """A .npy in TMP of the first TOKENS + 1 tokens of DATA (0: all) in FOLDER's tokenizer: what the runner scores."""
    from tokenizers import Tokenizer

    from clidep.data import check_vocab, read_text

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    config = folder / "config.json"
    check_vocab(
        folder,
        tokenizer.get_vocab_size(),
        json.loads(config.read_text()).get("vocab_size") if config.is_file() else None,
    )
    ids = np.asarray(tokenizer.encode(read_text(data)[0]).ids, np.int64)
    path = tmp / f"{abs(hash(str(folder)))}.npy"
    np.save(path, ids[: tokens + 1] if tokens else ids)
    return path


def llama_cpp_provenance(c: BenchConfig) -> str | None:
    """llama.cpp's version and build commit where --runtime llamacpp runs here (a remote device's own build is
    in each of its rows' runner record)."""
    if "llamacpp" not in c.runtime or c.remote:
        return None
    from clidep.runtime import llama_bench, llamacpp

    try:
        return f"{llamacpp.VERSION} ({llama_bench.build_commit()})"
    except Unavailable:
        return None


def estimate_seconds(files: list[ModelFile], c: BenchConfig, threads: list[int], host: dict) -> float:
    """A rough duration of the run: per runner process, every decoded token reads the graph's bytes
    at half the host's bandwidth, and a prompt token costs an eighth of that (prompts run as one
    batch); times the processes (variants x runtimes x thread counts x memory runs)."""
    per = [graph_bytes(f.file) / (host["mem_bandwidth_gbs"] * 1e9 * 0.5) for f in files if not f.missing]
    decoded = len(c.depth) * (c.gen + 8)
    prompted = sum(c.prompt_lens) * 2 + sum(c.depth)  # each length once untimed, then per repetition
    per_process = sum(t * c.reps * (decoded + prompted / 8) for t in per)
    return per_process * len(threads) * len(c.runtime) * c.memory_runs


def check_duration(files: list[ModelFile], c: BenchConfig, threads: list[int], host: dict) -> None:
    seconds = estimate_seconds(files, c, threads, host)
    if seconds > MAX_ESTIMATE_S and not c.yes:
        raise ClidepError(
            f"this run is estimated at about {seconds / 3600:,.1f} hours ({c.reps} repetitions, "
            f"{len(threads)} thread count(s), --gen {c.gen}, depths {','.join(map(str, c.depth))}); pass --yes to run it anyway"
        )


def runtimes(c: BenchConfig, f: ModelFile, log) -> list[str]:
    """The runtimes F is measured with: clidep's runner, and ONNX Runtime GenAI where the export has
    a genai/ folder for it and onnxruntime-genai is installed (locally: --remote runs clidep's runner only)."""
    import importlib.util

    if f.gguf:
        return ["llamacpp"] if "llamacpp" in c.runtime else []
    if f.pte:
        return ["executorch"] if "executorch" in c.runtime else []
    out = [r for r in c.runtime if r == "clidep"]
    if "genai" in c.runtime and f.genai:
        if c.remote:
            log(f"{f.name} [{f.precision}]: ONNX Runtime GenAI is measured locally only; clidep's runner only")
        elif importlib.util.find_spec("onnxruntime_genai") is None:
            log("onnxruntime-genai is not installed (pip install 'clidep[genai]'): clidep's runner only")
        else:
            out.append("genai")
    return out


def measure_file(
    f: ModelFile, runtime: str, c: BenchConfig, threads: int, tmp: Path, ids_files: dict, timeout: int
) -> list[dict]:
    """The runner records of F (the first with perplexity when --ppl), MEMORY_RUNS of them."""
    gen, prompt_lens = c.gen, c.prompt_lens
    n_pos = (f.facts and f.facts.positions) or positions_beside(f.dir)
    if n_pos and max(prompt_lens) > n_pos:
        raise RuntimeError(f"prompt length {max(prompt_lens)} exceeds the model's {n_pos} positions")
    if n_pos and max(c.depth) + 8 + gen > n_pos:
        raise RuntimeError(
            f"decode after {max(c.depth)} tokens plus 8 + {gen} generated exceeds the model's {n_pos} positions"
        )
    target = f.genai if runtime == "genai" else f.file
    args = [
        str(target),
        "--runtime",
        runtime,
        "--prompt-lens",
        ",".join(map(str, prompt_lens)),
        "--gen",
        str(gen),
        "--threads",
        str(threads),
        "--depth",
        ",".join(map(str, c.depth)),
        "--reps",
        str(c.reps),
    ]
    send = [f.file, *f.file.parent.glob(f.file.name + ".data"), f.dir / "config.json"]
    ppl_args = []
    if c.ppl and (runtime == "clidep" or (runtime in ("llamacpp", "executorch") and not c.remote)):
        context = min(n_pos or 1024, 1024)
        if f.dir not in ids_files:
            ids_files[f.dir] = ppl_ids_file(f.dir, c.ppl_data, c.ppl_tokens, tmp)
        send.append(ids_files[f.dir])
        ppl_args = ["--ppl-ids", str(ids_files[f.dir]), "--context", str(context), "--stride", str(context // 2)]
    run = (
        (lambda a: run_remote(c.remote, a, send, timeout, c.ssh_config, c.remote_python))
        if c.remote
        else (lambda a: run_local(a, timeout))
    )
    # the others: no perplexity pass; every record checked against the one declared in runtime/record.py
    return [check_record(run(a)) for a in [args + ppl_args] + [args] * (c.memory_runs - 1)]


def fill(
    row: dict, runs: list[dict], f: ModelFile, device: Profile, host: dict, measured_there: bool, projected: bool
) -> None:
    """ROW from its runner records: median peak memory, roofline fraction, fit, and the projection."""
    rec = {**runs[0], "peak_rss_mb": float(np.median([r["peak_rss_mb"] for r in runs]))}
    row.update(rec, peak_rss_mb_samples=[r["peak_rss_mb"] for r in runs])
    weights, per_position, row["kv_cache"] = _bytes_read(f, rec)

    def read(past: int) -> int:  # bytes a decoded token reads after PAST tokens
        return weights + int(per_position * past)

    per_token = row["bytes_per_token"] = read(rec["decode_context"])
    # The same count at each timed depth (its past while timed: the depth plus what decode_context adds to the
    # first): the slowdown a device bound by its bandwidth alone would show from the first depth to the last.
    depths = list(rec.get("decode_ms_at") or {})
    if depths:
        extra = rec["decode_context"] - int(depths[0])
        row["bytes_per_token_at"] = {d: read(int(d) + extra) for d in depths}
    bw = device.mem_bandwidth_gbs if measured_there else host["mem_bandwidth_gbs"]
    # No roofline where the bandwidth is unknown (the host profile run on a remote device), nor under emulation.
    emulated = (rec.get("runner") or {}).get("emulated")
    row["roofline_fraction"] = per_token / (bw * 1e9) * 1e3 / rec["decode_ms_p50"] if bw and not emulated else None
    row["fits"] = rec["peak_rss_mb"] <= device.usable_ram_mb
    if projected:
        projected_figures = project(rec, host, device)
        row["host"] = {k: rec[k] for k in projected_figures}
        row.update(projected_figures)


def _bytes_read(f: ModelFile, rec: dict) -> tuple[int, float, str]:
    """(bytes of weights, bytes of KV cache per token of past, the cache's type) a decoded token of F reads.
    ONNX: the graph's weights and its cache inputs' type (export --kv) at its KV shapes; GGUF: the file (its
    header is a few hundred KB of vocabulary against MBs of weights) and llama.cpp's cache of the type llama-bench
    reports (f16 by default); ExecuTorch: the program (weights, a few KB of graph) and its fp32 static cache."""
    from clidep.runtime.onnx_io import kv_cache_bytes, kv_shapes_from_config

    shapes = kv_shapes_from_config(json.loads((f.dir / "config.json").read_text())) if f.gguf or f.pte else None
    if f.gguf:
        cache = rec["runner"]["llama_cpp"].get("type_k") or "f16"
        itemsize = {"f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32, "q4_0": 18 / 32}.get(cache, 2)
        return graph_bytes(f.file), kv_cache_bytes(shapes, 1, 1) * itemsize, cache
    if f.pte:
        return graph_bytes(f.file), kv_cache_bytes(shapes, 1, 4), "fp32"
    import onnx

    from clidep.runtime.runner import cache_precision_of

    graph = onnx.load(str(f.file), load_external_data=False)  # the weights' sizes and the cache's type
    weights, per_position, cache = models.weight_bytes(graph), models.kv_bytes(f, 1, graph), models.cache_type(graph)
    del graph
    return weights, per_position, cache_precision_of(cache)


def ratios(rows: list[dict]) -> None:
    """Each row against the baseline variant of the same precision (else the baseline's first)."""
    base = [r for r in rows if r["is_baseline"] and "error" not in r]
    for r in rows:
        if "error" in r or not base:
            continue
        key = ("precision", "runtime", "threads")
        b = next(
            (x for x in base if all(x.get(k) == r.get(k) for k in key)),
            next((x for x in base if x["precision"] == r["precision"]), base[0]),
        )
        r["vs_baseline"] = {
            "baseline": f"{b['name']} [{b['precision']}]",
            "decode_speedup": b["decode_ms_p50"] / r["decode_ms_p50"],
            "size_ratio": r["size_bytes"] / b["size_bytes"],
            "memory_ratio": r["peak_rss_mb"] / b["peak_rss_mb"],
            "ppl_ratio": r["ppl"] / b["ppl"] if r.get("ppl") and b.get("ppl") else None,
        }
