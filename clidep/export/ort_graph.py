"""The ONNX Runtime graph: a CLIGPT2 model written op by op with ONNX Runtime's contrib ops.

Where ``traced_graph.py`` traces the PyTorch model into plain ONNX (any runtime), this module writes the
graph ONNX Runtime decodes fastest, the way ONNX Runtime GenAI's model builder does:

* attention is one ``GroupQueryAttention`` node per block (``num_heads`` = ``kv_num_heads`` =
  the block's own head count), whose past and present KV share one preallocated buffer
  (B, heads_i, max_length, head_dim_i): decode writes one position in place instead of copying
  the whole cache on every token;
* sequences in a batch are right-padded: ``attention_mask`` (B, total) gives each row's length,
  from which the graph derives GroupQueryAttention's ``seqlens_k`` and ``total_sequence_length``;
* quantised weights are read as they are stored: every linear layer a ``MatMulNBits``
  (block-wise 4- or 8-bit, ``accuracy_level`` chosen by measurement, see ``ACCURACY_LEVEL``),
  and the tied embedding one block-quantised table read both by ``GatherBlockQuantized``
  (the token lookup) and by the head's ``MatMulNBits``: nothing is dequantised whole;
* ``logits_to_keep`` (an input with default 0 = every position) lets generation compute the
  head for the last position only.

Weights are block-quantised by ONNX Runtime's own kernels (``quantize_matmul_4bits`` /
``_8bits``, what its MatMulNBits quantizer calls), symmetric, blocks along the input axis
(``hardware/blockwise.py``, which compress's search also reads them back with).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clidep.errors import ClidepError
from clidep.export.config import ORT_GRAPH_OPSET
from clidep.hardware import blockwise
from clidep.hardware.kernels import INT4_BLOCK
from clidep.runtime import onnx_io

#: MatMulNBits compute type per weight width: 4 = int8 activations (AVX-512 VNNI / AVX2 / ARM
#: dot-product). Measured on GPT-2-medium shapes, see benchmarks/results/decode_kernels.md.
ACCURACY_LEVEL = {4: 4, 8: 4}

_ACTIVATIONS = {"gelu_new": "FastGelu", "gelu_pytorch_tanh": "FastGelu", "gelu_fast": "FastGelu", "gelu": "Gelu"}


class _Builder:
    """Nodes, initializers and I/O of one graph, named as they are added."""

    def __init__(self):
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self._count = 0

    def op(
        self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", name: str = "", **attrs
    ) -> list[str]:
        from onnx import helper

        self._count += 1
        base = name or f"{op_type}_{self._count}"
        outs = [f"{base}/out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=base, domain=domain or None, **attrs))
        return outs

    def const(self, name: str, array: np.ndarray) -> str:
        """A weight, kept as the array (often a view of the model's own tensor) until the graph is written."""
        self.inits.append((name, np.asarray(array)))
        return name


class _Weights:
    """How each linear layer is written: fp32 MatMul, or MatMulNBits at BITS (EIGHT_BIT's kinds of layer, names
    of blockwise.LINEAR_KINDS, at 8) with BLOCK-sized blocks."""

    def __init__(self, b: _Builder, bits: int | None, block: int, accuracy_level: int | None, eight_bit=()):
        self.b, self.bits, self.block, self._accuracy = b, bits, block, accuracy_level
        self.eight = tuple(blockwise.LINEAR_KINDS[k] for k in eight_bit)

    def bits_of(self, name: str) -> int | None:
        """The bits the linear layer NAME is written at (None: fp32)."""
        return 8 if self.bits is not None and self.eight and name.endswith(self.eight) else self.bits

    def quantise(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """W (N, K) as MatMulNBits stores it: packed (N, K/block, block*bits/8) uint8, scales (N, K/block)."""
        return blockwise.quantise(w, self.bits, self.block)

    def linear(self, x: str, name: str, w: np.ndarray, bias: np.ndarray | None = None) -> str:
        """x @ W.T (+ bias) for a torch Linear weight W (out, in)."""
        bits = self.bits_of(name)
        if bits is None:
            y = self.b.op("MatMul", [x, self.b.const(f"{name}.weight", w.T)], name=name)[0]
        else:
            y = self.nbits(x, name, *blockwise.quantise(w, bits, self.block), k=w.shape[1], bits=bits)
        if bias is not None:
            y = self.b.op("Add", [y, self.b.const(f"{name}.bias", bias)], name=f"{name}.add")[0]
        return y

    def nbits(
        self,
        x: str,
        name: str,
        packed: np.ndarray,
        scales: np.ndarray,
        k: int,
        packed_name: str = "",
        scales_name: str = "",
        bits: int | None = None,
    ) -> str:
        """MatMulNBits over quantised weights (at BITS, default the writer's); the tied head passes the names
        of the embedding's table and scales."""
        bits = bits or self.bits
        data = packed_name or self.b.const(f"{name}.weight_q{bits}", packed)
        scale = scales_name or self.b.const(f"{name}.scales", scales)
        return self.b.op(
            "MatMulNBits",
            [x, data, scale],
            domain="com.microsoft",
            name=name,
            K=k,
            N=packed.shape[0],
            bits=bits,
            block_size=self.block,
            accuracy_level=ACCURACY_LEVEL.get(bits) if self._accuracy is None else self._accuracy,
        )[0]


class _Params:
    """The model's weights by what they are: the one place that spells modeling.py's module names
    (the graph names its nodes and initializers after them, so profiles and quantisers read alike)."""

    def __init__(self, model):
        self.config = model.config
        self._sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    @staticmethod
    def block(i: int) -> str:
        """Block I's name, the prefix of its parts."""
        return f"transformer.h.{i}"

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(token table (V, d), position table (P, d))."""
        return self._sd["transformer.wte.weight"], self._sd["transformer.wpe.weight"]

    def projection(self, i: int) -> tuple[str, np.ndarray] | None:
        """(name, weight) of the projection into block I's width (I = n_layer: back to the base), if any."""
        key = f"transformer.proj.{i}.weight"
        return (f"transformer.proj.{i}", self._sd[key]) if key in self._sd else None

    def weight_and_bias(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias) of the module NAME: a LayerNorm (``transformer.ln_f``, a block's ``.ln_1``) or a
        linear layer (a block's ``.attn.c_attn``, ``.mlp.c_fc``, ...)."""
        return self._sd[f"{name}.weight"], self._sd[f"{name}.bias"]

    def alpha(self, i: int) -> float:
        """The learned slope of block I's linearizing MLP."""
        return float(self._sd[f"{self.block(i)}.mlp.act.alpha"])


class _Graph:
    """What every part of the graph is written with: the builder, the weight writer and the weights."""

    def __init__(
        self, model, bits: int | None, block_size: int, accuracy_level: int | None, table_bits=None, eight_bit=()
    ):
        self.b = _Builder()
        self.w = _Weights(self.b, bits, block_size, accuracy_level, eight_bit)
        # the tied embedding/head table: the linear layers' bits unless TABLE_BITS says otherwise
        self.tw = self.w if table_bits in (None, bits) else _Weights(self.b, table_bits, block_size, accuracy_level)
        self.p = _Params(model)
        self.config = model.config


def build_graph(model, bits: int | None = None, block_size: int = INT4_BLOCK, accuracy_level: int | None = None):
    """The ONNX Runtime graph (an onnx ModelProto, weights included) of ``model`` (CLIGPT2LMHeadModel, fp32);
    ``bits`` None keeps fp32 weights, 4 or 8 writes every linear layer and the tied embedding
    block-quantised, computed at ``accuracy_level`` (default ``ACCURACY_LEVEL[bits]``). Files are
    written through ``export_ort_graph``, which never holds the whole message."""
    from onnx import numpy_helper

    graph, weights = _compose(model, bits, block_size, accuracy_level)
    graph.graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(a), name) for name, a in weights)
    return graph


def _compose(
    model, bits: int | None, block_size: int, accuracy_level: int | None, table_bits=None, eight_bit=()
) -> tuple:
    """build_graph's graph without its weights, and the weights as (name, array) pairs; TABLE_BITS: the tied
    embedding/head table's bits where they differ from the linear layers'; EIGHT_BIT: the kinds of linear
    layer (blockwise.LINEAR_KINDS) written at 8 bits where BITS is 4."""
    from onnx import TensorProto, helper

    config = model.config
    if config.activation_function not in _ACTIVATIONS:
        raise ClidepError(
            f"the ONNX Runtime graph has no op for activation '{config.activation_function}'; export with --plain-onnx"
        )
    g = _Graph(model, bits, block_size, accuracy_level, table_bits, eight_bit)
    b = g.b
    n = config.n_layer
    ids, mask, pos = "input_ids", "attention_mask", "position_ids"
    keep = onnx_io.LOGITS_TO_KEEP
    b.inputs += [
        helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info(pos, TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    seqlens, total = _lengths(b, mask)
    x, head = _embeddings(g, ids, pos)
    for i in range(n):
        heads, hd = graph_kv_shapes(config)[i]
        x = _projection(g, i, x)
        x = _block(g, i, x, (seqlens, total))
        for kv in ("key", "value"):
            b.inputs.append(
                helper.make_tensor_value_info(
                    onnx_io.past_name(i, kv), TensorProto.FLOAT, ["batch_size", heads, "max_length", hd]
                )
            )
            b.outputs.append(
                helper.make_tensor_value_info(
                    f"present.{i}.{kv}", TensorProto.FLOAT, ["batch_size", heads, "max_length", hd]
                )
            )
    x = _projection(g, n, x)
    x = _layer_norm(g, "transformer.ln_f", x)
    b.inputs.append(helper.make_tensor_value_info(keep, TensorProto.INT64, []))
    b.const(keep, np.array(0, np.int64))  # an input with a default: runtimes that do not feed it get every position
    x = _last_positions(b, x, keep)
    logits = head(x)
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    b.outputs.insert(
        0,
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "logits_length", config.vocab_size]),
    )
    graph = helper.make_graph(b.nodes, "clidep-ort", b.inputs, b.outputs)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ORT_GRAPH_OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="clidep",
    )
    for key, value in (
        (onnx_io.KV_SHAPES_KEY, onnx_io.encode_kv_shapes(graph_kv_shapes(config))),
        (onnx_io.KV_LAYOUT_KEY, onnx_io.SHARED_BUFFER),
        (onnx_io.MAX_LENGTH_KEY, str(config.n_positions)),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto, b.inits


def _lengths(b: _Builder, mask: str) -> tuple[str, str]:
    """GroupQueryAttention's seqlens_k (B,) int32 = each row's length - 1, and total_sequence_length () int32."""
    ones = b.const("one_i64", np.array([1], np.int64))
    summed = b.op("ReduceSum", [mask, ones], keepdims=0, name="row_lengths")[0]  # (B,)
    seqlens = b.op(
        "Cast", [b.op("Sub", [summed, b.const("one_scalar", np.array(1, np.int64))])[0]], to=6, name="seqlens_k"
    )[0]  # int32
    width = b.op("Gather", [b.op("Shape", [mask])[0], b.const("axis1", np.array(1, np.int64))], axis=0)[0]
    total = b.op("Cast", [width], to=6, name="total_sequence_length")[0]
    return seqlens, total


def _embeddings(g: _Graph, ids: str, pos: str):
    """Token plus position embeddings (B, S, d), and the tied head as a function of the final hidden states."""
    b, w, d = g.b, g.tw, g.config.n_embd
    wte, wpe = g.p.embeddings()
    positions = b.op("Gather", [b.const("transformer.wpe.weight", wpe), pos], axis=0, name="wpe")[0]
    if w.bits is None:
        table = b.const("transformer.wte.weight", wte)
        tokens = b.op("Add", [b.op("Gather", [table, ids], axis=0, name="wte")[0], positions], name="embed")[0]

        def head(x):  # (B, S', d) -> (B, S', V): Gemm reads the embedding transposed, so it is stored once
            flat = b.op("Reshape", [x, b.const("flat_shape", np.array([-1, d], np.int64))])[0]
            logits = b.op("Gemm", [flat, table], transB=1, name="lm_head")[0]
            shape = b.op(
                "Concat",
                [
                    b.op(
                        "Slice",
                        [
                            b.op("Shape", [x])[0],
                            b.const("s0", np.array([0], np.int64)),
                            b.const("s2", np.array([2], np.int64)),
                        ],
                    )[0],
                    b.const("vocab", np.array([wte.shape[0]], np.int64)),
                ],
                axis=0,
            )[0]
            return b.op("Reshape", [logits, shape])[0]

        return tokens, head
    packed, scales = w.quantise(wte)  # (V, ceil(d/block), blob): one table for the lookup and the head
    table = b.const(f"transformer.wte.weight_q{w.bits}", packed)
    scales_3d = b.op(
        "Reshape",
        [
            b.const("transformer.wte.scales", scales),
            b.const("scales_3d", np.array([scales.shape[0], scales.shape[1], 1], np.int64)),
        ],
    )[0]
    rows = b.op(
        "GatherBlockQuantized",
        [table, ids, scales_3d],
        domain="com.microsoft",
        name="wte",
        gather_axis=0,
        quantize_axis=2,
        block_size=w.block,
        bits=w.bits,
    )[0]  # (B, S, ceil(d/block), block)
    padded = packed.shape[1] * w.block
    tokens = b.op("Reshape", [rows, b.const("embed_shape", np.array([0, 0, padded], np.int64))])[0]
    if padded != d:  # a width (a slim student's) that does not split into blocks: the last block's padding dropped
        tokens = b.op(
            "Slice",
            [
                tokens,
                b.const("embed_from", np.array([0], np.int64)),
                b.const("embed_to", np.array([d], np.int64)),
                b.const("embed_axis", np.array([2], np.int64)),
            ],
            name="embed_unpad",
        )[0]

    def head(x):
        return w.nbits(x, "lm_head", packed, scales, k=d, packed_name=table, scales_name="transformer.wte.scales")

    return b.op("Add", [tokens, positions], name="embed")[0], head


def _projection(g: _Graph, i: int, x: str) -> str:
    """The residual stream mapped into block I's width (I = n_layer: back to the base width), if it changes."""
    proj = g.p.projection(i)
    return g.w.linear(x, *proj) if proj else x


def _layer_norm(g: _Graph, name: str, x: str) -> str:
    weight, bias = g.p.weight_and_bias(name)
    return g.b.op(
        "LayerNormalization",
        [x, g.b.const(f"{name}.weight", weight), g.b.const(f"{name}.bias", bias)],
        axis=-1,
        epsilon=g.config.layer_norm_epsilon,
        name=name,
    )[0]


def graph_kv_shapes(config) -> list[tuple[int, int]]:
    """Each block's (heads, head size) in the graph's KV buffers: GroupQueryAttention takes head sizes
    in multiples of 8, so a size such as 62 (a 496-wide CLI block of 8 heads) is stored as 64."""
    return [(h, -(-d // 8) * 8) for h, d in config.kv_shapes]


def _padded_attention(p: _Params, name: str, heads: int, hd: int, hp: int) -> tuple[np.ndarray, ...]:
    """Block NAME's c_attn weight and bias and c_proj weight with each head's HD dimensions zero-padded
    to HP: q.k and the attention output are unchanged (the scale stays 1/sqrt(HD), given to the op)."""
    (w_qkv, b_qkv), (w_o, _) = p.weight_and_bias(f"{name}.attn.c_attn"), p.weight_and_bias(f"{name}.attn.c_proj")
    if hp == hd:
        return w_qkv, b_qkv, w_o
    rows = np.arange(3 * heads * hd)
    at = (rows // hd) * hp + rows % hd  # where each (part, head, dim) row goes among the padded rows
    w_pad = np.zeros((3 * heads * hp, w_qkv.shape[1]), np.float32)
    b_pad = np.zeros(3 * heads * hp, np.float32)
    w_pad[at], b_pad[at] = w_qkv, b_qkv
    o_pad = np.zeros((w_o.shape[0], heads * hp), np.float32)
    o_pad[:, at[: heads * hd]] = w_o
    return w_pad, b_pad, o_pad


def _block(g: _Graph, i: int, x: str, lengths: tuple[str, str]) -> str:
    """Block I: x + attn(ln_1(x)), then + mlp(ln_2(.)); (B, S, w_i) in and out. LENGTHS: GroupQueryAttention's
    seqlens_k and total_sequence_length."""
    b, w, p = g.b, g.w, g.p.block(i)
    heads, hd = g.config.kv_shapes[i]
    hp = graph_kv_shapes(g.config)[i][1]
    w_qkv, b_qkv, w_o = _padded_attention(g.p, p, heads, hd, hp)
    h = _layer_norm(g, f"{p}.ln_1", x)
    qkv = w.linear(h, f"{p}.attn.c_attn", w_qkv, b_qkv)  # (B, S, 3 * heads * hp): packed q, k, v
    attn = b.op(
        "GroupQueryAttention",
        [qkv, "", "", onnx_io.past_name(i, "key"), onnx_io.past_name(i, "value"), *lengths],
        n_out=3,
        domain="com.microsoft",
        name=f"{p}.attn",
        num_heads=heads,
        kv_num_heads=heads,
        scale=float(hd**-0.5),
    )
    b.nodes[-1].output[1:] = [f"present.{i}.key", f"present.{i}.value"]
    out = w.linear(attn[0], f"{p}.attn.c_proj", w_o, g.p.weight_and_bias(f"{p}.attn.c_proj")[1])
    x = b.op("Add", [x, out], name=f"{p}.residual_1")[0]
    h = _layer_norm(g, f"{p}.ln_2", x)
    return b.op("Add", [x, _mlp(g, i, h)], name=f"{p}.residual_2")[0]


def _mlp(g: _Graph, i: int, h: str) -> str:
    """Block I's feed-forward branch as its kind is built: standard, linearizing (alpha blend) or collapsed."""
    b, w, p, kind = g.b, g.w, f"{g.p.block(i)}.mlp", g.config.mlp_kinds[i]
    if kind == "collapsed":
        return w.linear(h, f"{p}.linear", *g.p.weight_and_bias(f"{p}.linear"))
    inner = w.linear(h, f"{p}.c_fc", *g.p.weight_and_bias(f"{p}.c_fc"))
    act = b.op(_ACTIVATIONS[g.config.activation_function], [inner], domain="com.microsoft", name=f"{p}.act")[0]
    if kind == "linearizing":  # alpha * h + (1 - alpha) * act(h)
        alpha = g.p.alpha(i)
        scaled = b.op("Mul", [inner, b.const(f"{p}.alpha", np.array(alpha, np.float32))])[0]
        rest = b.op("Mul", [act, b.const(f"{p}.one_minus_alpha", np.array(1 - alpha, np.float32))])[0]
        act = b.op("Add", [scaled, rest])[0]
    return w.linear(act, f"{p}.c_proj", *g.p.weight_and_bias(f"{p}.c_proj"))


def _last_positions(b: _Builder, x: str, keep: str) -> str:
    """The last KEEP positions of x (B, S, d); KEEP 0 keeps them all (its negation is the slice start)."""
    start = b.op("Reshape", [b.op("Neg", [keep])[0], b.const("vec1", np.array([1], np.int64))])[0]
    end = b.const("end_max", np.array([np.iinfo(np.int64).max], np.int64))
    return b.op("Slice", [x, start, end, b.const("seq_axis", np.array([1], np.int64))], name="logits_to_keep")[0]


def export_ort_graph(
    model,
    path: str | Path,
    bits: int | None = None,
    block_size: int = INT4_BLOCK,
    accuracy_level: int | None = None,
    table_bits: int | None = None,
    eight_bit: tuple[str, ...] = (),
) -> Path:
    """Write ``build_graph(model, bits, block_size, accuracy_level)`` at PATH, a weight at a time
    (onnx_file.stream_graph; external data past 2 GB); TABLE_BITS and EIGHT_BIT as ``write_quantised`` takes them."""
    from clidep.export.onnx_file import stream_graph

    was_training = model.training
    model.eval()
    try:
        return stream_graph(*_compose(model, bits, block_size, accuracy_level, table_bits, eight_bit), path)
    finally:
        model.train(was_training)


def write_quantised(
    model, dst: Path, bits: int, block_size: int, table_bits: int | None = None, eight_bit: tuple[str, ...] = ()
) -> tuple[Path, int, int]:
    """The block-quantised ONNX Runtime graph at DST, the kinds of linear layer EIGHT_BIT names
    (blockwise.LINEAR_KINDS) at 8 bits where BITS is 4: (path, linear layers quantised, linear layers),
    counted on the graph as built: MatMulNBits nodes against those plus the float MatMuls left (the
    graph's attention is one GroupQueryAttention per block, so every MatMul is a linear layer)."""
    from clidep.export.onnx_file import stream_graph

    graph, weights = _compose(model, bits, block_size, None, table_bits, eight_bit)
    done = sum(n.op_type == "MatMulNBits" for n in graph.graph.node)
    left = sum(n.op_type in ("MatMul", "Gemm") for n in graph.graph.node)
    return stream_graph(graph, weights, dst), done, done + left
