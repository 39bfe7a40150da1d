"""Device profiles and clidep bench: checked profiles, per-process measurement, projection, failures."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil

import pytest

from clidep.bench.measure import fill as _fill
from clidep.bench.models import ModelFile
from clidep.bench.report import markdown, write_report
from clidep.commands.bench import bench
from clidep.data import load_tokenizer, read_text, tokenize_text
from clidep.errors import ClidepError
from clidep.hardware import devices
from clidep.model.convert import load_model
from clidep.perplexity import perplexity, torch_logits_fn


def test_every_shipped_profile_loads_with_sources():
    names = devices.known()
    assert {"host", "raspberry-pi-4", "raspberry-pi-5", "pixel-7", "jetson-orin-nano", "laptop-2020"} <= set(names)
    for name in names:
        p = devices.load(name)
        if not p.measured:
            assert p.mem_bandwidth_gbs > 0 and p.fp32_gflops > 0 and p.threads <= p.cores
            assert all(p.sources.get(k) for k in ("cores", "ram_gb", "mem_bandwidth_gbs", "fp32_gflops"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.replace("mem_bandwidth_gbs = 10.0", 'mem_bandwidth_gbs = "fast"'),
            "field 'mem_bandwidth_gbs' must be a finite positive number",
        ),
        (
            lambda t: t.replace("mem_bandwidth_gbs = 10.0", "mem_bandwidth_gbs = nan"),
            "field 'mem_bandwidth_gbs' must be a finite positive number (got nan)",
        ),
        (
            lambda t: t.replace("fp32_gflops = ", "fp32_gflops = inf #", 1),
            "field 'fp32_gflops' must be a finite positive number (got inf)",
        ),
        (lambda t: t.replace("threads = 4\n", "threads = 9\n"), "field 'threads' (9) exceeds cores (4)"),
        (
            lambda t: t.replace('\nfp32_gflops = "theoretical', '\nx_fp32_gflops = "theoretical'),
            "field 'sources.fp32_gflops' is missing",
        ),
        (lambda t: t.replace("cores = 4\n", "cores = 4\nturbo = true\n"), "field 'turbo' is not a profile field"),
        (lambda t: t + "\n[[broken", "not valid TOML"),
    ],
)
def test_malformed_profile_is_refused_naming_the_field(edit, message, tmp_path):
    text = (devices._BUILTIN / "raspberry-pi-5.toml").read_text()
    bad = tmp_path / "mine.toml"
    bad.write_text(edit(text))
    with pytest.raises(ClidepError, match=message.replace("(", r"\(").replace(")", r"\)")):
        devices.load(str(bad))


def test_users_can_add_profiles(tmp_path, monkeypatch):
    shutil.copy(devices._BUILTIN / "raspberry-pi-5.toml", tmp_path / "my-board.toml")
    monkeypatch.setenv(devices.ENV_VAR, str(tmp_path))
    assert "my-board" in devices.known() and devices.load("my-board").name == "raspberry-pi-5"


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ClidepError, match="raspberry-pi-5"):
        devices.load("nokia-3310")


@pytest.fixture(scope="module")
def host_report(teacher_artifact):
    out, _ = teacher_artifact
    return bench(
        [str(out)],
        devices.load("host"),
        baseline=None,
        prompt_lens="16,64",
        gen=64,
        ppl=True,
        ppl_tokens=2048,
        runtime="clidep",
        log=lambda m: None,
    )  # ONNX Runtime GenAI: test_genai.py


def test_host_bench_measures_every_variant(host_report, teacher_artifact):
    out, manifest = teacher_artifact
    rows = host_report["models"]
    assert [r["precision"] for r in rows] == [v["precision"] for v in manifest["variants"]]
    assert not host_report["projected"]
    for r, v in zip(rows, manifest["variants"]):
        assert "error" not in r, r.get("error")
        for key in (
            "size_bytes",
            "load_s",
            "prefill_ms",
            "decode_ms_p50",
            "decode_ms_p90",
            "tokens_per_s",
            "peak_rss_mb",
            "fits",
            "ppl",
            "roofline_fraction",
        ):
            assert r[key] is not None, key
        assert set(r["prefill_ms"]) == {"16", "64"} and len(r["decode_ms_samples"]) == 5 * 64, (
            "5 repetitions by default"
        )
        assert r["decode_ms_p50"] <= r["decode_ms_p90"] and 0 < r["roofline_fraction"] <= 1.5
        # decode reads the weights (within the file, which also holds the graph) and the KV cache: the
        # teacher's 12 blocks x key and value x 256 wide a position, at the timed context, at the cache's
        # own width (the quantised files' int8 cache: 1 byte)
        kv = 12 * 2 * 256 * {"fp32": 4, "fp16": 2, "int8": 1}[v["kv_cache"]["precision"]] * r["decode_context"]
        assert 0.9 * r["size_bytes"] + kv <= r["bytes_per_token"] <= r["size_bytes"] + kv, (
            r["precision"],
            r["bytes_per_token"],
        )
        assert r["provenance"]["git_sha"] and r["provenance"]["onnxruntime"]


def test_onnx_perplexity_agrees_with_clidep_eval(host_report, teacher_dir):
    """bench --ppl and clidep eval share one protocol: the fp32 graph scores what PyTorch scores."""
    ids = tokenize_text(load_tokenizer(teacher_dir), read_text("wikitext-test")[0])[:2049]
    torch_ppl = perplexity(torch_logits_fn(load_model(teacher_dir)), ids, 512, 256, 4).ppl
    assert math.isclose(host_report["models"][0]["ppl"], torch_ppl, rel_tol=1e-4)


def test_projection_is_labelled_and_follows_the_stated_model(teacher_artifact, tmp_path):
    out, _ = teacher_artifact
    base = tmp_path / "base"
    shutil.copytree(out, base)
    # the mechanism, on the fp32 graph through clidep's runner (every variant and runtime: the host bench above)
    report = bench(
        [str(out / "model.onnx")],
        devices.load("raspberry-pi-4"),
        baseline=str(base / "model.onnx"),
        runtime="clidep",
        prompt_lens="16",
        gen=64,
        log=lambda m: None,
    )
    assert report["projected"] and "bandwidth" in report["projection"]
    for r in report["models"]:
        assert r["host"]["decode_ms_p50"] > 0 and r["vs_baseline"]["size_ratio"] == 1.0
    paths = write_report(report, tmp_path / "o")
    assert {p.name for p in paths} == {
        "bench.json",
        "bench.md",
        "bench.csv",
        "bench.jsonl",
        "decode_vs_ppl.png",
        "prefill.png",
    }
    md = (tmp_path / "o" / "bench.md").read_text()
    assert "projected for raspberry-pi-4" in md and "projected decode p50 ms" in md
    assert json.loads((tmp_path / "o" / "bench.json").read_text())["projected"] is True
    with (tmp_path / "o" / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["precision"]) for r in rows] == [(m["name"], m["precision"]) for m in report["models"]]
    for row, model in zip(rows, report["models"]):
        assert float(row["decode_ms_p50"]) == pytest.approx(model["decode_ms_p50"])
        assert float(row["prefill_ms_16"]) == pytest.approx(model["prefill_ms"]["16"])
        assert (row["device"], row["projected"], row["git_sha"]) == (
            "raspberry-pi-4",
            "True",
            model["provenance"]["git_sha"],
        )
    lines = (tmp_path / "o" / "bench.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == json.loads((tmp_path / "o" / "bench.json").read_text())["models"]


def test_projection_scales_decode_by_bandwidth_and_prefill_by_compute(teacher_artifact):
    """A device with a quarter of the host's bandwidth and half its compute: decode 4x, prefill 2x."""
    out, _ = teacher_artifact
    device = dataclasses.replace(
        devices.load("raspberry-pi-4"), mem_bandwidth_gbs=5.0, fp32_gflops=50.0, ram_gb=1.0, usable_ram_fraction=0.5
    )
    host = {"mem_bandwidth_gbs": 20.0, "fp32_gflops": 100.0}
    record = {
        "prefill_ms": {"16": 3.0},
        "prefill_ms_samples": {"16": [2.5, 3.0, 3.5]},
        "ttft_ms_samples": [3.0, 3.5],
        "load_s": 0.25,
        "ttft_ms": 3.5,
        "decode_ms_p50": 10.0,
        "decode_ms_p90": 12.0,
        "tokens_per_s": 100.0,
        "decode_ms_samples": [9.0, 10.0, 12.0],
        "decode_context": 16,
        "decode_ms_at": {"16": 10.0, "512": 11.0},
        "pp_tps": {"16": {"mean": 5000.0, "sd": 100.0, "samples": [4900.0, 5100.0]}},
        "tg_tps": {"16": {"mean": 100.0, "sd": 4.0, "samples": [96.0, 104.0]}},
    }
    row = {}
    _fill(
        row,
        [{**record, "peak_rss_mb": m} for m in (600.0, 400.0, 500.0)],
        ModelFile("teacher", "fp32", out / "model.onnx", out),
        device,
        host,
        measured_there=False,
        projected=True,
    )
    assert (row["decode_ms_p50"], row["decode_ms_p90"], row["tokens_per_s"]) == (40.0, 48.0, 25.0)
    assert row["decode_ms_samples"] == [36.0, 40.0, 48.0] and row["prefill_ms"] == {"16": 6.0}
    assert row["decode_ms_at"] == {"16": 40.0, "512": 44.0} and row["ttft_ms"] == 7.0
    assert row["pp_tps"]["16"] == {"mean": 2500.0, "sd": 50.0, "samples": [2450.0, 2550.0]}, "compute: half as fast"
    assert row["tg_tps"]["16"] == {"mean": 25.0, "sd": 1.0, "samples": [24.0, 26.0]}, "bandwidth: a quarter"
    assert row["host"]["decode_ms_p50"] == 10.0, "the host's own figures kept beside the projection"
    assert row["host"]["tg_tps"]["16"]["mean"] == 100.0
    assert row["peak_rss_mb"] == 500.0 and row["fits"], "median of the runs, against 512 MB usable"
    assert row["prefill_ms_samples"] == {"16": [5.0, 6.0, 7.0]} and row["ttft_ms_samples"] == [6.0, 7.0], (
        "the samples are projected with their medians, not left as the host's"
    )
    assert row["host"]["ttft_ms_samples"] == [3.0, 3.5] and row["load_s"] == 0.25, "loading stays the host's"


