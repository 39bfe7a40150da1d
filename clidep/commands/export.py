"""``clidep export``: build a self-contained, validated ONNX artifact directory.

DIR holds ``model.onnx`` (fp32), optional quantised variants, the tokenizer files and
``manifest.json``. Everything is written into a temporary sibling directory and renamed into
place at the end, so an interrupted export never leaves a DIR that looks complete.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from clidep.commands.arguments import ModelArg
from clidep.export import arm, check_text, gguf_check, kv_cache
from clidep.export import gguf as gguf_files
from clidep.export import variants as variant_files
from clidep.export.config import ExportConfig, gate_misses
from clidep.export.record import core_manifest, enforce_gates, other_misses
from clidep.options import resolve
from clidep.progress import say
from clidep.runtime.manifest import Manifest
from clidep.runtime.verify import MANIFEST, file_records


def export_artifact(
    model_path: str | Path,
    out: str | Path,
    config: ExportConfig | None = None,
    *,
    overwrite: bool = False,
    log=None,
    **options,
) -> Manifest:
    """Export MODEL to ONNX in OUT, validate it against PyTorch, and add the precisions asked for.

    CONFIG (an ``ExportConfig``), or its fields as keywords (``int8=True, ppl_tokens=4096, ...``),
    says which variants. Every variant is compared with PyTorch (max |logit diff|, greedy match),
    scored by perplexity on the first PPL_TOKENS tokens of PPL_DATA (0: the whole text) against
    the fp32 export, and by greedy agreement with it (same argmax next token, teacher-forced, on
    up to 8 x 128 tokens). STATIC makes the int8 variant calibrated (QDQ) on CALIB_SAMPLES
    windows of DATA instead of dynamic. An existing OUT is replaced (OVERWRITE) only once the new
    artifact is complete; OUT is locked against other writers and readers meanwhile (LOG hears of
    leftovers of interrupted runs removed beside it).
    """
    from clidep.locks import write_lock

    c = resolve(ExportConfig, config, options)
    if c.check_arm:
        from clidep.export.arm import launchers

        launchers()  # before any work: the emulated environment exists
    with write_lock(Path(out), log):
        return _export(model_path, Path(out), c, overwrite, log or (lambda m: None))


@dataclass
class _Source:
    """What an export reads once, before it writes a file."""

    model: object  # the model (freed once every file is written)
    tokenizer: object
    context: int  # window of the perplexity checks: the model's positions, at most 1024
    ids: np.ndarray  # the check text's tokens that the gates score
    label: str  # the check text's name
    text_ids: np.ndarray  # all of the check text's tokens
    agree_windows: np.ndarray  # (n, 128) windows of IDS on which next tokens and KLD are compared
    windows: np.ndarray | None  # --static's calibration windows


# The export's sequence, written once: read the source (_read), write every file (_build), then check and record
# them (_check), in a directory that write_dir swaps in whole.
def _export(model_path: str | Path, out: Path, c: ExportConfig, overwrite: bool, log) -> Manifest:
    """export_artifact's work, with OUT's lock held."""
    from clidep.files import check_output, write_dir

    out = check_output(out, [model_path, c.data, c.ppl_data], overwrite=overwrite)
    source = _read(model_path, out, c, log)
    return write_dir(out, lambda tmp: _build(tmp, model_path, source, c, log))


def _read(model_path: str | Path, out: Path, c: ExportConfig, log) -> _Source:
    """MODEL_PATH loaded and the refusals that need no writing (a model llama.cpp or ExecuTorch cannot hold, too
    little space), its tokenizer, and the check text's tokens."""
    from clidep.data import calibration_batch, load_tokenizer
    from clidep.files import free_space_check
    from clidep.model.convert import load_model

    model = load_model(model_path)
    if c.gguf:
        from clidep.export.gguf import check_stock
        from clidep.runtime.llamacpp import bin_dir

        check_stock(model.config)  # a model llama.cpp cannot hold is refused as such, built or not
        bin_dir()  # before any writing: llama.cpp is built, to check the GGUF files in
    if c.executorch:
        from clidep.export import executorch

        executorch.check(model.config, c.et_quant)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    log(f"{model_path}: {fp32_bytes / 4e6:.1f} M parameters; writing the fp32 graph")
    # the variants, the optimiser's temporary graph, --gguf's F32, F16, Q8_0 and Q4_0 files at most,
    # and --executorch's fp32, 8da8w and 8da4w programs
    copies = 1 + 0.3 * (c.int8 or c.static) + 0.25 * c.int4 + 0.5 * c.fp16 + 1 + 1.95 * c.gguf + 1.6 * c.executorch
    free_space_check(out.parent, int(fp32_bytes * copies), "this export")
    tokenizer = load_tokenizer(model_path, model.config.vocab_size)
    context = min(model.config.n_positions, 1024)
    ids, label, text_ids = check_text.ppl_ids(tokenizer, c)
    n_agree = min(8, (ids.size - 1) // 128)
    agree_windows = ids[: n_agree * 128].reshape(n_agree, 128) if n_agree else ids[None, : ids.size]
    windows = (
        calibration_batch(tokenizer, c.data, c.calib_samples, min(128, context), 0)[0].numpy() if c.static else None
    )
    return _Source(model, tokenizer, context, ids, label, text_ids, agree_windows, windows)


def _build(tmp: Path, model_path: str | Path, s: _Source, c: ExportConfig, log) -> Manifest:
    """Every file of the export in TMP: the graphs, the tokenizer and the source's config, --gguf's files and
    --executorch's programs; then their checks and the manifest (_check)."""
    from transformers import AutoConfig

    from clidep.export.validate import torch_reference
    from clidep.files import write_json

    reference = torch_reference(s.model)
    fp32, jobs = variant_files.write_files(s.model, reference, tmp, c, s.windows, log)
    s.tokenizer.save_pretrained(tmp)
    name = Path(str(model_path)).name
    gguf = gguf_files.write_files(s.model, tmp, c, name, s.ids, reference, log) if c.gguf else None
    programs = executorch_files(s.model, tmp, c, s.context, log)
    config, s.model = s.model.config, None  # every file is written: the checks below run with torch's copy freed
    gc.collect()
    # The source's own config (GPT-2's for a plain GPT-2) lets the ecosystem's clients, such as
    # optimum's ORTModelForCausalLM, open the directory as they would their own export.
    AutoConfig.from_pretrained(model_path, trust_remote_code=False).save_pretrained(tmp)
    manifest = _check(tmp, model_path, config, s, c, (reference, fp32, jobs), log)
    if gguf:
        sample = s.tokenizer.decode(s.text_ids[:400])
        manifest.gguf = gguf_check.checked_record(tmp, *gguf, s.tokenizer, sample, s.ids, s.context, log)
    if programs:
        from clidep.export.executorch import checked_record

        manifest.executorch = checked_record(tmp, programs, reference, s.ids, s.context, s.agree_windows, log)
    enforce_gates(other_misses(manifest), c, log)
    manifest.files = file_records(tmp)  # the tokenizer, the configs, the GenAI folders' configs
    write_json(tmp / MANIFEST, manifest.to_dict())
    return manifest


def _check(tmp: Path, model_path, config, s: _Source, c: ExportConfig, written, log) -> Manifest:
    """The graphs of WRITTEN (the PyTorch reference, the fp32 graph, the quantised jobs) scored against the fp32
    graph, their gates enforced, --kv's cache applied, the GenAI folders written and --check-arm run: the manifest
    so far."""
    from clidep.perplexity import ppl_batch

    reference, fp32, jobs = written
    batch = ppl_batch(s.context, config.vocab_size)
    score = variant_files.Scorer(reference, fp32.check, s.ids, s.context, batch, s.agree_windows, log)
    variants = [score(fp32.path, "fp32", fp32.seconds, True, {})]
    variants += [score(tmp / j.file, j.precision, j.seconds, False, j.details) for j in jobs]
    cached = [j.file for j in jobs if j.takes_cache]  # the files that take --kv's cache
    kv_record = None
    if c.cache_precision != "fp32" and cached:
        calib = check_text.calibration_windows(s.tokenizer, c, s.context, s.text_ids, s.ids.size, s.label)
        kv_record = kv_cache.apply(
            c, tmp, variants, cached, s.ids, s.context, reference, calib, s.agree_windows[:4], log
        )
    manifest = core_manifest(tmp, model_path, config, c, fp32.optimize, variants, (s.label, s.ids, s.context))
    for v in variants:
        v.gate_misses = gate_misses(v.precision, v.ppl_delta, v.greedy_agreement, "the fp32 graph") or None
    enforce_gates({v.file: v.gate_misses for v in variants}, c, log)  # before the slower checks: a refusal stops here
    manifest.kv_cache = kv_record
    if c.genai:
        from clidep.export.genai import write_folders

        log("writing the ONNX Runtime GenAI folders")
        manifest.genai = write_folders(tmp, config, variants)
    if c.check_arm:
        manifest.aarch64 = arm.checked_record(tmp, manifest, s.ids, s.context, log)
    return manifest


def executorch_files(model, tmp: Path, c: ExportConfig, context: int, log) -> list | None:
    """--executorch's programs of MODEL in TMP/executorch/ (export/executorch.py), or None without it."""
    if not c.executorch:
        return None
    from clidep.export.executorch import write_files

    return write_files(model, tmp, c.et_quant, context, log)


def command(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="Artifact directory (ONNX files, tokenizer, manifest.json).")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT once the new artifact is complete.")
    ] = False,
    *,
    options,
) -> None:
    """Export MODEL to one ONNX graph with KV cache, validate it against PyTorch, and optionally quantise it.

    Validation: max |logit diff| <= 1e-4 on batch 1 and a left-padded batch 2 at past length 0
    and > 0, and identical 32-token greedy continuations. The manifest records size, sha256,
    parity and perplexity of every variant.
    """
    from rich.console import Console
    from rich.table import Table

    manifest = export_artifact(model, out, options, overwrite=overwrite, log=say)
    protocol = manifest.ppl_protocol
    table = Table(title=f"{out} ({protocol.tokens:,} tokens of {protocol.data})")
    for col in ("file", "precision", "MB", "max |Δlogit| vs torch", "ppl", "Δppl", "top-1 agreement", "KLD"):
        table.add_column(col, justify="right")
    for v in manifest.variants:
        table.add_row(
            v.file,
            v.precision,
            f"{v.size_bytes / 1e6:.1f}",
            f"{v.max_abs_logit_diff:.2e}",
            f"{v.ppl:.2f}",
            f"{v.ppl_delta:+.2%}",
            f"{v.greedy_agreement:.0%}",
            f"{v.kld_mean:.2g}",
        )
    console = Console(width=max(Console().width, 110))
    console.print(table)
    opt = manifest.optimize
    console.print(
        f"graph optimisation: {'applied' if opt['applied'] else 'not applied'} ({opt['reason']}); fusions {opt['fusions']}"
    )
    if manifest.kv_cache:
        kv = manifest.kv_cache
        checked = [
            f"{v.file} Δppl {v.kv_cache['ppl_delta']:+.3%}, next token {v.kv_cache['decode_agreement']:.1%}"
            for v in manifest.variants
            if "ppl_delta" in v.kv_cache
        ]
        console.print(
            f"KV cache {kv['precision']}{' ' + kv['mode'] if 'mode' in kv else ''} against the same file with an "
            f"fp32 cache: {'; '.join(checked)}"
        )
    if manifest.aarch64:
        console.print(_arm_table(manifest.aarch64))


def _arm_table(arm: dict):
    """export --check-arm's figures: each variant on each emulated core against x86's run of the same file."""
    from rich.table import Table

    table = Table(
        title=f"on emulated aarch64 ({arm['emulator']}; {arm['ppl_tokens']:,} tokens): what the kernels "
        "compute there, not how fast"
    )
    for col in (
        "file",
        "core",
        "max |Δlogit| vs x86",
        "next token = x86",
        "= x86 fp32",
        "greedy = x86",
        "ppl",
        "Δppl vs x86 fp32",
        "GenAI greedy = x86",
    ):
        table.add_column(col, justify="right")
    for core, c in arm["cores"].items():
        for file, f in c["variants"].items():
            genai = f.get("genai_greedy_match")
            table.add_row(
                file,
                core,
                f"{f['max_abs_logit_diff']:.2e}",
                f"{f['argmax_agreement']:.1%}",
                f"{f['fp32_agreement']:.1%}",
                "yes" if f["greedy_match"] else "no",
                f"{f['ppl']:.2f}",
                f"{f['ppl_delta']:+.2%}",
                "-" if genai is None else "yes" if genai else "no",
            )
    return table
