"""``clidep bench``: latency, memory and perplexity of ONNX models on a device profile.

Each model variant runs in its own process (``clidep.runtime.benchrun``: numpy + onnxruntime only).
On ``host`` every figure is measured. On any other profile the host measurement is
**projected** with a stated model, and labelled so everywhere:

* decode is bound by memory bandwidth: device ms/token = host ms/token x host GB/s / device GB/s
  (the same fraction of the bandwidth roofline as measured on the host);
* prefill is bound by arithmetic: device ms = host ms x host fp32 GFLOP/s / device fp32 GFLOP/s
  (the int8/int4 speed-ups measured on the host are assumed to carry over);
* a model fits when its peak resident memory is within the device's usable RAM.

With ``--remote USER@HOST`` the runner and the models are copied over ssh and run on the device:
measured, not projected. This module finds and checks the variants and runs the loop over rows;
the projection is ``projection.py``, where a runner runs ``transport.py``, the host probe
``host.py``, and what is written ``outputs.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from clidep.bench.config import BenchConfig
from clidep.bench.projection import project
from clidep.bench.provenance import provenance as run_provenance
from clidep.errors import ClidepError, Unavailable
from clidep.files import non_finite
from clidep.hardware.devices import Profile
from clidep.hardware.host import measure_host
from clidep.hardware.transport import check_remote, run_local, run_remote
from clidep.options import resolve
from clidep.progress import say
from clidep.runtime.onnx_io import positions_beside
from clidep.runtime.record import check as check_record
from clidep.runtime.verify import graph_bytes, reason

PROJECTION = (
    "decode ms/token = host ms/token x host GB/s / device GB/s (the host's fraction of the bandwidth "
    "roofline); prefill ms = host ms x host fp32 GFLOP/s / device fp32 GFLOP/s (the int8/int4 speed-ups "
    "measured on the host assumed to carry over); fits = peak RSS <= the device's usable RAM"
)


def model_files(specs: list[str], log=print) -> list[dict]:
    """(name, precision, file, folder, genai folder, graph facts) of every variant: an export directory
    gives all its variants, each checked against its manifest first (a changed file is refused; a
    missing one becomes that variant's failed row); an .onnx file or a folder without a manifest runs
    as a foreign graph, said once."""
    from clidep.runtime import verify

    out = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and (path / verify.MANIFEST).exists():
            manifest = verify.load_manifest(path)
            genai = manifest.get("genai") or {}
            for v in manifest["variants"]:
                row = _checked_row(path, v, v["precision"])
                if "missing" in row:
                    out.append(row)
                    continue
                folder = path / genai[v["precision"]] if v["precision"] in genai else None
                if folder is not None and (folder / v["file"]).is_file():
                    verify.check_variant(path, v, graph=folder / v["file"])  # its own copy, or a hard link
                    row["genai"] = folder
                row["facts"] = verify.graph_facts(row["file"], v, manifest)
                verify.check_config(path, row["facts"])
                out.append(row)
            out += _gguf_files(path, manifest)
        elif path.is_file() or (path / "model.onnx").is_file():  # a graph, or a folder holding one, run as it is
            graph = path / "model.onnx" if path.is_dir() else path
            out.append(
                {
                    "name": path.name if path.is_dir() else f"{path.parent.name}/{path.name}",
                    "precision": "unknown",
                    "file": graph,
                    "dir": graph.parent,
                    "genai": None,
                    "facts": verify.checked_graph(graph, log),
                }
            )
        elif path.is_dir():
            raise ClidepError(
                f"'{spec}' is not a clidep export (no manifest.json, no model.onnx); run clidep export first"
            )
        else:
            raise ClidepError(f"no model at '{spec}': give an export directory or an .onnx file")
    return out


def _gguf_files(path: Path, manifest: dict) -> list[dict]:
    """The GGUF files of an export (export --gguf), each checked against its manifest entry like a graph:
    rows for the llamacpp runtime only."""
    gguf = manifest.get("gguf") or {}
    return [
        _checked_row(path, {**g, "file": f"{gguf['folder']}/{g['file']}"}, g["type"], gguf=True)
        for g in gguf.get("files", [])
    ]


def _checked_row(path: Path, entry: dict, precision: str, **extra) -> dict:
    """The row of the export PATH's file ENTRY (a manifest record), checked against it (a changed file is
    refused); a missing file becomes the row's "missing"."""
    from clidep.runtime import verify

    row = {
        "name": path.name,
        "precision": precision,
        "file": path / entry["file"],
        "dir": path,
        "genai": None,
        "facts": None,
        **extra,
    }
    try:
        verify.check_variant(path, entry)
    except FileNotFoundError as exc:
        row["missing"] = f"{exc.filename} is missing from the export"
    return row


