"""clidep.compress.budget: the student size a device budget allows, at GPT-2-medium shapes."""

from __future__ import annotations

import dataclasses

import pytest

from clidep import CLIGPT2Config, param_count
from clidep.compress import budget
from clidep.errors import ClidepError
from clidep.hardware import devices

MEDIUM = CLIGPT2Config(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16)


def _decode_ms_by_hand(params: int) -> float:
    """The budget's model worked out here: an int4 weight is half a byte plus a 4-byte scale per block of
    128, but the 50,257 x 1,024 embedding/head table's, which the int4 file keeps at 8 bits, are a whole byte;
    the uniform student of PARAMS parameters keeps 24 blocks of KV, key and value each its width wide, fp32,
    at 256 tokens; the Pi 5 profile's 10 GB/s at 60% of the roofline."""
    from clidep.compress.widths import solve

    width = solve(MEDIUM, "uniform", params, []).width
    kv = 24 * 2 * width * 256 * 4
    table = 50257 * 1024
    bpp = 0.5 + 4 / 128 + 0.25 * 0.5  # 4-bit blocks of 128, the QKV projection (a quarter of a block) at 8 bits
    return (params * bpp + table * (1 + 4 / 128 - bpp) + kv) / (10e9 * 0.6) * 1e3


def test_the_target_is_the_largest_student_within_the_decode_budget():
    b = budget.target(MEDIUM, "raspberry-pi-5", "int4", 20.0, None)
    assert _decode_ms_by_hand(b.target) <= 20.0 < _decode_ms_by_hand(int(b.target * 1.01)), (
        "within the budget, and 1% more is not"
    )
    weights = b.target * 0.65625 + 50257 * 1024 * 0.375
    assert 0.6 * 120e6 < weights < 120e6, "20 ms at 6 GB/s is 120 MB a token, most of it weights"
    assert b.target < param_count(MEDIUM) and "raspberry-pi-5" in b.arithmetic and "10.0 GB/s" in b.arithmetic


def test_a_slower_device_or_a_wider_precision_gets_a_smaller_student(tmp_path, monkeypatch):
    int4 = budget.target(MEDIUM, "raspberry-pi-5", "int4", 20.0, None).target
    int8 = budget.target(MEDIUM, "raspberry-pi-5", "int8", 20.0, None).target
    assert int8 < int4 / 1.15, (
        "int8 reads about 1.6x the bytes per parameter outside the table (int4 keeps QKV at 8 bits, the table 8-bit in both)"
    )
    slow = dataclasses.replace(devices.load("raspberry-pi-5"), mem_bandwidth_gbs=5.0)
    monkeypatch.setattr(devices, "load", lambda name: slow)
    halved = budget.target(MEDIUM, "raspberry-pi-5", "int4", 20.0, None).target
    assert halved < int4 * 0.6, "half the bandwidth: at most about half the bytes"


def test_the_file_budget_and_the_tighter_of_two():
    b = budget.target(MEDIUM, None, "int8", None, 200.0)
    assert b.target == 193_939_393, "200 MB / (1 byte + a 4-byte scale per block of 128) = 193,939,393.9"
    both = budget.target(MEDIUM, "raspberry-pi-5", "int8", 1000.0, 200.0)
    assert both.target == b.target and "--max-mb" in both.arithmetic and "--max-decode-ms" in both.arithmetic


def test_unreachable_and_loose_budgets_say_why():
    with pytest.raises(
        ClidepError,
        match=r"no student decodes within 1 ms on raspberry-pi-4 at fp32: the smallest "
        r"reachable \([\d,]+ parameters, ratio [\d.]+\) takes [\d.]+ ms",
    ):
        budget.target(MEDIUM, "raspberry-pi-4", "fp32", 1.0, None)
    with pytest.raises(ClidepError, match="already meets the budget"):
        budget.target(MEDIUM, "jetson-orin-nano", "int4", 1000.0, None)
    with pytest.raises(ClidepError, match="--max-decode-ms needs --device"):
        budget.target(MEDIUM, None, "int4", 10.0, None)


def test_compress_sizes_a_student_from_a_file_budget(tiny_setup, tmp_path, capsys):
    from clidep.app import main

    root = tiny_setup
    code = main(
        [
            "compress",
            str(root / "teacher"),
            "--out",
            str(tmp_path / "s"),
            "--data",
            str(root / "train.txt"),
            "--method",
            "uniform",
            "--max-mb",
            "2.6",
            "--precision",
            "fp32",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--seq-len",
            "32",
            "--eval-every",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err[-800:]
    assert "budget: --max-mb 2.6: 2.6 MB / 4.000 bytes per parameter (fp32) = 650,000 parameters" in err
    import json

    result = json.loads((tmp_path / "s" / "compress.json").read_text())
    assert abs(result["student_params"] / 650_000 - 1) <= 0.03 and "budget:" in result["arithmetic"]
