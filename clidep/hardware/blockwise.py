"""Block-wise weights as ONNX Runtime's ``MatMulNBits`` stores them, both ways.

``quantise`` is ONNX Runtime's own quantiser (``quantize_matmul_4bits`` / ``_8bits``, what its MatMulNBits
quantizer calls): symmetric, blocks of BLOCK weights along the input axis, one scale a block. ``dequantise``
gives back the weights the file's kernel multiplies by, so a PyTorch model can be scored with the weights its
int4 or int8 file will hold (``round_trip``) before any file is written: the export writes the first, the
search that picks a student's shape ranks by the second. tests/test_shipped.py holds the two equal to
MatMulNBits' own product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clidep.hardware.kernels import INT4_BLOCK, INT4_EIGHT_BIT, INT4_TABLE_BITS, INT8_BLOCK

#: A symmetric block's zero point: ONNX Runtime stores q + 2^(bits-1) unsigned.
_OFFSET = {4: 8, 8: 128}

#: The kinds of linear layer a file may keep at 8 bits, named as llama.cpp names a GPT-2's tensors in GGUF
#: (``blk.N.attn_qkv``, ...), each the end of its module's name in a GPT-2 block (transformers' modeling_gpt2
#: and clidep's model alike). A bottleneck's projections and a collapsed MLP are none of these.
LINEAR_KINDS = {"attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}


@dataclass(frozen=True)
class Layout:
    """How a precision's ONNX file stores a model's weights (export/variants.py writes these)."""

    bits: int  # every linear layer's weights but EIGHT_BIT's
    block: int  # weights a scale covers, along the input axis
    table_bits: int  # the tied token embedding / LM head table (same blocks)
    eight_bit: tuple[str, ...] = ()  # the kinds of linear layer (LINEAR_KINDS' keys) kept at 8 bits

    def bits_of(self, module: str) -> int:
        """The bits of the linear layer named MODULE (``transformer.h.3.attn.c_attn``, ...)."""
        return 8 if module.endswith(tuple(LINEAR_KINDS[k] for k in self.eight_bit)) else self.bits


#: The int8 and int4 ONNX files' layouts at export's defaults (int4's --block-size, --int4-table-bits and
#: --int4-8bit-layers).
LAYOUTS = {"int8": Layout(8, INT8_BLOCK, 8), "int4": Layout(4, INT4_BLOCK, INT4_TABLE_BITS, INT4_EIGHT_BIT)}


def quantise(w: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """W (N, K) as MatMulNBits stores it: packed (N, ceil(K/block), block*bits/8) uint8, scales (N, ceil(K/block))."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    n, k = w.shape
    blocks = -(-k // block)
    packed = np.zeros((n, blocks, block * bits // 8), np.uint8)
    scales = np.zeros((n, blocks), np.float32)
    zero_points = np.zeros((n, blocks), np.uint8)  # unused: symmetric
    kernel = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
    kernel(packed, np.ascontiguousarray(w.T, np.float32), scales, zero_points, block, n, k, True)
    return packed, scales


def dequantise(packed: np.ndarray, scales: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The (N, K) float32 weights that PACKED and SCALES (``quantise``'s) stand for."""
    n, blocks, _ = packed.shape
    if bits == 4:  # two weights a byte, the first in the low nibble
        packed = np.stack([packed & 0x0F, packed >> 4], axis=-1)
    q = packed.reshape(n, blocks, -1).astype(np.float32) - _OFFSET[bits]  # (N, blocks, block)
    return (q * scales[..., None]).reshape(n, -1)[:, :k]


def round_trip(w: np.ndarray, bits: int, block: int) -> np.ndarray:
    """W (N, K) as the file's kernel sees it: quantised by ONNX Runtime and read back."""
    return dequantise(*quantise(w, bits, block), bits, w.shape[1])
