"""Bring GPT-2 checkpoints into the CLIGPT2 family, and load any supported checkpoint.

``from_gpt2`` is a 1:1 weight copy: every width stays d, no projection exists, and the logits
equal GPT-2's. GPT-2 stores its linear layers as ``Conv1D`` with weight (in, out); clidep uses
``nn.Linear`` with weight (out, in), so every matrix is transposed on the way in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from clidep.errors import ClidepError

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

    from clidep.model.modeling import CLIGPT2LMHeadModel

# GPT-2 options whose behaviour CLIGPT2 does not reproduce; converting them would silently change outputs.
_UNSUPPORTED = {"scale_attn_by_inverse_layer_idx": True, "scale_attn_weights": False, "add_cross_attention": True}


def config_from_gpt2(gpt2_config) -> "CLIGPT2Config":  # noqa: F821 - imported lazily
    """The identity-schedule CLIGPT2Config of a GPT2Config; ``ValueError`` for what cannot be mapped."""
    from clidep.model.config import CLIGPT2Config

    for field, bad in _UNSUPPORTED.items():
        if getattr(gpt2_config, field, not bad) == bad:
            raise ValueError(f"GPT-2 config sets {field}={bad}, which clidep does not support")
    d = gpt2_config.n_embd
    inner = gpt2_config.n_inner or 4 * d
    return CLIGPT2Config(
        vocab_size=gpt2_config.vocab_size,
        n_positions=gpt2_config.n_positions,
        n_embd=d,
        n_layer=gpt2_config.n_layer,
        n_head=gpt2_config.n_head,
        mlp_ratio=inner // d if inner % d == 0 else 4,
        mlp_inner=None if inner % d == 0 else inner,  # the MLP axis: any n_inner, kept as it is
        activation_function=gpt2_config.activation_function,
        resid_pdrop=gpt2_config.resid_pdrop,
        embd_pdrop=gpt2_config.embd_pdrop,
        attn_pdrop=gpt2_config.attn_pdrop,
        layer_norm_epsilon=gpt2_config.layer_norm_epsilon,
        initializer_range=gpt2_config.initializer_range,
        bos_token_id=gpt2_config.bos_token_id,
        eos_token_id=gpt2_config.eos_token_id,
        pad_token_id=gpt2_config.pad_token_id,
        tie_word_embeddings=gpt2_config.tie_word_embeddings,
    )


def from_gpt2(gpt2: "GPT2LMHeadModel") -> "CLIGPT2LMHeadModel":
    """Convert a ``GPT2LMHeadModel`` into an identity-schedule ``CLIGPT2LMHeadModel`` with the same logits."""
    import torch

    from clidep.model.modeling import CLIGPT2LMHeadModel

    config = config_from_gpt2(gpt2.config)
    model = CLIGPT2LMHeadModel(config)
    src = gpt2.state_dict()
    dst = model.state_dict()
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    mapped = {}
    for name, target in dst.items():
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight, filled by tie_weights()
        assert name in src, f"GPT-2 state dict has no {name}; the layouts diverged"
        tensor = src[name]
        if name.endswith(conv1d):
            # Conv1D keeps (in, out); nn.Linear wants (out, in).
            tensor = tensor.t()
        assert tensor.shape == target.shape, (
            f"{name}: GPT-2 gives {tuple(tensor.shape)}, clidep expects {tuple(target.shape)}"
        )
        mapped[name] = tensor
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, f"missing {missing}, unexpected {unexpected}"
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "LM head must stay tied"
    return model.to(gpt2.dtype).eval()


def load_model(name_or_path: str | Path) -> "CLIGPT2LMHeadModel":
    """Load a clidep model, or a GPT-2 checkpoint converted to one, from a directory or hub id.

    Weights come from safetensors only and no remote code runs. Raises ``ClidepError`` when the
    checkpoint cannot be found or is not GPT-2-like.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from clidep.model import modeling  # noqa: F401 - registers cli_gpt2 with the Auto classes

    name = str(name_or_path)
    if not Path(name).exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ClidepError(f"no model directory at '{name}'")
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False)  # never code from a folder read
    except (OSError, ValueError) as exc:
        raise ClidepError(
            f"cannot load model '{name}': not a model directory or reachable hub id ({_first_line(exc)})"
        ) from exc
    if config.model_type not in ("gpt2", "cli_gpt2"):
        raise ClidepError(
            f"model '{name}' is a {config.model_type!r} checkpoint; clidep works on GPT-2 (gpt2) and clidep (cli_gpt2) models"
        )
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            name,
            trust_remote_code=False,
            dtype=torch.float32,  # fp16 / bf16 checkpoints (and configs that say so) computed in fp32
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # refused below, by name
        )
    except Exception as exc:  # safetensors, torch and transformers each raise their own kinds on bad files
        raise ClidepError(
            f"cannot load weights of '{name}': {_first_line(exc)} (clidep reads safetensors only)"
        ) from exc
    _refuse_partial_weights(name, info)
    _refuse_non_finite(name, model)
    if config.model_type == "gpt2":
        _tie_or_refuse(name, model, "lm_head.weight" in info.get("missing_keys", []))
        try:
            model = from_gpt2(model)
        except ValueError as exc:
            raise ClidepError(f"cannot convert '{name}': {exc}") from exc
    return model.eval()