def test_a_timing_the_projection_does_not_know_is_an_error():
    from clidep.bench.projection import project

    device = devices.load("raspberry-pi-4")
    host = {"mem_bandwidth_gbs": 20.0, "fp32_gflops": 100.0}
    assert project({"decode_ms_p50": 10.0, "peak_rss_mb": 5.0, "reps": 3}, host, device)["decode_ms_p50"] > 10.0
    with pytest.raises(ValueError, match="knows no field prefill_ms_p90: declare it in clidep/runtime/record.py"):
        project({"decode_ms_p50": 10.0, "prefill_ms_p90": 3.0}, host, device)


def test_a_runner_record_of_another_shape_is_refused():
    """bench checks each runner record against the one declared: a runner of another version is a failed row."""
    from clidep.runtime.record import FIELDS, check

    full = {k: None for k in FIELDS}
    assert check(full) is full
    with pytest.raises(ValueError, match="missing ttft_ms_samples; undeclared ttft_ms_p90"):
        check({**{k: v for k, v in full.items() if k != "ttft_ms_samples"}, "ttft_ms_p90": 1.0})


def test_a_failing_model_does_not_stop_the_others(teacher_artifact, tmp_path):
    """A variant whose file is missing is that variant's failed row; the export's others are measured."""
    out, _ = teacher_artifact
    partial = tmp_path / "partial"
    shutil.copytree(out, partial, copy_function=os.link)  # hard links: no copy of 100 MB
    (partial / "model.int8.onnx").unlink()
    report = bench(
        [str(partial)],
        devices.load("host"),
        prompt_lens="16",
        depth="16",
        gen=64,
        reps=1,
        runtime="clidep",
        log=lambda m: None,
    )
    rows = {r["precision"]: r for r in report["models"]}
    assert "model.int8.onnx is missing from the export" in rows["int8-weight-only"]["error"]
    assert all("error" not in r and r["decode_ms_p50"] > 0 for p, r in rows.items() if p != "int8-weight-only")
    assert len(rows) == 4 and "failed:" in markdown(report)


