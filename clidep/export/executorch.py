"""ExecuTorch programs (.pte) of a stock GPT-2: the runtime PyTorch users embed in Android and iOS apps.

Each program is made as ExecuTorch's own LLM flow makes one: the model over ExecuTorch's KV cache and attention
kernels (et_model.CachedGPT2: ``llama::update_cache`` and ``llama::custom_sdpa``, the cache in the program's
mutable buffers), one ``forward(input_ids, cache_position)`` for prefill and decode, dynamic in the token count,
``torch.export`` (strict), lowered to the XNNPACK backend (ExecuTorch's CPU kernels, NEON on ARM) and
serialised with the metadata methods ExecuTorch's LLM runner reads (``get_max_seq_len``, ``get_vocab_size``,
``get_bos_id``, ``get_eos_ids``, ``use_kv_cache``, ``enable_dynamic_shape``). The tokenizer files go beside
the programs, as the runner (pytorch-tokenizers) reads them. A runtime that runs them links ExecuTorch's LLM
custom ops, as its LLM runner does (runtime/pte.py loads them into the Python bindings).

Quantisation is torchao's, by the names optimum-executorch gives its schemes (``--qlinear``; config.ET_QUANTS):
- ``fp32``: the exact reference the others are checked against, as model.onnx is for the ONNX files;
- ``8da8w``: int8 weights, one scale per output channel, int8 activations quantised per token at run time;
- ``8da4w``: int4 weights in groups of 32, int8 activations likewise: XNNPACK's fastest linear kernels (the
  scheme ExecuTorch's own Llama recipes ship); the output head at 8 bits per channel, as export's int4 file
  keeps its table at 8 bits and llama.cpp's Q4_0 its output in Q6_K: with the head at 4 bits the grid student's
  (ratio 2.47, 250,000 tokens) 8da4w program scored +4.98% perplexity against its fp32 program, the teacher's
  +0.04% (8,192 WikiText-test tokens through ExecuTorch, one run at b84e560).
Every linear layer is quantised, the output head included, and in 8da8w and 8da4w the token table is looked up at
8 bits a weight, one scale per row (et_model.ByteEmbedding, ExecuTorch's ``embedding_byte`` kernel, as its Llama
recipes do; torchao's own int8 embedding lowers to ``torchao::dequantize_affine``, which ExecuTorch 1.5.1 has no
kernel for): the reference teacher's 8da4w program is 10.4 MB against 55.3 MB in fp32, perplexity +0.25% on 4,096
WikiText-test tokens (241.69 against 241.09, one run). The position table stays fp32. GPT-2 writes its linears as
transformers' ``Conv1D`` (weights stored transposed), which torchao does not recognise: they become ``nn.Linear``
first, the same product.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import numpy as np

from clidep.errors import ClidepError, ValidationError, ValueMismatch
from clidep.export.config import ET_QUANTS
from clidep.runtime.pte import Program

FOLDER = "executorch"
#: Weights per int4 group in 8da4w: torchao's and optimum-executorch's default; a linear whose input width does not
#: split into groups is refused (grid students' widths are whole 64-wide heads).
GROUP = 32
#: Each scheme's gate against the fp32 program, perplexity on the export's check text: the ONNX gate of the
#: same weight precision (8da8w as int8, 8da4w as int4).
GATE_PRECISION = {"8da8w": "int8", "8da4w": "int4"}
#: The fp32 program's logits against PyTorch's: XNNPACK sums in another order than PyTorch's kernels (1.4e-5 on
#: the reference teacher); a wrong weight, position or cache slot moves them by tenths.
LOGIT_ATOL = 1e-4


def check(config, quants: tuple[str, ...]) -> None:
    """ClidepError unless CONFIG (a CLIGPT2Config) has a stock GPT-2 form, which et_model.CachedGPT2 runs, and,
    where QUANTS asks for 8da4w, every linear's input width splits into its groups."""
    from clidep.model.convert import is_stock

    if not is_stock(config):
        raise ClidepError(
            f"--executorch needs a stock GPT-2 (one residual width): this model's blocks have widths "
            f"{sorted(set(config.layer_widths))} and head sizes {sorted(set(config.layer_head_dims))}; compress with "
            "--method grid, slim, depth or depth+slim (or export the teacher itself)"
        )
    if "8da4w" not in quants:
        return
    widths = {config.n_embd, *(config.inner(i) for i in range(config.n_layer))}
    ragged = sorted(w for w in widths if w % GROUP)
    if ragged:
        raise ClidepError(
            f"--executorch's 8da4w quantises weights in groups of {GROUP} inputs, and this model's linears read "
            f"{ragged[0]}: compress with --method grid (widths in whole heads), or --et-quant 8da8w"
        )


