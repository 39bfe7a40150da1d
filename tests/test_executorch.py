"""export --executorch: ExecuTorch programs of a stock student, checked in ExecuTorch's own runtime.

One export of a stock student (compress --method slim of the tiny_setup teacher: 4 blocks x 32, 128 positions,
the reference tokenizer) writes the fp32 and 8da4w programs beside its ONNX and GGUF files; ExecuTorch's
lowering takes ~20-30 s a program even at this size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM


@pytest.fixture(scope="module")
def programs(tiny_setup, tmp_path_factory):
    from clidep.commands.compress import compress
    from clidep.commands.export import export_artifact

    root = tmp_path_factory.mktemp("et")
    compress(
        str(tiny_setup / "teacher"),
        root / "student",
        method="slim",
        width=32,
        steps=2,
        data=str(tiny_setup / "train.txt"),
        batch_size=8,
        seq_len=64,
        eval_every=0,
        log=lambda m: None,
    )
    out = root / "student-et"
    manifest = export_artifact(root / "student", out, executorch=True, gguf=True, gguf_types=("q4_0",), ppl_tokens=2048)
    return out, manifest


def test_every_program_is_written_checked_and_recorded(programs):
    from clidep.runtime.verify import file_sha256

    out, manifest = programs
    record = manifest.executorch
    assert [f["quant"] for f in record["files"]] == ["fp32", "8da4w"]
    fp32, q4 = record["files"]
    assert fp32["max_abs_logit_diff"] <= 1e-4 and fp32["greedy_match"] and fp32["ppl_delta"] == 0
    assert abs(q4["ppl_delta"]) <= 0.05 and 0.5 < q4["greedy_agreement"] <= 1 and q4["kld_mean"] > 0
    for f in record["files"]:
        path = out / "executorch" / f["file"]
        assert path.stat().st_size == f["size_bytes"] and file_sha256(path) == f["sha256"]
    # What 8da4w saves is in the linears and the token table (the position table stays fp32): with the blocks at 4
    # bits, the head and the token table at 8, 73% of their fp32 bytes; with the token table left fp32 it was 40%.
    c = json.loads((out.parent / "student" / "config.json").read_text())
    d, inner = c["n_embd"], c["n_inner"] or 4 * c["n_embd"]
    quantised_bytes = 4 * (c["n_layer"] * (4 * d * d + 2 * d * inner) + 2 * c["vocab_size"] * d)
    assert (fp32["size_bytes"] - q4["size_bytes"]) / quantised_bytes > 0.7
    # the runner's tokenizer beside the programs, and the manifest on disk says what the returned one says
    assert json.loads((out / "executorch" / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    assert json.loads((out / "manifest.json").read_text())["executorch"] == record
    # ExecuTorch's arithmetic gives the ONNX file's perplexity on the same tokens and windows: two runtimes, one number
    assert abs(fp32["ppl"] / manifest.variants[0].ppl - 1) < 1e-4


def test_bench_puts_executorch_beside_the_other_three_runtimes_in_one_table(programs):
    from clidep.bench.report import markdown
    from clidep.commands.bench import bench
    from clidep.hardware import devices

    out, manifest = programs
    report = bench(
        [str(out)],
        devices.load("host"),
        prompt_lens="16",
        depth="16,48",
        gen=64,
        reps=2,
        runtime="clidep,genai,llamacpp,executorch",
        ppl=True,
        ppl_tokens=512,
        log=lambda m: None,
    )
    rows = report["models"]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    by = {(r["runtime"], r["precision"]): r for r in rows}
    assert set(by) == {
        ("clidep", "fp32"),
        ("genai", "fp32"),
        ("llamacpp", "f32"),
        ("llamacpp", "q4_0"),
        ("executorch", "pte fp32"),
        ("executorch", "pte 8da4w"),
    }
    for r in (by["executorch", "pte fp32"], by["executorch", "pte 8da4w"]):
        assert len(r["tg_tps"]["16"]["samples"]) == 2 and set(r["decode_ms_at"]) == {"16", "48"}
        assert r["runner"]["executorch"] and r["kv_cache"] == "fp32" and r["peak_rss_mb"] > 0
    # the same tokens through both runtimes' fp32 files: one perplexity
    assert abs(by["executorch", "pte fp32"]["ppl"] / by["clidep", "fp32"]["ppl"] - 1) < 1e-4
    assert all(f"| {r} |" in markdown(report) for r in ("clidep", "genai", "llamacpp", "executorch"))


def test_the_program_answers_as_transformers_does_prefill_then_decode(programs):
    """Read with ExecuTorch's runtime directly (not clidep's reader): the metadata ExecuTorch's LLM runner reads,
    and logits of a prefill then one-token decode steps through the program's own cache equal transformers'
    logits of the whole sequence; a second sequence after reloading the method starts from an empty cache."""
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (its LLM kernels, as its runner links)
    from executorch.runtime import Runtime

    out, _ = programs
    program = Runtime.get().load_program(out / "executorch" / "model.fp32.pte")
    meta = {m: program.load_method(m).execute([])[0] for m in ("get_max_seq_len", "get_vocab_size", "use_kv_cache")}
    assert meta == {"get_max_seq_len": 128, "get_vocab_size": 8192, "use_kv_cache": True}
    model = AutoModelForCausalLM.from_pretrained(out.parent / "student").eval()
    rng = np.random.default_rng(1)
    for _ in range(2):
        ids = torch.from_numpy(rng.integers(0, 8192, (1, 24)))
        with torch.no_grad():
            want = model(ids).logits
        forward = program.load_method("forward")
        got = [forward.execute([ids[:, :16], torch.arange(16)])[0]]
        got += [forward.execute([ids[:, t : t + 1], torch.tensor([t])])[0] for t in range(16, 24)]
        assert torch.allclose(torch.cat(got, 1), want, atol=1e-4)


def test_a_program_that_misses_its_gate_fails_the_export_unless_allowed(programs, monkeypatch):
    """The module's two programs checked again, the 8da4w one read with its logits blurred (as a broken quantiser
    would leave them): its entry names the gate it misses, and the export's one rule for every file it writes
    refuses it in one line naming the file and its gate, or, with --allow-gate-miss, keeps it and says so."""
    from clidep.data import load_tokenizer, read_text, tokenize_text
    from clidep.errors import ClidepError
    from clidep.export import executorch
    from clidep.export.config import ExportConfig
    from clidep.export.record import enforce_gates, other_misses
    from clidep.export.validate import torch_reference
    from clidep.model.convert import load_model
    from clidep.runtime.manifest import Manifest

    out, _ = programs
    folder = out / "executorch"
    written = [(q, folder / f"model.{q}.pte", 0.0) for q in ("fp32", "8da4w")]
    student = out.parent / "student"
    reference = torch_reference(load_model(student))
    ids = tokenize_text(load_tokenizer(student), read_text("wikitext-test")[0][:20_000])[:1025]
    windows = ids[:1024].reshape(8, 128)
    record = executorch.checked_record(out, written, reference, ids, 128, windows, lambda m: None)
    assert not any("gate_misses" in f for f in record["files"])
    from clidep.runtime.pte import Program

    real = Program.logits

    def blurred(self, x):
        z = real(self, x)
        return z if self.path.name == "model.fp32.pte" else z + np.random.default_rng(0).normal(0, 3, z.shape)

    monkeypatch.setattr(Program, "logits", blurred)
    record = executorch.checked_record(out, written, reference, ids, 128, windows, lambda m: None)
    assert "gate_misses" not in record["files"][0] and record["files"][1]["gate_misses"][0].startswith("ppl +")
    misses = other_misses(Manifest(variants=[], executorch=record))
    with pytest.raises(ClidepError, match=r"^executorch/model.8da4w.pte misses its quality gate: ppl \+"):
        enforce_gates(misses, ExportConfig(), lambda m: None)
    said = []
    enforce_gates(misses, ExportConfig(allow_gate_miss=True), said.append)
    assert len(said) == 1 and said[0].startswith("warning: executorch/model.8da4w.pte misses its quality gate")


def test_8da4w_refuses_widths_that_do_not_split_into_its_groups(tmp_path):
    from transformers import GPT2Config

    from clidep.errors import ClidepError
    from clidep.export.executorch import check
    from clidep.model.convert import config_from_gpt2

    config = config_from_gpt2(GPT2Config(n_embd=80, n_head=5, n_layer=2, vocab_size=101))
    with pytest.raises(ClidepError, match="groups of 32 inputs, and this model's linears read 80"):
        check(config, ("8da4w",))
    check(config, ("8da8w",))  # per-channel: any width


def test_eval_and_the_harness_read_programs_as_every_other_file(programs):
    """clidep eval and the lm-evaluation-harness backend open a program through the one opener (runtime/opened.py):
    the fp32 program against the export's fp32 graph on the same tokens is the same model (KL divergence <= 1e-6,
    every top token the same), and the harness picks the 8da4w program by its scheme's name and scores the local
    task's requests near the graph's but not equal to them."""
    from clidep.commands.eval import compare
    from clidep.quality.harness import ClidepLM

    from .test_harness import _requests

    out, _ = programs
    found = compare(out / "executorch" / "model.fp32.pte", out, max_tokens=1024)
    assert found["tokens"] == 1024 and found["kld_mean"] <= 1e-6 and found["top1"] == 1.0, found
    requests = _requests("clidep_lastword", 6)
    scores = {}
    for precision in (None, "8da4w"):
        lm = ClidepLM(str(out), precision=precision)
        try:
            assert lm.runtime == ("executorch" if precision else "onnx")
            scores[precision] = np.array([ll for ll, _ in lm.loglikelihood(requests)])
        finally:
            lm.close()
    gap = np.abs(scores["8da4w"] - scores[None])
    assert 1e-3 < gap.max() < 2.0, gap


def test_bench_remote_times_programs_with_the_devices_executorch(programs, device):
    """--runtime executorch --remote: the programs are copied and timed by the ExecuTorch the device's Python has
    (here this environment's, behind the loopback sshd), measured there, not projected; a device Python without
    ExecuTorch (the torch-free device environment) gives each row one line saying so."""
    import sys

    from clidep.commands.bench import bench
    from clidep.hardware import devices

    config, host, env = device
    out, _ = programs
    common = dict(prompt_lens="16", depth="16", gen=64, reps=1, memory_runs=1, runtime="executorch")
    common.update(remote=host, ssh_config=config)
    there = bench(
        [str(out)], devices.load("raspberry-pi-5"), remote_python=sys.executable, log=lambda m: None, **common
    )
    rows = there["models"]
    assert [r["precision"] for r in rows] == ["pte fp32", "pte 8da4w"] and not there["projected"]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert r["runner"]["executorch"] and r["decode_ms_p50"] > 0 and there["provenance"]["remote"] == host
    bare = bench(
        [str(out)],
        devices.load("raspberry-pi-5"),
        remote_python=str(env / "bin" / "python"),
        log=lambda m: None,
        **common,
    )
    assert all("ExecuTorch is not installed in" in r["error"] for r in bare["models"]), bare["models"]
