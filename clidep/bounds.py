"""The ranges a number passed by a user must fall in, checked before any work starts.

Each check raises ``ClidepError`` with one line naming the option, the value and what is
allowed, so a bad ``--steps 0`` or ``--ratio nan`` never trains, scores or writes anything.
Options are named as on the command line; library callers see the same words.
"""

from __future__ import annotations

import math

from clidep.errors import ClidepError


def at_least(option: str, value: int | None, low: int) -> None:
    """An integer option (skipped when ``None``, i.e. not given) must be at least ``low``."""
    if value is not None and value < low:
        raise ClidepError(f"{option} must be at least {low}, got {value}")


def between(option: str, value: int | float | None, low: float, high: float, *, open_low: bool = False) -> None:
    """A number in [low, high] (or (low, high] with ``open_low``), finite; ``None`` is skipped."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ClidepError(f"{option} must be a finite number, got {value}")
    if value > high or value < low or (open_low and value == low):
        left = "(" if open_low else "["
        raise ClidepError(f"{option} must be in {left}{low:g}, {high:g}], got {value:g}")


def positive(option: str, value: float | None) -> None:
    """A finite number above zero (``None`` is skipped)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ClidepError(f"{option} must be a finite number above 0, got {value}")
