"""The I/O description of a clidep ONNX graph: names, dynamic axes, KV shapes.

Names follow optimum's decoder convention so the ecosystem's clients recognise them:
inputs ``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.{i}.key/.value``;
outputs ``logits``, ``present.{i}.key/.value``. One graph serves prefill (past length 0) and
decode. Each block's KV shape (heads, head_dim) is stored in the model's metadata under
``clidep.kv_shapes`` so a runner can build empty pasts without knowing the architecture.
This module needs no torch.
"""

from __future__ import annotations

import json

KV_SHAPES_KEY = "clidep.kv_shapes"
#: Metadata key of the KV layout: absent for the traced graph (each pass returns a present one
#: position longer than its past); SHARED_BUFFER for the ONNX Runtime graph, whose past and present
#: are one preallocated (B, heads_i, max_length, head_dim_i) buffer per block, written in place.
KV_LAYOUT_KEY = "clidep.kv_layout"
SHARED_BUFFER = "shared-buffer"
#: Metadata key of the positions the model has (its buffers' default capacity).
MAX_LENGTH_KEY = "clidep.max_length"
#: Input of the ONNX Runtime graph: compute logits for the last N positions only (0, its default: all).
LOGITS_TO_KEEP = "logits_to_keep"


def input_names(n_layer: int) -> list[str]:
    pasts = [past_name(i, kv) for i in range(n_layer) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *pasts]


def output_names(n_layer: int) -> list[str]:
    return ["logits", *[f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]]


def dynamic_axes(n_layer: int) -> dict[str, dict[int, str]]:
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for i in range(n_layer):
        for kv in ("key", "value"):
            axes[past_name(i, kv)] = {0: "batch_size", 2: "past_sequence_length"}
            axes[f"present.{i}.{kv}"] = {0: "batch_size", 2: "total_sequence_length"}
    return axes


def right_pad(input_ids, attention_mask):
    """A left-padded batch (padding first, as transformers' generate() pads) as the shared-buffer graph
    takes it: each row's tokens first, then padding. Returns (ids, mask, positions, shift) where
    SHIFT[r] is how far row r moved left."""
    import numpy as np

    ids, mask = np.asarray(input_ids, np.int64), np.asarray(attention_mask, np.int64)
    shift = (mask == 0).argmin(-1) * mask.any(-1)  # leading zeros per row
    cols = (np.arange(ids.shape[1])[None] + shift[:, None]) % ids.shape[1]
    rows = np.arange(ids.shape[0])[:, None]
    packed_mask = mask[rows, cols]
    return ids[rows, cols], packed_mask, left_pad_positions(packed_mask), shift


def past_name(layer: int, kv: str) -> str:
    """The graph input holding block LAYER's past keys (KV = "key") or values ("value")."""
    return f"past_key_values.{layer}.{kv}"


def feeds(input_ids, attention_mask, position_ids, past: list) -> dict:
    """The graph's inputs for one pass; PAST lists each block's key then value (B, heads_i, P, head_dim_i)."""
    import numpy as np

    out = {
        "input_ids": np.asarray(input_ids, np.int64),
        "attention_mask": np.asarray(attention_mask, np.int64),
        "position_ids": np.asarray(position_ids, np.int64),
    }
    for i in range(len(past) // 2):
        out[past_name(i, "key")], out[past_name(i, "value")] = past[2 * i], past[2 * i + 1]
    return out


def empty_past(kv_shapes: list[tuple[int, int]], batch: int, dtype="float32") -> list:
    """Zero-length past for every block, key then value: (B, heads_i, 0, head_dim_i) each."""
    import numpy as np

    return [np.zeros((batch, h, 0, d), dtype=dtype) for h, d in kv_shapes for _ in range(2)]


def left_pad_positions(attention_mask):
    """Position ids of a left-padded batch: real tokens count from 0, padding sits at 0 (as transformers' generate())."""
    import numpy as np

    return np.clip(np.asarray(attention_mask).cumsum(-1) - 1, 0, None)


def encode_kv_shapes(kv_shapes: list[tuple[int, int]]) -> str:
    return json.dumps([list(s) for s in kv_shapes])


def decode_kv_shapes(metadata: dict[str, str]) -> list[tuple[int, int]] | None:
    """The per-block KV shapes a clidep export stores, or None for a graph from another exporter."""
    if KV_SHAPES_KEY not in metadata:
        return None
    return [tuple(s) for s in json.loads(metadata[KV_SHAPES_KEY])]


def kv_cache_bytes(kv_shapes: list[tuple[int, int]], context: int, itemsize: int = 4) -> int:
    """Bytes of a KV cache of (heads, head size) per block holding CONTEXT tokens: what decode reads
    per token besides the weights (fp32 by default)."""
    return sum(2 * h * d * context * itemsize for h, d in kv_shapes)


def kv_shapes_from_config(config: dict) -> list[tuple[int, int]]:
    """KV shapes of a model from its config.json: clidep's per-block widths, or GPT-2's uniform heads
    (what optimum's own GPT-2 exports need, since they carry no such metadata).

    It restates CLIGPT2Config's head-size defaults on purpose: the runtime reads config.json on a
    device without transformers, so it cannot build the config class.
    """
    if config.get("model_type") == "cli_gpt2":
        hd = config.get("head_dim") or config["n_embd"] // config["n_head"]
        hds = config.get("layer_head_dims") or [hd] * len(config["layer_widths"])
        return [(w // h, h) for w, h in zip(config["layer_widths"], hds)]
    if config.get("model_type") == "gpt2":
        return [(config["n_head"], config["n_embd"] // config["n_head"])] * config["n_layer"]
    raise ValueError(f"cannot tell the KV-cache layout of a {config.get('model_type')!r} model")


def positions_beside(graph_folder) -> int | None:
    """The model's position count from the config.json beside an exported graph (None without one)."""
    from pathlib import Path

    config = Path(graph_folder) / "config.json"
    return json.loads(config.read_text()).get("n_positions") if config.is_file() else None
