"""clidep.export.onnx_file: graph loading and saving, streamed writes, the tied head, the linear layers."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from clidep.errors import ClidepError
from clidep.export.onnx_file import is_large, load_graph, save_graph


def _gather_graph(tables: int, rows: int, cols: int = 1024):
    """A graph of TABLES (ROWS, COLS) uint8 weights, each read back through its own Gather;
    table i holds i + 1 in its last row, so a read from the far end of the file shows."""
    nodes = [helper.make_node("Gather", [f"t{i}", "ids"], [f"r{i}"], axis=0) for i in range(tables)]
    outputs = [helper.make_tensor_value_info(f"r{i}", TensorProto.UINT8, [None, cols]) for i in range(tables)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for i in range(tables):  # added in place: make_model copies by serialising, which fails past 2 GiB
        table = np.zeros((rows, cols), np.uint8)
        table[-1] = i + 1
        model.graph.initializer.append(numpy_helper.from_array(table, f"t{i}"))
    return model


def test_a_graph_past_2_gb_keeps_its_weights_beside_it_and_still_runs(tmp_path):
    rows = 750_000  # three 768 MB tables: 2.3 GB, past protobuf's 2 GiB message limit (~13 s, 4 GB of memory)
    path = save_graph(_gather_graph(3, rows), tmp_path / "big.onnx")
    data = tmp_path / "big.onnx.data"
    assert is_large(path) and path.stat().st_size < 10_000 and data.stat().st_size == 3 * rows * 1024
    assert data.stat().st_mode & 0o777 == path.stat().st_mode & 0o777, "the weights as readable as the graph"
    got = ort.InferenceSession(str(path)).run(None, {"ids": np.array([0, rows - 1], np.int64)})
    assert [(r[0].max(), r[1].min()) for r in got] == [(0, 1), (0, 2), (0, 3)]


def test_a_small_graph_stays_one_file(tmp_path):
    path = save_graph(_gather_graph(1, 4, 8), tmp_path / "small.onnx")
    assert not is_large(path) and [p.name for p in tmp_path.iterdir()] == ["small.onnx"]
    assert onnx.load(str(path)).graph.initializer[0].data_location == TensorProto.DEFAULT


@pytest.mark.parametrize("damage", ["missing", "truncated", "not onnx"])
def test_unreadable_graphs_are_refused_by_name(damage, tmp_path):
    path = tmp_path / "m.onnx"
    if damage == "truncated":
        path.write_bytes(save_graph(_gather_graph(1, 4, 8), path).read_bytes()[:40])
    elif damage == "not onnx":
        path.write_text("not a graph at all")
    with pytest.raises(ClidepError, match="m.onnx"):
        load_graph(path)


@pytest.mark.parametrize("limit", [None, 50])
def test_a_streamed_graph_runs_as_one_file_and_past_the_limit_beside_its_weights(limit, tmp_path, monkeypatch):
    """stream_graph writes weights one at a time: as protobuf fragments that parse as one graph, or (past the
    2 GB limit, here lowered to 50 bytes) as external data; either way ONNX Runtime reads the same weights,
    transposed views included."""
    from clidep.export import onnx_file

    if limit:
        monkeypatch.setattr(onnx_file, "PROTOBUF_LIMIT", limit)
    w = np.arange(15, dtype=np.float32).reshape(3, 5)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Add", ["y0", "b"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    view = w.T.copy().T  # w's values, not C-contiguous: as the graph builder hands over transposed weights
    assert not view.flags.c_contiguous
    path = onnx_file.stream_graph(model, [("w", view), ("b", np.ones(5, np.float32))], tmp_path / "m.onnx")
    assert is_large(path) == bool(limit)
    assert [i.name for i in onnx.load(str(path)).graph.initializer] == ["w", "b"]
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    got = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ w + 1, rtol=1e-6)