def weight_bytes(graph) -> int:
    """Bytes of GRAPH's weights (a ModelProto loaded without its external data; external data counted):
    what decode reads per token."""
    import onnx

    total = 0
    for init in graph.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            total += int(next(e.value for e in init.external_data if e.key == "length"))
        else:
            total += len(init.raw_data) or init.ByteSize()
    return total


def kv_bytes(f: dict, context: int, graph) -> int:
    """Bytes of KV cache read per decoded token at CONTEXT tokens of past, at the cache precision of GRAPH
    (F's file, loaded once for this and weight_bytes; its past inputs' type: export --kv): the graph's own
    KV shapes, else (a foreign graph) config.json's."""
    from clidep.runtime.onnx_io import kv_cache_bytes, kv_shapes_from_config

    facts = f.get("facts")
    shapes = (facts and facts.kv_shapes) or kv_shapes_from_config(json.loads((f["dir"] / "config.json").read_text()))
    return kv_cache_bytes(shapes, context, _cache_type(graph).itemsize)


def _cache_type(graph):
    """The numpy type of GRAPH's KV cache (its first past input's element type)."""
    import onnx

    past = next(i for i in graph.graph.input if i.name.startswith("past_key_values"))
    return onnx.helper.tensor_dtype_to_np_dtype(past.type.tensor_type.elem_type)


def _ppl_ids_file(folder: Path, data: str, tokens: int, tmp: Path) -> Path:
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


def bench(
    models: list[str], device: Profile, config: BenchConfig | None = None, *, timeout: int = 1800, log=print, **options
) -> dict:
    """Benchmark every variant of MODELS (and BASELINE) on DEVICE; returns the report (see write_report).

    Latencies come from the first runner process of each variant; peak memory is the median over
    MEMORY_RUNS processes running the same protocol (``peak_rss_mb_samples`` keeps each one).
    """
    import contextlib

    from clidep.locks import read_lock

    c = resolve(BenchConfig, config, options)
    specs = models + ([c.baseline] if c.baseline else [])
    with contextlib.ExitStack() as held:  # no export is replaced while it is measured
        for folder in dict.fromkeys(Path(s) if Path(s).is_dir() else Path(s).parent for s in specs):
            held.enter_context(read_lock(folder))
        return _bench(model_files(specs, log), device, c, timeout, log)


