"""How many tokens the export's perplexity check needs: the paired standard error of Δppl, by tokens.

The export scores every variant on the first --ppl-tokens tokens of WikiText test and reports its
perplexity against the fp32 graph's. That difference is paired (the same tokens through both files),
so its noise is far below the perplexity's own. Here, on the reference teacher (its export's protocol:
context 512, stride 256), each token's NLL under the fp32 graph and under each quantised file; for the
first N tokens, Δppl and its standard error from the means of 256-token blocks (which keeps the
correlation between neighbouring tokens in the estimate). One run, one machine.

    python benchmarks/ppl_tokens.py            # ~3 min on 2 cores

Writes OUT/ppl_tokens.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
SIZES = (2048, 4096, 8192, 16384, 32768)
BLOCK = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance
    from clidep.data import calibration_batch, load_tokenizer, read_text, tokenize_text
    from clidep.export.kv_cache import calibrate, int8_format, store_cache
    from clidep.export.ort_graph import export_ort_graph
    from clidep.hardware.kernels import INT4_BLOCK, INT8_BLOCK
    from clidep.model.convert import load_model
    from clidep.perplexity import perplexity
    from clidep.runtime.runner import OnnxCausalLM

    teacher, tokenizer = load_model(a.teacher), load_tokenizer(a.teacher)
    ids = tokenize_text(tokenizer, read_text("wikitext-test")[0])[: max(SIZES) + 1]
    ctx = teacher.config.n_positions
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_ort_graph(teacher, Path(tmp) / "fp32.onnx")
        cache = int8_format(
            calibrate(fp32, calibration_batch(tokenizer, "wiki-en-valid", 8, ctx, 0)[0].numpy()), "per-channel"
        )
        files = {
            "fp32": fp32,
            "int8 weights": export_ort_graph(teacher, Path(tmp) / "int8.onnx", 8, INT8_BLOCK),
            "int4 weights": export_ort_graph(teacher, Path(tmp) / "int4.onnx", 4, INT4_BLOCK),
            "int4 weights, int8 cache": store_cache(
                export_ort_graph(teacher, Path(tmp) / "kv.onnx", 4, INT4_BLOCK), Path(tmp) / "kv.onnx", cache
            ),
        }
        nll = {}
        for name, path in files.items():
            nll[name] = []
            perplexity(OnnxCausalLM(path).logits, ids, ctx, ctx // 2, 4, token_nll=nll[name])
            nll[name] = np.array(nll[name])
    rows = []
    for name in list(files)[1:]:
        against = "int4 weights" if "cache" in name else "fp32"
        for n in SIZES:
            diff = (nll[name] - nll[against])[:n]
            blocks = diff[: n // BLOCK * BLOCK].reshape(-1, BLOCK).mean(axis=1)
            delta = float(np.exp(diff.mean()) - 1)
            se = float(blocks.std(ddof=1) / np.sqrt(blocks.size) * (1 + delta))
            rows.append(
                {
                    "file": name,
                    "against": against,
                    "tokens": n,
                    "ppl_delta": delta,
                    "se": se,
                    "ppl": float(np.exp(nll[name][:n].mean())),
                }
            )
    result = {**provenance(), "teacher": a.teacher, "context": ctx, "stride": ctx // 2, "block": BLOCK, "rows": rows}
    heading = (
        f"Δppl and its paired standard error (blocks of {BLOCK} tokens) by tokens scored, reference teacher, "
        f"WikiText test, context {ctx} / stride {ctx // 2}, on {result['host']} at git {result['git_sha']}"
    )
    writer.write(Path(a.out), "ppl_tokens", FIELDS, rows, result, title=heading)
    print(writer.markdown(FIELDS, rows, heading), end="")


FIELDS = [
    writer.Column("file", "file"),
    writer.Column("against", "against"),
    writer.Column("tokens", "tokens"),
    writer.Column("ppl", "ppl", ".2f"),
    writer.Column("ppl_delta", "Δppl", "+.3%"),
    writer.Column("se", "standard error", ".3%"),
]


if __name__ == "__main__":
    main()
