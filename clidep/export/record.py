"""The manifest an export writes, as far as it is the export's own: its core (the source and its shapes, the check
text's protocol, every graph file with its figures, size and sha256), and the one rule every file it writes
answers to: a quantised file that misses a quality gate fails the export, unless --allow-gate-miss, which marks it.
"""

from __future__ import annotations

from pathlib import Path

from clidep.errors import ClidepError
from clidep.export.config import AGREEMENT_GATES, ORT_GRAPH_OPSET, PPL_GATES, ExportConfig
from clidep.runtime.machine import where
from clidep.runtime.manifest import ExternalData, Manifest, PplProtocol, Variant
from clidep.runtime.verify import file_sha256, graph_bytes


def other_misses(manifest: Manifest) -> dict[str, list[str] | None]:
    """The quality gates each GGUF file and ExecuTorch program of MANIFEST misses, by its path in the artifact."""
    return {
        f"{record['folder']}/{f['file']}": f.get("gate_misses")
        for record in (manifest.gguf, manifest.executorch)
        if record
        for f in record["files"]
    }


def enforce_gates(misses: dict[str, list[str] | None], c: ExportConfig, log) -> None:
    """One rule for every file the export writes (MISSES: the quality gates each misses, by name): one that misses
    a gate fails the export (ClidepError, nothing written), unless --allow-gate-miss, which keeps the misses in
    its manifest entry and says so."""
    missed = {f: m for f, m in misses.items() if m}
    if missed and not c.allow_gate_miss:
        first, its = next(iter(missed.items()))
        others = f" (and {', '.join(list(missed)[1:])})" if len(missed) > 1 else ""
        table = (
            "for int4, --int4-table-bits 8 keeps the embedding/head table at 8 bits; else "
            if c.int4_table_bits == 4 and first.endswith(".onnx")
            else ""
        )
        raise ClidepError(
            f"{first}{others} misses its quality gate: {'; '.join(its)}; nothing was written ({table}a wider or "
            "longer-trained student, or --allow-gate-miss to write it marked as such)"
        )
    for file, its in missed.items():
        log(f"warning: {file} misses its quality gate ({'; '.join(its)}); written, as asked")


def core_manifest(
    tmp: Path, model_path, config, c: ExportConfig, optimized: dict, variants: list[Variant], text
) -> Manifest:
    """The manifest's core: the source and its shapes, the check text's protocol (TEXT: label, ids,
    context), and every variant in TMP with its Δppl against the fp32 graph, size and sha256."""
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
