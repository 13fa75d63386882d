"""The expected scratchpad write trace of one inference: every write's cycle, address and values.

What a hardware testbench compares its write-back debug tap with: the first differing entry names
the layer (descriptor), the position (word, lane) and the cycle. Values come from the reference
model, cycles from the cycle model; both key their writes by (descriptor, word, lane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .config import EngineConfig
from .cycles import predict
from .model import EngineModel, segment_ranges
from .program import Program

__all__ = ["WriteEvent", "write_trace"]


@dataclass(frozen=True)
class WriteEvent:
    cycle: int
    descriptor: int
    word: int
    lane: int
    values: tuple[int, ...]


def write_trace(program: Program, config: EngineConfig, inputs: dict[str, np.ndarray], *,
                cycles: dict | None = None) -> list[WriteEvent]:
    """Writes of one inference of a one-segment program, in cycle order; ``inputs`` are the input
    tensors' codes with a batch axis of 1. ``cycles``: ``predict``'s ``writes`` for this program
    and config, when the caller has them (they do not depend on the inputs)."""
    if len(segment_ranges(program)) != 1:
        raise ConfigError("write_trace needs a one-segment program (the host runs between segments)")
    model = EngineModel(program, act_words=config.act_words)
    model.log = {}
    model.run_segment(0, {k: np.asarray(v)[:1] for k, v in inputs.items()})
    if cycles is None:
        cycles = {}
        predict(program, config, writes=cycles)
    if cycles.keys() != model.log.keys():
        raise RuntimeError("cycle model and reference model disagree on the writes")   # a bug, not user input
    return sorted((WriteEvent(cycles[k], *k, model.log[k]) for k in cycles),
                  key=lambda e: (e.cycle, e.descriptor, e.word, e.lane))
