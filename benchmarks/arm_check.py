"""Every precision of a CLI and a uniform student on emulated aarch64, against the same files on x86.

The demo teacher (clidep/demo_model) is compressed to a CLI student at ratio 2 (blocks 0 and 7 kept,
the rest one head of 36, padded to 40 in the graph) and a uniform student matched to it, each
distilled for --steps on the standard library's docstrings; each is exported twice with
``--check-arm`` (the ONNX Runtime graph: fp32, int8, int4, fp16; ``--plain-onnx``: fp32, int8), so every
file runs through clidep's runner and ONNX Runtime GenAI on emulated Cortex-A76 and Cortex-A72
cores (scripts/arm64-env.sh) and on this host. Emulation checks what ARM's kernels compute, not speed.

    bash scripts/arm64-env.sh && python benchmarks/arm_check.py        # 20 min here, beside other jobs on 2 cores

Writes benchmarks/results/arm_check.json, .md, .csv and .jsonl.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from clidep.bench import writer
from clidep.bench.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"ort": dict(int8=True, int4=True, fp16=True), "plain": dict(plain_onnx=True, int8=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="distillation steps per student (the demo's)")
    ap.add_argument("--tokens", type=int, default=1024, help="tokens of held-out docstrings scored on each machine")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.commands.compress import compress
    from clidep.commands.demo import EMBEDDED
    from clidep.commands.export import export_artifact

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = dict(data="python-docs", steps=a.steps, batch_size=16, seq_len=128, eval_every=0, log=print)
        compress(str(EMBEDDED), tmp / "cli", method="cli", ratio=2.0, protect="0,7", **common)
        compress(str(EMBEDDED), tmp / "uniform", method="uniform", match=str(tmp / "cli"), **common)
        for student in ("cli", "uniform"):
            for kind, options in KINDS.items():
                manifest = export_artifact(
                    tmp / student,
                    tmp / f"{student}-{kind}",
                    check_arm=True,
                    log=print,
                    ppl_data="python-docs-valid",
                    ppl_tokens=a.tokens,
                    **options,
                ).to_dict()
                precision = {v["file"]: v["precision"] for v in manifest["variants"]}
                x86 = {v["file"]: v for v in manifest["variants"]}
                for core, c in manifest["aarch64"]["cores"].items():
                    for file, f in c["variants"].items():
                        rows.append(
                            {
                                "student": student,
                                "graph": kind,
                                "precision": precision[file],
                                "core": core,
                                **f,
                                "x86_fp32_agreement": x86[file]["greedy_agreement"],
                                "x86_ppl_delta": x86[file]["ppl_delta"],
                                "machine": c["machine"],
                            }
                        )
    F = writer.Column
    fields = [
        F("student", "student"),
        F("graph", "graph"),
        F("precision", "precision"),
        F("core", "core"),
        F("max_abs_logit_diff", "max abs Δlogit vs x86", ".2e"),
        F("argmax_agreement", "next token = x86", ".1%"),
        F("flip_max_margin", "largest x86 margin at a flip", ".3f"),
        F("greedy_match", "greedy = x86"),
        F("ppl_vs_host", "Δppl vs x86 (same file)", "+.2%"),
        F("ppl_delta", "Δppl vs x86 fp32", "+.2%"),
        F("x86_ppl_delta", "x86's Δppl", "+.2%"),
        F("fp32_agreement", "next token = x86 fp32", ".1%"),
        F("x86_fp32_agreement", "x86's", ".1%"),
        F("genai_matches_runner", "GenAI = runner"),
        F("genai_greedy_match", "GenAI greedy = x86's"),
    ]
    prov = provenance()
    emulator = rows[0]["machine"]["emulated"]
    title = (
        f"**emulated aarch64** ({emulator}, ONNX Runtime {rows[0]['machine']['onnxruntime']}) against x86 on "
        f"{prov['host']}, {a.tokens:,} tokens of held-out docstrings, students distilled {a.steps} steps, git "
        f"{prov['git_sha']}, {prov['time']}: what ARM's kernels compute, not how fast"
    )
    for path in writer.write(
        Path(a.out),
        "arm_check",
        fields,
        rows,
        {"provenance": prov, "steps": a.steps, "tokens": a.tokens, "rows": rows},
        title,
    ):
        print(path)


if __name__ == "__main__":
    main()
