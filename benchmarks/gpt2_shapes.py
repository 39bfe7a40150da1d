"""The model shape the speed benchmarks run at: GPT-2 medium by default, random weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """--layers, --width, --heads, --vocab and --positions, GPT-2 medium's by default."""
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--positions", type=int, default=1024)


def random_model(a: argparse.Namespace):
    """A CLIGPT2 model of those shapes (identity schedule) with seeded random weights, in eval mode."""
    import torch

    from clidep import CLIGPT2Config, CLIGPT2LMHeadModel

    torch.manual_seed(0)
    config = CLIGPT2Config(
        vocab_size=a.vocab, n_positions=a.positions, n_embd=a.width, n_layer=a.layers, n_head=a.heads
    )
    return CLIGPT2LMHeadModel(config).eval()


def save_original(a: argparse.Namespace, folder: Path):
    """A stock GPT-2 of those shapes with seeded random weights and GPT-2's tokenizer, saved in FOLDER as
    from_pretrained reads it; returns its transformers config."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from clidep.data import load_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(n_embd=a.width, n_layer=a.layers, n_head=a.heads, vocab_size=a.vocab, n_positions=a.positions)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    load_tokenizer("gpt2").save_pretrained(folder)
    return config


def stock_shape(folder: Path) -> tuple[int, int, int] | None:
    """(blocks, width, MLP inner) of the stock GPT-2 saved in FOLDER (its config.json; n_inner unset is 4 x
    width), None where FOLDER holds another model type (clidep's own CLI-GPT-2)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    if config.get("model_type") != "gpt2":
        return None
    return config["n_layer"], config["n_embd"], config.get("n_inner") or 4 * config["n_embd"]


def shape_label(folder: Path) -> str:
    """'blocks x width, MLP inner' of the stock GPT-2 saved in FOLDER ('not a stock GPT-2' for clidep's own)."""
    shape = stock_shape(folder)
    return f"{shape[0]} x {shape[1]}, MLP {shape[2]}" if shape else "not a stock GPT-2"
