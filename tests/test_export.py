"""ONNX export: parity with PyTorch, KV layout, tied head stored once, typed validation errors,
the artifact directory, int8, the torch-free runner and `clidep generate`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from transformers import GPT2LMHeadModel

from clidep.commands.export import export_artifact
from clidep.errors import ClidepError
from clidep.export.config import AGREEMENT_GATES, PPL_GATES
from clidep.model.convert import load_model
from clidep.runtime import verify


def test_artifact_directory_is_complete(teacher_artifact):
    out, manifest = teacher_artifact
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert {
        "model.onnx",
        "model.int8.onnx",
        "model.int4.onnx",
        "model.fp16.onnx",
        "tokenizer.json",
        "manifest.json",
    } <= {p.name for p in out.iterdir()}
    assert not list(out.parent.glob(".*tmp*")), "no temporary directory may be left behind"
    assert stat.S_IMODE((out / "manifest.json").stat().st_mode) & 0o044, "artifact files must be readable by others"
    assert manifest["kv_shapes"] == [[4, 64]] * 12
    fp32, int8, int4, half = manifest["variants"]
    assert [v["precision"] for v in manifest["variants"]] == ["fp32", "int8-weight-only", "int4-weight-only", "fp16"]
    for v in manifest["variants"]:
        assert v["sha256"] == hashlib.sha256((out / v["file"]).read_bytes()).hexdigest()
        assert v["size_bytes"] == (out / v["file"]).stat().st_size
        assert {"max_abs_logit_diff", "greedy_match", "ppl", "ppl_delta", "greedy_agreement"} <= v.keys()
    assert fp32["max_abs_logit_diff"] <= 1e-4 and fp32["greedy_match"]
    nodes = onnx.load(str(out / "model.onnx")).graph.node
    readers = {n.op_type for n in nodes if any(i.startswith("past_key_values") for i in n.input)}
    assert readers == {"GroupQueryAttention"}, "the ONNX Runtime graph: the cache is read in place, never concatenated"
    assert {"GatherBlockQuantized", "MatMulNBits"} <= {
        n.op_type for n in onnx.load(str(out / "model.int4.onnx")).graph.node
    }
    assert int8["size_bytes"] < 0.5 * fp32["size_bytes"]
    assert int8["ppl_delta"] <= PPL_GATES["int8"] == 0.02 and int8["greedy_agreement"] > AGREEMENT_GATES["int8"] == 0.9
    assert int4["linear_layers_quantized"] == "49/49", "every linear layer, LM head included"
    assert int4["size_bytes"] < int8["size_bytes"] and int4["ppl_delta"] <= PPL_GATES["int4"] == 0.05
    assert half["ppl_delta"] <= PPL_GATES["fp16"] == 0.001 and half["size_bytes"] < 0.6 * fp32["size_bytes"]
    assert manifest["ppl_protocol"]["tokens"] == 4096
    # KL divergence from the fp32 graph: none for itself, fp16 < int8 < int4 (fewer bits, further answers); the
    # int4 file's mean is what eval --reference measured against the torch teacher (0.002 nats)
    assert fp32["kld_mean"] == 0 and 0 < half["kld_mean"] < int8["kld_mean"] < int4["kld_mean"] < 0.01
    assert int4["kld_p99"] > int4["kld_mean"]


def test_plain_onnx_keeps_the_traced_graph_for_other_runtimes(teacher_dir, tmp_path):
    manifest = export_artifact(teacher_dir, tmp_path / "p", int8=True, plain_onnx=True, ppl_tokens=2048).to_dict()
    assert [v["precision"] for v in manifest["variants"]] == ["fp32", "int8-dynamic"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "p" / "model.onnx")).graph.node}
    assert not ops & {"GroupQueryAttention", "MatMulNBits"} and manifest["optimize"]["applied"]
    assert manifest["variants"][0]["max_abs_logit_diff"] <= 1e-4 and manifest["variants"][1]["ppl_delta"] <= 0.02


def test_static_int8_is_calibrated_qdq(teacher_dir, tmp_path):
    manifest = export_artifact(
        teacher_dir, tmp_path / "s", int8=True, static=True, data="wiki-en-valid", calib_samples=4, ppl_tokens=2048
    ).to_dict()
    q = manifest["variants"][1]
    assert q["precision"] == "int8-static-qdq" and q["calibration"] == {"data": "wiki-en-valid", "samples": 4}
    graph = onnx.load(str(tmp_path / "s" / q["file"]))
    assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) >= 48
    assert q["ppl_delta"] <= 0.02


@pytest.mark.parametrize("target", ["fresh", "existing"])
def test_a_failure_after_writing_began_leaves_the_output_as_it_was(
    target, teacher_artifact, teacher_dir, tmp_path, monkeypatch
):
    def int4_that_dies(model, dst, bits, block_size, table_bits, eight_bit):
        Path(dst).write_bytes(b"half an int4 graph")
        raise ClidepError("disk pulled out mid-export")

    monkeypatch.setattr("clidep.export.ort_graph.write_quantised", int4_that_dies)
    out = tmp_path / "out"
    if target == "existing":
        shutil.copytree(teacher_artifact[0], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else None
    with pytest.raises(ClidepError, match="disk pulled out"):
        export_artifact(teacher_dir, out, int4=True, ppl_tokens=512, overwrite=True)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else None
    assert after == before, "an existing export is untouched; a fresh one is not created"
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if before else []), "no temporary folder left behind"


def test_generate_matches_transformers_and_needs_no_torch(teacher_artifact, teacher_dir):
    out, _ = teacher_artifact
    probe = (
        "import sys\n"
        "from clidep.commands.generate import generate_text\n"
        f"print(generate_text({str(out)!r}, 'The history of the city', max_new_tokens=24))\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={"PATH": ""})
    assert proc.returncode == 0, proc.stderr
    text, torch_loaded = proc.stdout.rsplit("\n", 2)[:2]
    assert torch_loaded == "False", "the ONNX runner must not import torch"
    model = load_model(teacher_dir)
    from clidep.data import load_tokenizer

    tok = load_tokenizer(teacher_dir)
    ids = tok("The history of the city", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=24,
            min_new_tokens=24,
            do_sample=False,
            pad_token_id=0,
        )
    assert text == "The history of the city" + tok.decode(ref[0, ids.shape[1] :])


ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = Path(os.environ.get("CLIDEP_PEER_PYTHON", ROOT / ".venv-peer" / "bin" / "python"))


def test_optimum_client_generates_like_transformers(teacher_artifact, teacher_dir):
    """A plain GPT-2 export opens in optimum's ORTModelForCausalLM and generates what transformers does."""
    out, _ = teacher_artifact
    assert PEER_PYTHON.exists(), f"optimum's environment is missing at {PEER_PYTHON}: run scripts/setup.sh"
    prompt = [10, 20, 30, 40, 50, 60]
    proc = subprocess.run(
        [str(PEER_PYTHON), str(ROOT / "benchmarks" / "peer_client.py"), str(out), *map(str, prompt)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    gpt2 = GPT2LMHeadModel.from_pretrained(teacher_dir).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        ref = gpt2.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=24,
            min_new_tokens=24,
            do_sample=False,
            pad_token_id=0,
        )
    assert got == ref[0].tolist()


GOLDEN = Path(__file__).parent / "golden" / "teacher_export.json"


def _export_record(folder: Path, manifest: dict) -> dict:
    """What must not move when the code is only rearranged: every file's bytes (sha256), and the manifest's
    shape (its keys, recursively, and every value that is not a measured time)."""

    def shape(x):
        if isinstance(x, dict):
            return {k: shape(v) for k, v in sorted(x.items()) if k not in ("seconds", "measured_on", "created")}
        if isinstance(x, list):
            return [shape(v) for v in x]
        return type(x).__name__

    files = {
        str(p.relative_to(folder)): verify.file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    return {"files": files, "manifest": shape(manifest)}


def test_the_teacher_export_is_byte_for_byte_what_it_was(teacher_artifact):
    """A change that only rearranges the code (issue: layers you can see) writes the same files, byte for byte,
    and a manifest of the same shape: the session export against tests/golden/teacher_export.json. A change
    meant to alter the files rewrites the record: CLIDEP_WRITE_GOLDEN=1 python -m pytest tests/test_export.py -k
    byte_for_byte, and its commit says why they moved."""
    out, manifest = teacher_artifact
    record = _export_record(out, json.loads((out / "manifest.json").read_text()))
    if os.environ.get("CLIDEP_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    if "gguf" not in manifest:  # llama.cpp not built here: the GGUF tests say so; compare the rest
        golden["files"] = {k: v for k, v in golden["files"].items() if not k.startswith("gguf/")}
        golden["manifest"].pop("gguf", None)
    moved = sorted(
        k for k in golden["files"].keys() | record["files"].keys() if golden["files"].get(k) != record["files"].get(k)
    )
    assert not moved, f"files whose bytes moved: {moved}"
    assert record["manifest"] == golden["manifest"]


def test_a_file_that_misses_its_gate_fails_the_export_unless_allowed(tmp_path, monkeypatch, capsys):
    """The gates are enforced, not only tested: a quantised file over its gate is not written (one line
    naming the file, its figure and the gate), and --allow-gate-miss writes it with the miss in its entry."""
    from clidep.app import main
    from clidep.commands.demo import EMBEDDED

    monkeypatch.setitem(PPL_GATES, "int4", -1.0)  # no int4 file can meet a gate of -100%
    out = tmp_path / "o"
    args = ["export", str(EMBEDDED), "--out", str(out), "--int8", "--int4", "--no-genai", "--ppl-data"]
    args += ["python-docs-valid", "--ppl-tokens", "512"]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.int4.onnx misses its quality gate: ppl " in errors[0], errors
    assert "(gate +-100.0%)" in errors[0] and not out.exists() and list(tmp_path.iterdir()) == []
    assert main([*args, "--allow-gate-miss"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {v["file"]: v for v in manifest["variants"]}
    assert "gate_misses" in entries["model.int4.onnx"] and "gate_misses" not in entries["model.int8.onnx"]
    assert manifest["gates"]["enforced"] is False and "misses its quality gate" in capsys.readouterr().err


def test_int4_can_keep_its_embedding_and_head_table_and_qkv_at_8_bits(tmp_path):
    """--int4-table-bits 8 --int4-8bit-layers attn_qkv: the tied table (the token lookup and the head) and every
    block's QKV projection are 8-bit while the other linear layers stay 4-bit, said in the file's manifest entry;
    the file stays within its gate."""
    from clidep.commands.demo import EMBEDDED

    manifest = export_artifact(
        EMBEDDED, tmp_path / "o", int4=True, int4_table_bits=8, int4_8bit_layers="attn_qkv", genai=False,
        ppl_data="python-docs-valid",
    ).to_dict()  # fmt: skip
    int4 = manifest["variants"][1]
    assert int4["embedding_and_lm_head"] == "one 8-bit table, read in place" and int4["ppl_delta"] <= PPL_GATES["int4"]
    assert int4["linear_layers_at_8_bits"] == ["attn_qkv"]
    graph = onnx.load(tmp_path / "o" / "model.int4.onnx", load_external_data=False)
    bits = {
        n.name: next(a.i for a in n.attribute if a.name == "bits")
        for n in graph.graph.node
        if n.op_type in ("MatMulNBits", "GatherBlockQuantized")
    }
    assert bits.pop("wte") == 8 and bits.pop("lm_head") == 8
    qkv = {n: b for n, b in bits.items() if n.endswith(".attn.c_attn")}
    assert set(qkv.values()) == {8} and len(qkv) == len(manifest["layer_widths"])
    assert {b for n, b in bits.items() if n not in qkv} == {4}
