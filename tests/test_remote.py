"""clidep bench --remote end to end: an OpenSSH server on 127.0.0.1 in front of a torch-free
environment playing the device (numpy and onnxruntime only, at the lock's versions)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from clidep.commands.bench import bench
from clidep.hardware import devices

from .conftest import free_port


def test_bench_runs_on_the_remote_device_with_the_local_fields(device, teacher_artifact):
    config, host, env = device
    out, _ = teacher_artifact
    model = str(out / "model.int4.onnx")
    local = bench([model], devices.load("host"), prompt_lens="16", gen=64, log=lambda m: None)
    remote = bench(
        [model],
        devices.load("raspberry-pi-5"),
        prompt_lens="16",
        gen=64,
        remote=host,
        ssh_config=config,
        remote_python=str(env / "bin" / "python"),
        log=lambda m: None,
    )
    here, there = local["models"][0], remote["models"][0]
    assert "error" not in there, there.get("error")
    assert set(there) == set(here) and there["decode_ms_p50"] > 0 and not remote["projected"]
    assert there["roofline_fraction"] > 0, "measured on the device: its profile's bandwidth is the roofline"
    assert remote["provenance"]["remote"] == host
    assert there["runner"]["python"] and there["runner"]["onnxruntime"] == here["runner"]["onnxruntime"]
    probe = subprocess.run([str(env / "bin" / "python"), "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0, "the device environment has no torch: the runner needs none"


def test_an_unreachable_device_is_refused_in_one_line(device, teacher_artifact, tmp_path):
    config, _, _ = device
    bad = tmp_path / "ssh_config"
    bad.write_text(re.sub(r"Port \d+", f"Port {free_port()}", Path(config).read_text()))  # nothing listens there
    from clidep.errors import ClidepError

    with pytest.raises(ClidepError, match="cannot use remote host 'clidep-device'"):
        bench(
            [str(teacher_artifact[0] / "model.onnx")],
            devices.load("host"),
            remote="clidep-device",
            ssh_config=str(bad),
            log=lambda m: None,
        )


def test_bench_on_an_emulated_aarch64_device_says_its_timings_are_not_speed_figures(device, teacher_artifact, tmp_path):
    """The device's Python is scripts/arm64-env.sh's aarch64 Python under qemu-user: the runner records
    its machine as aarch64 on a Cortex-A76, detects the emulation, and the report says so."""
    from clidep.bench.report import markdown
    from clidep.export.arm import launchers

    config, host, _ = device
    out, _ = teacher_artifact
    report = bench(
        [str(out / "model.int4.onnx")],
        devices.load("raspberry-pi-5"),
        prompt_lens="8",
        depth="8",
        gen=64,
        reps=1,
        remote=host,
        ssh_config=config,
        remote_python=str(launchers()["cortex-a76"]),
        log=lambda m: None,
    )
    row = report["models"][0]
    assert "error" not in row, row.get("error")
    runner = row["runner"]
    assert (runner["machine"], runner["cpu"], runner["emulated"]) == ("aarch64", "cortex-a76", "qemu-user on x86_64")
    assert report["provenance"]["emulated"] == "qemu-user on x86_64" and row["roofline_fraction"] is None
    assert "under emulation (qemu-user on x86_64): the timings are not speed figures" in markdown(report)


def test_bench_runs_the_gguf_files_with_the_devices_llama_bench(device, teacher_artifact):
    """--runtime llamacpp --remote: the GGUF files are copied and timed by the llama-bench the device has (here
    the same user's build, found by the runner there as on any device: CLIDEP_LLAMA_BENCH, the cache, PATH)."""
    config, host, env = device
    out, manifest = teacher_artifact
    remote = bench(
        [str(out)],
        devices.load("raspberry-pi-5"),
        prompt_lens="16",
        gen=64,
        reps=1,
        runtime="llamacpp",
        remote=host,
        ssh_config=config,
        remote_python=str(env / "bin" / "python"),
        log=lambda m: None,
    )
    rows = remote["models"]
    assert [r["precision"] for r in rows] == [f["type"] for f in manifest["gguf"]["files"]]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert r["runtime"] == "llamacpp" and r["decode_ms_p50"] > 0 and r["runner"]["llama_cpp"]["build"]
    assert not remote["projected"] and remote["provenance"]["llama_cpp"] is None, "the device's build is in each row"
