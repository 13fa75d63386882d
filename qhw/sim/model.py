"""The bench's model side: GEMM calls -> jobs (stream beats and the golden model's output), and
the result beats the accelerator must send, packed like its ``out`` payload.

The model is qhw's golden model (``qhw.runtime.GoldenBackend``); nothing here computes a result
itself. Packing happens once, before the clock loop, so the checker compares integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..hw.driver import GemmProgram, plan_gemm
from ..runtime import GemmCall, GoldenBackend
from .manifest import Hardware

__all__ = ["ExpectedBeats", "GemmJob", "jobs_for"]


@dataclass
class GemmJob:
    """One GEMM for the bench: its beats (``plan_gemm``), the model's expected output and a label."""

    program: GemmProgram
    expected: np.ndarray            # M x N, the golden model's result
    layer: str = "gemm"
    call: GemmCall | None = None    # what was planned (functional coverage reads its operands)


def jobs_for(hw: Hardware, calls: Sequence[GemmCall], golden: GoldenBackend | None = None) -> list[GemmJob]:
    """The calls planned for the array, each with the golden model's output."""
    expected = (golden or GoldenBackend()).run(list(calls))
    return [GemmJob(plan_gemm(hw.config, c.x, c.w, c.bias, c.requant), e, c.layer, c)
            for c, e in zip(calls, expected)]


class ExpectedBeats:
    """The ``out`` beats of ``jobs`` in order, packed; per beat the payload bits that carry a
    column below N (the rest are don't-care) and the (job, N tile, row) it belongs to."""

    def __init__(self, hw: Hardware, jobs: Sequence[GemmJob]):
        self.codec = hw.codec("out")
        c = hw.config
        self.beats: list[int] = []
        self.masks: list[int] = []
        self.owner: list[tuple[int, int, int]] = []
        col_mask = [((1 << w) - 1) << off for _, off, w, _ in self.codec.fields]
        for j, job in enumerate(jobs):
            p = job.program
            nt = c.gemm_tiles(p.k, p.n)[1]
            y = np.zeros((p.m, nt * c.cols), dtype=np.int64)
            y[:, :p.n] = job.expected
            self.beats.extend(self.codec.pack(y.reshape(p.m, nt, c.cols).transpose(1, 0, 2).reshape(-1, c.cols)))
            for ti in range(nt):
                self.masks.extend([sum(col_mask[:min(c.cols, p.n - ti * c.cols)])] * p.m)
            self.owner.extend((j, ti, m) for ti in range(nt) for m in range(p.m))
        self.ends = np.cumsum([job.program.out_beats for job in jobs]).tolist()   # beats up to each job's end

    def __len__(self) -> int:
        return len(self.beats)
