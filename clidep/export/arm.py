"""The ARM check of an export: every graph, and every ONNX Runtime GenAI folder, run on emulated
aarch64 cores (qemu-user, the environment ``scripts/arm64-env.sh`` builds) and on this host, compared.

ONNX Runtime takes other kernels on ARM for exactly the ops clidep's graphs rely on (MatMulNBits with
int8 compute uses the dot-product instructions where the core has them, other code where it does
not; GatherBlockQuantized; GroupQueryAttention; fp16), so a quantised file's numbers there are not
x86's. Two cores are checked: the Cortex-A76 (Raspberry Pi 5, Pixel 7's middle cores; dot product)
and the Cortex-A72 (Raspberry Pi 4; none). Emulation checks what the kernels compute, never how
fast: no timing is taken here.

Gates, the export's own, measured on ARM (a variant that misses one is refused for ARM, never waved
through): the fp32 graph matches x86 to 1e-4 in every logit and continues the prompt greedily as x86
does; a quantised graph keeps its precision's perplexity gate against x86's fp32 graph on the same
tokens (PPL_GATES) and, where the export has one, its next-token agreement with x86's fp32 graph
(AGREEMENT_GATES), teacher-forced at every position of the perplexity windows. Beside the gates each
quantised file's agreement with x86's run of the same file is recorded, with the largest x86 margin
(top logit minus the runner-up) at a position where ARM picked otherwise: kernels that compute the
same function differently flip near-ties only.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from clidep.errors import ClidepError
from clidep.export.config import PPL_GATES, gate_misses, gate_of
from clidep.hardware.devices import CORES
from clidep.runtime.manifest import Manifest, Variant

FP32_ATOL = 1e-4
#: Tokens of the export's perplexity text scored on ARM (and again on the host, for the same tokens,
#: with the export's context and stride). Emulated, the demo's CLI student scores 2,048 tokens in
#: 26 s fp32 and 17 s int4 (Cortex-A76, this 2-core x86 host), 50-100x the host's time; fp16 runs
#: 5x slower than fp32 there (qemu computes the A76's half-precision arithmetic in software).
ARM_PPL_TOKENS = 1024
GREEDY_TOKENS = 16
#: How long an emulated core may take over one file before it is called stuck: EMULATION_FACTOR times the
#: host's time for the same file, at least STALL_FLOOR_S. Emulation runs 50-100x the host's time, fp16 5x
#: more again (above); 1,000x is twice the slowest of those. The wait says where each core is every
#: HEARTBEAT_S, so a long check is never silent.
EMULATION_FACTOR = 1000
STALL_FLOOR_S = 300.0
HEARTBEAT_S = 60.0
PACKAGE = Path(__file__).resolve().parents[1]


def env_dir() -> Path:
    """Where scripts/arm64-env.sh builds the environment: $CLIDEP_ARM64_ENV, else the cache's arm64-env."""
    if os.environ.get("CLIDEP_ARM64_ENV"):
        return Path(os.environ["CLIDEP_ARM64_ENV"])
    if os.environ.get("CLIDEP_CACHE"):
        return Path(os.environ["CLIDEP_CACHE"]) / "arm64-env"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clidep" / "arm64-env"


def launchers() -> dict[str, Path]:
    """{core: the emulated Python of that core}; ClidepError saying how to build them when absent."""
    found = {core: env_dir() / "bin" / f"python-{core}" for core in CORES}
    missing = [core for core, path in found.items() if not os.access(path, os.X_OK)]
    if missing or not (env_dir() / "ready").is_file():
        raise ClidepError(
            f"the emulated aarch64 environment is not built ({env_dir()} has no "
            f"{', '.join(missing) or 'finished build'}): run bash scripts/arm64-env.sh from clidep's "
            "checkout (Debian's apt and the package registries), or set CLIDEP_ARM64_ENV to where it is"
        )
    return found


def probe_inputs(ppl_ids: np.ndarray, vocab: int, seed: int = 0) -> dict:
    """The inputs every machine runs: random ids for the logits (batch 1, and batch 2 with its second
    row left-padded by 3), the text's first 8 tokens as the prompt, its first ARM_PPL_TOKENS + 1 for
    perplexity."""
    rng = np.random.default_rng(seed)
    mask2 = np.ones((2, 12), np.int64)
    mask2[1, :3] = 0
    ppl_ids = np.asarray(ppl_ids, np.int64)
    return {
        "ids1": rng.integers(1, vocab, (1, 12)),
        "ids2": rng.integers(1, vocab, (2, 12)),
        "mask2": mask2,
        "split": np.array(8),
        "prompt": ppl_ids[None, :8],
        "ppl_ids": ppl_ids[: ARM_PPL_TOKENS + 1],
    }


