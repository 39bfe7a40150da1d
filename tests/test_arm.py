"""Exports on ARM: every precision of a CLI student's ONNX Runtime graph and a uniform student's plain graph, run
by ONNX Runtime's aarch64 build on emulated Cortex-A76 (dot product) and Cortex-A72 (none) cores, against the
same files on this host.

The environment is scripts/arm64-env.sh's (scripts/setup.sh builds it); without it these
tests fail, naming the script.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clidep.commands.demo import EMBEDDED
from clidep.errors import ClidepError
from clidep.export import arm
from clidep.export.arm import CORES, FP32_ATOL
from clidep.export.config import AGREEMENT_GATES, MIN_GATE_TOKENS, PPL_GATES
from clidep.runtime.manifest import Manifest

PPL = dict(
    ppl_data="python-docs-valid", ppl_tokens=MIN_GATE_TOKENS
)  # the fewest a gate takes: fp16 runs emulated at ~35 ms a token


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    """{name: (folder, manifest)}: the ONNX Runtime graph (fp32, int8, int4, fp16) of a CLI student (per-block
    heads of 36, padded to 40 in the graph) and the plain graph (fp32, int8) of a uniform one of its size, each
    exported with --check-arm: every precision and both graph kinds once (each export is checked on two
    emulated cores, the suite's costliest step)."""
    from clidep.commands.compress import compress
    from clidep.commands.export import export_artifact

    root = tmp_path_factory.mktemp("arm")
    common = dict(data="python-docs", steps=2, batch_size=8, seq_len=64, eval_every=0, log=lambda m: None)
    compress(str(EMBEDDED), root / "cli", method="cli", ratio=2.0, protect="0,7", **common)
    compress(str(EMBEDDED), root / "uniform", method="uniform", match=str(root / "cli"), **common)
    out = {}
    for student, kind, options in (
        ("cli", "ort", dict(int8=True, int4=True, fp16=True)),
        ("uniform", "plain", dict(plain_onnx=True, int8=True)),
    ):
        folder = root / f"{student}-{kind}"
        out[f"{student}-{kind}"] = (
            folder,
            export_artifact(root / student, folder, check_arm=True, **options, **PPL).to_dict(),
        )
    return out


def test_every_precision_and_graph_kind_runs_on_both_arm_cores_within_its_gates(students):
    import onnxruntime

    for name, (folder, manifest) in students.items():
        record = manifest["aarch64"]
        assert record == json.loads((folder / "manifest.json").read_text())["aarch64"]
        assert manifest["measured_on"]["machine"] == record["host"]["machine"] == "x86_64"
        assert record["emulator"] == "qemu-user on x86_64" and list(record["cores"]) == list(CORES)
        files = {v["file"]: v for v in manifest["variants"]}
        assert len(files) == (4 if name.endswith("ort") else 2)
        for core, c in record["cores"].items():
            machine = c["machine"]
            assert (machine["machine"], machine["cpu"], machine["emulated"]) == ("aarch64", core, "qemu-user on x86_64")
            assert machine["onnxruntime"] == onnxruntime.__version__ and machine["numpy"] == np.__version__
            assert set(c["variants"]) == set(files)
            for file, f in c["variants"].items():
                kind = files[file]["precision"][:4]
                assert not f["gate_misses"], (name, core, file, f["gate_misses"])
                if kind == "fp32":  # x86's numbers
                    assert f["max_abs_logit_diff"] <= FP32_ATOL and f["greedy_match"] and f["argmax_agreement"] == 1
                else:
                    assert f["ppl_delta"] <= PPL_GATES[kind] and f["fp32_agreement"] >= AGREEMENT_GATES.get(kind, 0)
                    # ARM's kernels compute the same function with other rounding: they flip near-ties only
                    assert f["argmax_agreement"] >= 0.9 and f["flip_max_margin"] < 0.5, (name, core, file, f)
                # ONNX Runtime GenAI on aarch64 continues as clidep's runner does there (a quantised file's free-running
                # continuation may leave x86's at a flipped near-tie, and then the two runtimes leave it together)
                assert f["genai_matches_runner"] and f["genai_greedy_match"] == f["greedy_match"], (name, core, file)


def test_the_cli_student_keeps_its_padded_heads_on_arm(students):
    _, manifest = students["cli-ort"]
    assert [h for _, h in manifest["kv_shapes"]][1] == 36
    assert [h for _, h in manifest["variants"][0]["graph_kv_shapes"]][1] == 40


def _probe_results(folder, perturb):
    """run_probes' answer for FOLDER's variants: the host's own probe for the host and for each core,
    with PERTURB(name, figures) applied to the cores' copies."""
    from clidep.data import load_tokenizer, read_text, tokenize_text
    from clidep.runtime import probe

    def fake(jobs, inputs, context, stride, log):
        spec_inputs = {k: np.asarray(v) for k, v in inputs.items()}
        host = {}
        for job in jobs:
            if job["kind"] == "runner":
                figures = probe.run_graph(job["path"], spec_inputs, context, stride, arm.GREEDY_TOKENS)
                host.update({f"{job['name']}::{k}": v for k, v in figures.items()})
        machine = {"machine": "aarch64", "cpu": "cortex-a76", "emulated": "qemu-user on x86_64"}
        return {
            "host": (host, {"machine": "x86_64"}),
            **{core: (perturb(dict(host)), {**machine, "cpu": core}) for core in CORES},
        }

    tokenizer = load_tokenizer(folder)
    ids = tokenize_text(tokenizer, read_text("python-docs-valid")[0])[:129]
    return fake, ids


def test_a_variant_that_misses_its_gate_on_arm_is_refused_naming_file_core_and_figure(students, monkeypatch):
    folder, manifest = students["uniform-plain"]

    def worse_int8(figures):  # ARM's int8 perplexity 10% above x86's fp32, everything else as x86
        figures["model.int8.onnx::ppl"] = figures["model.onnx::ppl"] * 1.10
        return figures

    fake, ids = _probe_results(folder, worse_int8)
    monkeypatch.setattr(arm, "run_probes", fake)
    record = arm.check_arm(folder, Manifest.from_dict(manifest).variants, {}, ids, 128, log=lambda m: None)
    assert arm.refusals(record) == [
        f"model.int8.onnx on an emulated {core}: ppl +10.00% against x86's fp32 (gate +2.0%)" for core in CORES
    ]

    def disagreeing_int8(figures):  # ARM picks a token x86's fp32 graph does not at a fifth of the positions
        picks = figures["model.int8.onnx::argmax"].copy()
        head = slice(0, int(np.ceil(0.2 * picks.size)))
        picks[head] = figures["model.onnx::argmax"][head] + 1
        figures["model.int8.onnx::argmax"] = picks
        return figures

    fake, ids = _probe_results(folder, disagreeing_int8)
    monkeypatch.setattr(arm, "run_probes", fake)
    misses = arm.refusals(
        arm.check_arm(folder, Manifest.from_dict(manifest).variants, {}, ids, 128, log=lambda m: None)
    )
    assert len(misses) == 2 and all("next-token agreement with x86's fp32 7" in m and "(gate 90%)" in m for m in misses)


def test_an_export_whose_fp32_graph_differs_on_arm_beyond_1e4_fails_and_writes_nothing(students, monkeypatch, tmp_path):
    from clidep.commands.export import export_artifact

    folder, _ = students["uniform-plain"]

    def shifted(figures):
        figures["model.onnx::logits-b2-pS"] = figures["model.onnx::logits-b2-pS"] + 2e-4
        return figures

    fake, _ = _probe_results(folder, shifted)
    monkeypatch.setattr(arm, "run_probes", fake)
    with pytest.raises(ClidepError) as err:
        export_artifact(folder.parent / "uniform", tmp_path / "out", check_arm=True, genai=False, **PPL)
    assert str(err.value) == (
        "export failed its aarch64 check, so these files would not give on ARM what they give here: "
        + "; ".join(f"model.onnx on an emulated {core}: max |logit diff| 0.0002 > 0.0001" for core in CORES)
    )
    assert list(tmp_path.iterdir()) == []


def test_check_arm_without_the_environment_is_one_line_before_any_work(tmp_path, monkeypatch):
    from clidep.commands.export import export_artifact

    monkeypatch.setenv("CLIDEP_ARM64_ENV", str(tmp_path / "nowhere"))
    with pytest.raises(
        ClidepError, match=r"the emulated aarch64 environment is not built .*run bash scripts/arm64-env.sh"
    ):
        export_artifact(EMBEDDED, tmp_path / "out", check_arm=True, **PPL)
    assert not (tmp_path / "out").exists()


def test_every_arm_profile_names_the_core_it_is_checked_on(tmp_path):
    from clidep.hardware import devices

    checked = {name: devices.load(name).arm_check for name in devices.known()}
    assert checked == {
        "host": None,
        "laptop-2020": None,
        "raspberry-pi-4": "cortex-a72",
        "raspberry-pi-5": "cortex-a76",
        "pixel-7": "cortex-a76",
        "jetson-orin-nano": "cortex-a76",
    }
    bad = tmp_path / "phone.toml"
    bad.write_text(
        devices.known()["raspberry-pi-5"].read_text().replace('arm_check = "cortex-a76"', 'arm_check = "cortex-a78"')
    )
    with pytest.raises(ClidepError, match="field 'arm_check' must be one of cortex-a76, cortex-a72"):
        devices.load(str(bad))


def test_export_prints_the_arm_figures_beside_the_x86_table(students):
    import io

    from rich.console import Console

    from clidep.commands.export import _arm_table

    _, manifest = students["cli-ort"]
    console = Console(file=io.StringIO(), width=200)
    console.print(_arm_table(manifest["aarch64"]))
    text = console.file.getvalue()
    assert (
        f"on emulated aarch64 (qemu-user on x86_64; {MIN_GATE_TOKENS} tokens): what the kernels compute there" in text
    )
    rows = [line for line in text.splitlines() if "model." in line]
    assert len(rows) == 8 and sum("cortex-a72" in r for r in rows) == 4  # 4 files x 2 cores
    fp32 = manifest["aarch64"]["cores"]["cortex-a76"]["variants"]["model.onnx"]
    assert f"{fp32['ppl']:.2f}" in rows[0] and "100.0%" in rows[0]


def test_a_hung_emulated_core_is_named_within_its_stall_limit_and_never_silent(tmp_path, monkeypatch):
    """An emulated Python that stops making progress: the wait says where each core is while it waits,
    then fails naming the core and the file, kills the processes, and takes the stall limit, not 30 minutes."""
    import subprocess
    import time

    from clidep.runtime import probe

    hung = tmp_path / "python-hung"
    hung.write_text(f"#!/bin/sh\necho '{probe.DONE}model.onnx' >&2\nexec sleep 600\n")
    hung.chmod(0o755)
    monkeypatch.setattr(arm, "launchers", lambda: dict.fromkeys(CORES, hung))
    monkeypatch.setattr(probe, "run", lambda spec, done: [done(j["name"], 0.001) for j in spec["jobs"]] and {})
    monkeypatch.setattr(arm, "STALL_FLOOR_S", 3.0)
    monkeypatch.setattr(arm, "HEARTBEAT_S", 1.0)
    spawned = []
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: spawned.append(popen(*a, **k)) or spawned[-1])
    said = []
    jobs = [{"name": n, "path": n, "kind": "graph"} for n in ("model.onnx", "model.int4.onnx")]
    t0 = time.monotonic()
    with pytest.raises(ClidepError) as err:
        arm.run_probes(jobs, {"ids1": np.zeros(1)}, 64, 32, log=said.append)
    assert time.monotonic() - t0 < 20
    assert "stuck: the emulated cortex-a7" in str(err.value) and "has run model.int4.onnx" in str(err.value)
    assert any("cortex-a72 on model.int4.onnx (2/2)" in line for line in said), said
    assert len(spawned) == 2 and all(p.poll() is not None for p in spawned), "the hung processes were left running"
