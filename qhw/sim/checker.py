"""The bench's checker: result beats against the model's (``qhw.sim.model.ExpectedBeats``), in
order, as they arrive; counts wrong beats and keeps the first mismatch in detail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .model import ExpectedBeats, GemmJob

__all__ = ["Checker", "Mismatch"]


@dataclass
class Mismatch:
    layer: str
    gemm: int
    tile: int                        # N tile index
    row: int                         # GEMM row m
    column: int                      # output column n
    cycle: int
    got: int
    expected: int

    def __str__(self) -> str:
        return (f"first mismatch: layer {self.layer!r} (GEMM {self.gemm}), N tile {self.tile}, row {self.row}, "
                f"column {self.column}, cycle {self.cycle}: hardware {self.got}, golden model {self.expected}")


class Checker:
    """``check(i, raw, cycle)`` for result beat ``i``; ``first`` is the first mismatch, ``bad_beats``
    the number of wrong beats."""

    def __init__(self, expected: ExpectedBeats, jobs: Sequence[GemmJob], *, cols: int):
        self.expected = expected
        self.jobs = jobs
        self.cols = cols
        self.first: Mismatch | None = None
        self.bad_beats = 0

    def check(self, i: int, raw: int, cycle: int) -> bool:
        """True when beat ``i`` equals the model's in every column below N."""
        e = self.expected
        if raw & e.masks[i] == e.beats[i]:
            return True
        self.bad_beats += 1
        if self.first is None:
            j, tile, row = e.owner[i]
            got, exp = e.codec.unpack([raw & e.masks[i], e.beats[i]])
            col = int(np.flatnonzero(got != exp)[0])
            self.first = Mismatch(layer=self.jobs[j].layer, gemm=j, tile=tile, row=row, column=tile * self.cols + col,
                                  cycle=cycle, got=int(got[col]), expected=int(exp[col]))
        return False
