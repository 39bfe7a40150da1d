"""clidep.export.traced_quantize: int8, int4 and fp16 variants of a graph."""

from __future__ import annotations

import onnx
import pytest

from clidep.errors import ClidepError
from clidep.export.config import check_block_size
from clidep.export.traced_quantize import fp16, int4_weight_only, int8_dynamic


def test_truncated_onnx_is_refused_by_quantisation(ragged, tmp_path):
    _, path = ragged
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ClidepError, match="not a readable ONNX model"):
        int8_dynamic(broken, tmp_path / "q.onnx")


def test_int8_keeps_one_int8_copy_of_the_tied_embedding(ragged, tmp_path):
    model, path = ragged
    graph = onnx.load(str(int8_dynamic(path, tmp_path / "q.onnx")))
    V, d = model.config.vocab_size, model.config.n_embd
    big = [i for i in graph.graph.initializer if sorted(i.dims) == sorted([V, d])]
    assert len(big) == 1 and big[0].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8), (
        "embedding and LM head share one 8-bit table"
    )


def test_int4_quantises_every_linear_layer_and_the_embeddings(ragged, tmp_path):
    model, path = ragged
    dst, done, linear = int4_weight_only(path, tmp_path / "q4.onnx", block_size=16)
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert done == linear == ops.count("MatMulNBits") and "GatherBlockQuantized" in ops
    assert dst.stat().st_size < 0.4 * path.stat().st_size


@pytest.mark.parametrize("block_size", [8, 24, 0, -32, 512, 4096])
def test_int4_block_sizes_are_those_matmulnbits_takes(block_size):
    with pytest.raises(ClidepError, match="--block-size must be one of 16, 32, 64, 128, 256"):
        check_block_size(block_size)


def test_fp16_keeps_fp32_inputs_and_outputs(ragged, tmp_path):
    _, path = ragged
    graph = onnx.load(str(fp16(path, tmp_path / "h.onnx")))
    assert {i.type.tensor_type.elem_type for i in graph.graph.input if i.name.startswith("past")} == {
        onnx.TensorProto.FLOAT
    }
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)
