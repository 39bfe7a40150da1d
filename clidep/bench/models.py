"""The files bench reads: every variant of an export (its graphs, GenAI folders and GGUF files) or a
foreign .onnx, each checked against the export's manifest, with the bytes a decoded token reads."""

from __future__ import annotations

import json
from pathlib import Path

from clidep.errors import ClidepError


def model_files(specs: list[str], log=print) -> list[dict]:
    """(name, precision, file, folder, genai folder, graph facts) of every variant: an export directory
    gives all its variants, each checked against its manifest first (a changed file is refused; a
    missing one becomes that variant's failed row); an .onnx file or a folder without a manifest runs
    as a foreign graph, said once."""
    from clidep.runtime import verify

    out = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and (path / verify.MANIFEST).exists():
            manifest = verify.load_manifest(path)
            genai = manifest.get("genai") or {}
            for v in manifest["variants"]:
                row = _checked_row(path, v, v["precision"])
                if "missing" in row:
                    out.append(row)
                    continue
                folder = path / genai[v["precision"]] if v["precision"] in genai else None
                if folder is not None and (folder / v["file"]).is_file():
                    verify.check_variant(path, v, graph=folder / v["file"])  # its own copy, or a hard link
                    row["genai"] = folder
                row["facts"] = verify.graph_facts(row["file"], v, manifest)
                verify.check_config(path, row["facts"])
                out.append(row)
            out += _gguf_files(path, manifest)
        elif path.is_file() or (path / "model.onnx").is_file():  # a graph, or a folder holding one, run as it is
            graph = path / "model.onnx" if path.is_dir() else path
            out.append(
                {
                    "name": path.name if path.is_dir() else f"{path.parent.name}/{path.name}",
                    "precision": "unknown",
                    "file": graph,
                    "dir": graph.parent,
                    "genai": None,
                    "facts": verify.checked_graph(graph, log),
                }
            )
        elif path.is_dir():
            raise ClidepError(
                f"'{spec}' is not a clidep export (no manifest.json, no model.onnx); run clidep export first"
            )
        else:
            raise ClidepError(f"no model at '{spec}': give an export directory or an .onnx file")
    return out


def _gguf_files(path: Path, manifest: dict) -> list[dict]:
    """The GGUF files of an export (export --gguf), each checked against its manifest entry like a graph:
    rows for the llamacpp runtime only."""
    gguf = manifest.get("gguf") or {}
    return [
        _checked_row(path, {**g, "file": f"{gguf['folder']}/{g['file']}"}, g["type"], gguf=True)
        for g in gguf.get("files", [])
    ]


def _checked_row(path: Path, entry: dict, precision: str, **extra) -> dict:
    """The row of the export PATH's file ENTRY (a manifest record), checked against it (a changed file is
    refused); a missing file becomes the row's "missing"."""
    from clidep.runtime import verify

    row = {
        "name": path.name,
        "precision": precision,
        "file": path / entry["file"],
        "dir": path,
        "genai": None,
        "facts": None,
        **extra,
    }
    try:
        verify.check_variant(path, entry)
    except FileNotFoundError as exc:
        row["missing"] = f"{exc.filename} is missing from the export"
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


def kv_bytes(f: dict, context: int, graph) -> int:
    """Bytes of KV cache read per decoded token at CONTEXT tokens of past, at the cache precision of GRAPH
    (F's file, loaded once for this and weight_bytes; its past inputs' type: export --kv): the graph's own
    KV shapes, else (a foreign graph) config.json's."""
    from clidep.runtime.onnx_io import kv_cache_bytes, kv_shapes_from_config

    facts = f.get("facts")
    shapes = (facts and facts.kv_shapes) or kv_shapes_from_config(json.loads((f["dir"] / "config.json").read_text()))
    return kv_cache_bytes(shapes, context, _cache_type(graph).itemsize)


def _cache_type(graph):
    """The numpy type of GRAPH's KV cache (its first past input's element type)."""
    import onnx

    past = next(i for i in graph.graph.input if i.name.startswith("past_key_values"))
    return onnx.helper.tensor_dtype_to_np_dtype(past.type.tensor_type.elem_type)
