"""CLIGPT2: a GPT-2 whose blocks may each run at their own width.

One class per concept, as in nanoGPT: ``Attention``, ``MLP``, ``Block``, ``Projection``, the
base ``CLIGPT2Model`` and ``CLIGPT2LMHeadModel`` with the tied head. Shapes use B (batch),
T (new tokens), P (past tokens), S = P + T, w (block width), nh (heads), hs (head size),
d (base width), V (vocabulary).

The KV cache is any transformers ``Cache`` (``DynamicCache`` in ``generate()``): each block
calls ``cache.update(k, v, layer_idx)`` with its own head count, which ``DynamicCache``
stores per layer, so blocks of different widths share one cache object.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

# Relative, so that save_pretrained can copy this file and config.py beside a saved model, which
# then loads with trust_remote_code=True where clidep is not installed.
from .config import CLIGPT2Config


def causal_mask(attention_mask: torch.Tensor | None, T: int, P: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (B or 1, 1, T, S): 0 where a query may look, dtype-min elsewhere.

    Why the dtype minimum and not -inf: a left-padded query row sees only padding, and a row of
    all -inf turns into NaN under softmax; with a finite minimum it becomes a harmless uniform row.
    """
    device = attention_mask.device if attention_mask is not None else None
    q_pos = torch.arange(T, device=device) + P  # (T,) absolute position of each new token
    k_pos = torch.arange(P + T, device=device)  # (S,)
    allowed = (k_pos[None, :] <= q_pos[:, None])[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()  # (B, 1, T, S)
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


class Projection(nn.Linear):
    """Bias-free linear map of the residual stream between two widths (d_in -> d_out)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__(d_in, d_out, bias=False)


class Attention(nn.Module):
    """Causal multi-head self-attention at one block's width, with an optional KV cache."""

    def __init__(self, config: CLIGPT2Config, layer_idx: int):
        super().__init__()
        self.width = config.layer_widths[layer_idx]
        self.n_head = config.heads(layer_idx)
        self.head_dim = config.layer_head_dims[layer_idx]
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(self.width, 3 * self.width)  # fused q, k, v
        self.c_proj = nn.Linear(self.width, self.width)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        B, T, w = x.shape  # (B, T, w)
        q, k, v = self.c_attn(x).split(w, dim=2)  # 3 x (B, T, w)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, S, hs) each, past included
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_pdrop if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, w)  # (B, T, w)
        return self.resid_dropout(self.c_proj(y))  # (B, T, w)


class Linearizing(nn.Module):
    """alpha * x + (1 - alpha) * act(x) with a learned scalar alpha (0 at init: the original activation)."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.alpha * h + (1 - self.alpha) * self.act(h)


class MLP(nn.Module):
    """GPT-2's feed-forward branch: w -> inner (mlp_ratio w, or mlp_inner) -> w (standard or linearizing)."""

    def __init__(self, config: CLIGPT2Config, layer_idx: int):
        super().__init__()
        w = config.layer_widths[layer_idx]
        self.c_fc = nn.Linear(w, config.inner(layer_idx))
        act = ACT2FN[config.activation_function]
        self.act = Linearizing(act) if config.mlp_kinds[layer_idx] == "linearizing" else act
        self.c_proj = nn.Linear(config.inner(layer_idx), w)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.c_fc(x))  # (B, T, inner)
        return self.dropout(self.c_proj(h))  # (B, T, w)


class CollapsedMLP(nn.Module):
    """A feed-forward branch collapsed into one affine map w -> w (LayerCollapse)."""

    def __init__(self, config: CLIGPT2Config, layer_idx: int):
        super().__init__()
        w = config.layer_widths[layer_idx]
        self.linear = nn.Linear(w, w)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x))  # (B, T, w)


class Block(nn.Module):
    """Pre-LayerNorm transformer block at width ``layer_widths[layer_idx]``."""

    def __init__(self, config: CLIGPT2Config, layer_idx: int):
        super().__init__()
        w = config.layer_widths[layer_idx]
        self.ln_1 = nn.LayerNorm(w, eps=config.layer_norm_epsilon)
        self.attn = Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(w, eps=config.layer_norm_epsilon)
        self.mlp = (
            CollapsedMLP(config, layer_idx) if config.mlp_kinds[layer_idx] == "collapsed" else MLP(config, layer_idx)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache)  # (B, T, w)
        return x + self.mlp(self.ln_2(x))  # (B, T, w)


