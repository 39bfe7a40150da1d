"""llama-bench's protocol, the same for every runtime benchrun measures: REPS repetitions of its tests (ppN, one
prompt pass; tgGEN at a depth, greedy tokens after a prompt), each reported as mean and sample standard deviation
with every sample kept, and the process's peak memory. Torch-free: it travels with the runner."""

from __future__ import annotations

import resource
import sys

import numpy as np

#: Untimed decode steps before the timed ones (the first steps of a shape allocate).
WARMUP_TOKENS = 8
#: The prompt, tokens, that decode is timed after unless --depth says otherwise.
DECODE_PROMPT = 32
#: Repetitions of every test.
REPS = 5


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


def run_tests(
    prefill, decode, vocab: int, prompt_lens: list[int], depths: list[int], gen: int, reps: int, seed: int
) -> dict:
    """REPS repetitions of llama-bench's tests: ppN (one prompt pass of N tokens, after one untimed pass
    per length) and tgGEN after each depth P (GEN greedy tokens after a P-token prompt and
    WARMUP_TOKENS untimed steps). PREFILL(ids) returns ms; DECODE(ids) (step ms, first-token ms)."""
    rng = np.random.default_rng(seed)
    prompts = {n: rng.integers(0, vocab, (1, n)) for n in prompt_lens}
    contexts = {p: rng.integers(0, vocab, (1, p)) for p in depths}
    for ids in prompts.values():
        prefill(ids)  # warm-up: the first pass of a shape allocates
    pp = {n: [] for n in prompt_lens}
    steps = {p: [] for p in depths}  # per repetition, the ms of each timed step
    ttft = []
    for _ in range(reps):
        for n, ids in prompts.items():
            pp[n].append(prefill(ids))
        for p, ids in contexts.items():
            samples, first = decode(ids)
            steps[p].append(samples)
            if p == depths[0]:
                ttft.append(first)
    head = [s for rep in steps[depths[0]] for s in rep]
    return {
        "reps": reps,
        "prefill_ms": {str(n): float(np.median(v)) for n, v in pp.items()},
        "prefill_ms_samples": {str(n): v for n, v in pp.items()},
        "pp_tps": {str(n): spread([n * 1e3 / ms for ms in v]) for n, v in pp.items()},
        "tg_tps": {str(p): spread([gen * 1e3 / sum(rep) for rep in v]) for p, v in steps.items()},
        "gen": gen,
        "ttft_ms": float(np.median(ttft)),
        "ttft_ms_samples": ttft,
        "decode_ms_p50": float(np.percentile(head, 50)),
        "decode_ms_p90": float(np.percentile(head, 90)),
        "decode_ms_samples": head,
        "decode_ms_at": {str(p): float(np.percentile([s for rep in v for s in rep], 50)) for p, v in steps.items()},
        "tokens_per_s": 1e3 / float(np.percentile(head, 50)),
        "decode_context": depths[0] + WARMUP_TOKENS + gen // 2,  # mean past length while timing
        "ppl": None,
        # taken before any perplexity pass, whose batched logits would otherwise dominate it
        "peak_rss_mb": peak_rss_mb(),
    }


def spread(samples: list[float]) -> dict:
    """llama-bench's figure: mean and sample standard deviation (0 for one sample), the samples kept."""
    sd = float(np.std(samples, ddof=1)) if len(samples) > 1 else 0.0
    return {"mean": float(np.mean(samples)), "sd": sd, "samples": samples}
