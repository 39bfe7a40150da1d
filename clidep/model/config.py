"""CLIGPT2Config: GPT-2's hyper-parameters plus a hidden width per block.

One config describes every width schedule clidep builds:

* identity  ``[d] * n``             (a GPT-2, converted 1:1)
* CLI       ``[d, r, ..., r, d]``   (critical blocks 0 and n-1 kept at full width)
* uniform   ``[r] * n``             (the paper's ablation baseline)

The token/position embeddings, the final LayerNorm and the tied LM head always stay at the
base width ``n_embd``; the model inserts a bias-free projection wherever consecutive widths
differ (see ``modeling.CLIGPT2Model``).
"""

from __future__ import annotations

from transformers import PreTrainedConfig

#: How a block's feed-forward branch is built (LayerCollapse, arXiv 2311.17943):
#: ``standard`` GPT-2's w -> 4w -> w with its activation; ``linearizing`` the same with the
#: activation a blend alpha * x + (1 - alpha) * act(x), alpha learned from 0 (for ReLU this is
#: exactly PReLU with slope alpha; for GELU it starts at the pretrained function); ``collapsed``
#: one affine map w -> w, what a linearizing MLP becomes once alpha reaches 1.
MLP_KINDS = ("standard", "linearizing", "collapsed")


class CLIGPT2Config(PreTrainedConfig):
    """Configuration of a GPT-2 whose blocks may each have their own width.

    ``layer_widths[i]`` is block i's residual width; block i has heads of size
    ``layer_head_dims[i]`` (default: ``head_dim`` for every block, itself defaulting to
    ``n_embd // n_head``, GPT-2's own head size), so ``layer_widths[i] // layer_head_dims[i]``
    heads, and an MLP of inner size ``mlp_ratio * layer_widths[i]`` (or ``mlp_inner`` for every block, the MLP
    axis of a stock GPT-2, ``n_inner``) built as ``mlp_kinds[i]``
    (see ``MLP_KINDS``). A per-block head size lets protected blocks keep the teacher's heads
    while narrow blocks use smaller ones.
    """

    model_type = "cli_gpt2"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    vocab_size: int = 50257  # tokens in the vocabulary (GPT-2's byte-level BPE: 50,257)
    n_positions: int = 1024  # learned positions: the longest context the model can take
    n_embd: int = 768  # base width: the embeddings, the final LayerNorm and the tied LM head
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads of a full-width block (sets head_dim's default)
    head_dim: int | None = (
        None  # head size of every block unless layer_head_dims says otherwise (None: n_embd // n_head)
    )
    layer_widths: list[int] | None = None  # residual width of each block (None: n_embd for all, a plain GPT-2)
    layer_head_dims: list[int] | None = None  # head size of each block (None: head_dim for all)
    mlp_kinds: list[str] | None = None  # each block's MLP, one of MLP_KINDS (None: standard for all)
    mlp_ratio: int = 4  # MLP inner size as a multiple of the block's width
    mlp_inner: int | None = None  # MLP inner size of every block, a stock GPT-2's n_inner (None: mlp_ratio x width)
    activation_function: str = "gelu_new"  # the MLP's activation, by transformers' name
    resid_pdrop: float = 0.1  # dropout on each block's residual branches (training only)
    embd_pdrop: float = 0.1  # dropout on the summed embeddings (training only)
    attn_pdrop: float = 0.1  # dropout on the attention weights (training only)
    layer_norm_epsilon: float = 1e-5  # LayerNorm's epsilon
    initializer_range: float = 0.02  # std of the normal init of a model built from scratch
    use_cache: bool = True  # return the KV cache from forward (generation)
    bos_token_id: int | None = 50256  # start of a text (GPT-2's <|endoftext|>)
    eos_token_id: int | None = 50256  # end of a text (GPT-2's <|endoftext|>)
    pad_token_id: int | None = None  # GPT-2 has none: generation pads with eos
    tie_word_embeddings: bool = True  # the LM head is the token embedding, transposed

    def __post_init__(self, **kwargs):
        if self.head_dim is None:
            self.head_dim = self.n_embd // self.n_head
        if self.layer_widths is None:
            self.layer_widths = [self.n_embd] * self.n_layer
        self.layer_widths = [int(w) for w in self.layer_widths]
        if self.layer_head_dims is None:
            self.layer_head_dims = [self.head_dim] * len(self.layer_widths)
        self.layer_head_dims = [int(h) for h in self.layer_head_dims]
        if self.mlp_kinds is None:
            self.mlp_kinds = ["standard"] * len(self.layer_widths)
        super().__post_init__(**kwargs)
        self.check()

    def inner(self, i: int) -> int:
        """Block I's MLP inner size."""
        return self.mlp_inner if self.mlp_inner is not None else self.mlp_ratio * self.layer_widths[i]

    def check(self) -> None:
        """Raise ``ValueError`` naming the field when the schedule cannot be built."""
        if self.n_layer < 1:
            raise ValueError(f"n_layer must be >= 1, got {self.n_layer}")
        if self.head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {self.head_dim}")
        if len(self.layer_widths) != self.n_layer:
            raise ValueError(
                f"layer_widths has {len(self.layer_widths)} entries but n_layer={self.n_layer}: give one width per block"
            )
        if self.mlp_inner is not None and self.mlp_inner < 1:
            raise ValueError(f"mlp_inner must be >= 1, got {self.mlp_inner}")
        if len(self.mlp_kinds) != self.n_layer:
            raise ValueError(
                f"mlp_kinds has {len(self.mlp_kinds)} entries but n_layer={self.n_layer}: give one per block"
            )
        bad_kinds = [(i, k) for i, k in enumerate(self.mlp_kinds) if k not in MLP_KINDS]
        if bad_kinds:
            raise ValueError(f"mlp_kinds[{bad_kinds[0][0]}]={bad_kinds[0][1]!r} is not one of {', '.join(MLP_KINDS)}")
        if len(self.layer_head_dims) != self.n_layer:
            raise ValueError(
                f"layer_head_dims has {len(self.layer_head_dims)} entries but n_layer={self.n_layer}: give one per block"
            )
        bad = [
            (i, w, h)
            for i, (w, h) in enumerate(zip(self.layer_widths, self.layer_head_dims))
            if h < 1 or w < h or w % h
        ]
        if bad:
            i, w, h = bad[0]
            raise ValueError(
                f"layer_widths[{i}]={w} is not a positive multiple of its head size {h}; "
                "pick widths divisible by the head dimension or lower head_dim"
            )

    def heads(self, layer: int) -> int:
        """Number of attention heads of block ``layer``."""
        return self.layer_widths[layer] // self.layer_head_dims[layer]

    @property
    def kv_shapes(self) -> list[tuple[int, int]]:
        """(heads, head_dim) of every block's KV cache, in block order."""
        return [(self.heads(i), self.layer_head_dims[i]) for i in range(self.n_layer)]
