"""From host measurements to a device profile's figures: every timing of a runner record, by its kind.

Decode is bound by memory bandwidth (device ms = host ms x host GB/s / device GB/s, the host's
fraction of the roofline kept); prefill, and the prompt's pass before the first token, by
arithmetic (device ms = host ms x host fp32 GFLOP/s / device GFLOP/s). Times scale by the
factor, rates (tokens/s) by its inverse; samples, medians, means and sds alike. A record key
that looks like a timing but has no kind here is an error, so a new timing cannot be left
unprojected beside projected ones.
"""

from __future__ import annotations

#: Each timing of benchrun's record: (bound by, "time" in ms or "rate" in tokens/s).
KINDS = {
    "prefill_ms": ("compute", "time"), "prefill_ms_samples": ("compute", "time"),
    "ttft_ms": ("compute", "time"), "ttft_ms_samples": ("compute", "time"),
    "pp_tps": ("compute", "rate"),
    "decode_ms_p50": ("bandwidth", "time"), "decode_ms_p90": ("bandwidth", "time"),
    "decode_ms_samples": ("bandwidth", "time"), "decode_ms_at": ("bandwidth", "time"),
    "tg_tps": ("bandwidth", "rate"), "tokens_per_s": ("bandwidth", "rate"),
}
#: Timings that stay the host's: loading reads the file from this machine's disk.
NOT_PROJECTED = ("load_s",)


def is_timing(key: str) -> bool:
    return "_ms" in key or key.endswith(("_tps", "_per_s", "_s"))


def project(record: dict, host: dict, device) -> dict:
    """The projected value of every timing in RECORD (HOST: measured bandwidth and GFLOP/s; DEVICE: a Profile)."""
    unknown = [k for k in record if is_timing(k) and k not in KINDS and k not in NOT_PROJECTED]
    if unknown:
        raise ValueError(f"the projection has no kind for the timing(s) {', '.join(unknown)}: add them to KINDS")
    factor = {"bandwidth": host["mem_bandwidth_gbs"] / device.mem_bandwidth_gbs,
              "compute": host["fp32_gflops"] / device.fp32_gflops}
    out = {}
    for key, (bound, kind) in KINDS.items():
        if key in record:
            out[key] = _scaled(record[key], factor[bound] if kind == "time" else 1 / factor[bound])
    return out


def _scaled(value, factor: float):
    """VALUE (a number, or lists and dicts of them: samples, {mean, sd, samples}) times FACTOR."""
    if isinstance(value, dict):
        return {k: _scaled(v, factor) for k, v in value.items()}
    if isinstance(value, list):
        return [_scaled(v, factor) for v in value]
    return value * factor
