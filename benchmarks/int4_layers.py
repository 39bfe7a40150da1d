"""Which int4 layout keeps a student's quality: block sizes and 8-bit layers, read back before any file exists.

Smaller blocks, or some layers at 8 bits (llama.cpp's Q4_K_M keeps part of the MLP's down-projection in Q6_K):
which pays is measured here on the reference teacher and on trained students (compress outputs given by --students),
with the read-back compress's search ranks by (hardware/blockwise.py: each matrix quantised by ONNX Runtime's
own quantiser and read back; benchmarks/shipped_proxy.py holds it within 0.10% of the written int4 file at
both of export's layouts). Variants: every linear layer at 4 bits in blocks of 128, the tied table at 8 bits (export's
int4 layout until --int4-8bit-layers attn_qkv became its default; the published table calls it "export's int4"), blocks of 64 and 32, the table at 4 bits, and each kind of linear layer at 8 bits in turn
(attention's QKV c_attn and output c_proj, the MLP's c_fc and down-projection c_proj). Validation perplexity
in compress's protocol (wiki-en-valid, 16,384 tokens, windows of 256 every 128) against the model's fp32; MB is
the weights as MatMulNBits stores them (4- or 8-bit values and an fp32 scale a block; the rest fp32).

    python -m clidep compress ../shared/models/ref-gpt2-12l --out runs/grid-s0 --ratio 2.47 --tokens 500000 \
        --precision int4 --seed 0                                     # and --seed 1, 2 into grid-s1, grid-s2
    python benchmarks/int4_layers.py --students runs/grid-s0,runs/grid-s1,runs/grid-s2   # ~45 s a model
    python benchmarks/int4_layers.py --students '' --tokens 2048 --out /tmp/il   # smoke: the teacher alone

Writes OUT/int4_layers.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clidep.bench import writer
from clidep.hardware.blockwise import Layout

ROOT = Path(__file__).resolve().parents[1]
# (name, layout): every int4 layout is 4-bit linear layers but the kinds (hardware/blockwise.py's LINEAR_KINDS) named
VARIANTS = [
    ("every layer at 4 bits", Layout(4, 128, 8)),
    ("blocks of 64", Layout(4, 64, 8)),
    ("blocks of 32", Layout(4, 32, 8)),
    ("table at 4 bits", Layout(4, 128, 4)),
    ("QKV (attn.c_attn) at 8 bits", Layout(4, 128, 8, ("attn_qkv",))),
    ("attention output (attn.c_proj) at 8 bits", Layout(4, 128, 8, ("attn_output",))),
    ("MLP up (mlp.c_fc) at 8 bits", Layout(4, 128, 8, ("ffn_up",))),
    ("MLP down (mlp.c_proj) at 8 bits", Layout(4, 128, 8, ("ffn_down",))),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--students", default="", help="comma-separated compress outputs")
    ap.add_argument("--tokens", type=int, default=16384, help="validation tokens (compress's 16,384)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance
    from clidep.compress.distill import validation_ids, validation_ppl
    from clidep.data import load_tokenizer
    from clidep.model.convert import load_model

    val_ids = validation_ids(load_tokenizer(a.teacher), "wiki-en-valid")[: a.tokens + 1]
    rows = []
    for label, path in [("teacher", a.teacher), *((Path(s).name, s) for s in a.students.split(",") if s)]:
        model = load_model(path).eval()
        fp32 = validation_ppl(model, val_ids)
        shape = f"{model.config.n_layer} x {model.config.n_embd}, MLP {model.config.inner(0)}"
        for name, layout in VARIANTS:
            shipped, size = _read_back(model, layout)
            ppl = validation_ppl(shipped, val_ids)
            delta = ppl / fp32 - 1
            rows.append(
                {
                    "model": label,
                    "shape": shape,
                    "variant": name,
                    "mb": size / 1e6,
                    "fp32": fp32,
                    "ppl": ppl,
                    "delta": delta,
                }
            )
            print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
    result = {**provenance(), "teacher": a.teacher, "students": a.students, "tokens": a.tokens, "rows": rows}
    writer.write(Path(a.out), "int4_layers", FIELDS, rows, result, title=title(result))
    print(writer.markdown(FIELDS, rows, title(result)), end="")


def _read_back(model, layout: Layout):
    """(a copy of MODEL with its int4 file's weights in LAYOUT, the bytes MatMulNBits stores them in)."""
    import torch

    from clidep.compress.shipped import read_back

    head, table = model.get_output_embeddings(), model.get_input_embeddings().weight
    stored = {id(table): (table, layout.table_bits)}  # the layers read_back quantises, at their bits
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and m is not head:
            stored[id(m.weight)] = (m.weight, layout.bits_of(name))
    size = 4 * sum(p.numel() for p in model.parameters() if id(p) not in stored)  # the rest in fp32
    size += sum(w.numel() * bits / 8 + -(-w.shape[1] // layout.block) * w.shape[0] * 4 for w, bits in stored.values())
    return read_back(model, layout), size


def title(result: dict) -> str:
    return (
        f"int4 layouts read back (hardware/blockwise.py) on the reference teacher and trained students: validation "
        f"ppl on {result['tokens']:,} tokens of wiki-en-valid against each model's fp32, on {result['host']} at git "
        f"{result['git_sha']}"
    )


FIELDS = [
    writer.Column("model", "model"),
    writer.Column("shape", "shape"),
    writer.Column("variant", "layout"),
    writer.Column("mb", "MB", ".2f"),
    writer.Column("fp32", "fp32 ppl", ".2f"),
    writer.Column("ppl", "int4 ppl", ".2f"),
    writer.Column("delta", "Δ", "+.2%"),
]


if __name__ == "__main__":
    main()