def test_a_corrupt_graph_is_refused_before_anything_is_measured(teacher_artifact, tmp_path):
    out, _ = teacher_artifact
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "model.onnx").write_text("not a graph")
    shutil.copy(out / "config.json", bogus / "config.json")
    said = []
    with pytest.raises(ClidepError, match="^not an ONNX model: '.*model.onnx'"):
        bench(
            [str(out / "model.int8.onnx"), str(bogus / "model.onnx")],
            devices.load("host"),
            prompt_lens="16",
            gen=64,
            log=said.append,
        )
    assert not any("threads] ..." in m for m in said), "nothing was measured"


def test_prompt_beyond_positions_fails_that_model(teacher_artifact):
    out, _ = teacher_artifact
    report = bench([str(out / "model.onnx")], devices.load("host"), prompt_lens="1024", gen=64, log=lambda m: None)
    assert "exceeds the model's 512 positions" in report["models"][0]["error"]
    report = bench(
        [str(out / "model.onnx")], devices.load("host"), prompt_lens="16", depth="32,480", gen=64, log=lambda m: None
    )
    assert (
        "decode after 480 tokens plus 8 + 64 generated exceeds the model's 512 positions"
        in report["models"][0]["error"]
    )


def test_decode_is_timed_after_each_prompt_length(teacher_artifact):
    out, _ = teacher_artifact
    report = bench(
        [str(out / "model.int8.onnx")],
        devices.load("host"),
        prompt_lens="16",
        depth="16,256",
        gen=64,
        log=lambda m: None,
    )
    row = report["models"][0]
    assert set(row["decode_ms_at"]) == {"16", "256"} and row["decode_ms_at"]["16"] == row["decode_ms_p50"]
    assert "decode @256 ms" in markdown(report)
    # the bytes a token reads at each depth: the first depth's are the record's, and 240 more tokens of past add
    # the teacher's 12 blocks x key and value x 256 wide of int8 cache a token
    at = row["bytes_per_token_at"]
    assert at["16"] == row["bytes_per_token"] and at["256"] - at["16"] == 240 * 12 * 2 * 256


