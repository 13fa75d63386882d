"""cocotb testbench parts for the generated accelerator: drivers, monitor, checker.

* ``Source`` (driver): one valid/ready input stream (``cmd``, ``params``, ``weights``, ``act``), one
  whole beat per cycle, optional random idle gaps (``valid`` never waits for ``ready`` and, once
  high, stays high until the handshake).
* ``Sink`` (monitor): the ``out`` stream with optional random back-pressure.
* The model is qhw's golden model (``qhw.runtime.GoldenBackend``); the bench never computes.
* ``Checker``: in order, compares every result beat with the model's packed beat as it arrives
  and keeps the first mismatch with layer, tile, row, column and cycle.

All payloads are packed into integers with NumPy before the clock loop (``StreamCodec``), so the
loop does no per-element Python work. One coroutine steps every driver and the monitor once per
clock (at the falling edge: the DUT's ``ready`` outputs depend on registered state only, so the
values read there are the ones the next rising edge samples); that is one ``await`` per cycle.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from ..hw.driver import GemmProgram
from .manifest import Hardware

__all__ = ["AccelBench", "Checker", "GemmJob", "GemmRecord", "Mismatch", "Sink", "Source"]


@dataclass
class GemmJob:
    """One GEMM for the bench: its beats (``plan_gemm``), the model's expected output and a label."""

    program: GemmProgram
    expected: np.ndarray            # M x N, the golden model's result
    layer: str = "gemm"


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


@dataclass
class GemmRecord:
    """What the bench measured for one GEMM."""

    layer: str
    m: int
    k: int
    n: int
    cmd_cycle: int = -1
    last_cycle: int = -1
    output: np.ndarray | None = None
    mismatches: int = 0

    @property
    def cycles(self) -> int:
        """Command handshake to last result handshake (the manifest's ``ideal_cycles`` definition)."""
        return self.last_cycle - self.cmd_cycle

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n


def _reader(handle):
    """A fast ``int`` reader of a signal: the GPI object's own getter (no ``Logic``/``LogicArray``
    object per read) when this cocotb has it, else ``int(handle.value)``. X/Z raise ValueError
    either way."""
    raw = getattr(handle, "_handle", None)
    width = len(handle)
    if raw is not None and hasattr(raw, "get_signal_val_binstr"):
        if width <= 32 and hasattr(raw, "get_signal_val_long"):
            mask = (1 << width) - 1
            get_long = raw.get_signal_val_long
            return lambda: get_long() & mask
        get_bin = raw.get_signal_val_binstr
        return lambda: int(get_bin(), 2)
    return lambda: int(handle.value)


class Source:
    """Driver of one input stream."""

    def __init__(self, dut, stream: str, *, gap: float = 0.0, seed: int = 0):
        self.name = stream
        self.valid = getattr(dut, f"{stream}__valid")
        self.payload = getattr(dut, f"{stream}__payload")
        self.ready = getattr(dut, f"{stream}__ready")
        self.read_ready = _reader(self.ready)
        self.gap = float(gap)
        self.rng = random.Random(seed)
        self.beats: list[int] = []
        self.pos = 0
        self.presenting = False
        self.v = 0
        self.handshakes: list[int] | None = None   # cycle of every handshake when recorded

    def extend(self, beats) -> None:
        self.beats.extend(beats)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.beats)

    def step(self, t: int) -> None:
        """Drive for the coming edge and note whether it transfers (``ready`` already valid)."""
        if self.pos >= len(self.beats):
            if self.v:
                self.valid.value = self.v = 0
            return
        if not self.presenting:
            if self.gap and self.rng.random() < self.gap:
                if self.v:
                    self.valid.value = self.v = 0
                return
            self.payload.value = self.beats[self.pos]
            self.presenting = True
            if not self.v:
                self.valid.value = self.v = 1
        if self.read_ready():
            self.pos += 1
            self.presenting = False
            if self.handshakes is not None:
                self.handshakes.append(t)


