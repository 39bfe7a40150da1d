"""An ONNX file on disk: safe loading, saving (external data past 2 GB), streamed writes of a graph too large to
hold twice, and the edits of its tied head and linear layers."""

from __future__ import annotations

import os
from pathlib import Path

from clidep.errors import ClidepError


def load_graph(src: str | Path):
    """The ONNX model at ``src``; ``ClidepError`` when it is missing, truncated or not ONNX."""
    import onnx

    try:
        return onnx.load(str(src))
    except Exception as exc:  # protobuf raises DecodeError and friends on truncated files
        raise ClidepError(f"'{src}' is not a readable ONNX model ({type(exc).__name__}); re-export it") from exc


PROTOBUF_LIMIT = 2_000_000_000  # bytes; protobuf cannot serialise one message past 2 GiB, so stay under 2 GB


def is_large(src: str | Path) -> bool:
    """True when the model at SRC keeps its weights beside it (external data): they passed 2 GB."""
    return Path(f"{src}.data").exists()


def save_graph(graph, dst: str | Path) -> Path:
    """Write GRAPH to DST; past 2 GB its weights go beside it in ``DST.data`` (ONNX external data)."""
    import onnx

    # Summed per weight: the whole message's ByteSize raises (EncodeError) past the limit.
    large = sum(t.ByteSize() for t in graph.graph.initializer) > PROTOBUF_LIMIT
    dst = Path(dst)
    onnx.save(
        graph,
        str(dst),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=dst.name + ".data" if large else None,
    )
    if large:  # onnx creates it owner-only; readable as the graph beside it is
        os.chmod(f"{dst}.data", dst.stat().st_mode & 0o777)
    return dst


def stream_graph(graph, weights, dst: str | Path) -> Path:
    """Write GRAPH (a ModelProto without its weights) and WEIGHTS, (name, numpy array) pairs, to DST one
    weight at a time: neither the whole model nor its serialised bytes is ever held in memory, only the
    array being written (a contiguous copy where it is a view such as a transpose).

    Under 2 GB the file is one message: the graph, then each weight as a ModelProto fragment holding
    only ``graph.initializer`` (protobuf merges a message field that appears twice, so the file parses
    as one graph); past 2 GB the weights go to ``DST.data`` as ONNX external data, as save_graph does.
    Writing a GPT-2-medium-shaped graph through save_graph held the model, the protobuf and its
    serialisation at once (5.4x the graph in resident memory, benchmarks/results/export_memory.md).
    """
    from onnx import TensorProto

    weights = list(weights)
    dst = Path(dst)
    large = sum(a.nbytes for _, a in weights) > PROTOBUF_LIMIT
    data = Path(f"{dst}.data")
    with open(dst, "wb") as out, open(data, "wb") if large else open(os.devnull, "wb") as side:
        if large:
            for name, array in weights:
                header = _tensor_header(name, array)
                header.data_location = TensorProto.EXTERNAL
                for key, value in (("location", data.name), ("offset", side.tell()), ("length", array.nbytes)):
                    header.external_data.add(key=key, value=str(value))
                side.write(_raw(array))
                graph.graph.initializer.append(header)
            out.write(graph.SerializeToString())
        else:
            out.write(graph.SerializeToString())
            for name, array in weights:
                _write_fragment(out, _tensor_header(name, array), _raw(array))
    if large:
        os.chmod(data, dst.stat().st_mode & 0o777)
    return dst


def _tensor_header(name: str, array):
    """The TensorProto of ARRAY without its bytes: name, dims, element type."""
    from onnx import TensorProto, helper

    return TensorProto(name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype))


def _raw(array) -> memoryview:
    """ARRAY's bytes, C order, little-endian as ONNX stores them: its own buffer where it is contiguous."""
    import numpy as np

    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return memoryview(array.reshape(-1)).cast("B")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _write_fragment(out, header, raw: memoryview) -> None:
    """ModelProto{graph (field 7): GraphProto{initializer (field 5): HEADER + raw_data (field 9): RAW}}, with
    the bytes written straight from RAW's buffer."""
    tensor = header.SerializeToString() + bytes([9 << 3 | 2]) + _varint(raw.nbytes)
    tensor_len = len(tensor) + raw.nbytes
    initializer = bytes([5 << 3 | 2]) + _varint(tensor_len)
    graph_len = len(initializer) + tensor_len
    out.write(bytes([7 << 3 | 2]) + _varint(graph_len) + initializer + tensor)
    out.write(raw)


def weight_matmuls(graph) -> list[str]:
    """Names of the MatMul nodes whose second input is a weight (an initializer): the linear layers."""
    inits = {i.name for i in graph.graph.initializer}
    return [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def materialize_tied_head(graph) -> None:
    """Turn the Transpose that shares the tied LM head with the embedding back into a weight of its own.

    Weight-only quantisers only touch MatMuls whose weight is an initializer; int4 needs the
    head as one to quantise it (its int4 copy costs an eighth of the fp32 embedding).
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.graph.initializer}
    for node in list(graph.graph.node):
        if node.op_type == "Transpose" and node.input[0] in inits and node.name == "tied_lm_head":
            weight = numpy_helper.to_array(inits[node.input[0]]).T.copy()
            graph.graph.initializer.append(numpy_helper.from_array(weight, node.output[0]))
            graph.graph.node.remove(node)


def store_tied_head_once(graph) -> None:
    """Replace the exporter's constant-folded copy of the tied LM head (wte^T) by a Transpose of wte.

    The tracer (and ONNX Runtime's optimizer) fold ``lm_head.weight.t()`` into a second
    initializer, doubling the largest matrix on disk; a Transpose node keeps one copy in the file.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.graph.initializer}
    # The token embedding is the data input of the first Gather on input_ids.
    wte = next((n.input[0] for n in graph.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"), None)
    if wte not in inits:
        return
    head = numpy_helper.to_array(inits[wte]).T  # (d, V)
    for name, init in inits.items():
        if name != wte and tuple(init.dims) == head.shape and (numpy_helper.to_array(init) == head).all():
            graph.graph.initializer.remove(init)
            # Just before the head's MatMul, after the embedding Gather: quantisers walk the nodes in
            # order, and must meet the Gather first to quantise wte once for both of its uses.
            at = next(i for i, n in enumerate(graph.graph.node) if name in n.input)
            graph.graph.node.insert(at, helper.make_node("Transpose", [wte], [name], perm=[1, 0], name="tied_lm_head"))
            return
