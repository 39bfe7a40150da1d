"""Export a clidep (or GPT-2) model to one ONNX decoder graph with KV cache.

The graph's I/O is described in ``onnx_io``; validation lives in ``validate``. The export
wraps the model so that the cache travels as flat tensors: each block's ``cache.update``
concatenates its past with the new keys/values and records them as ``present.{i}``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from clidep.export.onnx_file import save_graph, store_tied_head_once
from clidep.runtime import onnx_io


class _FlatCache:
    """Just enough of transformers' Cache for CLIGPT2 (``update``, ``get_seq_length``) over flat tensors."""

    def __init__(self, past: tuple[torch.Tensor, ...]):
        self.past = past
        self.present: list[torch.Tensor | None] = [None] * len(past)

    def get_seq_length(self, layer_idx: int = 0):
        return self.past[0].shape[2]  # traced as a dynamic dimension, not a constant

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int):
        k = torch.cat([self.past[2 * layer_idx], k], dim=2)  # (B, nh, P + T, hs)
        v = torch.cat([self.past[2 * layer_idx + 1], v], dim=2)  # (B, nh, P + T, hs)
        self.present[2 * layer_idx], self.present[2 * layer_idx + 1] = k, v
        return k, v


class _Decoder(nn.Module):
    """(input_ids, attention_mask, position_ids, *past) -> (logits, *present)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = _FlatCache(past)
        hidden = self.model.transformer(input_ids, attention_mask, position_ids, cache)  # (B, T, d)
        B, T, d = hidden.shape
        logits = self.model.lm_head(hidden)  # (B, T, V)
        return (logits, *cache.present)


def export_onnx(model, path: str | Path, opset: int = 17) -> Path:
    """Write ``model`` (a CLIGPT2LMHeadModel in fp32) as an ONNX graph at ``path``, KV shapes in its metadata.

    Models whose weights pass 2 GB go to the external-data format (weights beside the graph).
    """
    import onnx

    was_training = model.training
    model = model.float()
    config = model.config
    n = config.n_layer
    B, T, P = 2, 3, 2  # dummy sizes; all three axes are dynamic in the graph
    ids = torch.randint(0, config.vocab_size, (B, T))
    mask = torch.ones(B, P + T, dtype=torch.long)
    pos = torch.arange(P, P + T).expand(B, T)
    past = tuple(torch.zeros(B, h, P, d) for h, d in config.kv_shapes for _ in range(2))
    path = Path(path)
    # The exporter restores the wrapper's train/eval mode recursively; the wrapper is built in
    # eval mode so the model is traced without dropout and left as the caller had it.
    decoder = _Decoder(model).eval()
    # Traced in a scratch folder: past 2 GB the exporter writes a file per weight beside its graph.
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch, torch.no_grad():
        traced = Path(scratch) / "model.onnx"
        torch.onnx.export(
            decoder,
            (ids, mask, pos, *past),
            str(traced),
            dynamo=False,
            opset_version=opset,
            input_names=onnx_io.input_names(n),
            output_names=onnx_io.output_names(n),
            dynamic_axes=onnx_io.dynamic_axes(n),
            do_constant_folding=True,
        )
        graph = onnx.load(str(traced), load_external_data=True)
    model.train(was_training)
    store_tied_head_once(graph)
    entry = graph.metadata_props.add()
    entry.key, entry.value = onnx_io.KV_SHAPES_KEY, onnx_io.encode_kv_shapes(config.kv_shapes)
    return save_graph(graph, path)
