"""The one record of a measurement: every field benchrun writes, declared once, as llama-bench's ``struct test``.

The runner process (here or on a device) writes exactly these fields; ``clidep bench`` checks
each record it receives against them (a runner of another clidep version is a failed row, not
a silent mix), projects every field that has a bound by that bound, and reports them. A field
added to the runner without a line here fails the check, so no timing can go unprojected.
Torch-free: it travels with the runner.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The runtimes a record can come from: clidep's ONNX Runtime runner, ONNX Runtime GenAI, llama.cpp (llama-bench),
#: ExecuTorch (its Python runtime). ``benchrun --runtime`` and ``clidep bench --runtime`` take these.
RUNTIMES = ("clidep", "genai", "llamacpp", "executorch")


@dataclass(frozen=True)
class Field:
    name: str
    unit: str  # "ms", "tokens/s", "s", "MB", "tokens" or "" (a count, a setting, provenance)
    bound: str | None  # what a device's speed at it follows: "compute", "bandwidth", or None (not projected)
    help: str


RUNNER = (
    Field("reps", "", None, "repetitions of every test"),
    Field("gen", "tokens", None, "tokens timed per tgGEN test"),
    Field("threads", "", None, "ONNX Runtime intra-op threads (None: its default)"),
    Field("load_s", "s", None, "loading the graph (this machine's disk: never projected)"),
    Field("prefill_ms", "ms", "compute", "per prompt length: median ms of one prompt pass"),
    Field("prefill_ms_samples", "ms", "compute", "per prompt length: each repetition's ms"),
    Field("pp_tps", "tokens/s", "compute", "per prompt length: {mean, sd, samples} of prompt tokens/s"),
    Field("ttft_ms", "ms", "compute", "median ms to the first token at the first depth (the prompt's pass)"),
    Field("ttft_ms_samples", "ms", "compute", "each repetition's ms to the first token"),
    Field("decode_ms_p50", "ms", "bandwidth", "median ms of a decode step at the first depth, every repetition pooled"),
    Field("decode_ms_p90", "ms", "bandwidth", "90th percentile of the same steps"),
    Field(
        "decode_ms_samples", "ms", "bandwidth", "every timed decode step at the first depth, repetition by repetition"
    ),
    Field("decode_ms_at", "ms", "bandwidth", "per depth: median ms of a decode step"),
    Field("tg_tps", "tokens/s", "bandwidth", "per depth: {mean, sd, samples} of generated tokens/s"),
    Field("tokens_per_s", "tokens/s", "bandwidth", "1000 / decode_ms_p50"),
    Field("decode_context", "tokens", None, "mean past length while decode was timed (what the KV read is counted at)"),
    Field("ppl", "", None, "perplexity of the given ids (None without --ppl)"),
    Field("peak_rss_mb", "MB", None, "the runner process's peak resident memory, before any perplexity pass"),
    Field("runner", "", None, "where the runner ran: host, machine, system, cores, python and library versions"),
)
FIELDS = {f.name: f for f in RUNNER}


def check(record: dict) -> dict:
    """RECORD when it holds exactly the declared fields; ``ValueError`` naming the ones it lacks or adds."""
    missing = [k for k in FIELDS if k not in record]
    extra = [k for k in record if k not in FIELDS]
    if missing or extra:
        raise ValueError(
            "the runner's record does not match clidep's (a runner of another version?): "
            + "; ".join(
                x
                for x in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"undeclared {', '.join(extra)}" if extra else "",
                )
                if x
            )
        )
    return record
