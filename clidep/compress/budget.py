"""Size from a device budget: the largest student that decodes within ``--max-decode-ms`` on a device
profile, or whose file fits ``--max-mb``, at a precision.

The model is bench's projection turned around. Decode is bound by memory bandwidth: each token
reads every weight once (the tied embedding included, as the LM head) and the KV cache, so

    decode ms = (params x bytes per parameter + KV bytes at CONTEXT tokens) / (GB/s x ROOFLINE)

with the profile's bandwidth (``host``: measured now) and ROOFLINE the fraction of the
bandwidth roofline clidep's ONNX Runtime graph reaches. The KV cache is counted as the uniform
bottleneck's of that size (fp32; within a few percent of any schedule's at this context).
"""

from __future__ import annotations

from dataclasses import dataclass

from clidep.errors import ClidepError
from clidep.hardware.kernels import INT4_BLOCK, INT4_EIGHT_BIT, INT4_TABLE_BITS, INT8_BLOCK

#: The share of a GPT-2 block's weights in each kind of linear layer (MLP 4x the width: QKV 3d^2, output d^2,
#: MLP up and down 4d^2 each, of 12d^2): the int4 file keeps INT4_EIGHT_BIT's at 8 bits, half a byte more each.
_SHARE = {"attn_qkv": 3 / 12, "attn_output": 1 / 12, "ffn_up": 4 / 12, "ffn_down": 4 / 12}
#: Bytes read per parameter: fp32; 8-bit and 4-bit MatMulNBits blocks (export's block sizes) with an
#: fp32 scale per block and no zero point (the quantiser is symmetric).
BYTES_PER_PARAM = {
    "fp32": 4.0,
    "int8": 1 + 4 / INT8_BLOCK,
    "int4": 0.5 + 4 / INT4_BLOCK + 0.5 * sum(_SHARE[k] for k in INT4_EIGHT_BIT),
}
#: Bytes per parameter of the tied embedding/head table, which the int4 file keeps at INT4_TABLE_BITS.
TABLE_BYTES = {**BYTES_PER_PARAM, "int4": INT4_TABLE_BITS / 8 + 4 / INT4_BLOCK}
#: Fraction of the bandwidth roofline decode reaches: clidep's graphs at GPT-2-medium shapes reached
#: 51-78% on the 2-core host (benchmarks/results/runtime.md); 0.6 is the middle of the students' range.
ROOFLINE = 0.6
#: Context at which the KV cache is counted (tokens already in the cache while decoding).
CONTEXT = 256


@dataclass
class Budget:
    target: int  # student parameters
    arithmetic: str


def decode_ms(tconf, params: int, precision: str, bandwidth_gbs: float) -> float:
    """Projected decode ms/token of a student of PARAMS parameters (KV as the uniform student's)."""
    return (weight_bytes(tconf, params, precision) + _kv_bytes(tconf, params)) / (bandwidth_gbs * 1e9 * ROOFLINE) * 1e3


def weight_bytes(tconf, params: int, precision: str) -> float:
    """Bytes of a student's weights at PRECISION: its table (vocabulary x the teacher's width: CLI's and the
    bottleneck's keep it, a stock student's is narrower, so this errs towards a smaller student) at
    TABLE_BYTES, the rest at BYTES_PER_PARAM."""
    table = min(params, tconf.vocab_size * tconf.n_embd)
    return (params - table) * BYTES_PER_PARAM[precision] + table * TABLE_BYTES[precision]


def _kv_bytes(tconf, params: int) -> int:
    from clidep.compress.widths import build, solve

    try:
        r = solve(tconf, "uniform", params, []).width
    except ClidepError:
        r = 4
    from clidep.runtime.onnx_io import kv_cache_bytes

    config = build(tconf, "uniform", r, []) if r < tconf.n_embd else tconf
    return kv_cache_bytes(config.kv_shapes, CONTEXT)


