"""Post-export quantisation with ONNX Runtime's tools (no torch needed)."""

from __future__ import annotations

from pathlib import Path

from .errors import ClidepError


def int8_dynamic(src: str | Path, dst: str | Path, per_channel: bool = False, exclude_lm_head: bool = False) -> Path:
    """Dynamic int8 quantisation of every MatMul/Gemm weight (activations quantised at run time).

    Raises ``ClidepError`` when ``src`` is not a readable ONNX model.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        graph = onnx.load(str(src), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends on truncated files
        raise ClidepError(f"'{src}' is not a readable ONNX model ({type(exc).__name__}); re-export it") from exc
    exclude = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gemm") and "lm_head" in n.name] if exclude_lm_head else []
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=exclude)
    return Path(dst)