def _refuse_partial_weights(name: str, info: dict) -> None:
    """A checkpoint must fill every weight of its config, and only those.

    transformers initialises missing weights randomly and drops unexpected ones with a warning;
    a model built that way still runs, and every figure measured on it would be wrong. The tied
    LM head may be absent: it is the token embedding.
    """
    missing = [k for k in info.get("missing_keys", []) if k != "lm_head.weight"]
    problems = [
        (what, sorted(info.get(key, [])))
        for what, key in (("unexpected", "unexpected_keys"), ("of the wrong shape", "mismatched_keys"))
    ]
    problems.insert(0, ("missing", sorted(missing)))
    for what, keys in problems:
        if keys:
            shown = ", ".join(str(k) for k in keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            raise ClidepError(
                f"'{name}' has weights {what} for its config.json: {shown}; the checkpoint and config do not match"
            )


def _refuse_non_finite(name: str, model) -> None:
    """A NaN or an infinity in any weight makes every figure measured on the model meaningless: refused, named."""
    import torch

    for key, tensor in model.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise ClidepError(f"'{name}' has non-finite weights (NaN or inf) in {key}; the checkpoint is broken")


def _tie_or_refuse(name: str, gpt2, head_missing: bool) -> None:
    """clidep's model family ties the LM head to the token embedding. A GPT-2 saved untied whose head equals
    its embedding is tied; one whose head differs cannot be held, and is refused in one line."""
    import torch

    head, embedding = gpt2.lm_head.weight, gpt2.transformer.wte.weight
    if head.data_ptr() == embedding.data_ptr():
        return
    if head_missing:
        raise ClidepError(
            f"'{name}' unties its LM head (tie_word_embeddings false) but holds no lm_head.weight; "
            "transformers would fill it randomly"
        )
    if head.shape != embedding.shape or not torch.equal(head, embedding):
        raise ClidepError(
            f"'{name}' has an LM head of its own (tie_word_embeddings false, lm_head.weight differs from the token "
            "embedding); clidep's models tie the two, so it cannot convert this checkpoint"
        )
    gpt2.config.tie_word_embeddings = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_stock(config) -> bool:
    """Whether a CLIGPT2Config is a plain GPT-2: one residual width, one head size dividing it, standard MLPs."""
    d = config.n_embd
    return (
        config.layer_widths == [d] * config.n_layer
        and len(set(config.layer_head_dims)) == 1
        and d % config.layer_head_dims[0] == 0
        and set(config.mlp_kinds) == {"standard"}
    )


def to_gpt2(model: "CLIGPT2LMHeadModel") -> "GPT2LMHeadModel":
    """The stock ``GPT2LMHeadModel`` (model_type gpt2) with MODEL's logits; the inverse of ``from_gpt2``.

    Only a model for which ``is_stock`` holds has one: ``ValueError`` otherwise (per-block widths,
    head sizes or MLP kinds have no GPT-2 form)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    if not is_stock(c):
        raise ValueError(
            f"a model of widths {c.layer_widths}, head sizes {c.layer_head_dims} and MLPs {c.mlp_kinds} "
            "is not a GPT-2: GPT-2 has one residual width, one head size and standard MLPs"
        )
    d, hd = c.n_embd, c.layer_head_dims[0]
    gconf = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.n_positions,
        n_embd=d,
        n_layer=c.n_layer,
        n_head=d // hd,
        n_inner=c.inner(0),
        activation_function=c.activation_function,
        resid_pdrop=c.resid_pdrop,
        embd_pdrop=c.embd_pdrop,
        attn_pdrop=c.attn_pdrop,
        layer_norm_epsilon=c.layer_norm_epsilon,
        initializer_range=c.initializer_range,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
        tie_word_embeddings=c.tie_word_embeddings,
    )
    gpt2 = GPT2LMHeadModel(gconf)
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    src = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    mapped = {k: v.t().contiguous() if k.endswith(conv1d) else v for k, v in src.items()}
    with torch.no_grad():
        missing, unexpected = gpt2.load_state_dict(mapped, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"GPT-2's layout differs from clidep's: missing {missing}, unexpected {unexpected}")
    gpt2.tie_weights()
    return gpt2.to(model.dtype).eval()
