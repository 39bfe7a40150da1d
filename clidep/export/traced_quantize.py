"""Passes over a written ONNX file with ONNX Runtime's own tools (no torch needed): the traced
graph's (``--plain-onnx``) int8 and int4 quantisers and transformer fusions, and fp16 for either
graph. The ONNX Runtime graph is quantised as it is built instead (``ort_graph.py``).

Every function reads an fp32 export and writes a new file; the caller validates the result.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from clidep.export.config import check_block_size
from clidep.export.onnx_file import (
    is_large,
    load_graph,
    materialize_tied_head,
    save_graph,
    store_tied_head_once,
    weight_matmuls,
)
from clidep.hardware.kernels import INT4_BLOCK
from clidep.runtime import onnx_io


def int8_dynamic(src: str | Path, dst: str | Path, per_channel: bool = False) -> Path:
    """Dynamic int8: every linear layer's weight, the token embedding and the tied LM head in int8
    (one int8 copy of wte serves both, through the tied head's Transpose); activations are
    quantised at run time; attention's activation-by-activation MatMuls stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = load_graph(src)
    head = [
        n.name
        for n in graph.graph.node
        if n.op_type == "MatMul" and any(m.name == "tied_lm_head" and m.output[0] in n.input for m in graph.graph.node)
    ]
    gather = [n.name for n in graph.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"]
    targets = weight_matmuls(graph) + head + gather + ["tied_lm_head"]
    # Shape inference cannot type the outputs of ORT's fused contrib ops (SkipLayerNormalization...);
    # every float tensor in these graphs is fp32.
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_quantize=targets,
        use_external_data_format=is_large(src),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return Path(dst)


class _Calibration:
    """ONNX Runtime CalibrationDataReader over prefill feeds (empty pasts) of calibration windows."""

    def __init__(self, windows: np.ndarray, kv_shapes: list[tuple[int, int]]):
        self._feeds = iter([self._feed(w[None], kv_shapes) for w in windows])

    @staticmethod
    def _feed(ids: np.ndarray, kv_shapes) -> dict:
        B, T = ids.shape
        return onnx_io.feeds(
            ids, np.ones((B, T), np.int64), np.arange(T)[None].repeat(B, 0), onnx_io.empty_past(kv_shapes, B)
        )

    def get_next(self):
        return next(self._feeds, None)


def int8_static(src: str | Path, dst: str | Path, windows: np.ndarray, kv_shapes) -> Path:
    """Calibrated int8 in QDQ format: activation ranges from ``windows`` (N, L) by min/max."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    graph = load_graph(src)
    targets = [n for n in weight_matmuls(graph) if "lm_head" not in n]
    quantize_static(
        str(src),
        str(dst),
        _Calibration(windows, kv_shapes),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=targets,
        op_types_to_quantize=["MatMul"],
        use_external_data_format=is_large(src),
    )
    return Path(dst)


def int4_weight_only(src: str | Path, dst: str | Path, block_size: int = INT4_BLOCK) -> tuple[Path, int, int]:
    """Weight-only int4, symmetric, blocks of ``block_size``: every linear layer, LM head included,
    as MatMulNBits, and the token/position embeddings as GatherBlockQuantized.

    Returns (path, linear layers quantised, linear layers in the graph). On the reference teacher
    the embeddings in int4 take the file from 16.4 to 8.9 MB for +0.3 points of perplexity.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    check_block_size(block_size)
    graph = load_graph(src)
    materialize_tied_head(graph)
    nbits_log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    if nbits_log.getEffectiveLevel() < logging.WARNING:
        nbits_log.setLevel(logging.WARNING)  # its INFO is a line per node
    linear = len(weight_matmuls(graph))
    quantizer = MatMulNBitsQuantizer(
        graph,
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        op_types_to_quantize=("MatMul", "Gather"),
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer.process()
    out = quantizer.model.model
    done = sum(n.op_type == "MatMulNBits" for n in out.graph.node)
    save_graph(out, dst)
    return Path(dst), done, linear


def fp16(src: str | Path, dst: str | Path) -> Path:
    """Weights and compute in fp16; logits stay fp32 (and, in the traced graph, every input and output)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    graph = load_graph(src)
    shared = any(p.key == onnx_io.KV_LAYOUT_KEY and p.value == onnx_io.SHARED_BUFFER for p in graph.metadata_props)
    # The shared KV buffers go fp16 too: a Cast around them would copy the whole cache every token.
    save_graph(convert_float_to_float16(graph, keep_io_types=["logits"] if shared else True), dst)
    return Path(dst)


def optimize(src: str | Path, dst: str | Path) -> tuple[Path, dict[str, int]]:
    """ONNX Runtime's transformer optimizer (GPT-2 fusions, CPU); returns the fused-operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(src), model_type="gpt2", num_heads=0, hidden_size=0, opt_level=1, only_onnxruntime=False)
    store_tied_head_once(opt.model)  # the optimizer folds the shared head's Transpose into a copy
    opt.save_model_to_file(str(dst))
    return Path(dst), {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
