"""compress at the paper's scale, timed on this CPU: a GPT-2-medium-shaped teacher (24 x 1024, 16 heads, vocabulary
50,257, 1,024 positions; random weights: the step's cost does not depend on the values) distilled for a few
steps, and what a full run would cost here, projected.

`clidep compress` as a user runs it (`--method slim --ratio 2.47`: the stock student of every stock method's cost
per step; grid adds its search's trials, each a few of these steps), `--batch-size` x `--seq-len` tokens a step,
the offline Wikipedia text: the student's shape, seconds per distillation step (the training loop's own clock,
compress.json), tokens per second, the process's peak resident memory, and the wall time of the whole command
(loading, the student's initialisation, tokenising). The projection divides the paper recipe's 100 M tokens by
the measured tokens per second: labelled, not measured.

    python benchmarks/compress_scale.py                 # ~15 min on 2 cores (batch 4 x 1,024, 4 steps)

Writes OUT/compress_scale.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
#: The paper recipe's distillation tokens (benchmarks/paper_ablation.py's GPU line).
PAPER_TOKENS = 100_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from clidep.bench.provenance import provenance
    from clidep.commands.compress import compress
    from clidep.data import load_tokenizer

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / "teacher"
        torch.manual_seed(0)
        config = GPT2Config(n_layer=a.layers, n_embd=a.width, n_head=a.heads, n_positions=1024, vocab_size=50257)
        GPT2LMHeadModel(config).save_pretrained(teacher)
        load_tokenizer("gpt2").save_pretrained(teacher)
        t = time.time()
        record = compress(
            str(teacher),
            Path(tmp) / "student",
            method="slim",
            ratio=2.47,
            steps=a.steps,
            batch_size=a.batch_size,
            seq_len=a.seq_len,
            eval_every=0,
            save_every=0,
            log=print,
        )
        wall = time.time() - t
    step_s = record["seconds"] / record["steps"]
    tokens_per_s = record["tokens_trained"] / record["seconds"]
    row = {
        "teacher": f"{a.layers} x {a.width} ({record['teacher_params'] / 1e6:.0f} M)",
        "student": f"{len(record['layer_widths'])} x {record['layer_widths'][0]} ({record['student_params'] / 1e6:.0f} M)",
        "tokens_per_step": a.batch_size * a.seq_len,
        "steps": record["steps"],
        "step_s": step_s,
        "tokens_per_s": tokens_per_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "command_s": wall,
        "projected_paper_h": PAPER_TOKENS / tokens_per_s / 3600,
    }
    result = {**provenance(), "threads": torch.get_num_threads(), "paper_tokens": PAPER_TOKENS}
    result.update(wall_seconds=round(time.time() - start), rows=[row], compress=record)
    heading = title(result)
    writer.write(Path(a.out), "compress_scale", FIELDS, [row], result, title=heading)
    print(writer.markdown(FIELDS, [row], heading), end="")


def title(result: dict) -> str:
    return (
        f"clidep compress --method slim --ratio 2.47 on a GPT-2-medium-shaped teacher (random weights), "
        f"{result['threads']} threads, on {result['host']} at git {result['git_sha']}; the last column is a "
        f"projection ({result['paper_tokens'] / 1e6:.0f} M tokens at the measured rate), not a measurement"
    )


FIELDS = [
    writer.Column("teacher", "teacher"),
    writer.Column("student", "student"),
    writer.Column("tokens_per_step", "tokens a step"),
    writer.Column("steps", "steps"),
    writer.Column("step_s", "s a step", ".1f"),
    writer.Column("tokens_per_s", "tokens/s", ".0f"),
    writer.Column("peak_rss_gb", "peak GB", ".1f"),
    writer.Column("command_s", "whole command s", ".0f"),
    writer.Column("projected_paper_h", "projected h for 100 M tokens", ",.0f"),
]


if __name__ == "__main__":
    main()
