"""What each graph of an export computes on this machine, for comparison with another machine's run
of the same files (``clidep export --check-arm`` runs it on emulated aarch64 and on the host).

    python -m clidep.runtime.probe SPEC.json OUT.npz

SPEC names the inputs (an .npz written by the host) and the jobs: ``{"inputs": PATH, "context": C,
"stride": S, "greedy_tokens": N, "jobs": [{"name": NAME, "path": PATH, "kind": "runner"|"genai"}]}``.
The inputs are ``ids1`` (1, T) and ``ids2`` (2, T) with ``mask2`` (row 1 left-padded), ``split`` (the
past length of the second pass), ``prompt`` (1, P) and ``ppl_ids`` (tokens).
For a graph through clidep's runner, OUT holds, under ``NAME::KEY``: the logits at past 0 and at
past SPLIT for batch 1 and the padded batch 2 (``logits-b1-p0``, ``logits-b1-pS``, ...; padding
positions zeroed), the greedy continuation of the prompt (``greedy``), the perplexity of
``ppl_ids`` with clidep's protocol at CONTEXT / STRIDE (``ppl``) and, from the same passes, the
argmax at every position of every window (``argmax``: teacher-forced next tokens) with its margin
over the runner-up (``margin``); for an ONNX
Runtime GenAI folder, its greedy continuation. The machine (``runtime.machine.where``) is printed as JSON.
Torch-free: it runs on the device.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from clidep.runtime import onnx_io
from clidep.runtime.machine import where
from clidep.runtime.runner import OnnxCausalLM


def _logits(runner: OnnxCausalLM, ids: np.ndarray, mask: np.ndarray, split: int) -> dict:
    """Logits (B, T, V) of one pass without a past, and those of the last T - SPLIT tokens after a
    SPLIT-token past; padding positions zeroed so that they compare equal."""
    pos = onnx_io.left_pad_positions(mask)
    B, T = ids.shape
    whole, _ = runner.forward(ids, mask, pos, runner.empty_past(B, T))
    _, past = runner.forward(ids[:, :split], mask[:, :split], pos[:, :split], runner.empty_past(B, T))
    tail, _ = runner.forward(ids[:, split:], mask, pos[:, split:], past)
    whole, tail = whole.astype(np.float32), tail.astype(np.float32)
    whole[mask == 0], tail[mask[:, split:] == 0] = 0, 0
    return {"p0": whole, "pS": tail}


def run_graph(path: str, inputs: dict, context: int, stride: int, greedy_tokens: int) -> dict:
    """The figures of one graph through clidep's runner (the keys of OUT above, without NAME)."""
    from clidep.perplexity import perplexity

    runner = OnnxCausalLM(path)
    out = {}
    split = int(inputs["split"])
    for batch, ids, mask in (
        ("b1", inputs["ids1"], np.ones_like(inputs["ids1"])),
        ("b2", inputs["ids2"], inputs["mask2"]),
    ):
        for past, logits in _logits(runner, ids, mask, split).items():
            out[f"logits-{batch}-{past}"] = logits
    out["greedy"] = runner.generate(inputs["prompt"], max_new_tokens=greedy_tokens)[0]
    picks = []

    def scored(ids: np.ndarray) -> np.ndarray:  # one pass serves the perplexity and the argmax
        logits = runner.logits(ids)
        top2 = np.partition(logits, (-2, -1), axis=-1)[..., -2:]  # linear in V, where a sort is V log V
        picks.append((logits.argmax(-1).ravel(), (top2[..., 1] - top2[..., 0]).ravel()))
        return logits

    out["ppl"] = np.array(perplexity(scored, inputs["ppl_ids"], context, stride, 4).ppl)
    out["argmax"] = np.concatenate([p for p, _ in picks])
    out["margin"] = np.concatenate([m for _, m in picks])  # top logit minus the runner-up, per position
    return out


def run_genai(folder: str, inputs: dict, greedy_tokens: int) -> dict:
    """The greedy continuation of the prompt through ONNX Runtime GenAI's Generator from FOLDER."""
    import onnxruntime_genai as og

    model = og.Model(folder)
    params = og.GeneratorParams(model)
    prompt = inputs["prompt"].astype(np.int32)
    params.set_search_options(max_length=prompt.shape[1] + greedy_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    while not generator.is_done():
        generator.generate_next_token()
    return {"greedy": np.asarray(generator.get_sequence(0), np.int64)}


#: The line a probe process writes on stderr as each job ends, so that its caller can tell progress from a hang.
DONE = "clidep-probe-done "


def run(spec: dict, done=None) -> dict:
    """Every job of SPEC: {"NAME::KEY": array}; DONE(name, seconds) is called as each job ends."""
    with np.load(spec["inputs"]) as f:
        inputs = {k: f[k] for k in f.files}
    out = {}
    for job in spec["jobs"]:
        t0 = time.perf_counter()
        if job["kind"] == "genai":
            figures = run_genai(job["path"], inputs, spec["greedy_tokens"])
        else:
            figures = run_graph(job["path"], inputs, spec["context"], spec["stride"], spec["greedy_tokens"])
        out.update({f"{job['name']}::{k}": v for k, v in figures.items()})
        if done is not None:
            done(job["name"], time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    spec_path, out_path = argv if argv is not None else sys.argv[1:]
    with open(spec_path) as f:
        spec = json.load(f)
    np.savez(out_path, **run(spec, lambda name, _: print(DONE + name, file=sys.stderr, flush=True)))
    json.dump(where(), sys.stdout)


if __name__ == "__main__":
    main()
