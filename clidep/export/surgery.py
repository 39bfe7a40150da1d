"""Graph surgery on exported ONNX models: the tied LM head, the linear layers, safe loading."""

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
    onnx.save(graph, str(dst), save_as_external_data=large, all_tensors_to_one_file=True,
              location=dst.name + ".data" if large else None)
    if large:  # onnx creates it owner-only; readable as the graph beside it is
        os.chmod(f"{dst}.data", dst.stat().st_mode & 0o777)
    return dst


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