# Over a screen: the run's provenance and the loop over rows, each row's failure kept as its row.
def _bench(files: list[dict], device: Profile, c: BenchConfig, timeout: int, log) -> dict:
    import onnxruntime

    baseline, remote = c.baseline, c.remote
    if remote:
        check_remote(remote, c.ssh_config, c.remote_python)
    host = measure_host()
    projected = not device.measured and not remote
    sweep = c.thread_counts or [
        min(device.threads, host["cores"]) if projected else device.threads if remote else host["cores"]
    ]
    _check_duration(files, c, sweep, host)
    provenance = {
        **run_provenance(),
        "device": device.name,
        "device_file": device.path,
        "projected": projected,
        "remote": remote,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "threads": ",".join(map(str, sweep)),
        "reps": c.reps,
        "llama_cpp": _llama_cpp_provenance(c),
    }
    rows = []
    ids_files: dict[Path, Path] = {}  # one tokenisation per export directory, shared by its variants
    with tempfile.TemporaryDirectory() as tmp:
        for f, runtime, threads in [(v, rt, n) for v in files for rt in _runtimes(c, v, log) for n in sweep]:
            row = {
                "name": f["name"],
                "precision": f["precision"],
                "runtime": runtime,
                "threads": threads,
                "file": str(f["file"]),
                "size_bytes": graph_bytes(f["file"]),
                "is_baseline": bool(baseline) and Path(baseline) in (f["dir"], f["file"]),
            }
            try:
                log(f"{f['name']} [{f['precision']}, {runtime}, {threads} threads] ...")
                if "missing" in f:
                    raise FileNotFoundError(2, f["missing"])
                runs = _measure(f, runtime, c, threads, Path(tmp), ids_files, timeout)
                _fill(row, runs, f, device, host, measured_there=bool(remote), projected=projected)
                bad = non_finite(row)
                if bad:
                    raise ValueError(f"a figure is not finite ({bad}); the device profile or the runner is off")
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
                row = {
                    k: row[k] for k in ("name", "precision", "runtime", "threads", "file", "size_bytes", "is_baseline")
                }
                row["error"] = (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or reason(exc)
                log(f"  failed: {row['error']}")
            row["provenance"] = provenance
            rows.append(row)
    _ratios(rows)
    # An emulated runner (qemu-user: an aarch64 Python on an x86 kernel) checks what runs, not how fast.
    provenance["emulated"] = next(
        (r["runner"]["emulated"] for r in rows if (r.get("runner") or {}).get("emulated")), None
    )
    return {
        "device": device.name,
        "projected": projected,
        "projection": PROJECTION if projected else None,
        "device_profile": {k: v for k, v in vars(device).items()},
        "host_measured": host,
        "provenance": provenance,
        "models": rows,
    }


def _llama_cpp_provenance(c: BenchConfig) -> str | None:
    """llama.cpp's version and build commit where --runtime llamacpp runs here (a remote device's own build is
    in each of its rows' runner record)."""
    if "llamacpp" not in c.runtimes or c.remote:
        return None
    from clidep.runtime import llamacpp

    try:
        return f"{llamacpp.VERSION} ({llamacpp.build_commit()})"
    except Unavailable:
        return None


#: Longest run bench starts without --yes, by its estimate.
MAX_ESTIMATE_S = 2 * 3600


def estimate_seconds(files: list[dict], c: BenchConfig, threads: list[int], host: dict) -> float:
    """A rough duration of the run: per runner process, every decoded token reads the graph's bytes
    at half the host's bandwidth, and a prompt token costs an eighth of that (prompts run as one
    batch); times the processes (variants x runtimes x thread counts x memory runs)."""
    per = [graph_bytes(f["file"]) / (host["mem_bandwidth_gbs"] * 1e9 * 0.5) for f in files if "missing" not in f]
    decoded = len(c.depths) * (c.gen + 8)
    prompted = sum(c.lengths) * 2 + sum(c.depths)  # each length once untimed, then per repetition
    per_process = sum(t * c.reps * (decoded + prompted / 8) for t in per)
    return per_process * len(threads) * len(c.runtimes) * c.memory_runs


def _check_duration(files: list[dict], c: BenchConfig, threads: list[int], host: dict) -> None:
    seconds = estimate_seconds(files, c, threads, host)
    if seconds > MAX_ESTIMATE_S and not c.yes:
        raise ClidepError(
            f"this run is estimated at about {seconds / 3600:,.1f} hours ({c.reps} repetitions, "
            f"{len(threads)} thread count(s), --gen {c.gen}, depths {c.depth}); pass --yes to run it anyway"
        )


def _runtimes(c: BenchConfig, f: dict, log) -> list[str]:
    """The runtimes F is measured with: clidep's runner, and ONNX Runtime GenAI where the export has
    a genai/ folder for it and onnxruntime-genai is installed (locally: --remote runs clidep's runner only)."""
    import importlib.util

    if f.get("gguf"):
        return ["llamacpp"] if "llamacpp" in c.runtimes else []
    out = [r for r in c.runtimes if r == "clidep"]
    if "genai" in c.runtimes and f.get("genai"):
        if c.remote:
            log(f"{f['name']} [{f['precision']}]: ONNX Runtime GenAI is measured locally only; clidep's runner only")
        elif importlib.util.find_spec("onnxruntime_genai") is None:
            log("onnxruntime-genai is not installed (pip install 'clidep[genai]'): clidep's runner only")
        else:
            out.append("genai")
    return out


def _measure(
    f: dict, runtime: str, c: BenchConfig, threads: int, tmp: Path, ids_files: dict, timeout: int
) -> list[dict]:
    """The runner records of F (the first with perplexity when --ppl), MEMORY_RUNS of them."""
    gen, prompt_lens = c.gen, c.lengths
    n_pos = (f["facts"] and f["facts"].positions) or positions_beside(f["dir"])
    if n_pos and max(prompt_lens) > n_pos:
        raise RuntimeError(f"prompt length {max(prompt_lens)} exceeds the model's {n_pos} positions")
    if n_pos and max(c.depths) + 8 + gen > n_pos:
        raise RuntimeError(
            f"decode after {max(c.depths)} tokens plus 8 + {gen} generated exceeds the model's {n_pos} positions"
        )
    target = f["genai"] if runtime == "genai" else f["file"]
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
        ",".join(map(str, c.depths)),
        "--reps",
        str(c.reps),
    ]
    send = [f["file"], *f["file"].parent.glob(f["file"].name + ".data"), f["dir"] / "config.json"]
    ppl_args = []
    if c.ppl and (runtime == "clidep" or (runtime == "llamacpp" and not c.remote)):
        context = min(n_pos or 1024, 1024)
        if f["dir"] not in ids_files:
            ids_files[f["dir"]] = _ppl_ids_file(f["dir"], c.ppl_data, c.ppl_tokens, tmp)
        send.append(ids_files[f["dir"]])
        ppl_args = ["--ppl-ids", str(ids_files[f["dir"]]), "--context", str(context), "--stride", str(context // 2)]
    run = (
        (lambda a: run_remote(c.remote, a, send, timeout, c.ssh_config, c.remote_python))
        if c.remote
        else (lambda a: run_local(a, timeout))
    )
    # the others: no perplexity pass; every record checked against the one declared in runtime/record.py
    return [check_record(run(a)) for a in [args + ppl_args] + [args] * (c.memory_runs - 1)]


def _fill(
    row: dict, runs: list[dict], f: dict, device: Profile, host: dict, measured_there: bool, projected: bool
) -> None:
    """ROW from its runner records: median peak memory, roofline fraction, fit, and the projection."""
    rec = {**runs[0], "peak_rss_mb": float(np.median([r["peak_rss_mb"] for r in runs]))}
    row.update(rec, peak_rss_mb_samples=[r["peak_rss_mb"] for r in runs])
    if f.get("gguf"):
        per_token, row["kv_cache"] = _gguf_bytes_per_token(f, rec)
    else:
        import onnx

        from clidep.runtime.runner import cache_precision_of

        graph = onnx.load(str(f["file"]), load_external_data=False)  # the weights' sizes and the cache's type
        per_token = weight_bytes(graph) + kv_bytes(f, rec["decode_context"], graph)
        row["kv_cache"] = cache_precision_of(_cache_type(graph))
        del graph
    row["bytes_per_token"] = per_token
    bw = device.mem_bandwidth_gbs if measured_there else host["mem_bandwidth_gbs"]
    # No roofline where the bandwidth is unknown (the host profile run on a remote device), nor under emulation.
    emulated = (rec.get("runner") or {}).get("emulated")
    row["roofline_fraction"] = per_token / (bw * 1e9) * 1e3 / rec["decode_ms_p50"] if bw and not emulated else None
    row["fits"] = rec["peak_rss_mb"] <= device.usable_ram_mb
    if projected:
        projected_figures = project(rec, host, device)
        row["host"] = {k: rec[k] for k in projected_figures}
        row.update(projected_figures)


def _gguf_bytes_per_token(f: dict, rec: dict) -> tuple[int, str]:
    """(bytes a decoded token reads, the cache's type) of a GGUF row: the file (its header is a few hundred KB of
    vocabulary against MBs of weights) and llama.cpp's cache of the type llama-bench reports, at the export's
    KV shapes (config.json)."""
    from clidep.runtime.onnx_io import kv_cache_bytes, kv_shapes_from_config

    cache = rec["runner"]["llama_cpp"].get("type_k") or "f16"
    itemsize = {"f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32, "q4_0": 18 / 32}.get(cache, 2)
    shapes = kv_shapes_from_config(json.loads((f["dir"] / "config.json").read_text()))
    return graph_bytes(f["file"]) + int(kv_cache_bytes(shapes, rec["decode_context"], 1) * itemsize), cache


def _ratios(rows: list[dict]) -> None:
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


def command(
    models: Annotated[list[str], typer.Argument(help="Export directories (every variant) or .onnx files.")],
    device: Annotated[str, typer.Option(help="Device profile: a name from `clidep devices` or a .toml file.")],
    out: Annotated[
        Path, typer.Option(help="Directory for bench.json, bench.md, bench.csv, bench.jsonl and the plots.")
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT (once the new report is complete).")
    ] = False,
    *,
    options,
) -> None:
    """Measure each model as llama-bench does, each in its own process: prompt processing (ppN) and
    generation after each context depth (tgGEN) in tokens/s, mean ± sd over --reps, per --threads;
    time to first token, per-token decode p50/p90, load time, peak memory and perplexity. On a
    profile other than host, latencies are projected (and labelled so)."""
    from clidep.bench.outputs import markdown, write_report
    from clidep.files import check_output, write_dir
    from clidep.hardware import devices as profiles
    from clidep.locks import write_lock

    with write_lock(out, log=say):
        check_output(out, [*models, options.baseline], overwrite=overwrite)
        report = bench(models, profiles.load(device), options, log=say)
        if all("error" in r for r in report["models"]):
            print(markdown(report))
            raise ClidepError(f"every model failed (see the table above); {out} was left as it was")
        names = [p.name for p in write_dir(out, lambda tmp: write_report(report, tmp))]
    print("wrote " + ", ".join(str(out / n) for n in names), file=sys.stderr)
    print(markdown(report))  # after the files: a reader that quits early (`| head`) costs no result
