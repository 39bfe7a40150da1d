"""clidep export vs the peer pipeline (optimum-cli export + ONNX Runtime's quantisers), in one run.

For each model: fp32 / int8 / int4 files from `clidep export`, and for plain GPT-2 sources the
same model through `optimum-cli export onnx --task text-generation-with-past` (run in the
optimum environment, .venv-peer) followed by ONNX Runtime's `quantize_dynamic` and
`MatMulNBitsQuantizer` with their defaults. Every file is scored by the same perplexity
function on the same tokens, with the torch-free runner.

    python benchmarks/export_compare.py                      # teacher, 32k tokens (~4 min on 2 cores)
    python benchmarks/export_compare.py --tokens 4096        # smoke test
    python benchmarks/export_compare.py --student runs/cli   # add a clidep student

Writes benchmarks/results/export_compare.json, .md, .csv and .jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / ".venv-peer" / "bin"


def peer_pipeline(model: Path, work: Path) -> list[dict]:
    """optimum-cli export, then ORT's own int8 dynamic and int4 tools with their defaults."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    out = work / "peer"
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(PEER / "optimum-cli"),
            "export",
            "onnx",
            "--model",
            str(model),
            "--task",
            "text-generation-with-past",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    rows = [{"file": out / "model.onnx", "precision": "fp32", "seconds": time.perf_counter() - t0}]
    t0 = time.perf_counter()
    quantize_dynamic(str(out / "model.onnx"), str(out / "model.int8.onnx"), weight_type=QuantType.QInt8)
    rows.append({"file": out / "model.int8.onnx", "precision": "int8-dynamic", "seconds": time.perf_counter() - t0})
    t0 = time.perf_counter()
    q = MatMulNBitsQuantizer(onnx.load(str(out / "model.onnx")), bits=4, block_size=32, is_symmetric=True)
    q.process()
    onnx.save(q.model.model, str(out / "model.int4.onnx"))
    graph = onnx.load(str(out / "model.int4.onnx"))
    rows.append(
        {
            "file": out / "model.int4.onnx",
            "precision": "int4-weight-only",
            "seconds": time.perf_counter() - t0,
            "linear_layers_quantized": sum(n.op_type == "MatMulNBits" for n in graph.graph.node),
        }
    )
    return rows


# A screen and a little: argument parsing, one loop over the models and their pipelines, the report.
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--student", action="append", default=[], help="clidep model directories to add")
    ap.add_argument("--tokens", type=int, default=32768, help="WikiText-test tokens scored per file")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "export_compare"))
    a = ap.parse_args()

    import torch

    from clidep.bench.provenance import provenance
    from clidep.commands.export import export_artifact
    from clidep.data import load_tokenizer, read_text, tokenize_text
    from clidep.model.convert import load_model
    from clidep.perplexity import perplexity
    from clidep.runtime.runner import OnnxCausalLM

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, src in [("teacher", a.teacher)] + [(Path(s).name, s) for s in a.student]:
            tok = load_tokenizer(src)
            ids = tokenize_text(tok, read_text("wikitext-test")[0])[: a.tokens + 1]
            model = load_model(src)
            probe = ids[:256].reshape(2, 128)
            with torch.no_grad():
                ref = model(torch.from_numpy(probe), use_cache=False).logits.numpy()
            context = min(model.config.n_positions, 1024)
            t0 = time.perf_counter()
            manifest = export_artifact(src, work / name, int8=True, int4=True, ppl_tokens=16).to_dict()
            total = time.perf_counter() - t0
            files = [
                {
                    "file": work / name / v["file"],
                    "precision": v["precision"],
                    "seconds": v["seconds"],
                    **(
                        {"linear_layers_quantized": v["linear_layers_quantized"]}
                        if "linear_layers_quantized" in v
                        else {}
                    ),
                }
                for v in manifest["variants"]
            ]
            pipelines = [("clidep", files)]
            if (
                manifest["model_type"] == "gpt2"
                or json.loads((Path(src) / "config.json").read_text())["model_type"] == "gpt2"
            ):
                pipelines.append(("peer", peer_pipeline(Path(src), work / name)))
            for pipeline, entries in pipelines:
                base = None
                for e in entries:
                    runner = OnnxCausalLM(e["file"])
                    ppl = perplexity(runner.logits, ids, context, context // 2, 4).ppl
                    base = base or ppl
                    rows.append(
                        {
                            "model": name,
                            "pipeline": pipeline,
                            "precision": e["precision"],
                            "size_bytes": e["file"].stat().st_size,
                            "seconds": round(e["seconds"], 2),
                            "max_abs_logit_diff_vs_torch": float(np.abs(runner.logits(probe) - ref).max()),
                            "ppl": ppl,
                            "ppl_delta": ppl / base - 1,
                            **(
                                {"linear_layers_quantized": e["linear_layers_quantized"]}
                                if "linear_layers_quantized" in e
                                else {}
                            ),
                        }
                    )
            rows.append(
                {
                    "model": name,
                    "pipeline": "clidep",
                    "precision": "all (export + validation + scoring)",
                    "seconds": round(total, 2),
                }
            )
    result = {
        **provenance(),
        "protocol": {
            "data": "wikitext-test",
            "tokens": a.tokens,
            "context": "model positions",
            "stride": "context / 2",
        },
        "rows": rows,
    }
    out = Path(a.out)
    prov = {k: result[k] for k in ("host", "time", "git_sha")}
    scored = [{**r, "provenance": prov} for r in rows if "ppl" in r]  # the timing-only rows stay in the JSON
    writer.write(out.parent, out.stem, FIELDS, scored, result)
    print(writer.markdown(FIELDS, scored), end="")


FIELDS = [
    writer.Column("model", "model"),
    writer.Column("pipeline", "pipeline"),
    writer.Column("precision", "precision"),
    writer.Column("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.1f}"),
    writer.Column("max_abs_logit_diff_vs_torch", "max abs logit diff vs torch", ".2g"),
    writer.Column("ppl", "ppl", ".2f"),
    writer.Column("ppl_delta", "Δppl vs fp32", "+.2%"),
    writer.Column(
        "linear_layers_quantized", "linear layers quantised", text=lambda r: str(r.get("linear_layers_quantized", ""))
    ),
    writer.Column("seconds", "seconds"),
]


if __name__ == "__main__":
    main()