class CLIGPT2PreTrainedModel(PreTrainedModel):
    config_class = CLIGPT2Config
    config: CLIGPT2Config
    base_model_prefix = "transformer"
    _no_split_modules = ["Block"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, Linearizing):
            init.zeros_(module.alpha)
        elif isinstance(module, Projection):
            # Why orthogonal: a (semi-)orthogonal map keeps the residual stream's scale when the
            # width changes, where N(0, 0.02) would shrink it by ~0.02 * sqrt(d_in).
            init.orthogonal_(module.weight)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        if isinstance(module, (Attention, MLP)):
            # GPT-2's scaled init of the two residual-branch outputs per block (1/sqrt(2 n_layer)).
            init.normal_(module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))


class CLIGPT2Model(CLIGPT2PreTrainedModel):
    """Embeddings at width d, blocks at their own widths, final LayerNorm at d.

    ``proj[i]`` maps the stream into block i (``proj[0]`` from the embedding), ``proj[n_layer]``
    from the last block back to d; it is ``nn.Identity`` wherever the widths already agree.
    """

    def __init__(self, config: CLIGPT2Config):
        super().__init__(config)
        d, widths = config.n_embd, config.layer_widths
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.n_positions, d)
        self.drop = nn.Dropout(config.embd_pdrop)
        edges = list(zip([d, *widths], [*widths, d]))  # (width in, width out) at each boundary
        self.proj = nn.ModuleList(Projection(a, b) if a != b else nn.Identity() for a, b in edges)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """Return the final hidden states (B, T, d); ``cache`` is updated in place."""
        B, T = input_ids.shape
        P = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            # Same default as GPT2Model: positions continue after the cache, padding ignored.
            position_ids = (torch.arange(T, device=input_ids.device) + P)[None]  # (1, T)
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, d)
        mask = causal_mask(attention_mask, T, P, x.dtype)  # (B or 1, 1, T, S)
        for proj, block in zip(self.proj, self.h):
            x = block(proj(x), mask, cache)  # (B, T, w_i)
        return self.ln_f(self.proj[-1](x))  # (B, T, d)


class CLIGPT2LMHeadModel(CLIGPT2PreTrainedModel, GenerationMixin):
    """``CLIGPT2Model`` plus the LM head tied to the token embedding."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: CLIGPT2Config):
        super().__init__(config)
        self.transformer = CLIGPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> CausalLMOutputWithPast:
        """Logits (B, T, V) for ``input_ids`` (B, T), the updated KV cache, and the loss given ``labels``.

        The cache comes under either name transformers 5.x uses: ``cache`` (``generate()`` from
        5.24) or ``past_key_values`` (earlier 5.x, and most user code); it is returned under the
        name the installed transformers' outputs carry. Arguments that would change the result
        and are not supported raise ``TypeError``: there is no ``**kwargs`` to swallow them.
        """
        cache = _one_cache(cache, past_key_values)
        _refuse_unsupported(
            return_dict=return_dict, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        cache = cache if use_cache else None
        hidden = self.transformer(input_ids, attention_mask, position_ids, cache)  # (B, T, d)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]  # generate() needs only the last position
        logits = self.lm_head(hidden)  # (B, T, V)
        loss = None
        if labels is not None:
            # Token t predicts token t+1; -100 marks positions that do not count.
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_OUTPUT_CACHE_FIELD: cache})


def _one_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The KV cache passed under either of its names; both at once is ambiguous and refused."""
    if cache is not None and past_key_values is not None:
        raise TypeError("forward() got both 'cache' and 'past_key_values'; pass the KV cache once")
    return cache if cache is not None else past_key_values


def _refuse_unsupported(**flags: bool | None) -> None:
    """``TypeError`` for a flag asking for output this model does not produce.

    ``return_dict=False`` (tuples), ``output_attentions`` and ``output_hidden_states`` would change
    what the caller gets back; ``None`` or the value the model already honours is accepted.
    """
    wanted = {"return_dict": (None, True), "output_attentions": (None, False), "output_hidden_states": (None, False)}
    for name, value in flags.items():
        if value not in wanted[name]:
            raise TypeError(f"CLIGPT2LMHeadModel.forward() does not support {name}={value!r}")


#: Where the installed transformers' outputs hold the KV cache: ``cache`` from 5.24 on,
#: ``past_key_values`` before. Writing the native field avoids its deprecation shim.
_OUTPUT_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


# Importing this module makes ``AutoConfig`` / ``AutoModelForCausalLM`` know ``cli_gpt2``.
AutoConfig.register(CLIGPT2Config.model_type, CLIGPT2Config, exist_ok=True)
AutoModelForCausalLM.register(CLIGPT2Config, CLIGPT2LMHeadModel, exist_ok=True)
# And saved models carry ``auto_map`` and this code (with config.py), so that a program without
# clidep (lm-eval-harness, a plain transformers script) opens them with trust_remote_code=True.
CLIGPT2Config.register_for_auto_class()
CLIGPT2LMHeadModel.register_for_auto_class("AutoModelForCausalLM")
