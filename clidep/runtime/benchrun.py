"""Measure one ONNX model in this process: numpy + onnxruntime only, no torch.

    python -m clidep.runtime.benchrun MODEL.onnx [--prompt-lens 32,128] [--gen 64]
        [--threads N] [--ppl-ids ids.npy --context C --stride S]

Prints one JSON record on stdout. ``clidep bench`` starts one such process per model so that
peak memory figures do not mix; with ``--remote`` the same module runs on the device.
Protocol: prefill = median of 3 timed passes after one warm-up, per prompt length; decode =
greedy, batch 1, KV cache, after a 32-token prefill and 8 warm-up tokens, per-token latency
p50/p90 over GEN tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from clidep.runtime.runner import OnnxCausalLM

WARMUP_TOKENS = 8
DECODE_PROMPT = 32


def peak_rss_mb() -> float:
    """This process's peak resident memory: imports, session and decoding.

    Linux's VmHWM belongs to the address space that exec created, while getrusage's ru_maxrss
    survives exec and would report the parent that spawned this runner; it is the fallback
    elsewhere (macOS reports bytes, Linux KiB).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure(path: str, prompt_lens: list[int], gen: int, threads: int | None, ppl_ids: np.ndarray | None = None,
            context: int = 256, stride: int = 128, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    runner = OnnxCausalLM(path, threads=threads)
    load_s = time.perf_counter() - t0
    vocab = runner.session.get_outputs()[0].shape[-1]
    vocab = vocab if isinstance(vocab, int) else 1000
    rng = np.random.default_rng(seed)
    prefill = {}
    for n in prompt_lens:
        ids = rng.integers(0, vocab, (1, n))
        mask, pos = np.ones((1, n), np.int64), np.arange(n, dtype=np.int64)[None]
        runner.forward(ids, mask, pos, runner.empty_past(1))  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            runner.forward(ids, mask, pos, runner.empty_past(1))
            times.append(time.perf_counter() - t)
        prefill[str(n)] = float(np.median(times) * 1e3)
    ids = rng.integers(0, vocab, (1, DECODE_PROMPT))
    mask, pos = np.ones((1, DECODE_PROMPT), np.int64), np.arange(DECODE_PROMPT, dtype=np.int64)[None]
    logits, past = runner.forward(ids, mask, pos, runner.empty_past(1))
    samples = []
    for i in range(WARMUP_TOKENS + gen):
        nxt = logits[:, -1].argmax(-1)[:, None]
        t = time.perf_counter()
        logits, mask, pos, past = runner.decode_step(nxt, mask, pos, past)
        if i >= WARMUP_TOKENS:
            samples.append((time.perf_counter() - t) * 1e3)
    record = {
        "load_s": load_s,
        "prefill_ms": prefill,
        "decode_ms_p50": float(np.percentile(samples, 50)),
        "decode_ms_p90": float(np.percentile(samples, 90)),
        "decode_ms_samples": samples,
        "tokens_per_s": 1e3 / float(np.percentile(samples, 50)),
        "threads": threads,
        "decode_context": DECODE_PROMPT + WARMUP_TOKENS + gen // 2,  # mean past length while timing
        "ppl": None,
        # taken before the perplexity pass, whose batched logits would otherwise dominate it
        "peak_rss_mb": peak_rss_mb(),
    }
    if ppl_ids is not None:
        from clidep.quality.perplexity import perplexity

        record["ppl"] = perplexity(runner.logits, ppl_ids, context, stride, 4).ppl
    return record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Measure one ONNX model (clidep bench's runner).")
    ap.add_argument("model")
    ap.add_argument("--prompt-lens", default="32,128")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ppl-ids", default=None)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--stride", type=int, default=128)
    a = ap.parse_args(argv)
    ids = np.load(a.ppl_ids) if a.ppl_ids else None
    lens = [int(x) for x in a.prompt_lens.split(",") if x]
    json.dump(measure(a.model, lens, a.gen, a.threads, ids, a.context, a.stride), sys.stdout)


if __name__ == "__main__":
    main()