def target(tconf, device: str | None, precision: str, max_decode_ms: float | None, max_mb: float | None) -> Budget:
    """The largest parameter count within every budget given, with its arithmetic; ``ClidepError``
    when the teacher already fits or no reachable student does (naming the smallest reachable)."""
    from clidep.model.params import param_count

    teacher_params, bpp = param_count(tconf), BYTES_PER_PARAM[precision]
    smallest = _smallest(tconf)
    limits, lines = [], []
    if max_mb is not None:
        table = tconf.vocab_size * tconf.n_embd
        extra = table * (TABLE_BYTES[precision] - bpp)  # the table's bytes beyond the other weights' rate
        limits.append(int((max_mb * 1e6 - extra) / bpp))
        lines.append(
            f"--max-mb {max_mb:g}: {max_mb:g} MB / {bpp:.3f} bytes per parameter ({precision}"
            + (f"; its {table:,}-parameter table at {TABLE_BYTES[precision]:.3f}" if extra else "")
            + f") = {limits[-1]:,} parameters"
        )
    if max_decode_ms is not None:
        profile, bw = _bandwidth(device)
        ms = lambda p: decode_ms(tconf, p, precision, bw)  # noqa: E731
        if ms(smallest) > max_decode_ms:
            raise ClidepError(
                f"no student decodes within {max_decode_ms:g} ms on {profile} at {precision}: the smallest "
                f"reachable ({smallest:,} parameters, ratio {teacher_params / smallest:.1f}) takes "
                f"{ms(smallest):.2f} ms (model: {_model_line(bw)})"
            )
        lo, hi = smallest, teacher_params  # ms(lo) <= budget; find the largest such count
        if ms(hi) <= max_decode_ms:
            lo = hi
        while hi - lo > max(1, teacher_params // 10_000):
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ms(mid) <= max_decode_ms else (lo, mid)
        limits.append(lo)
        lines.append(
            f"--max-decode-ms {max_decode_ms:g} on {profile}: {_model_line(bw)}; the teacher "
            f"{ms(teacher_params):.2f} ms, a student of {lo:,} parameters {ms(lo):.2f} ms"
        )
    chosen = min(limits)
    if chosen >= teacher_params:
        raise ClidepError(
            f"the teacher ({teacher_params:,} parameters) already meets the budget: "
            + "; ".join(lines)
            + " - nothing to compress"
        )
    if chosen < smallest * 0.97:
        raise ClidepError(
            f"no student fits: {'; '.join(lines)}; the smallest reachable has {smallest:,} parameters "
            f"({smallest * bpp / 1e6:.1f} MB at {precision})"
        )
    return Budget(
        max(chosen, smallest),
        "\n".join(
            ["budget: " + line for line in lines]
            + [
                f"budget: target {max(chosen, smallest):,} parameters "
                f"(ratio {teacher_params / max(chosen, smallest):.3f}; the width "
                "solver lands within 2% of it)"
            ]
        ),
    )


def _smallest(tconf) -> int:
    """Parameters of the smallest uniform student (bottleneck 4)."""
    from clidep.compress.widths import build
    from clidep.model.params import param_count

    return param_count(build(tconf, "uniform", 4, []))


def _model_line(bw: float) -> str:
    return f"ms = (params x bytes + fp32 KV at {CONTEXT} tokens) / ({bw:.1f} GB/s x {ROOFLINE:.0%} of the roofline)"


def _bandwidth(device: str | None) -> tuple[str, float]:
    """(profile name, memory bandwidth GB/s): the profile's, or measured now for ``host``."""
    from clidep.hardware import devices

    if device is None:
        raise ClidepError("--max-decode-ms needs --device (a profile from `clidep devices`, or host)")
    profile = devices.load(device)
    if profile.measured:
        from clidep.hardware.host_speed import measure_host

        bw = measure_host()["mem_bandwidth_gbs"]
        return f"{profile.name} (measured now)", bw
    return profile.name, profile.mem_bandwidth_gbs
