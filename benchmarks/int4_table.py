"""What `export --int4-table-bits 8` costs: the int4 file's tied embedding/head table at 8 bits instead of 4.

Speed at GPT-2-medium shapes with random weights (speed does not depend on them): the teacher's 24 x 1024
and the two students of ratio 2.47 at that scale, slim's 24 x 624 (12 heads of 52) and grid's 24 x 640
(10 heads of 64, MLP 2,560), each written as export --int4 writes it (MatMulNBits, blocks of INT4_BLOCK)
with the 50,257-token table at 4 and at 8 bits: file size, decode ms/token after prompts of 32 and 512
tokens, prefill of 512. Quality on the reference teacher: perplexity on WikiText test of each int4 file
against its fp32 graph. One run, one machine, in one process, ONNX Runtime on --threads threads.

    python benchmarks/int4_table.py                      # ~10 min on 2 cores
    python benchmarks/int4_table.py --layers 2 --tokens 2048 --steps 5 --out /tmp/it   # smoke (~1 min)

Writes OUT/int4_table.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from decode_kernels import _cpu, _prov, _speed

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
# (label, width, heads, MLP width) at GPT-2-medium depth and vocabulary
SHAPES = [
    ("teacher 1024", 1024, 16, 4096),
    ("slim 624 (12 x 52)", 624, 12, 2496),
    ("grid 640 (10 x 64)", 640, 10, 2560),
]
TABLE_BITS = (4, 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--steps", type=int, default=17, help="decode steps timed per prompt length (the first dropped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32768, help="WikiText-test tokens for the teacher's perplexity")
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    import onnxruntime

    from clidep.bench.provenance import provenance
    from clidep.export.ort_graph import write_quantised
    from clidep.hardware.kernels import INT4_BLOCK

    quality = _teacher_ppl(a)
    prov = {**provenance(), "onnxruntime": onnxruntime.__version__, "cpu": _cpu()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, width, heads, inner in SHAPES:
            model = _random_model(a, width, heads, inner)
            for table_bits in TABLE_BITS:
                path, _, _ = write_quantised(model, Path(tmp) / "m.onnx", 4, INT4_BLOCK, table_bits)
                rows.append(
                    {
                        "shape": label,
                        "table_bits": table_bits,
                        "params": sum(p.numel() for p in model.parameters()),
                        "size_bytes": path.stat().st_size,
                        **_speed(path, a.threads, a.steps),
                        "teacher_ppl_delta": quality[table_bits],
                        "provenance": _prov(prov),
                    }
                )
                print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
            del model
    result = {
        **prov,
        "layers": a.layers,
        "vocab": a.vocab,
        "block_size": INT4_BLOCK,
        "threads": a.threads,
        "quality": {"teacher": a.teacher, "data": "wikitext-test", "tokens": a.tokens},
        "rows": rows,
    }
    writer.write(Path(a.out), "int4_table", FIELDS, rows, result, title=title(result))
    print(writer.markdown(FIELDS, rows, title(result)), end="")


def _random_model(a, width: int, heads: int, inner: int):
    """A stock-shaped model (one width, MLP INNER) with seeded random weights, in eval mode."""
    import torch

    from clidep import CLIGPT2Config, CLIGPT2LMHeadModel

    torch.manual_seed(0)
    config = CLIGPT2Config(
        vocab_size=a.vocab, n_positions=1024, n_embd=width, n_layer=a.layers, n_head=heads, mlp_inner=inner
    )
    return CLIGPT2LMHeadModel(config).eval()


def _teacher_ppl(a) -> dict[int, float]:
    """{table bits: perplexity change of the reference teacher's int4 file against its fp32 graph}."""
    from clidep.data import load_tokenizer, read_text, tokenize_text
    from clidep.export.ort_graph import export_ort_graph, write_quantised
    from clidep.hardware.kernels import INT4_BLOCK
    from clidep.model.convert import load_model
    from clidep.perplexity import perplexity
    from clidep.runtime.runner import OnnxCausalLM

    teacher = load_model(a.teacher)
    ids = tokenize_text(load_tokenizer(a.teacher), read_text("wikitext-test")[0])[: a.tokens + 1]
    ctx = teacher.config.n_positions

    def ppl(path: Path) -> float:
        return perplexity(OnnxCausalLM(path, threads=a.threads).logits, ids, ctx, ctx // 2, 4).ppl

    with tempfile.TemporaryDirectory() as tmp:
        base = ppl(export_ort_graph(teacher, Path(tmp) / "fp32.onnx"))
        return {
            bits: ppl(write_quantised(teacher, Path(tmp) / "q.onnx", 4, INT4_BLOCK, bits)[0]) / base - 1
            for bits in TABLE_BITS
        }


def title(result: dict) -> str:
    return (
        f"int4 files with the embedding/head table at 4 or 8 bits: {result['layers']} blocks, vocabulary "
        f"{result['vocab']:,}, random weights, blocks of {result['block_size']}, ONNX Runtime "
        f"{result['onnxruntime']} on {result['threads']} threads of {result['cpu']} (ms, median ± sd of the "
        f"decode steps); teacher Δppl on {result['quality']['tokens']:,} WikiText-test tokens"
    )


FIELDS = [
    writer.Column("shape", "shape"),
    writer.Column("table_bits", "table bits"),
    writer.Column("params", "params", text=lambda r: f"{r['params'] / 1e6:.1f} M"),
    writer.Column("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.0f}"),
    writer.Column("decode_ms_32", "decode @32", text=lambda r: f"{r['decode_ms_32']:.2f} ± {r['decode_ms_32_sd']:.2f}"),
    writer.Column(
        "decode_ms_512", "decode @512", text=lambda r: f"{r['decode_ms_512']:.2f} ± {r['decode_ms_512_sd']:.2f}"
    ),
    writer.Column("prefill_ms_512", "prefill 512 (ms)", text=lambda r: f"{r['prefill_ms_512']:.0f}"),
    writer.Column("teacher_ppl_delta", "teacher Δppl (int4)", text=lambda r: f"{r['teacher_ppl_delta']:+.2%}"),
]


if __name__ == "__main__":
    main()
