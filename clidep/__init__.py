"""clidep: compress GPT-2 by Critical Layer Isolation, export it to ONNX, benchmark it on edge devices.

Public API::

    import clidep
    model = clidep.from_gpt2(gpt2_lm_head_model)       # identity schedule, same logits
    config = clidep.CLIGPT2Config(n_embd=1024, n_layer=24, n_head=16, layer_widths=[1024] + [512] * 22 + [1024])
    clidep.param_count(config)                          # closed form, no weights needed

``import clidep`` loads nothing heavy: the torch-free runtime (``clidep.runtime``) and the
command line's ``--help`` import neither torch nor transformers. The model family registers
``cli_gpt2`` with ``AutoConfig`` / ``AutoModelForCausalLM`` when it is first used: on
``import clidep.model``, on the first use of any name above, or when a clidep command loads a
model.
"""

__version__ = "0.1.0"
__all__ = ["CLIGPT2Config", "CLIGPT2LMHeadModel", "from_gpt2", "param_count", "__version__"]

_API = {
    "CLIGPT2Config": "clidep.model.config",
    "CLIGPT2LMHeadModel": "clidep.model.modeling",
    "from_gpt2": "clidep.model.convert",
    "param_count": "clidep.model.params",
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        importlib.import_module("clidep.model")  # registers the model family with the Auto classes
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'clidep' has no attribute {name!r}")
