"""Pause generators for the bench's drivers and monitor (as in cocotbext-axi's
``set_pause_generator``): an iterator that yields, once per clock cycle, whether to pause.

A driver that pauses leaves ``valid`` low (it never drops a beat it already presents); the
monitor that pauses holds ``ready`` low (back-pressure). ``None`` means never pause, which the
clock loop skips at no cost.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator

from ..errors import ConfigError

__all__ = ["Pauses", "pattern_pauses", "random_pauses"]

Pauses = Iterator[bool] | None


def random_pauses(probability: float, *, seed: int) -> Pauses:
    """Pause each cycle with ``probability``, independently, from ``random.Random(seed)``."""
    p = float(probability)
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"pause probability must be in [0, 1), not {probability!r}")
    if p == 0.0:
        return None
    draw = random.Random(seed).random
    return (draw() < p for _ in itertools.repeat(None))


def pattern_pauses(pattern: Iterable[bool | int]) -> Pauses:
    """Repeat a fixed pattern, e.g. ``[1, 1, 0]``: two idle cycles in three."""
    cycle = [bool(v) for v in pattern]
    if not any(cycle):
        return None
    if all(cycle):
        raise ConfigError("a pause pattern that always pauses never lets a beat through")
    return itertools.cycle(cycle)
