"""GenerateConfig: the settings of ``clidep generate``, declared once (torch-free, like all of runtime/)."""

from __future__ import annotations

from dataclasses import dataclass

from clidep.options import MAX_SEED, Options, option


@dataclass(frozen=True)
class GenerateConfig(Options):
    """How many tokens, and how each is picked."""

    max_new_tokens: int = option(32, "Tokens to generate (stops earlier at the model's last position).", low=1)
    temperature: float = option(0.0, "0 for greedy decoding.", low=0, high=100)
    top_k: int = option(0, "Sample among the K most likely tokens (0: all).", low=0)
    seed: int = option(0, "Sampling seed.", low=0, high=MAX_SEED)
