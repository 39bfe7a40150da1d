"""clidep's GGUF files against llama.cpp's own from the same weights, timed and scored in llama.cpp.

Two models:
- GPT-2 medium's shapes with random weights and GPT-2's tokenizer (the writer, and speed): clidep's files
  (`export --gguf`'s writer for F32, llama-quantize from it) against llama.cpp's own path, which a user
  takes by hand: `convert_hf_to_gguf.py`, then `llama-quantize`. Each pair is timed by llama-bench in one
  run, clidep's file and the peer's alternating, --reps repetitions of pp512 and tg128 after 32 tokens at
  --threads, and compared tensor by tensor (bytes).
- the reference teacher (quality): `clidep export --gguf`'s four files, timed the same way, each scored
  through llama.cpp's logits on the WikiText test text with clidep eval's window (context 512, stride
  256), the same ids for every file. llama.cpp's converter refuses the teacher's 8,192-token vocabulary
  (it knows a BPE pre-tokenizer only by the hash of what it makes of a test string); the attempt and its
  message are recorded.

    python benchmarks/gguf_peer.py                     # ~10 min on 2 cores (llama.cpp built: scripts/llamacpp.sh)
    python benchmarks/gguf_peer.py --layers 2 --ppl-tokens 4096 --reps 1 --out /tmp/gp   # smoke

Writes OUT/gguf_peer.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import gpt2_shapes
import llama_peer

from clidep.bench import writer
from clidep.errors import Unavailable
from clidep.runtime.protocol import spread

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT.parent / "shared" / "models" / "ref-gpt2-12l"
KINDS = ("q8_0", "q4_0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--teacher", default=str(TEACHER))
    ap.add_argument("--ppl-tokens", type=int, default=32768)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance
    from clidep.runtime import llama_bench, llamacpp

    llamacpp.build(print)
    prov = {
        **provenance(),
        "llama_cpp": f"{llamacpp.VERSION} ({llama_bench.build_commit()})",
        "threads": a.threads,
        "reps": a.reps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        rows = _medium_rows(a, Path(tmp))
        teacher, refused = _teacher_rows(a, Path(tmp))
        rows += teacher
    for r in rows:
        r["provenance"] = prov
    document = {**prov, "command": "python benchmarks/gguf_peer.py", "teacher_converter": refused, "rows": rows}
    writer.write(Path(a.out), "gguf_peer", FIELDS, rows, document, title(document))
    print(writer.markdown(FIELDS, rows, title(document)), end="")


def title(d: dict) -> str:
    return (
        f"clidep's GGUF against llama.cpp's own, same weights, llama-bench pp512 / tg128 @ d32, {d['threads']} threads, "
        f"{d['reps']} reps, llama.cpp {d['llama_cpp']}, git {d['git_sha']}, {d['time']}"
    )


def _teacher_rows(a, tmp: Path) -> tuple[list[dict], str]:
    """The teacher's exported GGUF files, timed and scored in llama.cpp; and the converter's refusal."""
    from clidep.commands.export import export_artifact
    from clidep.data import load_tokenizer, read_text, tokenize_text

    export = tmp / "teacher-export"
    manifest = export_artifact(
        a.teacher, export, gguf=True, gguf_types="f16,q8_0,q4_0", genai=False, log=print
    ).to_dict()
    folder = export / manifest["gguf"]["folder"]
    refused = _converter_attempt(Path(a.teacher), tmp)
    tok = load_tokenizer(a.teacher)
    ids = tokenize_text(tok, read_text("wikitext-test")[0])[: a.ppl_tokens + 1]
    context = min(json.loads((Path(a.teacher) / "config.json").read_text())["n_positions"], 1024)
    rows = []
    for f in manifest["gguf"]["files"]:
        path = folder / f["file"]
        rs = [llamacpp_record(path, a) for _ in range(a.reps)]
        check = {k: f[k] for k in ("max_abs_logit_diff", "max_abs_logit_diff_plain_gelu", "greedy_match")}
        check["gelu_table_shift"] = manifest["gguf"]["gelu_table_shift"]  # the reference's, the same for every file
        rows.append(
            _row("reference teacher", path, f["type"], "clidep export --gguf", rs)
            | {"ppl": _ppl(path, ids, context), "export_check": check}
        )
    for r in rows:
        r["ppl_vs_f32"] = r["ppl"] / rows[0]["ppl"]
    return rows, refused


def llamacpp_record(path: Path, a) -> dict:
    """One repetition of pp512 and tg128 after 32 tokens."""
    from clidep.runtime import llama_bench

    return llama_bench.record(path, [512], 128, a.threads, [32], 1)


def _converter_attempt(teacher: Path, tmp: Path) -> str:
    """What convert_hf_to_gguf.py says of the teacher (with the n_ctx key it reads added)."""

    hf = tmp / "teacher-hf"
    hf.mkdir()
    for f in teacher.iterdir():
        (hf / f.name).symlink_to(f.resolve())
    config = json.loads((teacher / "config.json").read_text())
    (hf / "config.json").unlink()
    (hf / "config.json").write_text(json.dumps({**config, "n_ctx": config["n_positions"]}))
    try:
        llama_peer.convert(hf, tmp / "teacher-by-converter.gguf", "f32")
    except Unavailable as exc:
        return str(exc)
    return "converted"


def _medium_rows(a, tmp: Path) -> list[dict]:
    """GPT-2-medium shapes, random weights: clidep's writer against llama.cpp's converter + llama-quantize."""
    from clidep.data import load_tokenizer
    from clidep.export.gguf import quantize_gguf, write_gguf
    from clidep.model.convert import to_gpt2

    model = gpt2_shapes.random_model(a)
    hf = tmp / "medium"
    to_gpt2(model).save_pretrained(hf)
    load_tokenizer("gpt2").save_pretrained(hf)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "n_ctx": config["n_positions"]}))
    f32 = tmp / "medium.clidep.f32.gguf"
    write_gguf(model, hf, f32, "f32", "gpt2-medium-shaped")
    rows = []
    for kind in KINDS:
        mine = tmp / f"medium.clidep.{kind}.gguf"
        quantize_gguf(f32, mine, kind)
        peer = llama_peer.convert(hf, tmp / f"medium.peer.{kind}.gguf", kind)
        rows += _pair(
            f"GPT-2 medium shapes ({a.layers} x {a.width})",
            mine,
            peer,
            kind,
            "convert_hf_to_gguf.py" + (" + llama-quantize" if kind == "q4_0" else ""),
            a,
        )
    return rows


def _pair(model: str, mine: Path, peer: Path, kind: str, peer_path: str, a) -> list[dict]:
    """Rows for clidep's file and the peer's, timed alternately in one run, and compared tensor by tensor."""
    records = {"clidep": [], "peer": []}
    for _ in range(a.reps):  # alternate, one repetition each, so that a drift of the machine hits both
        for who, path in (("clidep", mine), ("peer", peer)):
            records[who].append(llamacpp_record(path, a))
    mine_row = _row(model, mine, kind, "clidep export --gguf", records["clidep"])
    peer_row = _row(model, peer, kind, peer_path, records["peer"])
    mine_row["tg_vs_peer"] = mine_row["tg_tps"]["mean"] / peer_row["tg_tps"]["mean"]
    mine_row["pp_vs_peer"] = mine_row["pp_tps"]["mean"] / peer_row["pp_tps"]["mean"]
    mine_row["identical_tensors"] = _identical(mine, peer)
    return [mine_row, peer_row]


def _row(model: str, path: Path, kind: str, writer: str, records: list[dict]) -> dict:
    return {
        "model": model,
        "type": kind.upper(),
        "writer": writer,
        "size_bytes": path.stat().st_size,
        "tensor_types": _types(path),
        "tg_tps": spread([r["tg_tps"]["32"]["mean"] for r in records]),
        "pp_tps": spread([r["pp_tps"]["512"]["mean"] for r in records]),
        "repack": records[0]["runner"]["llama_cpp"]["repack"],
        "ppl": None,
    }


def _identical(a: Path, b: Path) -> str:
    """ "k/n": how many of A's n tensors B holds under the same name with the same type and bytes."""
    import gguf
    import numpy as np

    theirs = {t.name: t for t in gguf.GGUFReader(str(b)).tensors}
    mine = gguf.GGUFReader(str(a)).tensors
    same = sum(
        1
        for t in mine
        if t.name in theirs
        and theirs[t.name].tensor_type == t.tensor_type
        and np.array_equal(np.asarray(theirs[t.name].data), np.asarray(t.data))
    )
    return f"{same}/{len(mine)}"


