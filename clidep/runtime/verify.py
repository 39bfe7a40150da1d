"""An export is checked before it is used: its files against manifest.json, config.json against the graph.

``clidep export`` records each variant's size and sha256 (and its external data's); ``bench``,
``generate`` and the GenAI folders are refused when a file differs, in one line naming it, so a
changed or swapped graph is never measured as the export's own. Digests are cached by path,
size and modification time, so a 1.4 GB graph is hashed once: measured on the 2-core x86 VM, a
1.42 GB file (GPT-2 medium's fp32 graph) hashes in 1.13-1.17 s from the page cache (3 runs),
and a cached look-up takes under 1 ms. A directory without a manifest is a foreign graph
(optimum's, say): it runs, and is said to be unchecked.

The figures a graph records itself (its cache's positions, its vocabulary, each block's KV
shape) win over config.json's; a config.json that disagrees is refused. Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clidep.errors import ClidepError
from clidep.files import atomic_write, cache_dir, read_json
from clidep.runtime import onnx_io
from clidep.runtime.manifest import Manifest, Variant

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GraphFacts:
    """What a graph says of itself: cache positions (None: a growing cache), vocabulary, the KV shapes its
    buffers have (head sizes padded to what GroupQueryAttention takes), and the model's own KV shapes
    as its export recorded them (None for a foreign graph)."""

    positions: int | None
    vocab_size: int | None
    kv_shapes: list[tuple[int, int]] | None
    model_kv_shapes: list[tuple[int, int]] | None = None


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256(path: Path) -> str:
    """The file's sha256, from the cache when the file is the one last hashed: same inode, size, modification
    time and change time. The change time cannot be set back (os.utime restores a modification time, and
    moves the change time forward), so a file rewritten in place is hashed again."""
    st = path.stat()
    key = str(path.resolve())
    store = cache_dir("digests") / "sha256.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    hit = known.get(key)
    stamp = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    if hit and hit[:-1] == stamp:
        return hit[-1]
    digest = file_sha256(path)
    known[key] = [*stamp, digest]
    atomic_write(store, lambda tmp: tmp.write_text(json.dumps(known)))
    return digest


#: The payloads the manifest records file by file (variants, GGUF files, ExecuTorch programs); every other file an
#: export holds (tokenizer, configs, the GenAI folders' configs) is in its ``files`` record.
PAYLOAD_SUFFIXES = (".onnx", ".onnx.data", ".gguf", ".pte")


def file_records(folder: Path) -> dict[str, dict]:
    """{path relative to FOLDER: {size_bytes, sha256}} of every file in FOLDER but the manifest and the payloads."""
    return {
        str(p.relative_to(folder)): {"size_bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(PAYLOAD_SUFFIXES)
    }


def check_files(folder: Path, manifest: Manifest) -> None:
    """Every file of the manifest's ``files`` record as export wrote it: ``ClidepError`` naming the first that is
    missing or differs (a tokenizer copied over the export's scored ppl 5,607 for 196)."""
    for name, record in (manifest.files or {}).items():
        path = folder / name
        if not path.is_file():
            raise _changed(path, "it is missing")
        if path.stat().st_size != record["size_bytes"] or file_sha256(path) != record["sha256"]:
            raise _changed(path, "its sha256 differs from the manifest's")


def load_manifest(folder: Path) -> Manifest | None:
    """FOLDER's manifest (checked to list its variants, and every file of its ``files`` record checked), or
    None for a folder without one."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    manifest = read_json(path, "clidep export manifest")
    variants = manifest.get("variants")
    if (
        not isinstance(variants, list)
        or not variants
        or not all(isinstance(v, dict) and {"precision", "file"} <= v.keys() for v in variants)
    ):
        raise ClidepError(f"'{path}' lists no variants (each with precision and file); re-run clidep export")
    manifest = Manifest.from_dict(manifest)
    check_files(folder, manifest)
    return manifest


def graph_bytes(graph: Path) -> int:
    """Bytes of a graph and its external data (``NAME.data`` beside it, past 2 GB): what the manifest's
    ``size_bytes`` records; 0 for a missing graph."""
    return sum(p.stat().st_size for p in (graph, graph.parent / f"{graph.name}.data") if p.is_file())


def check_variant(folder: Path, variant: Variant, graph: Path | None = None) -> None:
    """VARIANT's graph (at GRAPH, default FOLDER/file) and external data against the manifest's record.

    ``FileNotFoundError`` when the graph is missing; ``ClidepError`` naming the file on any
    difference in size or sha256.
    """
    graph = graph or folder / variant.file
    data = graph.parent / f"{graph.name}.data"
    if not graph.is_file():
        raise FileNotFoundError(2, "missing from the export", str(graph))
    size = graph_bytes(graph)
    if variant.size_bytes is not None and size != variant.size_bytes:
        raise _changed(graph, f"{size:,} bytes where the manifest records {variant.size_bytes:,}")
    if variant.sha256 is not None and sha256(graph) != variant.sha256:
        raise _changed(graph, "its sha256 differs from the manifest's")
    recorded = variant.external_data
    if recorded and (not data.is_file() or sha256(data) != recorded.sha256):
        raise _changed(data, "its sha256 differs from the manifest's" if data.is_file() else "it is missing")


def _changed(path: Path, how: str) -> ClidepError:
    return ClidepError(
        f"'{path}' is not the file clidep export wrote ({how}); re-run clidep export, "
        "or copy the graph out of the export folder to run it as a foreign model"
    )


def graph_facts(path: Path, variant: Variant | None = None, manifest: Manifest | None = None) -> GraphFacts:
    """The graph's own figures: from its (verified) manifest entry where recorded, else read from the file."""
    model_kv = [tuple(s) for s in manifest.kv_shapes] if manifest and manifest.kv_shapes is not None else None
    if variant and variant.graph_kv_shapes is not None and variant.vocab_size is not None:
        vocab = variant.vocab_size if isinstance(variant.vocab_size, int) else None
        return GraphFacts(variant.max_length, vocab, [tuple(s) for s in variant.graph_kv_shapes], model_kv)
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not a graph
        raise ClidepError(f"not an ONNX model: '{path}' ({_first_line(exc) or 'it cannot be parsed'})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    logits = next((o for o in model.graph.output if o.name == "logits"), None)
    dims = logits.type.tensor_type.shape.dim if logits is not None else []
    vocab = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    return GraphFacts(
        int(meta[onnx_io.MAX_LENGTH_KEY]) if onnx_io.MAX_LENGTH_KEY in meta else None,
        vocab,
        onnx_io.decode_kv_shapes(meta),
        model_kv,
    )


def check_config(folder: Path, facts: GraphFacts) -> None:
    """``ClidepError`` when FOLDER's config.json disagrees with what the graph records about itself."""
    path = folder / "config.json"
    if not path.is_file():
        return
    config = read_json(path, "model config (config.json)")
    said = {
        "n_positions": (config.get("n_positions"), facts.positions, "the graph's cache holds"),
        "vocab_size": (config.get("vocab_size"), facts.vocab_size, "the graph's logits have"),
    }
    for key, (value, truth, what) in said.items():
        if truth is not None and value is not None and value != truth:
            raise ClidepError(
                f"'{path}' says {key} {value}, but {what} {truth}; it was changed after export: re-run clidep export"
            )
    if facts.model_kv_shapes is not None:  # the model's own (a graph's head sizes may be padded)
        try:
            shapes = onnx_io.kv_shapes_from_config(config)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            shapes = None
        if shapes != facts.model_kv_shapes:
            raise ClidepError(
                f"'{path}' describes KV shapes {shapes}, but the exported model's are "
                f"{facts.model_kv_shapes}; it was changed after export: re-run clidep export"
            )


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


def reason(exc: BaseException) -> str:
    """An exception's message as a user reads it: its first line, without ONNX Runtime's status prefix
    (``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF :``) or a library's class path."""
    text = _first_line(exc) or type(exc).__name__
    if "[ONNXRuntimeError]" in text:
        text = text.split(":", 3)[-1].strip() if text.count(":") >= 3 else text
    head, sep, rest = text.partition(": ")
    if sep and "." in head and " " not in head and head.replace(".", "").replace("_", "").isalnum():
        text = rest  # "onnxruntime.capi.onnxruntime_pybind11_state.Fail: ..." -> "..."
    return text


def foreign_note(folder: Path) -> str:
    return (
        f"note: '{folder}' has no {MANIFEST}: running its graph as a foreign model (optimum's or another "
        "exporter's); its files are not checked against an export record"
    )


def checked_graph(graph: Path, log=None) -> GraphFacts:
    """Check GRAPH before use: against its folder's manifest where it is one of the export's variants
    (refused on any difference), else as a foreign graph (said once through LOG); then its
    config.json against the graph. Returns the graph's own figures."""
    folder = graph.parent
    manifest = load_manifest(folder)
    variant = None
    if manifest is not None:
        variant = next((v for v in manifest.variants if (folder / v.file).resolve() == graph.resolve()), None)
        if variant is not None:
            check_variant(folder, variant)
            if manifest.files is None and log is not None:
                log(
                    f"note: {folder / MANIFEST} predates checksums of an export's other files: its tokenizer and "
                    "configs are not verified (re-run clidep export to record them)"
                )
        elif log is not None:
            log(
                f"note: '{graph}' is not one of the variants {folder / MANIFEST} lists: running it as a foreign "
                "graph, not checked against an export record"
            )
    elif log is not None:
        log(foreign_note(folder))
    facts = graph_facts(graph, variant, manifest)
    check_config(folder, facts)
    return facts


@contextlib.contextmanager
def checked_runner(graph: Path, log=None) -> Iterator[tuple[object, int | None]]:
    """(runner, positions) of GRAPH for the block: the export held against replacement (a shared lock),
    the graph checked as ``checked_graph`` does, loaded in clidep's runner (a load failure one
    ``ClidepError``), and its positions from the graph itself, else config.json (None: unknown)."""
    from clidep.locks import read_lock
    from clidep.runtime.runner import OnnxCausalLM

    with read_lock(graph.parent):
        facts = checked_graph(graph, log)
        try:
            runner = OnnxCausalLM(graph)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types for bad files
            raise ClidepError(f"cannot load '{graph}' with ONNX Runtime: {reason(exc)}") from exc
        yield runner, facts.positions or runner.max_length or onnx_io.positions_beside(graph.parent)
