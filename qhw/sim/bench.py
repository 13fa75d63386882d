"""The cocotb bench of the generated accelerator: drivers, monitor, model and checker joined by
one clock loop.

* ``qhw.sim.driver.StreamDriver``: one per input stream (``cmd``, ``params``, ``weights``, ``act``);
* ``qhw.sim.monitor.OutputMonitor``: the ``out`` stream, with back-pressure;
* ``qhw.sim.model``: the golden model's output, packed as the expected result beats;
* ``qhw.sim.checker.Checker``: every result beat against the model's, in order, as it arrives;
* ``qhw.sim.pauses``: the idle (drivers) and back-pressure (monitor) generators.

One coroutine steps every driver and the monitor once per clock, at the falling edge: the DUT's
``ready`` outputs depend on registered state only, so the values read there are the ones the
next rising edge samples; that is one ``await`` per cycle and no per-element Python work.
Used by ``qhw simulate`` and the test suite alike (``qhw.sim.cocotb_job``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .checker import Checker
from .driver import StreamDriver
from .funcov import FunctionalCoverage
from .manifest import Hardware
from .model import ExpectedBeats, GemmJob
from .monitor import OutputMonitor
from .pauses import Pauses, random_pauses

__all__ = ["INPUT_STREAMS", "AccelBench", "BenchStats", "GemmRecord"]

INPUT_STREAMS = ("cmd", "params", "weights", "act")


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


@dataclass
class BenchStats:
    cycles: int = 0                 # clock cycles simulated
    wall: float = 0.0               # seconds in the clock loop
    waiting: float = 0.0            # of which inside ``await`` (cocotb scheduling + the simulator)
    host_bytes: int = 0             # payload bytes of every beat into and out of the accelerator
    records: list = field(default_factory=list)


class AccelBench:
    """Drives the accelerator top (``dut``) through cocotb: reset, then GEMM jobs back to back."""

    def __init__(self, dut, hw: Hardware, *, seed: int = 0, in_gap: float = 0.0, out_stall: float = 0.0,
                 coverage: bool = False):
        self.dut = dut
        self.hw = hw
        self.drivers = {s: StreamDriver(dut, s) for s in INPUT_STREAMS}
        self.drivers["cmd"].handshakes = []
        self.monitor = OutputMonitor(dut)
        self.set_random_pauses(in_gap=in_gap, out_stall=out_stall, seed=seed)
        self.codecs = {s: hw.codec(s) for s in (*INPUT_STREAMS, "out")}
        self.t = 0
        self.stats = BenchStats()
        self._clock = None
        self.coverage = FunctionalCoverage(hw.config) if coverage else None

    def functional_coverage(self) -> dict | None:
        """The functional coverage bins so far (``qhw.sim.funcov``), or None without ``coverage``."""
        if self.coverage is None:
            return None
        cov = FunctionalCoverage(self.hw.config)
        cov.bins = dict(self.coverage.bins)
        cov.add_backpressure({**{s: d.stalls for s, d in self.drivers.items()}, "out": self.monitor.stalls})
        return cov.to_json()

    def set_pauses(self, stream: str, pauses: Pauses) -> None:
        """The pause generator of an input stream's driver, or of the monitor (``"out"``)."""
        if stream == "out":
            self.monitor.pauses = pauses
        else:
            self.drivers[stream].pauses = pauses

    def set_random_pauses(self, *, in_gap: float, out_stall: float, seed: int) -> None:
        """Random idle cycles on ``params``, ``weights`` and ``act`` (``cmd`` never idles, so cycle
        counts start at its handshake) and random back-pressure on ``out``, all from ``seed``."""
        rng = random.Random(seed)
        for s in INPUT_STREAMS:
            self.set_pauses(s, None if s == "cmd" else random_pauses(in_gap, seed=rng.getrandbits(32)))
        self.set_pauses("out", random_pauses(out_stall, seed=rng.getrandbits(32)))

    async def start(self) -> None:
        """Start the clock and reset."""
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles

        self._clock = Clock(self.dut.clk, 10, unit="ns")
        self._clock.start()
        for d in self.drivers.values():
            d.idle()
        self.monitor.set_ready(0)
        self.dut.out__ready.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 1)

    def _load(self, jobs: Sequence[GemmJob]) -> None:
        c = self.codecs
        progs = [j.program for j in jobs]
        self.drivers["cmd"].extend(c["cmd"].pack(c["cmd"].columns([p.command for p in progs])))
        self.drivers["params"].extend(c["params"].pack(c["params"].columns([q for p in progs for q in p.params])))
        w = [row for p in progs for row in p.weights]
        a = [row for p in progs for row in p.act]
        self.drivers["weights"].extend(c["weights"].pack(np.asarray(w, dtype=np.int64)))
        self.drivers["act"].extend(c["act"].pack(np.asarray(a, dtype=np.int64)))
        beats = {"cmd": len(progs), "params": sum(len(p.params) for p in progs), "weights": len(w), "act": len(a),
                 "out": sum(p.out_beats for p in progs)}
        self.stats.host_bytes += sum(n * c[s].nbytes for s, n in beats.items())

    async def run(self, jobs: Sequence[GemmJob], *, max_cycles: int | None = None) -> tuple[list[GemmRecord], Checker]:
        """Run ``jobs`` back to back; returns one record per job and the checker (first mismatch)."""
        from cocotb.triggers import FallingEdge

        cfg = self.hw.config
        if self.coverage is not None:
            for j in jobs:
                if j.call is not None:
                    self.coverage.sample_gemm(j.call, j.program.m, j.program.k, j.program.n)
        expected = ExpectedBeats(self.hw, jobs)
        checker = Checker(expected, jobs, cols=cfg.cols)
        records = [GemmRecord(layer=j.layer, m=j.program.m, k=j.program.k, n=j.program.n) for j in jobs]
        self._load(jobs)
        ends = expected.ends
        total = len(expected)
        if max_cycles is None:
            max_cycles = 100 * (sum(len(j.program.act) + len(j.program.weights) for j in jobs) + cfg.latency + 100)
        cmd = self.drivers["cmd"]
        cmd_start = len(cmd.handshakes)
        drivers = [self.drivers[s] for s in INPUT_STREAMS]
        monitor = self.monitor
        check = checker.check
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
            for d in drivers:
                d.step(t)
            raw = monitor.step()
            if raw is not None:
                raw_rows.append(raw)
                check(n, raw, t)
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
        for d in drivers:
            d.step(t)
        monitor.set_ready(0)
        note = self._error_note()
        if note:
            raise AssertionError(f"the accelerator rejected a command{note}")
        self.stats.wall += time.perf_counter() - wall
        self.stats.waiting += waiting
        self.stats.cycles += t - self.t
        self.t = t
        for r, c in zip(records, cmd.handshakes[cmd_start:]):
            r.cmd_cycle = c
        out = self.codecs["out"]
        rows = out.unpack(raw_rows) if raw_rows else np.zeros((0, cfg.cols), dtype=np.int64)
        start = 0
        for r, j in zip(records, jobs):
            nb = j.program.out_beats
            r.output = j.program.decode(rows[start:start + nb])
            r.mismatches = int(np.count_nonzero(r.output != j.expected))
            start += nb
        self.stats.records.extend(records)
        return records, checker

    async def finish(self, cycles: int | None = None) -> None:
        """Hold ``out`` ready for ``cycles`` (default: the array's latency + 4) and fail if any beat
        comes: the hardware must send exactly the GEMMs' results, no more."""
        from cocotb.triggers import FallingEdge

        cycles = self.hw.config.latency + 4 if cycles is None else cycles
        self.monitor.set_ready(1)
        read_valid = self.monitor.read_valid
        fe = FallingEdge(self.dut.clk)
        for i in range(cycles):
            await fe
            if read_valid():
                raise AssertionError(f"the accelerator sent a result beat {i + 1} cycles after the last GEMM's "
                                     "results (more results than the GEMMs have)")
        self.monitor.set_ready(0)
        self.t += cycles
        self.stats.cycles += cycles

    def _error_note(self) -> str:
        """``error`` (when the top has it) flags a command the hardware dropped."""
        err = getattr(self.dut, "error", None) if any(p["name"] == "error" for p in self.hw.manifest["ports"]) \
            else None
        return "; the error output is high (a command was dropped)" if err is not None and int(err.value) else ""
