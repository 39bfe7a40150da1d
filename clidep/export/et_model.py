"""The model inside an ExecuTorch program: a stock GPT-2 whose attention runs on ExecuTorch's own LLM kernels.

ExecuTorch's LLM runners and recipes (its Llama examples, optimum-executorch) hold the KV cache as one
(1, S, heads, head size) buffer per block and layer kind, written in place by ``llama::update_cache`` and read
by ``llama::custom_sdpa``, which attends causally over the first ``start_pos + T`` positions only. transformers'
own ExecuTorch recipe (``TorchExportableModuleForDecoderOnlyLM``: a static cache written with ``index_copy_``,
attention over every one of the cache's positions under a mask) ran 8.4x slower a token at 32 tokens and 4.3x
at 952 (GPT-2-small shapes, 8da4w, 2 threads: 37.3 and 36.2 ms against 3.86 and 8.46; random weights, this
machine, one run): its decode read and rewrote the whole cache every token, whatever the context. optimum-executorch
wraps the same two ops into transformers, but pins a transformers older than clidep's lock, so clidep writes the
forward pass itself around GPT-2's own modules (its LayerNorms, linears and MLP, so torchao quantises the same
layers), as nanoGPT writes GPT-2's.

``forward(input_ids (1, T), cache_position (T,))`` -> logits (1, T, V), T dynamic: the prompt's pass and each
decode step are the same method, as ExecuTorch's LLM runner calls it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ByteEmbedding(nn.Module):
    """A token table at 8 bits, one fp32 scale per row (symmetric: absmax / 127), looked up by ExecuTorch's
    ``quantized_decomposed::embedding_byte`` kernel, which returns the fp32 rows; as ExecuTorch's Llama recipes
    quantise their embeddings."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        from executorch.kernels import quantized  # noqa: F401  (registers quantized_decomposed::embedding_byte)

        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127  # (V,)
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scales.float())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized_decomposed.embedding_byte.default(self.weight, self.scales, None, -128, 127, ids)


class CachedGPT2(nn.Module):
    """GPT2 (a ``GPT2LMHeadModel``, its linears ``nn.Linear``) over a KV cache of CONTEXT positions; BYTE_TABLE:
    its token table looked up at 8 bits (ByteEmbedding), else fp32."""

    def __init__(self, gpt2, context: int, byte_table: bool = False):
        super().__init__()
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers llama::*)

        c = gpt2.config
        wte = gpt2.transformer.wte
        self.wte = ByteEmbedding(wte.weight.detach()) if byte_table else wte
        self.wpe = gpt2.transformer.wpe
        self.h, self.ln_f, self.lm_head = gpt2.transformer.h, gpt2.transformer.ln_f, gpt2.lm_head
        self.n_head, self.head_dim, self.context = c.n_head, c.n_embd // c.n_head, context
        # GPT-2's scores: q.k / sqrt(head size) where scale_attn_weights (the default), and / (layer + 1) more where
        # scale_attn_by_inverse_layer_idx
        self.scales = [
            (1 / math.sqrt(self.head_dim) if c.scale_attn_weights else 1.0)
            / (i + 1 if c.scale_attn_by_inverse_layer_idx else 1)
            for i in range(c.n_layer)
        ]
        for i in range(c.n_layer):
            shape = (1, context, self.n_head, self.head_dim)  # (B, S, nh, hs): the layout the ops take
            self.register_buffer(f"k_cache_{i}", torch.zeros(shape), persistent=False)
            self.register_buffer(f"v_cache_{i}", torch.zeros(shape), persistent=False)

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        start = cache_position[0].item()  # the tokens' first position: the cache holds the ones before it
        torch._check_is_size(start)
        torch._check(start < self.context)
        B, T = input_ids.shape
        x = self.wte(input_ids) + self.wpe(cache_position)[None]  # (1, T, d)
        for i, block in enumerate(self.h):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(self.n_head * self.head_dim, dim=2)
            q, k, v = (t.view(B, T, self.n_head, self.head_dim) for t in (q, k, v))  # (1, T, nh, hs)
            k_cache, v_cache = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
            torch.ops.llama.update_cache(k, k_cache, start)  # positions start .. start + T - 1, in place
            torch.ops.llama.update_cache(v, v_cache, start)
            y = torch.ops.llama.custom_sdpa(q, k_cache, v_cache, start, None, 0.0, True, self.scales[i])
            x = x + block.attn.c_proj(y.reshape(B, T, self.n_head * self.head_dim))
            x = x + block.mlp(block.ln_2(x))
        return self.lm_head(self.ln_f(x))  # (1, T, V)