class Sink:
    """Monitor of the ``out`` stream, with random back-pressure."""

    def __init__(self, dut, *, stall: float = 0.0, seed: int = 0):
        self.valid = dut.out__valid
        self.payload = dut.out__payload
        self.ready = dut.out__ready
        self.read_valid = _reader(self.valid)
        self.read_payload = _reader(self.payload)
        self.stall = float(stall)
        self.rng = random.Random(seed)
        self.r = 0

    def set_ready(self, r: int) -> None:
        if r != self.r:
            self.ready.value = self.r = r

    def step(self) -> int | None:
        """Drive ``ready`` for the coming edge; the raw payload if a beat transfers, else None."""
        r = 0 if (self.stall and self.rng.random() < self.stall) else 1
        if r != self.r:
            self.ready.value = self.r = r
        if r and self.read_valid():
            return self.read_payload()
        return None


class Checker:
    """In-order comparison of result beats with the model's packed beats."""

    def __init__(self, hw: Hardware, jobs: list[GemmJob]):
        self.hw = hw
        self.codec = hw.codec("out")
        c = hw.config
        self.expected: list[int] = []                 # packed model beats
        self.masks: list[int] = []                    # payload bits of the columns below N
        self.owner: list[tuple[int, int, int]] = []   # (job, tile, row) of each beat
        fields = self.codec.fields
        col_mask = [((1 << w) - 1) << off for _, off, w, _ in fields]
        for j, job in enumerate(jobs):
            p = job.program
            nt = c.gemm_tiles(p.k, p.n)[1]
            y = np.zeros((p.m, nt * c.cols), dtype=np.int64)
            y[:, :p.n] = job.expected
            beats = y.reshape(p.m, nt, c.cols).transpose(1, 0, 2).reshape(-1, c.cols)
            self.expected.extend(self.codec.pack(beats))
            for ti in range(nt):
                valid = min(c.cols, p.n - ti * c.cols)
                self.masks.extend([sum(col_mask[:valid])] * p.m)
            self.owner.extend((j, ti, m) for ti in range(nt) for m in range(p.m))
        self.jobs = jobs
        self.first: Mismatch | None = None
        self.bad_beats = 0

    def mismatch(self, i: int, raw: int, cycle: int) -> None:
        """Called for a beat that differs from the model: count it, keep the first in detail."""
        self.bad_beats += 1
        if self.first is not None:
            return
        j, tile, row = self.owner[i]
        got, exp = self.codec.unpack([raw & self.masks[i], self.expected[i]])
        col = int(np.flatnonzero(got != exp)[0])
        self.first = Mismatch(layer=self.jobs[j].layer, gemm=j, tile=tile, row=row,
                              column=tile * self.hw.config.cols + col, cycle=cycle, got=int(got[col]),
                              expected=int(exp[col]))


@dataclass
class BenchStats:
    cycles: int = 0                 # clock cycles simulated
    wall: float = 0.0               # seconds in the clock loop
    waiting: float = 0.0            # of which inside ``await`` (cocotb scheduling + the simulator)
    records: list = field(default_factory=list)