def _linears(model) -> None:
    """Replace every transformers ``Conv1D`` in MODEL (GPT-2's linears, weight (in, out)) by the ``nn.Linear``
    that computes the same (weight (out, in)), in place: torchao quantises ``nn.Linear`` only."""
    import torch
    from transformers.pytorch_utils import Conv1D

    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = torch.nn.Linear(n_in, n_out)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(module, child_name, linear)


def _quantize(model, quant: str) -> None:
    """MODEL's linears quantised in place by torchao as QUANT names (fp32: untouched)."""
    import logging

    import torch

    if quant == "fp32":
        return
    # torchao warns, at import, of each CUDA kernel library it cannot load on a CPU-only torch
    logging.getLogger("torchao").setLevel(logging.ERROR)
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    eight = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    if quant == "8da8w":
        quantize_(model, eight)
        return
    four = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP))
    quantize_(model, four, filter_fn=lambda module, name: isinstance(module, torch.nn.Linear) and name != "lm_head")
    quantize_(model, eight, filter_fn=lambda module, name: name == "lm_head")


def write_program(gpt2, quant: str, path: Path, context: int) -> float:
    """Export GPT2 (a stock ``GPT2LMHeadModel``, left unchanged) as QUANT into PATH with a KV cache of CONTEXT
    positions (et_model.CachedGPT2); seconds taken."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from clidep.export.et_model import CachedGPT2

    start = time.perf_counter()
    model = copy.deepcopy(gpt2).eval()
    _linears(model)
    _quantize(model, quant)
    module = CachedGPT2(model, context, byte_table=quant != "fp32").eval()
    tokens = torch.export.Dim("tokens", min=1, max=context)
    example = (torch.zeros(1, 2, dtype=torch.long), torch.arange(2))
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=({1: tokens}, {0: tokens}), strict=True)
    c = gpt2.config
    metadata = {
        "get_max_seq_len": context,
        "get_max_context_len": context,
        "get_vocab_size": c.vocab_size,
        "get_bos_id": c.bos_token_id if c.bos_token_id is not None else 0,
        "get_eos_ids": [c.eos_token_id if c.eos_token_id is not None else 0],
        "use_kv_cache": True,
        "enable_dynamic_shape": True,
    }
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=metadata)
    path.write_bytes(lowered.to_executorch().buffer)
    return time.perf_counter() - start


def write_files(model, tmp: Path, quants: tuple[str, ...], context: int, log) -> list[tuple[str, Path, float]]:
    """MODEL (clidep's stock-form model) as one .pte per QUANTS in TMP/executorch/, with the tokenizer files
    copied from TMP beside them; (quant, path, seconds) of each."""
    from clidep.model.convert import to_gpt2

    folder = tmp / FOLDER
    folder.mkdir()
    gpt2 = to_gpt2(model).eval()
    written = []
    for quant in ET_QUANTS:
        if quant in quants or quant == "fp32":
            path = folder / f"model.{quant}.pte"
            log(f"writing the ExecuTorch program {FOLDER}/{path.name} (XNNPACK)")
            written.append((quant, path, write_program(gpt2, quant, path, context)))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        if (tmp / name).exists():
            shutil.copy2(tmp / name, folder / name)
    return written


def checked_record(tmp: Path, written, reference, ids, context: int, agree_windows, log) -> dict:
    """The manifest's executorch record: every program of WRITTEN checked in ExecuTorch's runtime (check_programs),
    with its size and sha256; ClidepError where one fails."""
    from importlib.metadata import version

    from clidep.export.config import PPL_GATES
    from clidep.runtime.verify import file_sha256

    try:
        files = check_programs(written, reference, ids, context, agree_windows, log)
    except ValidationError as exc:
        raise ClidepError(f"export failed its ExecuTorch check: {exc}") from exc
    for entry, (_, path, _) in zip(files, written):
        entry.update(size_bytes=path.stat().st_size, sha256=file_sha256(path))
    return {
        "folder": FOLDER,
        "runtime": {"executorch": version("executorch"), "torchao": version("torchao"), "backend": "xnnpack"},
        "max_seq_len": context,
        "gates": {
            "max_abs_logit_diff_fp32": LOGIT_ATOL,
            "ppl_delta_vs_fp32": {q: PPL_GATES[p] for q, p in GATE_PRECISION.items()},
            "greedy_match": ["fp32"],
        },
        "files": files,
    }


def check_programs(written, reference, ids, context: int, agree_windows, log) -> list[dict]:
    """Each program of WRITTEN (quant, path, seconds; fp32 first) in ExecuTorch's runtime: the fp32 one's logits
    against PyTorch's (REFERENCE, validate.Reference: batch 1, no past) within LOGIT_ATOL and its greedy
    continuation PyTorch's; every one's perplexity on IDS (CONTEXT windows, half-window stride), next-token
    agreement and KL divergence from the fp32 program on AGREE_WINDOWS, and the gates of its weights' precision it
    misses (gate_misses, which the export enforces). Their manifest entries; ValueMismatch where the fp32 program
    is not PyTorch's."""
    from clidep.export.config import gate_misses
    from clidep.export.validate import log_probs
    from clidep.perplexity import kl_divergence, perplexity

    files, fp32 = [], None
    for quant, path, seconds in written:
        log(f"{FOLDER}/{path.name}: written in {seconds:.0f} s; checking it in ExecuTorch's runtime")
        program = Program(path)
        entry = {"quant": quant, "file": path.name, "seconds": round(seconds, 2)}
        if quant == "fp32":
            entry.update(_parity(program, reference))
        entry["ppl"] = perplexity(program.logits, ids, context, context // 2, 1).ppl
        answers = log_probs(program, agree_windows)
        fp32 = fp32 or (entry["ppl"], answers)
        kld = kl_divergence(fp32[1], answers)
        entry.update(
            ppl_delta=entry["ppl"] / fp32[0] - 1,
            greedy_agreement=float((answers.argmax(-1) == fp32[1].argmax(-1)).mean()),
            kld_mean=float(kld.mean()),
            kld_p99=float(np.percentile(kld, 99)),
        )
        misses = gate_misses(
            GATE_PRECISION.get(quant, "fp32"), entry["ppl_delta"], entry["greedy_agreement"], "the fp32 program"
        )
        if misses:  # a quality gate: the export enforces it, or --allow-gate-miss marks it
            entry["gate_misses"] = misses
        files.append(entry)
    return files


def _parity(program: Program, reference) -> dict:
    """The fp32 program against PyTorch: max |logit diff| on REFERENCE's batch-1 case without past, and its
    greedy continuation of REFERENCE's prompt; ValueMismatch where either fails."""
    ids, _mask, _pos, _split, want = next(case for case in reference.cases if case[0].shape[0] == 1)
    diff = float(np.abs(program.logits(ids) - want).max())
    if diff > LOGIT_ATOL:
        raise ValueMismatch(
            f"the fp32 ExecuTorch program's logits differ from PyTorch's by {diff:.2e} (> {LOGIT_ATOL})"
        )
    greedy = program.greedy(reference.prompt, reference.greedy.shape[1] - reference.prompt.shape[1])
    if not np.array_equal(greedy, reference.greedy):
        raise ValueMismatch("the fp32 ExecuTorch program's greedy continuation differs from PyTorch's")
    return {"max_abs_logit_diff": diff, "greedy_match": True, "greedy_tokens": int(greedy.shape[1])}
