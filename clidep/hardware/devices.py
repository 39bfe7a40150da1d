"""Device profiles: one TOML file per device, each fact with its source.

Profiles are looked up in ``$CLIDEP_DEVICES`` (a directory), then in the package's own
``clidep/devices/`` (package data, so an installed wheel has them); ``--device path/to/file.toml`` reads a file directly. ``host`` is measured by
clidep itself at bench time. Every field is checked, and a bad one is named with the reason.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from clidep.errors import ClidepError

ENV_VAR = "CLIDEP_DEVICES"
#: The ARM cores export --check-arm emulates, which a profile's arm_check names.
CORES = ("cortex-a76", "cortex-a72")
_BUILTIN = Path(__file__).resolve().parents[1] / "devices"  # package data: a wheel carries them

_NUMBERS = ("clock_ghz", "ram_gb", "usable_ram_fraction", "mem_bandwidth_gbs", "fp32_gflops", "int8_gops")
_INTEGERS = ("cores", "threads")
#: Upper bounds of physical sense, each well above today's largest machine (a profile past one is a
#: typo, and would project infinite or zero latencies): a GPU's HBM3e reads ~5,000 GB/s and its
#: fp32 units do ~70,000 GFLOP/s; one server holds a few TB of RAM and a few hundred cores.
LIMITS = {
    "clock_ghz": 10,
    "ram_gb": 65536,
    "usable_ram_fraction": 1,
    "mem_bandwidth_gbs": 50000,
    "fp32_gflops": 1e6,
    "int8_gops": 1e7,
    "cores": 4096,
    "threads": 4096,
}


@dataclass
class Profile:
    name: str
    description: str
    measured: bool
    cores: int
    threads: int
    clock_ghz: float
    ram_gb: float
    usable_ram_fraction: float
    mem_bandwidth_gbs: float
    fp32_gflops: float
    int8_gops: float
    ort_provider: str
    # The emulated core (export/arm.py's CORES) this device's exports are checked on by export --check-arm;
    # None for an x86 device.
    arm_check: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    path: str = ""

    @property
    def usable_ram_mb(self) -> float:
        return self.ram_gb * 1024 * self.usable_ram_fraction


def search_dirs() -> list[Path]:
    dirs = [Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []
    return dirs + [_BUILTIN]


def known() -> dict[str, Path]:
    """Profile name -> file, the first directory winning."""
    found: dict[str, Path] = {}
    for d in search_dirs():
        for f in sorted(d.glob("*.toml")) if d.is_dir() else []:
            found.setdefault(f.stem, f)
    return found


def load(name_or_path: str) -> Profile:
    """Read and check a profile by name or path; ``ClidepError`` naming the field on any problem."""
    path = Path(name_or_path)
    if path.suffix != ".toml" or not path.is_file():
        profiles = known()
        if name_or_path not in profiles:
            raise ClidepError(
                f"unknown device profile '{name_or_path}'; known: {', '.join(profiles) or 'none'} "
                "(or give a path to a .toml file)"
            )
        path = profiles[name_or_path]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ClidepError(f"{path}: not valid TOML ({exc})") from exc
    return check(raw, str(path))


def check(raw: dict, where: str) -> Profile:
    """A Profile from parsed TOML, or ``ClidepError`` naming the first bad field and why."""

    def fail(name: str, why: str):
        raise ClidepError(f"{where}: field '{name}' {why}")

    for name in ("name", "description", "ort_provider"):
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            fail(name, "must be a non-empty string")
    if not isinstance(raw.get("measured"), bool):
        fail("measured", "must be true or false")
    measured = raw["measured"]
    for name in _INTEGERS:
        v = raw.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            fail(name, f"must be a positive integer (got {v!r})")
    for name in _NUMBERS:
        v = raw.get(name)
        if (
            not isinstance(v, (int, float))
            or isinstance(v, bool)
            or not math.isfinite(v)
            or v < 0
            or (v == 0 and not measured)
        ):
            fail(name, f"must be a finite {'non-negative' if measured else 'positive'} number (got {v!r})")
    for name, high in LIMITS.items():
        if raw[name] > high:
            fail(name, f"({raw[name]:g}) is past physical sense: at most {high:g}")
    if raw["threads"] > raw["cores"]:
        fail("threads", f"({raw['threads']}) exceeds cores ({raw['cores']})")
    sources = raw.get("sources", {})
    if not isinstance(sources, dict):
        fail("sources", 'must be a table of field = "where the value comes from"')
    if not measured:
        missing = [n for n in (*_INTEGERS, *_NUMBERS) if n not in sources]
        if missing:
            fail(f"sources.{missing[0]}", "is missing: every fact of a device profile needs its source")
    if "arm_check" in raw:
        if raw["arm_check"] not in CORES:
            fail(
                "arm_check",
                f"must be one of {', '.join(CORES)} (the cores export --check-arm emulates), got {raw['arm_check']!r}",
            )
        if "arm_check" not in sources:
            fail("sources.arm_check", "is missing: every fact of a device profile needs its source")
    unknown = set(raw) - {
        "name",
        "description",
        "measured",
        "ort_provider",
        "arm_check",
        "sources",
        *_INTEGERS,
        *_NUMBERS,
    }
    if unknown:
        fail(sorted(unknown)[0], "is not a profile field")
    return Profile(**{k: raw[k] for k in raw if k != "sources"}, sources=dict(sources), path=where)
