"""From host measurements to a device profile's figures: every timing of a runner record, by its kind.

Decode is bound by memory bandwidth (device ms = host ms x host GB/s / device GB/s, the host's
fraction of the roofline kept); prefill, and the prompt's pass before the first token, by
arithmetic (device ms = host ms x host fp32 GFLOP/s / device GFLOP/s). Times scale by the
factor, rates (tokens/s) by its inverse; samples, medians, means and sds alike. A record key
not declared in ``clidep/runtime/record.py`` (where each field says its bound) is an error, so a
new timing cannot be left unprojected beside projected ones.
"""

from __future__ import annotations

from clidep.runtime.record import FIELDS, RUNNER


def _kinds() -> dict[str, tuple[str, str]]:
    """(bound, "time" or "rate") of every field of the runner's record that a device's speed bounds."""
    return {f.name: (f.bound, "rate" if f.unit == "tokens/s" else "time") for f in RUNNER if f.bound}


def project(record: dict, host: dict, device) -> dict:
    """The projected value of every bounded field of RECORD (a runner record, checked against
    record.RUNNER: an undeclared field is an error; HOST: measured bandwidth and GFLOP/s; DEVICE: a Profile)."""
    unknown = [k for k in record if k not in FIELDS]
    if unknown:
        raise ValueError(f"the projection knows no field {', '.join(unknown)}: declare it in clidep/runtime/record.py")
    factor = {
        "bandwidth": host["mem_bandwidth_gbs"] / device.mem_bandwidth_gbs,
        "compute": host["fp32_gflops"] / device.fp32_gflops,
    }
    out = {}
    for key, (bound, kind) in _kinds().items():
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