def _types(path: Path) -> dict:
    """{GGML type: tensor count} of a GGUF file, as gguf's reader sees it."""
    from collections import Counter

    import gguf

    return dict(sorted(Counter(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors).items()))


def _ppl(path: Path, ids, context: int) -> float:
    from clidep.perplexity import perplexity
    from clidep.runtime.llamacpp import LlamaCppModel

    model = LlamaCppModel(path, context)
    try:
        return perplexity(model.logits, ids, context, context // 2, 1).ppl
    finally:
        model.close()


F = writer.Column
FIELDS = [
    F("model", "model"),
    F("type", "type"),
    F("writer", "written by"),
    F("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.1f}"),
    F("tensor_types", "tensor types", text=lambda r: ", ".join(f"{k} {v}" for k, v in r["tensor_types"].items())),
    F("pp_tps.mean", "pp512 t/s", text=lambda r: f"{r['pp_tps']['mean']:.0f} ± {r['pp_tps']['sd']:.0f}"),
    F("tg_tps.mean", "tg128 @d32 t/s", text=lambda r: f"{r['tg_tps']['mean']:.1f} ± {r['tg_tps']['sd']:.1f}"),
    F("ppl", "ppl", ".3f"),
    F("ppl_vs_f32", "ppl vs F32", ".4f"),
    F(
        "tg_vs_peer",
        "tg / pp vs llama.cpp's file",
        text=lambda r: "-" if "tg_vs_peer" not in r else f"{r['tg_vs_peer']:.3f} / {r['pp_vs_peer']:.3f}",
    ),
    F("identical_tensors", "tensors identical to llama.cpp's"),
    F("tg_tps.sd", "", table=False),
    F("pp_tps.sd", "", table=False),
    F("pp_vs_peer", "", table=False),
    F("export_check.max_abs_logit_diff", "", table=False),
    F("export_check.max_abs_logit_diff_plain_gelu", "", table=False),
]


if __name__ == "__main__":
    main()
