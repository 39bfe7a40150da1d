"""clidep: compress GPT-2 by Critical Layer Isolation, export it to ONNX, benchmark it on edge devices.

Public API::

    import clidep
    model = clidep.from_gpt2(gpt2_lm_head_model)       # identity schedule, same logits
    config = clidep.CLIGPT2Config(n_embd=1024, n_layer=24, n_head=16, layer_widths=[1024] + [512] * 22 + [1024])
    clidep.param_count(config)                          # closed form, no weights needed

``import clidep`` registers ``cli_gpt2`` with ``AutoConfig`` and ``AutoModelForCausalLM`` (which
loads torch). The ``clidep`` command sets ``CLIDEP_LAZY_IMPORT=1`` first so that ``--help``
stays instant; its subcommands register when they load a model.
"""

import os

__version__ = "0.1.0"
__all__ = ["CLIGPT2Config", "CLIGPT2LMHeadModel", "from_gpt2", "param_count", "__version__"]

_API = {
    "CLIGPT2Config": "configuration",
    "CLIGPT2LMHeadModel": "modeling",
    "from_gpt2": "convert",
    "param_count": "params",
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'clidep' has no attribute {name!r}")


if not os.environ.get("CLIDEP_LAZY_IMPORT"):
    try:
        from . import modeling  # noqa: F401  (registers the model family with the Auto classes)
    except ModuleNotFoundError as exc:
        # A device that only runs exported models has numpy + onnxruntime and no torch;
        # clidep.runner must still import there.
        if exc.name not in ("torch", "transformers"):
            raise
