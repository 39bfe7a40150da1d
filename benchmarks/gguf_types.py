"""What each GGUF type clidep writes costs and keeps: size, the tensor types in its weight matrices, and
perplexity in llama.cpp against the F32 file on the same tokens.

The reference teacher's F32 GGUF (written by clidep's writer) quantised by llama.cpp's own llama-quantize to
every type --gguf-types takes, each scored through llama.cpp's bindings (its default F16 cache) and clidep's
one perplexity function on the first 8,192 WikiText-test tokens, context 512 / stride 256. One run, one machine.

    python benchmarks/gguf_types.py            # ~2 min on 2 cores; needs llama.cpp (scripts/llamacpp.sh)

Writes OUT/gguf_types.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 8192


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance
    from clidep.data import load_tokenizer, read_text, tokenize_text
    from clidep.export.gguf import TYPES, describe, quantize_gguf, write_gguf
    from clidep.model.convert import load_model
    from clidep.perplexity import perplexity
    from clidep.runtime.llamacpp import LlamaCppModel

    model, tokenizer = load_model(a.teacher), load_tokenizer(a.teacher)
    ids = tokenize_text(tokenizer, read_text("wikitext-test")[0])[: TOKENS + 1]
    ctx = model.config.n_positions
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "model.f32.gguf"
        write_gguf(model, Path(a.teacher), f32, "f32", "ref-gpt2-12l")
        for kind in TYPES:
            path = Path(tmp) / f"model.{kind}.gguf"
            record = (
                describe(f32)
                if kind == "f32"
                else write_gguf(model, Path(a.teacher), path, kind, "ref-gpt2-12l")
                if kind == "f16"
                else quantize_gguf(f32, path, kind)
            )
            llm = LlamaCppModel(f32 if kind == "f32" else path, ctx)
            try:
                ppl = perplexity(llm.logits, ids, ctx, ctx // 2, 1).ppl
            finally:
                llm.close()
            rows.append(
                {
                    "type": kind,
                    "size_bytes": (f32 if kind == "f32" else path).stat().st_size,
                    "matrices": f"{record['matrices_of_type']} of {record['matrices']}",
                    "tensor_types": ", ".join(f"{k} {v}" for k, v in record["tensor_types"].items()),
                    "ppl": ppl,
                    "ppl_delta": ppl / rows[0]["ppl"] - 1 if rows else 0.0,
                }
            )
    result = {**provenance(), "teacher": a.teacher, "tokens": TOKENS, "context": ctx, "stride": ctx // 2, "rows": rows}
    heading = (
        f"GGUF types of the reference teacher in llama.cpp ({TOKENS:,} WikiText-test tokens, context {ctx} / stride "
        f"{ctx // 2}, default cache), on {result['host']} at git {result['git_sha']}"
    )
    writer.write(Path(a.out), "gguf_types", FIELDS, rows, result, title=heading)
    print(writer.markdown(FIELDS, rows, heading), end="")


FIELDS = [
    writer.Column("type", "type"),
    writer.Column("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.1f}"),
    writer.Column("matrices", "weight matrices of its type"),
    writer.Column("tensor_types", "tensor types"),
    writer.Column("ppl", "ppl", ".2f"),
    writer.Column("ppl_delta", "Δppl vs F32", "+.2%"),
]


if __name__ == "__main__":
    main()
