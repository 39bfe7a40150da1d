"""clidep.export.traced_graph: the traced graph, its inputs and outputs, parity with PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from clidep import from_gpt2
from clidep.export.traced_graph import export_onnx
from clidep.export.validate import validate_export
from clidep.runtime.runner import OnnxCausalLM

from .conftest import tiny_gpt2


def test_clidep_schedule_exports_with_parity(ragged):
    model, path = ragged
    report = validate_export(model, path)
    assert report["max_abs_logit_diff"] <= 1e-4 and report["greedy_match"]
    assert not model.training, "export must leave the model in eval mode"
    assert OnnxCausalLM(path).kv_shapes == [(1, 16), (4, 16), (2, 16), (3, 16)]


def test_plain_gpt2_exports_with_parity(tmp_path):
    gpt2 = tiny_gpt2(n_layer=2)
    model = from_gpt2(gpt2)
    path = export_onnx(model, tmp_path / "model.onnx")
    assert validate_export(model, path)["max_abs_logit_diff"] <= 1e-4
    # The ONNX graph also matches the original GPT2LMHeadModel, not only the converted one.
    ids = np.arange(1, 9)[None]
    with torch.no_grad():
        ref = gpt2(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(OnnxCausalLM(path).logits(ids) - ref).max() <= 1e-4


def test_graph_io_and_tied_head_stored_once(ragged):
    model, path = ragged
    graph = onnx.load(str(path))
    names = [i.name for i in graph.graph.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"] and names[3] == "past_key_values.0.key"
    assert [o.name for o in graph.graph.output][:3] == ["logits", "present.0.key", "present.0.value"]
    dims = graph.graph.input[3].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch_size", 1, "past_sequence_length", 16]
    V, d = model.config.vocab_size, model.config.n_embd
    big = [i for i in graph.graph.initializer if sorted(i.dims) == sorted([V, d])]
    assert len(big) == 1, "the tied embedding / LM head must be stored once"
