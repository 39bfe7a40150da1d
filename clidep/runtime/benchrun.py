"""Measure one model in this process: numpy + onnxruntime (or llama.cpp's llama-bench for a GGUF file, or
ExecuTorch's runtime for a .pte program, which alone needs torch).

    python -m clidep.runtime.benchrun MODEL.onnx [--prompt-lens 32,128] [--gen 128] [--depth 32,512]
        [--reps 5] [--threads N] [--ppl-ids ids.npy --context C --stride S]

Prints one JSON record on stdout: the fields of ``record.RUNNER``, exactly. ``clidep bench`` starts
one such process per model so that peak memory figures do not mix; with ``--remote`` the same module runs on the device.
Protocol, as llama-bench's: REPS repetitions of every test. ppN: one pass over an N-token prompt
(after one untimed pass per length), in tokens/s. tgGEN at depth P: GEN greedy tokens, batch 1,
KV cache, after a P-token prompt and 8 untimed tokens, in tokens/s. Each is reported as mean and
sample standard deviation over the repetitions, every sample kept; per-token decode latency
p50/p90 pools the steps of every repetition at the first depth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from clidep.runtime.machine import where
from clidep.runtime.protocol import DECODE_PROMPT, REPS, WARMUP_TOKENS, run_tests
from clidep.runtime.record import RUNTIMES, check
from clidep.runtime.runner import OnnxCausalLM


def measure(
    path: str,
    prompt_lens: list[int],
    gen: int,
    threads: int | None,
    ppl_ids: np.ndarray | None = None,
    context: int = 256,
    stride: int = 128,
    seed: int = 0,
    depths: list[int] = (DECODE_PROMPT,),
    reps: int = REPS,
) -> dict:
    """One model's record through clidep's runner: load time, prompt processing per prompt length,
    generation after each of DEPTHS (the first is the headline), REPS times each; peak memory;
    perplexity given PPL_IDS."""
    t0 = time.perf_counter()
    runner = OnnxCausalLM(path, threads=threads)
    load_s = time.perf_counter() - t0
    vocab = runner.session.get_outputs()[0].shape[-1]
    vocab = vocab if isinstance(vocab, int) else 1000
    record = run_tests(
        lambda ids: _prefill_ms(runner, ids),
        lambda ids: _decode_ms(runner, ids, gen),
        vocab,
        prompt_lens,
        depths,
        gen,
        reps,
        seed,
    )
    record.update(load_s=load_s, threads=threads, runner=where())
    if ppl_ids is not None:
        from clidep.perplexity import perplexity, ppl_batch

        record["ppl"] = perplexity(runner.logits, ppl_ids, context, stride, ppl_batch(context, vocab)).ppl
    return record


def measure_genai(
    folder: str,
    prompt_lens: list[int],
    gen: int,
    threads: int | None,
    seed: int = 0,
    depths: list[int] = (DECODE_PROMPT,),
    reps: int = REPS,
) -> dict:
    """The same record through ONNX Runtime GenAI's Generator, from an export's genai/<precision>/ folder."""
    import onnxruntime_genai as og

    t0 = time.perf_counter()
    config = og.Config(folder)
    if threads:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    load_s = time.perf_counter() - t0
    described = json.loads((Path(folder) / "genai_config.json").read_text())["model"]
    vocab, context = described["vocab_size"], described["context_length"]
    record = run_tests(
        lambda ids: _genai_prefill_ms(og, model, ids, context),
        lambda ids: _genai_decode_ms(og, model, ids, gen),
        vocab,
        prompt_lens,
        depths,
        gen,
        reps,
        seed,
    )
    record.update(load_s=load_s, threads=threads, runner={**where(), "onnxruntime_genai": og.__version__})
    return record


def measure_llamacpp(
    gguf: str,
    prompt_lens: list[int],
    gen: int,
    threads: int | None,
    ppl_ids: np.ndarray | None = None,
    context: int = 256,
    stride: int = 128,
    depths: list[int] = (DECODE_PROMPT,),
    reps: int = REPS,
) -> dict:
    """The same record of a GGUF file through llama.cpp's llama-bench (runtime/llamacpp.py: its tests, its
    repetitions, its samples); perplexity given PPL_IDS, through llama.cpp's bindings (this machine only)."""
    import os

    from clidep.runtime import llama_bench, llamacpp

    record = llama_bench.record(Path(gguf), prompt_lens, gen, threads or os.cpu_count(), list(depths), reps)
    record["runner"] = {**where(), **record["runner"]}
    if ppl_ids is not None:
        from clidep.perplexity import perplexity

        model = llamacpp.LlamaCppModel(Path(gguf), context, threads)
        record["ppl"] = perplexity(model.logits, ppl_ids, context, stride, 1).ppl
        model.close()
    return record


