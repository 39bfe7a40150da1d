"""The files bench reads: every variant of an export (its graphs, GenAI folders and GGUF files) or a
foreign .onnx, each checked against the export's manifest, with the bytes a decoded token reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clidep.errors import ClidepError
from clidep.runtime import verify
from clidep.runtime.manifest import Manifest, Variant


@dataclass
class ModelFile:
    """One file bench measures: a variant of an export, one of its GGUF files, or a foreign graph."""

    name: str  # the export folder's name (a foreign graph: its folder/file)
    precision: str  # the manifest's precision, the GGUF type, or "unknown" for a foreign graph
    file: Path  # the graph or GGUF file
    dir: Path  # the folder holding its config.json and tokenizer
    genai: Path | None = None  # its ONNX Runtime GenAI folder, where the export wrote one
    facts: verify.GraphFacts | None = None  # what the graph records of itself (None for a GGUF file)
    missing: str | None = None  # why it cannot run (its file is missing from the export); its row fails
    gguf: bool = False  # a llama.cpp file, measured with the llamacpp runtime only
    pte: bool = False  # an ExecuTorch program, measured with the executorch runtime only


#: The runtime each of an export's non-ONNX files runs in, by suffix.
PAYLOAD_RUNTIMES = {".gguf": "llamacpp", ".pte": "executorch"}


def export_folder(spec: Path) -> Path:
    """The folder SPEC belongs to: itself, a graph's folder, or for a GGUF file or program (EXPORT/gguf/...) its
    export."""
    if spec.is_dir():
        return spec
    return spec.parent.parent if spec.suffix in PAYLOAD_RUNTIMES else spec.parent


def model_files(specs: list[str], log=print) -> list[ModelFile]:
    """Every file to measure: an export directory
    gives all its variants, each checked against its manifest first (a changed file is refused; a
    missing one becomes that variant's failed row); an .onnx file or a folder without a manifest runs
    as a foreign graph, said once."""
    out = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and (path / verify.MANIFEST).exists():
            manifest = verify.load_manifest(path)
            out += [_variant_row(path, v, manifest) for v in manifest.variants]
            out += _payload_rows(path, manifest)
        elif (found := _variant_of(path)) is not None:  # one variant of an export, named by its file
            out.append(_variant_row(path.parent, *found))
        elif (payload := _payload_of(path)) is not None:  # one GGUF file or program of an export
            out.append(payload)
        elif path.suffix in PAYLOAD_RUNTIMES and path.is_file():
            raise ClidepError(
                f"'{spec}' is not one of a clidep export's files: bench measures the GGUF files and ExecuTorch "
                "programs that clidep export wrote (give the export, or EXPORT/gguf/model.q4_0.gguf)"
            )
        elif path.is_file() or (path / "model.onnx").is_file():  # a graph, or a folder holding one, run as it is
            graph = path / "model.onnx" if path.is_dir() else path
            name = path.name if path.is_dir() else f"{path.parent.name}/{path.name}"
            out.append(ModelFile(name, "unknown", graph, graph.parent, facts=verify.checked_graph(graph, log)))
        elif path.is_dir():
            raise ClidepError(
                f"'{spec}' is not a clidep export (no manifest.json, no model.onnx); run clidep export first"
            )
        else:
            raise ClidepError(f"no model at '{spec}': give an export directory or an .onnx file")
    return out


def _variant_of(path: Path) -> tuple[Variant, Manifest] | None:
    """(manifest entry, manifest) of PATH where PATH is a graph file of a clidep export (``EXPORT/model.int4.onnx``),
    else None: that file is then measured as its export's variant, checked and named by its precision."""
    if not (path.is_file() and (path.parent / verify.MANIFEST).exists()):
        return None
    manifest = verify.load_manifest(path.parent)
    variant = next((v for v in manifest.variants if v.file == path.name), None)
    return None if variant is None else (variant, manifest)


def _payload_of(path: Path) -> ModelFile | None:
    """The row of PATH where PATH is one of a clidep export's GGUF files or ExecuTorch programs
    (``EXPORT/gguf/model.q4_0.gguf``), checked against its manifest entry (that file only), else None."""
    export = export_folder(path)
    if not (path.is_file() and path.suffix in PAYLOAD_RUNTIMES and (export / verify.MANIFEST).exists()):
        return None
    named = f"{path.parent.name}/{path.name}"
    found = [e for e in _payload_entries(verify.load_manifest(export)) if e[0].file == named]
    return _checked_row(export, *found[0]) if found else None


def _variant_row(path: Path, v: Variant, manifest: Manifest) -> ModelFile:
    """Variant V of the export at PATH, checked against its manifest (a missing file: that row fails), with its
    GenAI folder's copy where it has one."""
    genai = manifest.genai or {}
    row = _checked_row(path, v, v.precision)
    if row.missing:
        return row
    folder = path / genai[v.precision] if v.precision in genai else None
    if folder is not None and (folder / v.file).is_file():
        verify.check_variant(path, v, graph=folder / v.file)  # its own copy, or a hard link
        row.genai = folder
    row.facts = verify.graph_facts(row.file, v, manifest)
    verify.check_config(path, row.facts)
    return row


def _payload_rows(path: Path, manifest: Manifest) -> list[ModelFile]:
    """The GGUF files (export --gguf: rows for the llamacpp runtime only) and ExecuTorch programs (export
    --executorch: rows for the executorch runtime only, named by their scheme, "pte 8da4w") of the export at PATH,
    each checked against its manifest entry like a graph."""
    return [_checked_row(path, *entry) for entry in _payload_entries(manifest)]


def _payload_entries(manifest: Manifest) -> list[tuple[Variant, str, bool, bool]]:
    """(manifest entry, precision, gguf, pte) of each GGUF file and ExecuTorch program MANIFEST records."""
    gguf, record = manifest.gguf or {}, manifest.executorch or {}
    return [(_payload_entry(gguf["folder"], g), g["type"], True, False) for g in gguf.get("files", [])] + [
        (_payload_entry(record["folder"], {**p, "type": p["quant"]}), f"pte {p['quant']}", False, True)
        for p in record.get("files", [])
    ]


def _payload_entry(folder: str, g: dict) -> Variant:
    """A GGUF file's or ExecuTorch program's record (export/gguf_check.py, export/executorch.py) as the variant
    check_variant holds it against."""
    return Variant(
        file=f"{folder}/{g['file']}", precision=g["type"], size_bytes=g.get("size_bytes"), sha256=g.get("sha256")
    )


def _checked_row(path: Path, entry: Variant, precision: str, gguf: bool = False, pte: bool = False) -> ModelFile:
    """The row of the export PATH's file ENTRY (a manifest record), checked against it (a changed file is
    refused); a missing file becomes the row's ``missing``."""
    row = ModelFile(path.name, precision, path / entry.file, path, gguf=gguf, pte=pte)
    try:
        verify.check_variant(path, entry)
    except FileNotFoundError as exc:
        row.missing = f"{exc.filename} is missing from the export"
    return row


def weight_bytes(graph) -> int:
    """Bytes of GRAPH's weights (a ModelProto loaded without its external data; external data counted):
    what decode reads per token."""
    import onnx

    total = 0
    for init in graph.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            total += int(next(e.value for e in init.external_data if e.key == "length"))
        else:
            total += len(init.raw_data) or init.ByteSize()
    return total


def kv_bytes(f: ModelFile, context: int, graph) -> int:
    """Bytes of KV cache read per decoded token at CONTEXT tokens of past, at the cache precision of GRAPH
    (F's file, loaded once for this and weight_bytes; its past inputs' type: export --kv): the graph's own
    KV shapes, else (a foreign graph) config.json's."""
    from clidep.runtime.onnx_io import kv_cache_bytes, kv_shapes_from_config

    shapes = (f.facts and f.facts.kv_shapes) or kv_shapes_from_config(json.loads((f.dir / "config.json").read_text()))
    return kv_cache_bytes(shapes, context, cache_type(graph).itemsize)


def cache_type(graph):
    """The numpy type of GRAPH's KV cache (its first past input's element type)."""
    import onnx

    past = next(i for i in graph.graph.input if i.name.startswith("past_key_values"))
    return onnx.helper.tensor_dtype_to_np_dtype(past.type.tensor_type.elem_type)
