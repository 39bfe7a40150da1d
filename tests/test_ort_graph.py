"""clidep.export.ort_graph: the ONNX Runtime graph (GroupQueryAttention over shared KV buffers,
block-quantised weights read in place) and the runner's shared-buffer path."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from clidep import CLIGPT2LMHeadModel
from clidep.export.ort_graph import build_graph, export_ort_graph
from clidep.export.traced_graph import export_onnx
from clidep.export.validate import validate_export
from clidep.runtime.runner import OnnxCausalLM, SharedKV

from .conftest import SCHEDULES, tiny_config


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The ragged-schedule model, its ONNX Runtime graph at fp32, 8 and 4 bits, and its traced graph."""
    torch.manual_seed(0)
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"])).eval()
    root = tmp_path_factory.mktemp("fused")
    paths = {bits: export_ort_graph(model, root / f"m{bits}.onnx", bits, 16) for bits in (None, 8, 4)}
    return model, paths, export_onnx(model, root / "traced.onnx")


@pytest.mark.parametrize("kinds", [None, ["standard", "linearizing", "collapsed", "standard"]])
def test_fp32_matches_pytorch_on_padded_batches_and_pasts(kinds, tmp_path):
    torch.manual_seed(1)
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"], mlp_kinds=kinds)).eval()
    if kinds:
        with torch.no_grad():
            model.transformer.h[1].mlp.act.alpha.fill_(0.3)  # a blend half-way to linear
    report = validate_export(model, export_ort_graph(model, tmp_path / "m.onnx"))
    assert report["max_abs_logit_diff"] <= 1e-4 and report["greedy_match"]


def test_attention_is_one_contrib_op_per_block_with_its_own_heads(graphs):
    model, paths, _ = graphs
    nodes = onnx.load(str(paths[None])).graph.node
    gqa = [n for n in nodes if n.op_type == "GroupQueryAttention"]
    heads = [next(a.i for a in n.attribute if a.name == "num_heads") for n in gqa]
    assert heads == [h for h, _ in model.config.kv_shapes] == [1, 4, 2, 3]
    assert {n.op_type for n in nodes if any(i.startswith("past_key_values") for i in n.input)} == {
        "GroupQueryAttention"
    }


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_graphs_read_one_embedding_table_in_place(bits, graphs):
    model, paths, _ = graphs
    graph = onnx.load(str(paths[bits])).graph
    ops = [n.op_type for n in graph.node]
    assert "DequantizeLinear" not in ops and "Gemm" not in ops and "MatMul" not in ops, "every weight read quantised"
    lookup = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in graph.node if n.name == "lm_head")
    assert head.op_type == "MatMulNBits" and head.input[1] == lookup.input[0], "the head reads the lookup's table"
    V, d = model.config.vocab_size, model.config.n_embd
    tables = [i for i in graph.initializer if i.dims and i.dims[0] == V and i.data_type == onnx.TensorProto.UINT8]
    assert len(tables) == 1 and np.prod(tables[0].dims) * 8 == V * d * bits, "one packed copy of the vocabulary"
    assert not [
        i for i in graph.initializer if sorted(i.dims) == sorted([V, d]) and i.data_type == onnx.TensorProto.FLOAT
    ]
    levels = {a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}, "int8 compute, as measured fastest"


def test_decode_writes_the_shared_buffers_in_place(graphs):
    model, paths, _ = graphs
    runner = OnnxCausalLM(paths[None])
    kv = runner.empty_past(1, 16)
    assert isinstance(kv, SharedKV) and kv.buffers[0].shape == (1, 1, 16, 16)
    before = [b.__array_interface__["data"][0] for b in kv.buffers]
    ids = np.array([[5, 9, 2, 7]])
    logits, kv = runner.forward(ids, np.ones_like(ids), np.arange(4)[None], kv)
    assert not kv.buffers[0][0, 0, 4:].any() and kv.buffers[0][0, 0, :4].any()
    logits, mask, pos, kv = runner.decode_step(np.array([[3]]), np.ones_like(ids), np.arange(4)[None], kv)
    assert [b.__array_interface__["data"][0] for b in kv.buffers] == before, "no buffer reallocated"
    assert kv.buffers[0][0, 0, 4].any() and not kv.buffers[0][0, 0, 5:].any() and list(kv.lengths) == [5]
    with pytest.raises(ValueError, match="exceed the cache's 16 positions"):
        runner.forward(np.ones((1, 12), np.int64), np.ones((1, 17), np.int64), np.arange(5, 17)[None], kv)


