"""Does compress's search rank by the file users ship? Its proxy (compress/shipped.py) against the files themselves.

The search (grid, depth+slim, auto) ranks each trial by the validation perplexity of its weights as the
--precision file stores them, read back from ONNX Runtime's block quantiser in PyTorch, before any file is
written. Here, for the reference teacher and for every shape grid's search tries at each of --ratios
(compress/stock.grid_trials), distilled for --search-steps steps exactly as the search does (seed 0, compress's
defaults): validation perplexity (compress's protocol: wiki-en-valid, windows of 256 every 128) of the fp32
model, of the proxy at int8 and int4, and of the int8 and int4 ONNX files export writes (ort_graph.
write_quantised, scored in ONNX Runtime, MatMulNBits at accuracy level 4). The proxy leaves out the int8
activations of accuracy level 4; the gap column is what that costs. One run, one machine.

    python benchmarks/shipped_proxy.py                 # ~12 min on 2 cores
    python benchmarks/shipped_proxy.py --ratios 4 --search-steps 2 --tokens 2048 --out /tmp/sp   # smoke (~1 min)

Writes OUT/shipped_proxy.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--ratios", default="2.47,4", help="comma-separated: grid's trial shapes at each")
    ap.add_argument("--search-steps", type=int, default=16, help="distillation steps per shape (the search's)")
    ap.add_argument("--tokens", type=int, default=16384, help="validation tokens (compress's 16,384)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    import onnxruntime

    from clidep.bench.provenance import provenance
    from clidep.compress.config import CompressConfig
    from clidep.compress.corpus import token_file
    from clidep.compress.distill import validation_ids
    from clidep.compress.plan import _training_text
    from clidep.compress.stock import block_scores, grid_trials
    from clidep.data import load_tokenizer
    from clidep.hardware.blockwise import LAYOUTS
    from clidep.model.convert import load_model
    from clidep.model.params import param_count

    c = CompressConfig(search_steps=a.search_steps, steps=1)
    teacher = load_model(a.teacher).eval()
    tokenizer = load_tokenizer(a.teacher)
    val_ids = validation_ids(tokenizer, c.val_data)[: a.tokens + 1]
    tokens, scores = token_file(tokenizer, _training_text(c)), block_scores(a.teacher, c.depth_scorer, teacher.config)
    rows = [{"model": "teacher", "ratio": None, "params": param_count(teacher.config), **_ppls(a, teacher, val_ids)}]
    for ratio in (float(r) for r in a.ratios.split(",")):
        for shape in grid_trials(teacher.config, round(param_count(teacher.config) / ratio)):
            student = _briefly_distilled(c, teacher, shape, tokens, scores)
            label = f"{shape['blocks']} x {shape['width']}, MLP {shape['mlp_inner']}"
            rows.append({"model": label, "ratio": ratio, "params": shape["params"], **_ppls(a, student, val_ids)})
            print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
    result = {
        **provenance(),
        "onnxruntime": onnxruntime.__version__,
        "teacher": a.teacher,
        "val_data": c.val_data,
        "tokens": a.tokens,
        "search_steps": a.search_steps,
        "threads": a.threads,
        "int4_linear_layers_at_8_bits": list(LAYOUTS["int4"].eight_bit),
        "rows": rows,
        "picks": _picks(rows),
    }
    writer.write(Path(a.out), "shipped_proxy", FIELDS, rows, result, title=title(result))
    print(writer.markdown(FIELDS, rows, title(result)), end="")
    for line in result["picks"]:
        print(line)


def _briefly_distilled(c, teacher, shape: dict, tokens, scores):
    """The grid trial of SHAPE as the search leaves it: teacher init of its kept blocks, c.search_steps steps."""
    from clidep.compress.stock import distil_stock_briefly, keep_blocks, shape_config

    kept = keep_blocks(scores, shape["blocks"], teacher.config.n_layer, c.depth_scorer)
    return distil_stock_briefly(teacher, shape_config(teacher.config, shape), kept, tokens, c)


def _ppls(a, model, val_ids) -> dict:
    """MODEL's validation perplexity in fp32, by the proxy at int8 and int4, and of the int8 and int4 files."""
    from clidep.compress.distill import validation_ppl
    from clidep.compress.shipped import REPORTED, shipped_ppl
    from clidep.export.ort_graph import write_quantised
    from clidep.hardware.blockwise import LAYOUTS
    from clidep.runtime.runner import OnnxCausalLM

    found = {"fp32": validation_ppl(model, val_ids)}
    with tempfile.TemporaryDirectory() as tmp:
        for p in REPORTED:
            layout = LAYOUTS[p]
            path = write_quantised(
                model, Path(tmp) / f"{p}.onnx", layout.bits, layout.block, layout.table_bits, layout.eight_bit
            )[0]
            runner = OnnxCausalLM(path, threads=a.threads)
            found[f"{p}_proxy"] = shipped_ppl(model, val_ids, p)
            found[f"{p}_file"] = validation_ppl(model, val_ids, runner.logits)
    found["int4_gap"] = found["int4_file"] / found["int4_proxy"] - 1
    return found


def _picks(rows: list[dict]) -> list[str]:
    """Per ratio: the shape each figure would pick (the lowest), fp32 against the int4 proxy and file."""
    lines = []
    for ratio in sorted({r["ratio"] for r in rows if r["ratio"] is not None}):
        group = [r for r in rows if r["ratio"] == ratio]
        pick = {k: min(group, key=lambda r: r[k])["model"] for k in ("fp32", "int4_proxy", "int4_file")}
        lines.append(f"ratio {ratio:g}: " + "; ".join(f"{k} picks {m}" for k, m in pick.items()))
    return lines


def _delta(key: str):
    return lambda r: f"{r[key]:.2f} ({r[key] / r['fp32'] - 1:+.2%})"


def title(result: dict) -> str:
    return (
        f"The search's proxy against the shipped files: validation ppl on {result['tokens']:,} tokens of "
        f"{result['val_data']}, grid's trial shapes after {result['search_steps']} distillation steps (seed 0), "
        f"ONNX Runtime {result['onnxruntime']} on {result['threads']} threads of {result['host']}, at git "
        f"{result['git_sha']}; Δ against the model's fp32" + _eight_bit(result)
    )


def _eight_bit(result: dict) -> str:
    """The int4 layout the record names (runs before it was recorded name none)."""
    kinds = result.get("int4_linear_layers_at_8_bits")
    return f"; int4 keeps {', '.join(kinds) or 'no linear layer'} at 8 bits" if kinds is not None else ""


FIELDS = [
    writer.Column("model", "model"),
    writer.Column("ratio", "ratio", text=lambda r: "-" if r["ratio"] is None else f"{r['ratio']:g}"),
    writer.Column("params", "params", text=lambda r: f"{r['params'] / 1e6:.2f} M"),
    writer.Column("fp32", "fp32", text=lambda r: f"{r['fp32']:.2f}"),
    writer.Column("int8_proxy", "int8 proxy", text=_delta("int8_proxy")),
    writer.Column("int8_file", "int8 file", text=_delta("int8_file")),
    writer.Column("int4_proxy", "int4 proxy", text=_delta("int4_proxy")),
    writer.Column("int4_file", "int4 file", text=_delta("int4_file")),
    writer.Column("int4_gap", "int4 file / proxy", text=lambda r: f"{r['int4_gap']:+.2%}"),
]


if __name__ == "__main__":
    main()
