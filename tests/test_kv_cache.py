"""export --kv: the quantised ONNX Runtime graph files' KV cache stored as int8 (calibrated; the default)
or fp16, held to its gates against the same file with an fp32 cache, run by clidep's runner and ONNX
Runtime GenAI, and counted at its own width in bench's roofline."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from clidep.bench.models import ModelFile, kv_bytes
from clidep.commands.demo import EMBEDDED
from clidep.commands.export import export_artifact
from clidep.errors import ClidepError
from clidep.export.kv_cache import KV_AGREEMENT_GATE, KV_PPL_GATE
from clidep.runtime.runner import OnnxCausalLM

from .test_genai import _genai_greedy

DEMO_PPL = {"ppl_data": "python-docs-valid", "ppl_tokens": 2048}  # the packaged demo model's own text


@pytest.fixture(scope="module")
def int8_cache(teacher_artifact):
    """The session's export of the reference teacher (int8, int4, fp16): its quantised files carry the default
    cache, int8."""
    return teacher_artifact


def test_int8_cache_is_calibrated_gated_and_recorded(int8_cache):
    out, manifest = int8_cache
    assert manifest["kv_cache"]["precision"] == "int8" and manifest["kv_cache"]["mode"] == "per-channel"
    calibration = manifest["kv_cache"]["calibration"]
    assert calibration["data"].endswith("after the checked tokens"), "the check is not scored on its own calibration"
    assert (calibration["windows"], calibration["tokens"]) == (8, 512)
    fp32, int8, int4, half = manifest["variants"]
    for v in (int8, int4):
        kv = v["kv_cache"]
        assert (
            kv["precision"] == "int8" and kv["ppl_delta"] <= KV_PPL_GATE and kv["decode_agreement"] >= KV_AGREEMENT_GATE
        )
        assert v["ppl"] == pytest.approx(kv["fp32_cache_ppl"] * (1 + kv["ppl_delta"]))
        assert kv["ppl_delta"] != 0, (
            "the perplexity pass reads the quantised cache (ONNX Runtime's CPU prompt path does)"
        )
        graph = onnx.load(str(out / v["file"])).graph
        assert {i.type.tensor_type.elem_type for i in graph.input if i.name.startswith("past_key_values")} == {
            onnx.TensorProto.INT8
        }
        attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
        assert len(attention) == 12 and all(
            {a.name: a for a in n.attribute}["k_quant_type"].s == b"PER_CHANNEL" for n in attention
        )
        scales = {i.name: i for i in graph.initializer}["transformer.h.0.attn.k_scale"]
        assert list(scales.dims) == [4 * 64], "one scale per head and channel"
    assert half["kv_cache"] == {"precision": "fp16"} and fp32["kv_cache"] == {"precision": "fp32"}
    assert fp32["max_abs_logit_diff"] <= 1e-4, "model.onnx stays the exact reference"
    assert manifest["kv_cache"]["files"] == ["model.int4.onnx", "model.int8.onnx"]


def test_int8_cache_runs_in_the_runner_and_genai(int8_cache):
    out, manifest = int8_cache
    runner = OnnxCausalLM(out / "model.int4.onnx")
    cache = runner.empty_past(1, 64)
    assert cache.buffers[0].dtype == np.int8
    prompt = [11, 250, 37, 4000, 9, 77]
    mine = runner.generate(np.array([prompt]), max_new_tokens=24)[0].tolist()
    assert _genai_greedy(out / manifest["genai"]["int4-weight-only"], prompt, 24) == mine


def test_roofline_counts_the_cache_at_its_width(int8_cache):
    out, _ = int8_cache
    int8, full = (
        kv_bytes(ModelFile("out", name, out / name, out), 500, onnx.load(str(out / name)))
        for name in ("model.int4.onnx", "model.onnx")
    )
    assert full == 12 * 2 * 4 * 64 * 500 * 4 and int8 * 4 == full


def test_a_cache_that_misses_its_gate_fails_the_export(tmp_path, monkeypatch):
    """The mechanism, on the packaged demo model (8 x 96): a cache that misses its gate fails the export."""
    from clidep.export import kv_cache

    calibrate = kv_cache.calibrate
    # Scales 100x too small: nearly every key and value saturates.
    monkeypatch.setattr(kv_cache, "calibrate", lambda *a: [(k / 100, v / 100) for k, v in calibrate(*a)])
    with pytest.raises(
        ClidepError, match=r"model.int4.onnx with an int8 cache scores perplexity \+.*gates \+0.5%, 90%"
    ):
        export_artifact(EMBEDDED, tmp_path / "out", int4=True, genai=False, kv_calib_windows=4, **DEMO_PPL)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kv, dtype", [("fp16", np.float16), ("fp32", np.float32)])
def test_fp16_and_fp32_caches(kv, dtype, tmp_path):
    """Which cache each --kv writes, and the fp16 cache's gate, on the packaged demo model (8 x 96)."""
    manifest = export_artifact(EMBEDDED, tmp_path / "out", int4=True, kv=kv, genai=False, **DEMO_PPL).to_dict()
    assert OnnxCausalLM(tmp_path / "out" / "model.int4.onnx").empty_past(1, 8).buffers[0].dtype == dtype
    int4 = json.loads((tmp_path / "out" / "manifest.json").read_text())["variants"][1]
    if kv == "fp32":
        assert "kv_cache" not in manifest and int4["kv_cache"] == {"precision": "fp32"}
    else:
        assert manifest["kv_cache"]["precision"] == "fp16" and int4["kv_cache"]["decode_agreement"] >= KV_AGREEMENT_GATE
