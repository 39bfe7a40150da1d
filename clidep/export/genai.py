"""ONNX Runtime GenAI model folders: what Android, iOS and C/C#/C++ apps load.

ORT GenAI reads a folder holding ``genai_config.json``, the decoder graph and the tokenizer. Its
``decoder`` model type takes our I/O names as they are, and reads each layer's KV shape from the
graph's inputs (static heads and head size), so per-block widths need nothing special. The ONNX
Runtime graph shares its past and present buffers, which ORT GenAI does with
``past_present_share_buffer``; the traced graph (``--plain-onnx``) grows its cache and gets the
setting off.

``clidep export`` writes one folder per precision under ``OUT/genai/<precision>/``, each
self-contained (its graph is a hard link to the variant beside the manifest, so it takes no
space until copied): copy that one folder to the device.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from clidep.runtime import onnx_io
from clidep.runtime.manifest import Variant

GENAI_DIR = "genai"
CONFIG_FILE = "genai_config.json"
#: The tokenizer files ORT GenAI reads (tokenizer.json for BPE; the config for special tokens).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def genai_config(config, graph_file: str, kv_shapes: list[tuple[int, int]], shared_buffers: bool) -> dict:
    """The ``genai_config.json`` of a clidep export of CONFIG (a CLIGPT2Config) whose graph is
    GRAPH_FILE with per-block KV_SHAPES (heads, head size) as stored in the graph.

    Greedy search by default, up to the model's context length; EOS, BOS and PAD from the config
    (GPT-2 has no pad token: EOS serves, as transformers' generate() does).
    """
    heads, head_size = max(kv_shapes, key=lambda s: s[0] * s[1])
    eos = config.eos_token_id if config.eos_token_id is not None else 0
    return {
        "model": {
            "type": "decoder",
            "bos_token_id": config.bos_token_id if config.bos_token_id is not None else eos,
            "eos_token_id": eos,
            "pad_token_id": config.pad_token_id if getattr(config, "pad_token_id", None) is not None else eos,
            "context_length": config.n_positions,
            "vocab_size": config.vocab_size,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": graph_file,
                # Informative for a model whose blocks differ: ORT GenAI takes each layer's KV shape
                # from the graph's inputs; these are the widest block's.
                "head_size": head_size,
                "hidden_size": config.n_embd,
                "num_attention_heads": heads,
                "num_key_value_heads": heads,
                "num_hidden_layers": config.n_layer,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": onnx_io.past_name(0, "key").replace(".0.", ".%d."),
                    "past_value_names": onnx_io.past_name(0, "value").replace(".0.", ".%d."),
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {
            "do_sample": False,
            "num_beams": 1,
            "num_return_sequences": 1,
            "max_length": config.n_positions,
            "min_length": 0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
            "repetition_penalty": 1.0,
            "length_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "diversity_penalty": 0.0,
            "early_stopping": True,
            "past_present_share_buffer": shared_buffers,
        },
    }


def write_folders(out: Path, config, variants: list[Variant]) -> dict[str, str]:
    """OUT/genai/<precision>/ for each variant (its ``file``, ``precision``, ``kv_layout`` and
    ``graph_kv_shapes``), beside the tokenizer files in OUT; returns {precision: folder relative to OUT}."""
    from clidep.files import write_json

    folders = {}
    for v in variants:
        graph = out / v.file
        folder = out / GENAI_DIR / v.precision
        folder.mkdir(parents=True, exist_ok=True)
        for name in [v.file, f"{v.file}.data", *TOKENIZER_FILES]:
            if (out / name).exists():
                _link(out / name, folder / name)
        kv_shapes = [tuple(k) for k in v.graph_kv_shapes]
        write_json(
            folder / CONFIG_FILE, genai_config(config, graph.name, kv_shapes, v.kv_layout == onnx_io.SHARED_BUFFER)
        )
        folders[v.precision] = str(folder.relative_to(out))
    return folders


def _link(src: Path, dst: Path) -> None:
    """A hard link (no extra space) where the filesystem allows, a copy where it does not."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