def run_probes(jobs: list[dict], inputs: dict, context: int, stride: int, log=print) -> dict:
    """{"host" and each core: ({NAME::KEY: array}, machine)} for JOBS ({"name", "path", "kind"})."""
    from clidep.hardware.transport import die_with_parent
    from clidep.runtime import probe
    from clidep.runtime.machine import where

    python = launchers()
    with tempfile.TemporaryDirectory(prefix="clidep-arm-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "inputs.npz", **inputs)
        spec = {
            "inputs": str(tmp / "inputs.npz"),
            "context": context,
            "stride": stride,
            "greedy_tokens": GREEDY_TOKENS,
            "jobs": jobs,
        }
        (tmp / "spec.json").write_text(json.dumps(spec))
        (tmp / "path").mkdir()
        (tmp / "path" / "clidep").symlink_to(PACKAGE)  # the package alone: not the host's site-packages
        env = {**os.environ, "PYTHONPATH": str(tmp / "path")}
        log(f"aarch64 check: {len(jobs)} graph(s) on emulated {' and '.join(python)} ...")
        procs = {
            core: subprocess.Popen(
                [str(exe), "-m", "clidep.runtime.probe", str(tmp / "spec.json"), str(tmp / f"{core}.npz")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                preexec_fn=die_with_parent,
            )
            for core, exe in python.items()
        }
        try:
            host_s = {}
            results = {"host": (probe.run(spec, host_s.__setitem__), where())}  # while the emulated cores run
            stderr = _wait(procs, [j["name"] for j in jobs], host_s, log)
            for core, proc in procs.items():
                if proc.returncode:
                    lines = [line for line in stderr[core] if line.strip()]
                    raise ClidepError(
                        f"the aarch64 check failed on the emulated {core}: "
                        f"{lines[-1] if lines else f'exit status {proc.returncode}'}"
                    )
                with np.load(tmp / f"{core}.npz") as f:
                    results[core] = ({k: f[k] for k in f.files}, json.loads(proc.stdout.read()))
        finally:
            for proc in procs.values():
                proc.kill()
                proc.wait()
    return results


def _wait(procs: dict, names: list[str], host_s: dict, log) -> dict[str, list[str]]:
    """Wait for every emulated core's probe (PROCS, running the files NAMES in order), saying every
    HEARTBEAT_S which file each is on; ClidepError where one spends longer on a file than its stall limit.
    Returns each core's stderr lines, the progress lines aside."""
    from clidep.runtime.probe import DONE

    lines: queue.Queue = queue.Queue()
    for core, proc in procs.items():
        threading.Thread(target=_read_lines, args=(core, proc.stderr, lines), daemon=True).start()
    stderr = {core: [] for core in procs}
    done = dict.fromkeys(procs, 0)  # files each core has finished
    since = dict.fromkeys(procs, time.monotonic())  # when it started the one it is on
    running, beat = set(procs), time.monotonic()
    while running:
        try:
            core, line = lines.get(timeout=min(5.0, HEARTBEAT_S))
        except queue.Empty:
            core = None
        if core is not None and line is None:
            running.discard(core)
            procs[core].wait()
        elif core is not None and line.startswith(DONE):
            done[core], since[core] = done[core] + 1, time.monotonic()
        elif core is not None:
            stderr[core].append(line)
        now = time.monotonic()
        for c in running:
            name = names[min(done[c], len(names) - 1)]
            limit = max(STALL_FLOOR_S, EMULATION_FACTOR * host_s.get(name, 0.0))
            if now - since[c] > limit:
                raise ClidepError(
                    f"the aarch64 check is stuck: the emulated {c} has run {name} for {now - since[c]:.0f} s "
                    f"(the host took {host_s.get(name, 0.0):.2f} s; the limit is {limit:.0f} s); nothing was written"
                )
        if running and now - beat >= HEARTBEAT_S:
            beat = now
            on = [f"{c} on {names[min(done[c], len(names) - 1)]} ({done[c] + 1}/{len(names)})" for c in sorted(running)]
            log(f"aarch64 check: {', '.join(on)}")
    return stderr


def _read_lines(core: str, stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put((core, line.rstrip("\n")))
    lines.put((core, None))


def compare(name: str, precision: str, host: dict, arm: dict, fp32: str) -> dict:
    """One graph's figures on one core against the host's run of the same file and of the fp32 graph
    FP32, and the gates it misses."""
    logits = [k.split("::")[1] for k in host if k.startswith(f"{name}::logits-")]
    diff = max(float(np.abs(arm[f"{name}::{k}"] - host[f"{name}::{k}"]).max()) for k in logits)
    ppl, picks = float(arm[f"{name}::ppl"]), arm[f"{name}::argmax"]
    flips = picks != host[f"{name}::argmax"]
    figures = {
        "max_abs_logit_diff": diff,
        "argmax_agreement": float(1 - flips.mean()),  # with x86's run of the same file
        "flip_max_margin": float(host[f"{name}::margin"][flips].max()) if flips.any() else 0.0,
        "fp32_agreement": float((picks == host[f"{fp32}::argmax"]).mean()),  # the manifest's greedy_agreement, on ARM
        "greedy_match": bool(np.array_equal(arm[f"{name}::greedy"], host[f"{name}::greedy"])),
        "ppl": ppl,
        "ppl_vs_host": ppl / float(host[f"{name}::ppl"]) - 1,  # the same file on x86
        "ppl_delta": ppl / float(host[f"{fp32}::ppl"]) - 1,  # against x86's fp32 graph, as the manifest's ppl_delta
    }
    if gate_of(PPL_GATES, precision) is None:
        misses = [f"max |logit diff| {diff:.3g} > {FP32_ATOL:g}"] if diff > FP32_ATOL else []
        misses += [] if figures["greedy_match"] else ["its greedy continuation differs from x86's"]
    else:
        misses = gate_misses(precision, figures["ppl_delta"], figures["fp32_agreement"], "x86's fp32")
    figures["gate_misses"] = misses
    return figures


def check_arm(folder: Path, variants: list[Variant], genai: dict, ppl_ids: np.ndarray, context: int, log=print) -> dict:
    """Run every variant of the export in FOLDER (and its GenAI folders) on each emulated core and on this
    host; the manifest's ``aarch64`` record. ClidepError naming the variant, core and figure when a gate is missed."""
    jobs = [{"name": v.file, "path": str(folder / v.file), "kind": "runner"} for v in variants]
    jobs += [{"name": f"genai:{p}", "path": str(folder / sub), "kind": "genai"} for p, sub in genai.items()]
    inputs = probe_inputs(ppl_ids, int(variants[0].vocab_size))
    results = run_probes(jobs, inputs, context, context // 2, log)
    host, fp32 = results["host"][0], variants[0].file
    record = {
        "emulator": results[CORES[0]][1]["emulated"],
        "ppl_tokens": int(inputs["ppl_ids"].size - 1),
        "host": {
            "machine": results["host"][1]["machine"],
            "ppl": {v.file: float(host[f"{v.file}::ppl"]) for v in variants},
        },
        "cores": {},
    }
    for core in CORES:
        arm, machine = results[core]
        per = {v.file: compare(v.file, v.precision, host, arm, fp32) for v in variants}
        for p in genai:  # ONNX Runtime GenAI: as x86's GenAI, and as clidep's runner on this core
            file, key = next(v.file for v in variants if v.precision == p), f"genai:{p}::greedy"
            per[file]["genai_greedy_match"] = bool(np.array_equal(arm[key], host[key]))
            per[file]["genai_matches_runner"] = bool(np.array_equal(arm[key], arm[f"{file}::greedy"]))
        record["cores"][core] = {"machine": machine, "variants": per}
    return record


def refusals(record: dict) -> list[str]:
    """One line per variant and core that missed a gate on ARM."""
    return [
        f"{file} on an emulated {core}: {'; '.join(f['gate_misses'])}"
        for core, c in record["cores"].items()
        for file, f in c["variants"].items()
        if f["gate_misses"]
    ]


def checked_record(tmp: Path, manifest: Manifest, ids, context: int, log) -> dict:
    """The manifest's aarch64 record (export/arm.py); ClidepError listing every variant and core that
    missed a gate there."""
    from clidep.export.arm import check_arm, refusals

    record = check_arm(tmp, manifest.variants, manifest.genai or {}, ids, context, log)
    misses = refusals(record)
    if misses:
        raise ClidepError(
            "export failed its aarch64 check, so these files would not give on ARM what they give here: "
            + "; ".join(misses)
        )
    return record