def measure_executorch(
    pte: str,
    prompt_lens: list[int],
    gen: int,
    threads: int | None,
    ppl_ids: np.ndarray | None = None,
    context: int = 256,
    stride: int = 128,
    seed: int = 0,
    depths: list[int] = (DECODE_PROMPT,),
    reps: int = REPS,
) -> dict:
    """The same record of an ExecuTorch program (export --executorch) through ExecuTorch's runtime, XNNPACK's
    threadpool at THREADS; perplexity given PPL_IDS. Its bindings take torch tensors: this runtime imports torch."""
    from importlib.metadata import version

    from clidep.runtime.pte import Program, set_threads

    try:
        set_threads(threads)  # imports ExecuTorch's bindings
    except ImportError as exc:  # a device's Python without it (--remote): one line, as the row's error
        raise SystemExit(f"ExecuTorch is not installed in {sys.executable} (pip install executorch): {exc}") from None
    t0 = time.perf_counter()
    program = Program(pte)
    load_s = time.perf_counter() - t0
    record = run_tests(
        program.prefill_ms,
        lambda ids: program.decode_ms(ids, gen, WARMUP_TOKENS),
        program.vocab,
        prompt_lens,
        depths,
        gen,
        reps,
        seed,
    )
    record.update(load_s=load_s, threads=threads, runner={**where(), "executorch": version("executorch")})
    if ppl_ids is not None:
        from clidep.perplexity import perplexity

        record["ppl"] = perplexity(program.logits, ppl_ids, min(context, program.context), stride, 1).ppl
    return record


def _prefill_ms(runner: OnnxCausalLM, ids: np.ndarray) -> float:
    """ms of one prefill of IDS (1, n) as generation runs it (last position's logits)."""
    n = ids.shape[1]
    mask, pos = np.ones((1, n), np.int64), np.arange(n, dtype=np.int64)[None]
    past = runner.empty_past(1, n)  # allocated before the clock starts, as a generation loop would
    t = time.perf_counter()
    runner.forward(ids, mask, pos, past, last_only=True)
    return (time.perf_counter() - t) * 1e3


def _decode_ms(runner: OnnxCausalLM, ids: np.ndarray, gen: int) -> tuple[list[float], float]:
    """(ms of each of GEN greedy decode steps after the prompt IDS (1, P) and WARMUP_TOKENS untimed
    steps, ms to the first token: the prompt's pass and the pick of its next token)."""
    P = ids.shape[1]
    mask, pos = np.ones((1, P), np.int64), np.arange(P, dtype=np.int64)[None]
    past = runner.empty_past(1, P + WARMUP_TOKENS + gen)
    t = time.perf_counter()
    logits, past = runner.forward(ids, mask, pos, past, last_only=True)
    nxt = logits[:, -1].argmax(-1)[:, None]
    ttft = (time.perf_counter() - t) * 1e3
    samples = []
    for i in range(WARMUP_TOKENS + gen):
        t = time.perf_counter()
        logits, mask, pos, past = runner.decode_step(nxt, mask, pos, past)
        if i >= WARMUP_TOKENS:
            samples.append((time.perf_counter() - t) * 1e3)
        nxt = logits[:, -1].argmax(-1)[:, None]
    return samples, ttft


def _genai_generator(og, model, length: int):
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=length, do_sample=False)
    return og.Generator(model, params)


def _genai_prefill_ms(og, model, ids: np.ndarray, context: int) -> float:
    """ms of one prompt pass (append_tokens); max_length within the model's CONTEXT."""
    generator = _genai_generator(og, model, min(ids.shape[1] + 1, context))
    t = time.perf_counter()
    generator.append_tokens(ids.astype(np.int32))
    return (time.perf_counter() - t) * 1e3


def _genai_decode_ms(og, model, ids: np.ndarray, gen: int) -> tuple[list[float], float]:
    """As _decode_ms through the Generator: each generate_next_token picks a token and runs the model on it."""
    generator = _genai_generator(og, model, ids.shape[1] + WARMUP_TOKENS + gen)  # max_length counts the prompt
    t = time.perf_counter()
    generator.append_tokens(ids.astype(np.int32))
    ttft = (time.perf_counter() - t) * 1e3  # the prompt's pass; the pick happens in the first step below
    samples = []
    for i in range(WARMUP_TOKENS + gen):
        t = time.perf_counter()
        generator.generate_next_token()
        if i >= WARMUP_TOKENS:
            samples.append((time.perf_counter() - t) * 1e3)
    return samples, ttft


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Measure one ONNX model (clidep bench's runner).")
    ap.add_argument("model")
    ap.add_argument("--prompt-lens", default="32,128")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ppl-ids", default=None)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--depth", default=str(DECODE_PROMPT))
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="clidep",
        help="clidep's runner on MODEL (.onnx), ONNX Runtime GenAI on MODEL (a genai/<precision> folder), "
        "llama.cpp's llama-bench on MODEL (.gguf), or ExecuTorch's runtime on MODEL (.pte)",
    )
    a = ap.parse_args(argv)
    ids = np.load(a.ppl_ids) if a.ppl_ids else None
    lens = [int(x) for x in a.prompt_lens.split(",") if x]
    at = [int(x) for x in a.depth.split(",") if x]
    if a.runtime == "genai":
        record = measure_genai(a.model, lens, a.gen, a.threads, depths=at, reps=a.reps)
    elif a.runtime == "executorch":
        record = measure_executorch(a.model, lens, a.gen, a.threads, ids, a.context, a.stride, depths=at, reps=a.reps)
    elif a.runtime == "llamacpp":
        record = measure_llamacpp(a.model, lens, a.gen, a.threads, ids, a.context, a.stride, depths=at, reps=a.reps)
    else:
        record = measure(a.model, lens, a.gen, a.threads, ids, a.context, a.stride, depths=at, reps=a.reps)
    json.dump(check(record), sys.stdout)


if __name__ == "__main__":
    main()
