"""``clidep export``: build a self-contained, validated ONNX artifact directory.

DIR holds ``model.onnx`` (fp32), optional quantised variants, the tokenizer files and
``manifest.json``. Everything is written into a temporary sibling directory and renamed into
place at the end, so an interrupted export never leaves a DIR that looks complete.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from clidep.commands.arguments import ModelArg
from clidep.errors import ClidepError, ValidationError
from clidep.export.config import MIN_GATE_TOKENS, ORT_GRAPH_OPSET, PPL_GATES, ExportConfig
from clidep.hardware.kernels import INT8_BLOCK
from clidep.options import resolve
from clidep.progress import say
from clidep.runtime import onnx_io
from clidep.runtime.verify import file_records, file_sha256, graph_bytes

# Measured on the reference teacher (32,768 WikiText-test tokens, context 512 / stride 256, fp32
# 46.9 MB): blocks int8 with embedding and head fp32 18.7 MB, +0.12% ppl; blocks, embedding and
# head int8 as separate copies 14.5 MB, +0.10%; one shared int8 embedding/head 12.4 MB, +0.27%;
# per-channel instead of per-tensor +0.1 MB for -0.03 points. The target is <= +2%, so the
# smallest file wins: everything int8, one shared embedding/head, per-tensor.
INT8_PER_CHANNEL = False


def export_artifact(
    model_path: str | Path,
    out: str | Path,
    config: ExportConfig | None = None,
    *,
    overwrite: bool = False,
    log=None,
    **options,
) -> dict:
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
def _export(model_path: str | Path, out: Path, c: ExportConfig, overwrite: bool, log) -> dict:
    """export_artifact's work, with OUT's lock held."""
    from transformers import AutoConfig

    from clidep.data import calibration_batch, load_tokenizer
    from clidep.export.validate import next_tokens, torch_reference, validate_export
    from clidep.files import check_output, free_space_check, write_dir, write_json
    from clidep.model.convert import load_model
    from clidep.perplexity import perplexity, ppl_batch
    from clidep.runtime.machine import where
    from clidep.runtime.runner import OnnxCausalLM

    out = check_output(out, [model_path, c.data, c.ppl_data], overwrite=overwrite)
    model = load_model(model_path)
    if c.gguf:
        from clidep.export.gguf import check_stock
        from clidep.runtime.llamacpp import bin_dir

        check_stock(model.config)  # a model llama.cpp cannot hold is refused as such, built or not
        bin_dir()  # before any writing: llama.cpp is built, to check the GGUF files in
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    log(f"{model_path}: {fp32_bytes / 4e6:.1f} M parameters; writing the fp32 graph")
    # the variants, the optimiser's temporary graph, and --gguf's F32, F16, Q8_0 and Q4_0 files at most
    copies = 1 + 0.3 * (c.int8 or c.static) + 0.25 * c.int4 + 0.5 * c.fp16 + 1 + 1.95 * c.gguf
    free_space_check(out.parent, int(fp32_bytes * copies), "this export")
    tokenizer = load_tokenizer(model_path, model.config.vocab_size)
    context = min(model.config.n_positions, 1024)
    ids, label, text_ids = _ppl_ids(tokenizer, c)
    batch = ppl_batch(context, model.config.vocab_size)
    n_agree = min(8, (ids.size - 1) // 128)
    agree_windows = ids[: n_agree * 128].reshape(n_agree, 128) if n_agree else ids[None, : ids.size]
    windows = (
        calibration_batch(tokenizer, c.data, c.calib_samples, min(128, context), 0)[0].numpy() if c.static else None
    )

    config = model.config

    def build(tmp: Path) -> dict:
        nonlocal model
        reference = torch_reference(model)
        fp32, check, seconds, optimized, written = _write_files(model, reference, tmp, c, windows, log)
        tokenizer.save_pretrained(tmp)
        gguf = _write_gguf(model, tmp, c, Path(str(model_path)).name, ids, reference, log) if c.gguf else None
        model = None  # every file is written: the checks below open ONNX Runtime sessions with torch's copy freed
        gc.collect()
        # The source's own config (GPT-2's for a plain GPT-2) lets the ecosystem's clients, such as
        # optimum's ORTModelForCausalLM, open the directory as they would their own export.
        AutoConfig.from_pretrained(model_path, trust_remote_code=False).save_pretrained(tmp)

        fp32_picks = []

        def score(path: Path, precision: str, secs: float, strict: bool, **extra) -> dict:
            """One session per file: parity with PyTorch, perplexity, next tokens against fp32's."""
            log(f"{path.name}: written in {secs:.0f} s; checking it (perplexity on {ids.size - 1:,} tokens)")
            # Unpacked fp32 weights: ONNX Runtime's prepacked copy doubled the fp32 graph's memory (615 -> 1,030 MB
            # for a 551 MB graph) for 3% of its prefill; the quantised kernels need theirs (prefill 1.5x slower without).
            runner = OnnxCausalLM(path, prepack=not strict)
            if strict:
                measured = check or _validated(reference, path, runner)
            else:
                measured = validate_export(reference, path, atol=None, runner=runner)
            v_ppl = perplexity(runner.logits, ids, context, context // 2, batch).ppl
            picks = next_tokens(runner, agree_windows)
            if strict:
                fp32_picks.append(picks)
            return {
                "file": path.name,
                "precision": precision,
                "seconds": round(secs, 2),
                **measured,
                "ppl": v_ppl,
                "greedy_agreement": float((picks == fp32_picks[0]).mean()),
                "kv_layout": onnx_io.SHARED_BUFFER if runner.shared else "growing",
                "kv_cache": {"precision": runner.cache_precision},
                "graph_kv_shapes": [list(k) for k in runner.kv_shapes],
                "max_length": runner.max_length,
                "vocab_size": runner.session.get_outputs()[0].shape[-1],
                **extra,
            }

        variants = [score(fp32, "fp32", seconds, True)]
        variants += [score(tmp / name, precision, secs, False, **extra) for name, precision, secs, extra, _ in written]
        cached = [name for name, *_, takes_cache in written if takes_cache]  # the files that take --kv's cache
        kv_record = None
        if c.cache_precision != "fp32" and cached:
            calib, calib_label = _calibration_windows(tokenizer, c, context, text_ids, ids.size, label)
            kv_record = _cache_precision(
                c, tmp, variants, cached, ids, context, reference, (calib, calib_label), agree_windows[:4], log
            )
        for v in variants:
            v["ppl_delta"] = v["ppl"] / variants[0]["ppl"] - 1
            data = tmp / f"{v['file']}.data"  # weights past 2 GB live beside the graph
            v["size_bytes"] = graph_bytes(tmp / v["file"])
            v["sha256"] = file_sha256(tmp / v["file"])
            if data.exists():
                v["external_data"] = {"file": data.name, "sha256": file_sha256(data)}
        manifest = {
            "source": str(model_path),
            "model_type": config.model_type,
            "layer_widths": config.layer_widths,
            "kv_shapes": [list(s) for s in config.kv_shapes],
            "opset": c.opset if c.plain_onnx else ORT_GRAPH_OPSET,
            "optimize": optimized,
            "ppl_protocol": {"data": label, "tokens": int(ids.size - 1), "context": context, "stride": context // 2},
            "variants": variants,
            "measured_on": where(),
        }
        if kv_record:
            manifest["kv_cache"] = kv_record
        if c.genai:
            from clidep.export.genai import write_folders

            log("writing the ONNX Runtime GenAI folders")
            manifest["genai"] = write_folders(tmp, config, variants)
        if c.check_arm:
            manifest["aarch64"] = _arm_checked(tmp, manifest, ids, context, log)
        if gguf:
            manifest["gguf"] = _gguf_checked(tmp, *gguf, tokenizer, tokenizer.decode(text_ids[:400]), ids, context, log)
        manifest["files"] = file_records(tmp)  # the tokenizer, the configs, the GenAI folders' configs
        write_json(tmp / "manifest.json", manifest)
        return manifest

    return write_dir(out, build)


def _write_gguf(model, tmp: Path, c: ExportConfig, name: str, ids, reference, log) -> tuple[list[dict], object]:
    """--gguf: the GGUF files in TMP/gguf/ (F32 first) and PyTorch's answers for their checks:
    (manifest entries, GGUFReference)."""
    from clidep.export.gguf import WRITTEN, parse_types, quantize_gguf, write_gguf
    from clidep.export.gguf_check import gguf_reference

    folder = tmp / "gguf"
    folder.mkdir()
    files = []
    for kind in parse_types(c.gguf_types):
        log(f"writing gguf/model.{kind}.gguf")
        t0 = time.perf_counter()
        dst = folder / f"model.{kind}.gguf"
        record = (
            write_gguf(model, tmp, dst, kind, name)
            if kind in WRITTEN
            else quantize_gguf(folder / "model.f32.gguf", dst, kind)
        )
        if record["float_matrices"]:
            log(
                f"gguf/model.{kind}.gguf: {record['float_matrices']} of {record['matrices']} weight matrices stay "
                f"{'/'.join(record['float_types'])} (rows off llama-quantize's blocks); the manifest records each type"
            )
        files.append(
            {"file": f"model.{kind}.gguf", "type": kind, "seconds": round(time.perf_counter() - t0, 2), **record}
        )
    return files, gguf_reference(model, ids, reference)


def _gguf_checked(tmp: Path, files: list[dict], ref, tokenizer, sample: str, ids, context: int, log) -> dict:
    """The manifest's gguf record: every file checked in llama.cpp (gguf_check), with its size and sha256;
    ClidepError where one fails."""
    from clidep.export.gguf_check import GGUF_PPL_GATES, LOGIT_ATOL, check_gguf
    from clidep.runtime.llamacpp import VERSION, build_commit

    folder = tmp / "gguf"
    try:
        check_gguf(files, folder, ref, tokenizer, sample, ids, context, log)
    except ValidationError as exc:
        raise ClidepError(f"export failed its GGUF check in llama.cpp: {exc}") from exc
    for f in files:
        f["size_bytes"] = (folder / f["file"]).stat().st_size
        f["sha256"] = file_sha256(folder / f["file"])
    return {
        "folder": "gguf",
        "llama_cpp": {"version": VERSION, "build": build_commit()},
        "gates": {
            "max_abs_logit_diff_f32": LOGIT_ATOL,
            "ppl_delta_vs_f32": GGUF_PPL_GATES,
            "greedy_match": ["f32", "f16"],
        },
        "gelu_table_shift": ref.gelu_table_shift,
        "tokenizer_check": "llama.cpp's ids equal transformers' on the check text's first 400 tokens and edge cases",
        "writers": {"f32, f16": "the gguf package's GGUFWriter", "q8_0, q4_0": "llama-quantize, from the F32 file"},
        "files": files,
    }


def _arm_checked(tmp: Path, manifest: dict, ids, context: int, log) -> dict:
    """The manifest's aarch64 record (export/arm.py); ClidepError listing every variant and core that
    missed a gate there."""
    from clidep.export.arm import check_arm, refusals

    record = check_arm(tmp, manifest["variants"], manifest.get("genai", {}), ids, context, log)
    misses = refusals(record)
    if misses:
        raise ClidepError(
            "export failed its aarch64 check, so these files would not give on ARM what they give here: "
            + "; ".join(misses)
        )
    return record


def _cache_precision(
    c: ExportConfig,
    tmp: Path,
    variants: list[dict],
    cached: list[str],
    ids,
    context: int,
    reference,
    calibration: tuple,
    windows,
    log,
) -> dict:
    """--kv: each quantised ONNX Runtime graph file (CACHED) rewritten with the cache C.cache_precision, held
    to the KV gates against the same file with its fp32 cache, and swapped in; its manifest entry updated
    in place. CALIBRATION: (windows (N, L), label) for int8 scales. Returns the manifest's ``kv_cache``
    record."""
    import os

    from clidep.export.kv_cache import (
        KV_AGREEMENT_GATE,
        KV_PPL_GATE,
        CacheFormat,
        calibrate,
        decode_predictions,
        int8_format,
        store_cache,
    )
    from clidep.export.validate import validate_export
    from clidep.perplexity import perplexity, ppl_batch
    from clidep.runtime.runner import OnnxCausalLM

    precision = c.cache_precision
    record = {
        "precision": precision,
        "files": sorted(cached),
        "gates": {"ppl_delta": KV_PPL_GATE, "decode_agreement": KV_AGREEMENT_GATE},
    }
    cache = CacheFormat(precision)
    if precision == "int8":
        calib, label = calibration
        cache = int8_format(calibrate(tmp / variants[0]["file"], calib), c.kv_scales)
        record["calibration"] = {"data": label, "windows": len(calib), "tokens": calib.shape[1]}
    record.update(cache.record())
    prompt = min(16, windows.shape[1] // 2)
    scratch = tmp / "kv-cache"
    scratch.mkdir()
    for v in variants:
        if v["file"] not in cached:
            continue
        log(f"{v['file']}: writing its {precision} KV cache")
        src, dst = tmp / v["file"], scratch / v["file"]
        store_cache(src, dst, cache)
        before = decode_predictions(OnnxCausalLM(src), windows, prompt)
        runner = OnnxCausalLM(dst)
        ppl = perplexity(runner.logits, ids, context, context // 2, ppl_batch(context, variants[0]["vocab_size"])).ppl
        agree = float((decode_predictions(runner, windows, prompt) == before).mean())  # over before.size tokens
        delta = ppl / v["ppl"] - 1
        if delta > KV_PPL_GATE or agree < KV_AGREEMENT_GATE:
            raise ClidepError(
                f"export failed its KV-cache check: {v['file']} with an {precision} cache scores perplexity "
                f"{delta:+.2%} and picks {agree:.1%} of {before.size} next tokens of its fp32 cache (gates "
                f"+{KV_PPL_GATE:.1%}, {KV_AGREEMENT_GATE:.0%}): export with --kv fp32 or fp16"
            )
        v.update(validate_export(reference, dst, atol=None, runner=runner))
        del runner
        v["kv_cache"] = {**cache.record(), "fp32_cache_ppl": v["ppl"], "ppl_delta": delta, "decode_agreement": agree}
        v["ppl"] = ppl
        for name in (v["file"], f"{v['file']}.data"):
            if (scratch / name).exists():
                os.replace(scratch / name, tmp / name)
    scratch.rmdir()
    return record


def _ppl_ids(tokenizer, c: ExportConfig):
    """(token ids, label, the whole text's ids) of the perplexity check: the first PPL_TOKENS + 1 tokens of
    PPL_DATA (0: all)."""
    from clidep.data import read_text, tokenize_text

    text, label = read_text(c.ppl_data)
    every = tokenize_text(tokenizer, text)
    ids = every[: c.ppl_tokens + 1] if c.ppl_tokens else every
    if ids.size < 2:
        raise ClidepError(f"--ppl-data {c.ppl_data} gives {ids.size} token(s): the perplexity check needs at least 2")
    if (c.int8 or c.int4 or c.fp16 or c.gguf) and ids.size - 1 < MIN_GATE_TOKENS:
        given = f"--ppl-tokens {c.ppl_tokens} scores" if c.ppl_tokens and every.size > ids.size else "gives"
        raise ClidepError(
            f"--ppl-data {c.ppl_data} {given} {ids.size - 1} token(s): the quality gates score at least "
            f"{MIN_GATE_TOKENS} (at fewer, int4's +{PPL_GATES['int4']:.0%} gate is inside a few standard errors "
            "of its own noise); give a longer text or more --ppl-tokens"
        )
    return ids, label, every


def _calibration_windows(tokenizer, c: ExportConfig, context: int, text_ids, checked: int, label: str):
    """(windows (N, L), label) that calibrate the int8 cache: --data's, else --ppl-data's after the CHECKED
    tokens the perplexity check scores (so the check is not scored on its own calibration), else, where
    the text has nothing past them, the checked tokens themselves, as the label says."""
    from clidep.data import calibration_batch

    n = c.kv_calib_windows
    if c.data:
        calib, data_label = calibration_batch(tokenizer, c.data, n, context, 0)
        return calib.numpy(), data_label
    rest = text_ids[checked:]
    source, where = (
        (rest, "after the checked tokens") if rest.size > context else (text_ids, "overlapping the checked tokens")
    )
    length = min(context, source.size)
    starts = np.random.default_rng(0).integers(0, source.size - length + 1, n)
    return np.stack([source[s : s + length] for s in np.sort(starts)]), f"{label}, {where}"


def _write_files(model, reference, tmp: Path, c: ExportConfig, windows, log) -> tuple:
    """Every file that needs the torch model: the fp32 graph and each variant asked for. Returns _fp32_graph's
    (path, parity, seconds, optimize record) and per variant (file, precision, seconds, manifest extras,
    takes --kv's cache)."""
    fp32, check, seconds, optimized = _fp32_graph(model, reference, tmp, c)
    written = []
    for name, precision, make, extra, takes_cache in _quantised_jobs(c, fp32, model, windows):
        log(f"writing {name}")
        t0 = time.perf_counter()
        result = make(tmp / name)
        if isinstance(result, tuple):  # int4 also reports its coverage
            extra = {**extra, "linear_layers_quantized": f"{result[1]}/{result[2]}"}
        written.append((name, precision, time.perf_counter() - t0, extra, takes_cache))
    return fp32, check, seconds, optimized, written


def _fp32_graph(model, reference, tmp: Path, c: ExportConfig) -> tuple[Path, dict | None, float, dict]:
    """Write the fp32 graph (the ONNX Runtime graph, or with --plain-onnx the traced one, fused by
    --optimize where parity holds against REFERENCE, fatal): (path, parity, seconds, optimize record).
    The ONNX Runtime graph's parity (None here) is checked once the torch model is freed."""
    from clidep.export import traced_quantize
    from clidep.export.ort_graph import export_ort_graph
    from clidep.export.traced_graph import export_onnx

    fp32 = tmp / "model.onnx"
    t0 = time.perf_counter()
    if not c.plain_onnx:
        export_ort_graph(model, fp32)
        return (
            fp32,
            None,
            time.perf_counter() - t0,
            {"applied": False, "fusions": {}, "reason": "the ONNX Runtime graph is written fused"},
        )
    export_onnx(model, fp32, c.opset)
    check = _validated(reference, fp32)
    seconds = time.perf_counter() - t0
    if not c.optimize:
        return fp32, check, seconds, {"applied": False, "fusions": {}, "reason": "--no-optimize"}
    t0 = time.perf_counter()
    opt, fusions = traced_quantize.optimize(fp32, tmp / "model.opt.onnx")
    try:
        check = _validated(reference, opt)
    except ClidepError as exc:
        opt.unlink()
        return (
            fp32,
            check,
            seconds,
            {"applied": False, "fusions": fusions, "reason": f"parity lost, kept unoptimised: {exc}"},
        )
    opt.replace(fp32)
    return (
        fp32,
        check,
        seconds + time.perf_counter() - t0,
        {"applied": True, "fusions": fusions, "reason": "parity kept"},
    )


def _validated(reference, path: Path, runner=None) -> dict:
    """validate_export's record; its typed failure as a ClidepError (export stops)."""
    from clidep.export.validate import validate_export

    try:
        return validate_export(reference, path, runner=runner)
    except ValidationError as exc:
        raise ClidepError(f"export failed validation: {exc}") from exc


def _quantised_jobs(c: ExportConfig, fp32: Path, model, windows) -> list[tuple]:
    """(file, precision, make(dst), manifest extras, takes the KV-cache format) of each variant asked for
    beside fp32: the ONNX Runtime graph's quantised files take --kv's cache; the others keep their own."""
    from clidep.export import traced_quantize
    from clidep.export.ort_graph import write_quantised

    jobs = []
    if c.static:  # calibrated QDQ is for runtimes without contrib ops: it starts from the traced graph
        jobs.append(
            (
                "model.int8.onnx",
                "int8-static-qdq",
                lambda d: _static(model, d, windows),
                {"calibration": {"data": c.data, "samples": c.calib_samples}},
                False,
            )
        )
    elif c.int8 and c.plain_onnx:
        jobs.append(
            (
                "model.int8.onnx",
                "int8-dynamic",
                lambda d: traced_quantize.int8_dynamic(fp32, d, INT8_PER_CHANNEL),
                {"per_channel": INT8_PER_CHANNEL, "embedding_and_lm_head": "int8, one shared copy"},
                False,
            )
        )
    elif c.int8:
        jobs.append(
            (
                "model.int8.onnx",
                "int8-weight-only",
                lambda d: write_quantised(model, d, 8, INT8_BLOCK),
                {"block_size": INT8_BLOCK, "embedding_and_lm_head": "one 8-bit table, read in place"},
                True,
            )
        )
    if c.int4 and c.plain_onnx:
        jobs.append(
            (
                "model.int4.onnx",
                "int4-weight-only",
                lambda d: traced_quantize.int4_weight_only(fp32, d, c.block_size),
                {"block_size": c.block_size},
                False,
            )
        )
    elif c.int4:
        jobs.append(
            (
                "model.int4.onnx",
                "int4-weight-only",
                lambda d: write_quantised(model, d, 4, c.block_size),
                {"block_size": c.block_size, "embedding_and_lm_head": "one 4-bit table, read in place"},
                True,
            )
        )
    if c.fp16:
        jobs.append(("model.fp16.onnx", "fp16", lambda d: traced_quantize.fp16(fp32, d), {}, False))
    return jobs


def _static(model, dst: Path, windows) -> Path:
    """Calibrated QDQ int8 at DST, quantised from the traced fp32 graph (written to a scratch folder beside DST)."""
    import tempfile

    from clidep.export import traced_quantize
    from clidep.export.traced_graph import export_onnx

    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch:
        traced = export_onnx(model, Path(scratch) / "model.onnx")
        return traced_quantize.int8_static(traced, dst, windows, model.config.kv_shapes)


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
    table = Table(title=f"{out} ({manifest['ppl_protocol']['tokens']:,} tokens of {manifest['ppl_protocol']['data']})")
    for col in ("file", "precision", "MB", "max |Δlogit| vs torch", "ppl", "Δppl", "greedy agreement"):
        table.add_column(col, justify="right")
    for v in manifest["variants"]:
        table.add_row(
            v["file"],
            v["precision"],
            f"{v['size_bytes'] / 1e6:.1f}",
            f"{v['max_abs_logit_diff']:.2e}",
            f"{v['ppl']:.2f}",
            f"{v['ppl_delta']:+.2%}",
            f"{v['greedy_agreement']:.0%}",
        )
    console = Console(width=max(Console().width, 110))
    console.print(table)
    opt = manifest["optimize"]
    console.print(
        f"graph optimisation: {'applied' if opt['applied'] else 'not applied'} ({opt['reason']}); fusions {opt['fusions']}"
    )
    if "kv_cache" in manifest:
        kv = manifest["kv_cache"]
        checked = [
            f"{v['file']} Δppl {v['kv_cache']['ppl_delta']:+.3%}, next token {v['kv_cache']['decode_agreement']:.1%}"
            for v in manifest["variants"]
            if "ppl_delta" in v["kv_cache"]
        ]
        console.print(
            f"KV cache {kv['precision']}{' ' + kv['mode'] if 'mode' in kv else ''} against the same file with an "
            f"fp32 cache: {'; '.join(checked)}"
        )
    if "aarch64" in manifest:
        console.print(_arm_table(manifest["aarch64"]))


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
