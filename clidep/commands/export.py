"""``clidep export``: build a self-contained, validated ONNX artifact directory.

DIR holds ``model.onnx`` (fp32), optional quantised variants, the tokenizer files and
``manifest.json``. Everything is written into a temporary sibling directory and renamed into
place at the end, so an interrupted export never leaves a DIR that looks complete.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated

import typer

from clidep.commands.arguments import ModelArg
from clidep.errors import ClidepError
from clidep.export import arm, check_text, gguf_check, kv_cache
from clidep.export import gguf as gguf_files
from clidep.export import variants as variant_files
from clidep.export.config import AGREEMENT_GATES, ORT_GRAPH_OPSET, PPL_GATES, ExportConfig, gate_misses
from clidep.options import resolve
from clidep.progress import say
from clidep.runtime.manifest import ExternalData, Manifest, PplProtocol, Variant
from clidep.runtime.verify import MANIFEST, file_records, file_sha256, graph_bytes


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


# About a screen: the export's sequence (check, load, graph, variants, manifest) written once, into a
# directory that write_dir swaps in whole; each step is a helper below.
def _export(model_path: str | Path, out: Path, c: ExportConfig, overwrite: bool, log) -> Manifest:
    """export_artifact's work, with OUT's lock held."""
    from transformers import AutoConfig

    from clidep.data import calibration_batch, load_tokenizer
    from clidep.export.validate import torch_reference
    from clidep.files import check_output, free_space_check, write_dir, write_json
    from clidep.model.convert import load_model
    from clidep.perplexity import ppl_batch

    out = check_output(out, [model_path, c.data, c.ppl_data], overwrite=overwrite)
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
    batch = ppl_batch(context, model.config.vocab_size)
    n_agree = min(8, (ids.size - 1) // 128)
    agree_windows = ids[: n_agree * 128].reshape(n_agree, 128) if n_agree else ids[None, : ids.size]
    windows = (
        calibration_batch(tokenizer, c.data, c.calib_samples, min(128, context), 0)[0].numpy() if c.static else None
    )

    config = model.config

    def build(tmp: Path) -> Manifest:
        nonlocal model
        reference = torch_reference(model)
        fp32, jobs = variant_files.write_files(model, reference, tmp, c, windows, log)
        tokenizer.save_pretrained(tmp)
        gguf = (
            gguf_files.write_files(model, tmp, c, Path(str(model_path)).name, ids, reference, log) if c.gguf else None
        )
        programs = executorch_files(model, tmp, c, context, log)
        model = None  # every file is written: the checks below open ONNX Runtime sessions with torch's copy freed
        gc.collect()
        # The source's own config (GPT-2's for a plain GPT-2) lets the ecosystem's clients, such as
        # optimum's ORTModelForCausalLM, open the directory as they would their own export.
        AutoConfig.from_pretrained(model_path, trust_remote_code=False).save_pretrained(tmp)

        score = variant_files.Scorer(reference, fp32.check, ids, context, batch, agree_windows, log)
        variants = [score(fp32.path, "fp32", fp32.seconds, True, {})]
        variants += [score(tmp / j.file, j.precision, j.seconds, False, j.details) for j in jobs]
        cached = [j.file for j in jobs if j.takes_cache]  # the files that take --kv's cache
        kv_record = None
        if c.cache_precision != "fp32" and cached:
            calib, calib_label = check_text.calibration_windows(tokenizer, c, context, text_ids, ids.size, label)
            kv_record = kv_cache.apply(
                c, tmp, variants, cached, ids, context, reference, (calib, calib_label), agree_windows[:4], log
            )
        manifest = _manifest(tmp, model_path, config, c, fp32.optimize, variants, (label, ids, context))
        _enforce_gates(variants, c, log)
        manifest.kv_cache = kv_record
        if c.genai:
            from clidep.export.genai import write_folders

            log("writing the ONNX Runtime GenAI folders")
            manifest.genai = write_folders(tmp, config, variants)
        if c.check_arm:
            manifest.aarch64 = arm.checked_record(tmp, manifest, ids, context, log)
        if gguf:
            manifest.gguf = gguf_check.checked_record(
                tmp, *gguf, tokenizer, tokenizer.decode(text_ids[:400]), ids, context, log
            )
        if programs:
            from clidep.export.executorch import checked_record

            manifest.executorch = checked_record(tmp, programs, reference, ids, context, agree_windows, log)
        manifest.files = file_records(tmp)  # the tokenizer, the configs, the GenAI folders' configs
        write_json(tmp / MANIFEST, manifest.to_dict())
        return manifest

    return write_dir(out, build)


def executorch_files(model, tmp: Path, c: ExportConfig, context: int, log) -> list | None:
    """--executorch's programs of MODEL in TMP/executorch/ (export/executorch.py), or None without it."""
    if not c.executorch:
        return None
    from clidep.export.executorch import write_files

    return write_files(model, tmp, c.et_quant, context, log)


def _enforce_gates(variants: list[Variant], c: ExportConfig, log) -> None:
    """A quantised file that misses its gate fails the export (ClidepError, nothing written), unless
    --allow-gate-miss, which writes it with its misses in its manifest entry and says so."""
    missed = {v.file: gate_misses(v.precision, v.ppl_delta, v.greedy_agreement, "the fp32 graph") for v in variants}
    missed = {f: m for f, m in missed.items() if m}
    if missed and not c.allow_gate_miss:
        first, misses = next(iter(missed.items()))
        others = f" (and {', '.join(list(missed)[1:])})" if len(missed) > 1 else ""
        table = (
            "for int4, --int4-table-bits 8 keeps the embedding/head table at 8 bits; else "
            if c.int4_table_bits == 4
            else ""
        )
        raise ClidepError(
            f"{first}{others} misses its quality gate: {'; '.join(misses)}; nothing was written ({table}a wider or "
            "longer-trained student, or --allow-gate-miss to write it marked as such)"
        )
    for v in variants:
        if v.file in missed:
            v.gate_misses = missed[v.file]
            log(f"warning: {v.file} misses its quality gate ({'; '.join(v.gate_misses)}); written, as asked")


def _manifest(
    tmp: Path, model_path, config, c: ExportConfig, optimized: dict, variants: list[Variant], text
) -> Manifest:
    """The manifest's core: the source and its shapes, the check text's protocol (TEXT: label, ids,
    context), and every variant in TMP with its Δppl against the fp32 graph, size and sha256."""
    from clidep.runtime.machine import where

    label, ids, context = text
    for v in variants:
        v.ppl_delta = v.ppl / variants[0].ppl - 1
        data = tmp / f"{v.file}.data"  # weights past 2 GB live beside the graph
        v.size_bytes = graph_bytes(tmp / v.file)
        v.sha256 = file_sha256(tmp / v.file)
        if data.exists():
            v.external_data = ExternalData(data.name, file_sha256(data))
    return Manifest(
        variants=variants,
        source=str(model_path),
        model_type=config.model_type,
        layer_widths=config.layer_widths,
        kv_shapes=[list(s) for s in config.kv_shapes],
        opset=c.opset if c.plain_onnx else ORT_GRAPH_OPSET,
        optimize=optimized,
        ppl_protocol=PplProtocol(label, int(ids.size - 1), context, context // 2),
        gates={"ppl_delta": PPL_GATES, "greedy_agreement": AGREEMENT_GATES, "enforced": not c.allow_gate_miss},
        measured_on=where(),
    )


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