def test_repetitions_and_a_thread_sweep_in_llama_bench_terms(teacher_artifact, tmp_path):
    """--reps 3 --threads 1,2: a row per thread count, ppN and tgGEN in tokens/s as mean ± sd over
    three repetitions with every sample kept, in every format."""
    out, _ = teacher_artifact
    report = bench(
        [str(out / "model.int8.onnx")],
        devices.load("host"),
        prompt_lens="16,64",
        depth="16,128",
        gen=64,
        reps=3,
        threads="1,2",
        runtime="clidep",  # the file is the export's int8 variant: ONNX Runtime GenAI would add its own rows
        log=lambda m: None,
    )
    rows = report["models"]
    assert [r["threads"] for r in rows] == [1, 2] and report["provenance"]["threads"] == "1,2"
    for r in rows:
        assert "error" not in r, r.get("error")
        assert set(r["pp_tps"]) == {"16", "64"} and set(r["tg_tps"]) == {"16", "128"}
        for spread in [*r["pp_tps"].values(), *r["tg_tps"].values()]:
            assert len(spread["samples"]) == 3 and min(spread["samples"]) <= spread["mean"] <= max(spread["samples"])
            assert spread["sd"] > 0, "three timed repetitions never agree to the nanosecond"
        assert len(r["decode_ms_samples"]) == 3 * 64 and len(r["ttft_ms_samples"]) == 3
        # tokens/s and ms describe the same steps: each repetition's 64 tokens over their summed time
        steps = r["decode_ms_samples"]
        assert r["tg_tps"]["16"]["samples"] == pytest.approx(
            [64e3 / sum(steps[i * 64 : (i + 1) * 64]) for i in range(3)]
        )
        assert r["pp_tps"]["64"]["samples"] == pytest.approx([64e3 / ms for ms in r["prefill_ms_samples"]["64"]])
    write_report(report, tmp_path / "o")
    md = (tmp_path / "o" / "bench.md").read_text()
    assert "| pp64 t/s |" in md and "| tg64 @d128 t/s |" in md and " ± " in md
    with (tmp_path / "o" / "bench.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [int(t["threads"]) for t in table] == [1, 2]
    assert float(table[0]["tg_tps_16_sd"]) == pytest.approx(rows[0]["tg_tps"]["16"]["sd"])
    assert float(table[1]["pp_tps_64_mean"]) == pytest.approx(rows[1]["pp_tps"]["64"]["mean"])


def test_peak_memory_is_the_median_of_several_runner_processes(teacher_artifact):
    out, _ = teacher_artifact
    report = bench(
        [str(out / "model.onnx")], devices.load("host"), prompt_lens="16", gen=64, memory_runs=3, log=lambda m: None
    )
    row = report["models"][0]
    samples = row["peak_rss_mb_samples"]
    assert len(samples) == 3 and min(samples) <= row["peak_rss_mb"] <= max(samples)
    assert min(samples) > row["size_bytes"] / 2**20  # each a real process holding the model
    with pytest.raises(ClidepError, match="--memory-runs must be at least 1"):
        bench([str(out / "model.onnx")], devices.load("host"), memory_runs=0, log=lambda m: None)


def test_ppl_against_a_baseline_reports_how_far_each_file_answers_from_it(teacher_artifact, tmp_path):
    """--ppl --baseline: beside its perplexity each file gets its KL divergence from the baseline's fp32 graph and
    its top-1 agreement on the same tokens, the figures clidep eval --reference gives; the same graph against
    itself diverges by nothing but the 16-bit rounding of the kept baseline rows (2.5e-9 here; the fp32 target
    is 1e-6), the int4 file measurably."""
    from clidep.bench.report import markdown
    from clidep.commands.eval import compare

    out, _ = teacher_artifact
    base = tmp_path / "base"
    shutil.copytree(out, base)
    report = bench(
        [str(out / "model.onnx"), str(out / "model.int4.onnx")],
        devices.load("host"),
        baseline=str(base / "model.onnx"),
        runtime="clidep",
        prompt_lens="16",
        gen=64,
        reps=1,
        memory_runs=1,
        ppl=True,
        ppl_tokens=1024,
        log=lambda m: None,
    )
    rows = {os.path.basename(r["file"]): r for r in report["models"] if not r["is_baseline"]}
    same, int4 = rows["model.onnx"]["vs_baseline"], rows["model.int4.onnx"]["vs_baseline"]
    assert same["kld_mean"] < 1e-7 and same["top1"] == 1.0
    eval_says = compare(out / "model.int4.onnx", base, max_tokens=1024)
    assert int4["kld_mean"] == pytest.approx(eval_says["kld_mean"], rel=1e-6) and int4["kld_mean"] > 1e-4
    assert int4["top1"] == eval_says["top1"] < 1
    assert "| KLD vs baseline | top-1 vs baseline |" in markdown(report)


def test_a_file_of_an_export_is_measured_as_that_variant(teacher_artifact, tmp_path):
    """bench EXPORT/model.int4.onnx measures that one file as the export's int4 variant (its precision, checked
    against the manifest: a changed file is refused), not as a foreign graph of precision "unknown"; a graph
    copied out of its export is foreign again."""
    from clidep.bench.models import model_files

    out, manifest = teacher_artifact
    int4 = next(v for v in manifest["variants"] if v["file"] == "model.int4.onnx")
    (row,) = model_files([str(out / "model.int4.onnx")], log=lambda m: None)
    assert (row.name, row.precision, row.file) == (out.name, int4["precision"], out / "model.int4.onnx")
    assert row.facts is not None and row.facts.model_kv_shapes  # the export's own record of its graph
    copy = tmp_path / "alone"
    copy.mkdir()
    shutil.copy(out / "model.int4.onnx", copy / "model.int4.onnx")
    (foreign,) = model_files([str(copy / "model.int4.onnx")], log=lambda m: None)
    assert foreign.precision == "unknown"
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    with open(tampered / "model.int4.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ClidepError, match="model.int4.onnx"):
        model_files([str(tampered / "model.int4.onnx")], log=lambda m: None)