def test_last_only_prefill_equals_the_last_column_of_a_full_one(graphs):
    _, paths, _ = graphs
    runner = OnnxCausalLM(paths[None])
    ids = np.array([[5, 9, 2, 7, 11]])
    full, _ = runner.forward(ids, np.ones_like(ids), np.arange(5)[None], runner.empty_past(1, 8))
    last, _ = runner.forward(ids, np.ones_like(ids), np.arange(5)[None], runner.empty_past(1, 8), last_only=True)
    assert last.shape == (1, 1, full.shape[-1]) and np.allclose(last[:, 0], full[:, -1], atol=1e-6)


def test_generation_matches_the_traced_graph_row_by_row_in_a_ragged_batch(graphs):
    _, paths, traced = graphs
    fused, plain = OnnxCausalLM(paths[None]), OnnxCausalLM(traced)
    ids = np.array([[0, 0, 0, 5, 9, 2], [4, 8, 1, 7, 3, 6]])
    mask = (np.arange(6)[None] >= np.array([[3], [0]])).astype(np.int64)  # row 0 left-padded by 3
    got = fused.generate(ids, mask, max_new_tokens=10)
    assert np.array_equal(got, plain.generate(ids, mask, max_new_tokens=10))
    for r, start in ((0, 3), (1, 0)):
        alone = fused.generate(ids[r : r + 1, start:], max_new_tokens=10)
        assert np.array_equal(got[r, -10:], alone[0, -10:]), f"row {r} decodes as it would alone"


def test_rows_adding_different_token_counts_after_the_prompt_are_refused(graphs):
    _, paths, _ = graphs
    runner = OnnxCausalLM(paths[None])
    ids = np.array([[5, 9], [4, 8]])
    _, kv = runner.forward(ids, np.ones_like(ids), np.arange(2)[None].repeat(2, 0), runner.empty_past(2, 8))
    mask = np.array([[1, 1, 0, 1], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="same number of real tokens"):
        runner.forward(np.array([[0, 3], [2, 3]]), mask, np.array([[2, 2], [2, 3]]), kv)


def test_an_unknown_activation_names_the_plain_graph():
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["cli"], activation_function="silu"))
    with pytest.raises(Exception, match="--plain-onnx"):
        build_graph(model)


@pytest.mark.parametrize("bits, bound", [(8, 0.05), (4, 0.4)])
def test_a_width_that_does_not_split_into_blocks_reads_one_padded_quantised_table(bits, bound, tmp_path):
    """A slim student's width (here 64 against blocks of 128) need not split into blocks: the lookup
    reads the head's padded table and drops the padding (an fp32 table would be most of an int4 file).
    BOUND: measured 0.015 (8 bits) and 0.18 (4 bits); slicing the wrong 64 columns gave 0.76."""
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["cli"])).eval()
    graph = onnx.load(str(export_ort_graph(model, tmp_path / "m.onnx", bits, 128))).graph
    nodes = {n.name: n for n in graph.node}
    assert nodes["wte"].op_type == "GatherBlockQuantized" and nodes["lm_head"].op_type == "MatMulNBits"
    assert nodes["lm_head"].input[1] == nodes["wte"].input[0] and "embed_unpad" in nodes
    V, d = model.config.vocab_size, model.config.n_embd
    assert not [
        i for i in graph.initializer if sorted(i.dims) == sorted([V, d]) and i.data_type == onnx.TensorProto.FLOAT
    ]
    assert validate_export(model, tmp_path / "m.onnx", atol=None)["max_abs_logit_diff"] < bound


def test_head_sizes_off_the_multiple_of_8_are_padded_without_changing_the_result(tmp_path):
    torch.manual_seed(2)
    model = CLIGPT2LMHeadModel(tiny_config([64, 36, 36, 64], layer_head_dims=[16, 6, 6, 16])).eval()
    path = export_ort_graph(model, tmp_path / "m.onnx")
    assert OnnxCausalLM(path).kv_shapes == [(4, 16), (6, 8), (6, 8), (4, 16)]  # 6 heads of 6, stored as 8
    report = validate_export(model, path)
    assert report["max_abs_logit_diff"] <= 1e-4 and report["greedy_match"]