class AccelBench:
    """Drives the accelerator top (``dut``) through cocotb: reset, then GEMM jobs back to back."""

    def __init__(self, dut, hw: Hardware, *, seed: int = 0, in_gap: float = 0.0, out_stall: float = 0.0):
        self.dut = dut
        self.hw = hw
        rng = random.Random(seed)
        self.sources = {s: Source(dut, s, gap=0.0 if s == "cmd" else in_gap, seed=rng.getrandbits(32))
                        for s in ("cmd", "params", "weights", "act")}
        self.sources["cmd"].handshakes = []
        self.sink = Sink(dut, stall=out_stall, seed=rng.getrandbits(32))
        self.codecs = {s: hw.codec(s) for s in ("cmd", "params", "weights", "act")}
        self.t = 0
        self.stats = BenchStats()
        self._clock = None

    def set_stalls(self, *, in_gap: float, out_stall: float) -> None:
        """Change the random idle probability of the input drivers and the monitor's back-pressure."""
        for name, s in self.sources.items():
            s.gap = 0.0 if name == "cmd" else float(in_gap)
        self.sink.stall = float(out_stall)

    async def start(self) -> None:
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles

        self._clock = Clock(self.dut.clk, 10, unit="ns")
        self._clock.start()
        for s in self.sources.values():
            s.valid.value = 0
        self.dut.out__ready.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 1)

    def _load(self, jobs: list[GemmJob]) -> None:
        c = self.codecs
        progs = [j.program for j in jobs]
        self.sources["cmd"].extend(c["cmd"].pack(c["cmd"].columns([p.command for p in progs])))
        self.sources["params"].extend(c["params"].pack(c["params"].columns([q for p in progs for q in p.params])))
        w = [row for p in progs for row in p.weights]
        a = [row for p in progs for row in p.act]
        self.sources["weights"].extend(c["weights"].pack(np.asarray(w, dtype=np.int64)))
        self.sources["act"].extend(c["act"].pack(np.asarray(a, dtype=np.int64)))

    async def run(self, jobs: list[GemmJob], *, max_cycles: int | None = None) -> tuple[list[GemmRecord], Checker]:
        """Run ``jobs`` back to back; returns one record per job and the checker (first mismatch)."""
        from cocotb.triggers import FallingEdge

        checker = Checker(self.hw, jobs)
        records = [GemmRecord(layer=j.layer, m=j.program.m, k=j.program.k, n=j.program.n) for j in jobs]
        self._load(jobs)
        ends = np.cumsum([j.program.out_beats for j in jobs]).tolist()
        total = ends[-1] if ends else 0
        cfg = self.hw.config
        if max_cycles is None:
            max_cycles = 100 * (sum(len(j.program.act) + len(j.program.weights) for j in jobs) + cfg.latency + 100)
        cmd = self.sources["cmd"]
        cmd_start = len(cmd.handshakes)
        inputs = [self.sources[s] for s in ("cmd", "params", "weights", "act")]
        sink = self.sink
        expected = checker.expected
        masks = checker.masks
        raw_rows: list[int] = []
        fe = FallingEdge(self.dut.clk)
        t = self.t
        t_end = t + max_cycles
        n = 0
        job = 0
        clock = time.perf_counter
        wall = clock()
        waiting = 0.0
        while n < total:
            w0 = clock()
            await fe
            waiting += clock() - w0
            t += 1
            for s in inputs:
                s.step(t)
            raw = sink.step()
            if raw is not None:
                raw_rows.append(raw)
                if raw & masks[n] != expected[n]:
                    checker.mismatch(n, raw, t)
                n += 1
                if n == ends[job]:
                    records[job].last_cycle = t
                    job += 1
            if t > t_end:
                raise TimeoutError(f"simulation timed out after {t - self.t} cycles with {n} of {total} "
                                   f"result rows{self._error_note()}")
        # The last beats decided at this falling edge transfer at the next rising edge: let that
        # edge pass, then idle every stream (``ready`` low must not cancel the last handshake).
        await fe
        t += 1
        for s in inputs:
            s.step(t)
        sink.set_ready(0)
        note = self._error_note()
        if note:
            raise AssertionError(f"the accelerator rejected a command{note}")
        self.stats.wall += time.perf_counter() - wall
        self.stats.waiting += waiting
        self.stats.cycles += t - self.t
        self.t = t
        for r, c in zip(records, cmd.handshakes[cmd_start:]):
            r.cmd_cycle = c
        rows = self.codecs_out().unpack(raw_rows) if raw_rows else np.zeros((0, cfg.cols), dtype=np.int64)
        start = 0
        for r, j in zip(records, jobs):
            nb = j.program.out_beats
            r.output = j.program.decode(rows[start:start + nb])
            r.mismatches = int(np.count_nonzero(r.output != j.expected))
            start += nb
        self.stats.records.extend(records)
        return records, checker

    def _error_note(self) -> str:
        """``error`` (when the top has it) flags a command the hardware dropped."""
        err = getattr(self.dut, "error", None) if any(p["name"] == "error" for p in self.hw.manifest["ports"]) \
            else None
        return "; the error output is high (a command was dropped)" if err is not None and int(err.value) else ""

    def codecs_out(self):
        return self.hw.codec("out")
