"""The file that ships, scored before it is written: hardware/blockwise.py's read-back of ONNX Runtime's block
quantiser, compress/shipped.py's student with those weights, and the searches that rank by it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from clidep import CLIGPT2LMHeadModel
from clidep.compress.shipped import as_shipped, read_back
from clidep.errors import ClidepError
from clidep.export.config import ExportConfig
from clidep.export.ort_graph import export_ort_graph
from clidep.hardware.blockwise import LAYOUTS, Layout, quantise, round_trip
from clidep.runtime.runner import OnnxCausalLM

from .conftest import SCHEDULES, tiny_config


@pytest.mark.parametrize("bits", [4, 8])
def test_read_back_weights_give_matmulnbits_own_product(bits):
    """x @ round_trip(W).T equals MatMulNBits over quantise(W) (fp32 compute), for K of 152 in blocks of 128
    (one padded block), and differs from x @ W.T by the rounding."""
    rng = np.random.default_rng(bits)
    n, k, block = 24, 152, 128
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((5, k)).astype(np.float32)
    packed, scales = quantise(w, bits, block)
    node = helper.make_node(
        "MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=block
    )
    graph = helper.make_graph(
        [node],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, n])],
        [helper.make_tensor("w", TensorProto.UINT8, packed.shape, packed.tobytes(), raw=True)]
        + [helper.make_tensor("s", TensorProto.FLOAT, scales.shape, scales.tobytes(), raw=True)],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = x @ round_trip(w, bits, block).T
    np.testing.assert_allclose(ours, y, rtol=1e-5, atol=1e-4)
    assert np.abs(x @ w.T - y).max() > 100 * np.abs(ours - y).max(), "the weights were rounded"


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_the_shipped_student_computes_what_its_file_computes(precision, tmp_path):
    """A bottleneck student (projections, ragged heads) with its PRECISION file's weights gives that file's
    logits (MatMulNBits at fp32 compute, the tied table at the layout's bits), far closer than the fp32
    student does; the student itself is left as it was."""
    torch.manual_seed(0)
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"])).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layout = LAYOUTS[precision]
    path = export_ort_graph(
        model, tmp_path / "m.onnx", layout.bits, layout.block, 0, layout.table_bits, layout.eight_bit
    )
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 24))
    file_logits = OnnxCausalLM(path).logits(ids)
    with torch.no_grad():
        shipped = as_shipped(model, precision)(torch.from_numpy(ids)).logits.numpy()
        fp32 = model(torch.from_numpy(ids)).logits.numpy()
    gap = np.abs(shipped - file_logits).max()
    assert gap <= 1e-4 and np.abs(fp32 - file_logits).max() > 20 * gap
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("eight_bit", [("attn_qkv",), ("attn_output", "ffn_down")])
def test_an_int4_file_keeps_the_layers_asked_for_at_8_bits(eight_bit, tmp_path):
    """--int4-8bit-layers: exactly the linear layers of the kinds named are MatMulNBits at 8 bits (the rest and
    a bottleneck's projections at 4), and the read-back of that layout gives the file's logits, where export's
    all-4-bit layout does not."""
    import onnx

    from clidep.hardware.blockwise import LINEAR_KINDS

    torch.manual_seed(0)
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"])).eval()
    layout = Layout(4, 16, 8, eight_bit)
    path = export_ort_graph(model, tmp_path / "m.onnx", 4, layout.block, 0, layout.table_bits, eight_bit)
    bits = {
        n.name: next(a.i for a in n.attribute if a.name == "bits")
        for n in onnx.load(path).graph.node
        if n.op_type == "MatMulNBits" and n.name != "lm_head"
    }
    suffixes = tuple(LINEAR_KINDS[k] for k in eight_bit)
    assert {n for n, b in bits.items() if b == 8} == {n for n in bits if n.endswith(suffixes)} != set()
    assert any(n.startswith("transformer.proj.") and b == 4 for n, b in bits.items())
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 24))
    file_logits = OnnxCausalLM(path).logits(ids)
    with torch.no_grad():
        mixed = read_back(model, layout)(torch.from_numpy(ids)).logits.numpy()
        all4 = read_back(model, Layout(4, 16, 8))(torch.from_numpy(ids)).logits.numpy()
    gap = np.abs(mixed - file_logits).max()
    assert gap <= 1e-4 and np.abs(all4 - file_logits).max() > 20 * gap


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"int4_8bit_layers": "ffn_down"}, "--int4-8bit-layers applies to --int4"),
        ({"int4": True, "plain_onnx": True, "int4_8bit_layers": "none"}, "ONNX Runtime graph only"),
        ({"int4": True, "int4_8bit_layers": "none,attn_qkv"}, "give it alone"),
        ({"int4": True, "int4_8bit_layers": "attn_q"}, "unknown --int4-8bit-layers 'attn_q'"),
        ({"int4": True, "int4_8bit_layers": "ffn_up,ffn_up"}, "more than once"),
    ],
)
def test_int4_8bit_layers_refuses_what_it_cannot_write(flags, says):
    with pytest.raises(ClidepError, match=says):
        ExportConfig(**flags)


def test_the_search_picks_the_shape_whose_shipped_file_scores_best(monkeypatch):
    """grid ranks its trials by the --precision file's validation perplexity, not by fp32's: with the two
    orders crossed, int4 picks the shape fp32 would reject, and fp32 the other."""
    from clidep.compress import stock
    from clidep.compress.config import CompressConfig
    from clidep.model.config import CLIGPT2Config

    tconf = CLIGPT2Config(vocab_size=8192, n_positions=128, n_embd=64, n_layer=4, n_head=2)
    target = round(stock.size(tconf, 64, 4) / 2.4)
    shapes = stock.grid_trials(tconf, target)
    assert len(shapes) == 2
    figures = {shapes[0]["blocks"]: (100.0, 130.0), shapes[1]["blocks"]: (110.0, 120.0)}  # (fp32, int4)

    def fake_search(teacher, c, data):
        def trial(config, kept):
            fp32, int4 = figures[config.n_layer]
            return {"val_ppl": fp32, "val_ppl_int4": int4} if c.precision == "int4" else {"val_ppl": fp32}

        return trial

    monkeypatch.setattr(stock, "_brief_distillation", fake_search)
    picked = {}
    for precision in ("int4", "fp32"):
        c = CompressConfig(method="grid", precision=precision, steps=1)
        shape, _ = stock._grid("teacher", tconf, target, [4.0, 3.0, 2.0, 1.0], "bi", c, "data", lambda m: None)
        picked[precision] = shape["blocks"]
    assert picked == {"int4": shapes[1]["blocks"], "fp32": shapes[0]["blocks"]}
