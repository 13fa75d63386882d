"""The cocotb bench of the network top (``qhw generate --top network``): the same drivers, monitor
and pause generators as the accelerator's bench (``qhw.sim.bench``), with the network top's model
and checker.

* ``StreamDriver`` on ``load`` (the program + weight words, ``qhw.engine.load.load_words``) and on
  ``i`` (a segment's input tensors, ``qhw.engine.load.input_beats``: pixels with their channels
  dense, ``rows`` bytes per beat);
* ``OutputMonitor`` on ``o`` (each output tensor's bytes dense, ``last`` on a tensor's final beat;
  ``qhw.engine.load.output_tensors``), with back-pressure;
* ``TraceTap``: the ``trace`` debug port every cycle: reads issued (``issue``, ``desc``) and every
  scratchpad write (``we``, ``addr``, ``mask``, ``data``);
* ``NetworkExpect`` (the model): the reference model's writes and outputs (``qhw.engine.model``,
  bit-exact with the golden model) at the cycle model's cycles (``qhw.engine.cycles.predict``);
* ``WriteChecker``: the tapped writes against the expected ones, in order: the first wrong one names
  the layer (descriptor and node), the word, pixel and channels, and the cycle.

Cycle 0 of a segment is its first input beat's handshake. Without random pauses every write's
cycle and every descriptor's end (``qhw.engine.cycles.descriptor_end``: a MATMUL's last beat read
+ ``read_latency`` + 1, as the beat issues when its word arrives; a POOL's last read + 1; an INPUT's last write + 1;
an OUTPUT's last beat + 1) are compared with the cycle model as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..engine.config import EngineConfig
from ..engine.cycles import descriptor_end, predict
from ..engine.load import input_beats, output_tensors
from ..engine.model import EngineModel, segment_ranges
from ..engine.program import Program
from .driver import StreamDriver
from .manifest import Hardware
from .monitor import OutputMonitor
from .pauses import random_pauses
from .signals import int_reader

__all__ = ["NetworkBench", "NetworkExpect", "SegmentRecord", "WriteChecker", "descriptor_shares", "output_streams"]

TRACE_FIELDS = ("issue", "desc", "we", "addr", "mask", "data")


# --------------------------------------------------------------------------- host side of the streams

def output_streams(program: Program, segment: int) -> list:
    """(descriptor index, tensor entry, beats) of each OUTPUT of ``segment``, in stream order: its
    ``h*w*c`` bytes dense, ``rows`` a beat (``qhw.engine.load.output_tensors`` decodes them)."""
    first, end = segment_ranges(program)[segment]
    rows = program.rows
    return [(i, t, -(-t.h * t.w * t.c // rows)) for i, d in enumerate(program.descriptors[first:end], first)
            if d.op == "OUTPUT" for t in [program.tensors[d["tensor"]]]]


def tensor_bytes(program: Program, segment: int, direction: int) -> int:
    """Payload bytes of a segment's input (0) or output (1) tensors: ``h*w*c`` each."""
    return sum(t.h * t.w * t.c for t in program.tensors if t.segment == segment and t.direction == direction)


# --------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class Write:
    cycle: int
    descriptor: int
    word: int
    lane: int
    values: tuple[int, ...]


class NetworkExpect:
    """What the hardware must do for ``program`` on ``engine``: the cycle model once (cycles do not
    depend on the data), the reference model per segment run."""

    def __init__(self, program: Program, engine: EngineConfig, names: dict[int, tuple[str, str]]):
        self.program = program
        self.engine = engine
        self.names = names                      # descriptor -> (layer name, op)
        self.cycles: dict = {}
        self.report = predict(program, engine, writes=self.cycles)
        self.model = EngineModel(program, act_words=engine.act_words)
        self.single = len(segment_ranges(program)) == 1

    def run(self, segment: int, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[Write]]:
        """The segment's output codes and its scratchpad writes, in the cycle model's order."""
        self.model.log = {}
        outs = self.model.run_segment(segment, {k: np.asarray(v)[:1] for k, v in inputs.items()})
        writes = sorted((Write(self.cycles[k], *k, self.model.log[k]) for k in self.model.log),
                        key=lambda w: (w.cycle, w.descriptor, w.word, w.lane))
        return outs, writes

    def where(self, w: Write) -> str:
        """Layer, word and (for a standard-layout write) pixel and channels of a write."""
        d = self.program.descriptors[w.descriptor]
        name, op = self.names.get(w.descriptor, (f"descriptor {w.descriptor}", d.op))
        text = f"layer {name!r} ({op}, descriptor {w.descriptor}), word {w.word}"
        if d.op in ("MATMUL", "POOL"):
            rel = w.word - d["out_base"]
            pix, cw = divmod(rel, d["out_pp"])
            c0 = (cw - d["out_cw0"]) * self.program.rows + w.lane
            text += (f" = pixel ({pix // d['out_w']}, {pix % d['out_w']}), channels {c0}..{c0 + len(w.values) - 1}")
        else:
            text += f", lanes {w.lane}..{w.lane + len(w.values) - 1}"
        return text


# --------------------------------------------------------------------------- the debug tap

class TraceTap:
    """Reads the ``trace`` port once per cycle: the cycle of every read issued per descriptor and
    every scratchpad write (cycle, address, mask, data)."""

    def __init__(self, dut, fields: list[dict]):
        f = {x["name"]: (int(x["offset"]), int(x["width"])) for x in fields}
        missing = [n for n in TRACE_FIELDS if n not in f]
        if missing:
            raise ValueError(f"the trace port has no field {missing[0]!r}")
        self.read = int_reader(dut.trace_tap if hasattr(dut, "trace_tap") else dut.trace)   # wrapper name
        (self.issue_bit, _), (self.we_bit, _) = f["issue"], f["we"]
        self.desc = f["desc"]
        self.addr, self.mask, self.data = f["addr"], f["mask"], f["data"]
        self.last_issue: dict[int, int] = {}
        self.writes: list[tuple[int, int]] = []     # (cycle, raw trace)

    def reset(self) -> None:
        self.last_issue = {}
        self.writes = []

    def step(self, t: int) -> None:
        v = self.read()
        if not v:
            return
        if (v >> self.issue_bit) & 1:
            off, width = self.desc
            self.last_issue[(v >> off) & ((1 << width) - 1)] = t
        if (v >> self.we_bit) & 1:
            self.writes.append((t, v))

    def field(self, raw: int, which: tuple[int, int]) -> int:
        off, width = which
        return (raw >> off) & ((1 << width) - 1)


# --------------------------------------------------------------------------- the checker

@dataclass
class WriteChecker:
    """Tapped writes against the expected ones, in order."""

    expect: NetworkExpect
    rows: int
    first: str | None = None             # first wrong write, named
    bad: int = 0                         # writes with a wrong address, lanes or value
    cycle_errors: list = field(default_factory=list)

    def check(self, tap: TraceTap, writes: list[Write], t0: int, *, cycles: bool) -> dict[int, int]:
        """Compare; returns the measured cycle of each descriptor's last write (by the expected
        write each measured one stands for)."""
        last: dict[int, int] = {}
        got = tap.writes
        for i, w in enumerate(writes):
            if i >= len(got):
                self.bad += len(writes) - i
                self._first(f"missing write: {self.expect.where(w)} expected at cycle {w.cycle}, "
                            f"the hardware made only {len(got)} of {len(writes)} writes")
                break
            t, raw = got[i]
            cycle = t - t0
            last[w.descriptor] = cycle
            addr = tap.field(raw, tap.addr)
            mask = tap.field(raw, tap.mask)
            want_mask = ((1 << len(w.values)) - 1) << w.lane
            data = tap.field(raw, tap.data).to_bytes(self.rows, "little")
            lanes = np.frombuffer(data, np.int8)[w.lane:w.lane + len(w.values)].tolist()
            if addr != w.word or mask != want_mask or lanes != list(w.values):
                self.bad += 1
                if addr != w.word or mask != want_mask:
                    what = (f"hardware wrote word {addr} mask {mask:#x}, expected word {w.word} "
                            f"mask {want_mask:#x}")
                else:
                    j = next(k for k in range(len(lanes)) if lanes[k] != w.values[k])
                    what = f"position {j} (lane {w.lane + j}): hardware {lanes[j]}, golden model {w.values[j]}"
                self._first(f"{self.expect.where(w)}, cycle {cycle}: {what}")
            if cycles and cycle != w.cycle and len(self.cycle_errors) < 5:
                self.cycle_errors.append(f"{self.expect.where(w)}: written at cycle {cycle}, cycle model {w.cycle}")
        if len(got) > len(writes):
            t, raw = got[len(writes)]
            self.bad += len(got) - len(writes)
            self._first(f"{len(got) - len(writes)} writes more than the reference model makes (first at cycle "
                        f"{t - t0}, word {tap.field(raw, tap.addr)})")
        return last

    def _first(self, text: str) -> None:
        if self.first is None:
            self.first = "first mismatch: " + text


# --------------------------------------------------------------------------- the bench

@dataclass
class SegmentRecord:
    """One segment run: the cycle of each descriptor's end (from the segment's first input beat),
    latency, beats in and out, and the checks."""

    segment: int
    ends: dict[int, int]
    latency: int                  # first input beat to last output beat
    beats_in: int
    beats_out: int
    bytes_in: int                 # tensor payload bytes (the beats' padding not counted)
    bytes_out: int
    output_mismatches: int
    first_mismatch: str | None


class NetworkBench:
    """Drives the network top (``dut``): reset, load the program, then segments one at a time."""

    def __init__(self, dut, hw: Hardware, *, seed: int = 0, in_gap: float = 0.0, out_stall: float = 0.0):
        self.dut = dut
        self.hw = hw
        self.rows = hw.config.rows
        self.load = StreamDriver(dut, "load")
        self.inp = StreamDriver(dut, "i")
        self.inp.handshakes = []
        self.monitor = OutputMonitor(dut, stream="o")
        self.tap = TraceTap(dut, hw.manifest["streams"]["trace"]["fields"])
        self.set_random_pauses(in_gap=in_gap, out_stall=out_stall, seed=seed)
        self.stalls = bool(in_gap or out_stall)
        o = {f["name"]: int(f["offset"]) for f in hw.manifest["streams"]["o"]["fields"]}
        self.last_bit = o["last"]
        self.t = 0
        self.cycles = 0
        self.wall = 0.0
        self.waiting = 0.0

    def set_random_pauses(self, *, in_gap: float, out_stall: float, seed) -> None:
        """Idle cycles on ``i`` and back-pressure on ``o``, drawn from ``seed``."""
        import random

        rng = random.Random(seed)
        self.inp.pauses = random_pauses(in_gap, seed=rng.getrandbits(32))
        self.monitor.pauses = random_pauses(out_stall, seed=rng.getrandbits(32))

    async def start(self) -> None:
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles

        Clock(self.dut.clk, 10, unit="ns").start()
        self.load.idle()
        self.inp.idle()
        self.monitor.set_ready(0)
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 1)

    def _flag(self, name: str) -> int:
        return int(getattr(self.dut, name).value)

    async def load_program(self, words: list[int], *, max_cycles: int | None = None) -> int:
        """Stream ``words`` into ``load`` and wait for ``loaded``; returns the cycles it took."""
        from cocotb.triggers import FallingEdge

        self.load.extend(words)
        fe = FallingEdge(self.dut.clk)
        limit = max_cycles or 4 * len(words) + 1000
        for n in range(1, limit + 1):
            await fe
            self.load.step(n)
            if self.load.done and not self.load.v and self._flag("loaded"):
                self.cycles += n
                return n
            if self._flag("error"):
                raise AssertionError(f"the network top raised error while loading (word {self.load.pos} of "
                                     f"{len(words)})")
        raise TimeoutError(f"model load: loaded did not rise within {limit} cycles ({self.load.pos} of "
                           f"{len(words)} words taken)")

    async def run_segment(self, expect: NetworkExpect, segment: int, inputs: dict[str, np.ndarray],
                          checker: WriteChecker, *, max_cycles: int | None = None
                          ) -> tuple[dict[str, np.ndarray], SegmentRecord]:
        """Send a segment's inputs, collect its outputs, check every write; (output codes, record)."""
        from cocotb.triggers import FallingEdge

        program = expect.program
        outs_expected, writes = expect.run(segment, inputs)
        beats = input_beats(program, {k: np.asarray(v)[0] for k, v in inputs.items()}, segment)
        tensors = output_streams(program, segment)
        n_out = sum(n for *_, n in tensors)
        fe = FallingEdge(self.dut.clk)
        if self.stalls:
            # Random pauses start once the engine takes input (its units hold their descriptors), so a
            # segment stalls alike after a load, a reset or another segment (sharded runs reproduce it).
            for _ in range(1000):
                if self.inp.read_ready():
                    break
                await fe
                self.cycles += 1
        self.inp.extend(beats)
        self.inp.handshakes = []
        self.tap.reset()
        got: list[tuple[int, int]] = []
        limit = max_cycles or 20 * (expect.report.total + len(beats)) + 2000
        inp, mon, tap = self.inp, self.monitor, self.tap
        clock = time.perf_counter
        wall = clock()
        waiting = 0.0
        t = 0
        while len(got) < n_out:
            w0 = clock()
            await fe
            waiting += clock() - w0
            t += 1
            inp.step(t)
            raw = mon.step()
            if raw is not None:
                got.append((t, raw))
            tap.step(t)
            if t > limit:
                raise TimeoutError(f"segment {segment}: {len(got)} of {n_out} output beats after {t} cycles "
                                   f"({inp.pos} of {len(beats)} input beats taken){self._error_note()}")
        # the last beat transfers at the coming edge; then nothing more may come until busy drops
        await fe
        t += 1
        inp.step(t)
        tap.step(t)
        mon.set_ready(1)
        for _ in range(self.hw.engine.output_latency + 8):
            await fe
            t += 1
            tap.step(t)
            if mon.read_valid():
                raise AssertionError(f"segment {segment}: the network top sent an output beat after the "
                                     f"{n_out} the program's OUTPUT descriptors have")
        mon.set_ready(0)
        if self._flag("error"):
            raise AssertionError(f"segment {segment}: the network top's error output is high")
        self.wall += clock() - wall
        self.waiting += waiting
        self.cycles += t
        t0 = inp.handshakes[0] if inp.handshakes else 0
        last_write = checker.check(tap, writes, t0, cycles=not self.stalls and expect.single)
        first, end = segment_ranges(program)[segment]
        ends = {}          # each descriptor's end as the cycle model counts it (qhw.engine.cycles.descriptor_end)
        for i, d in enumerate(program.descriptors[first:end], first):
            if d.op in ("INPUT", "MATMUL", "POOL") and (i in last_write or i in tap.last_issue):
                read = tap.last_issue.get(i)
                ends[i] = descriptor_end(d.op, self.hw.engine, last_read=None if read is None else read - t0,
                                         last_write=last_write.get(i))
        pos = 0
        data = [raw & ((1 << 8 * self.rows) - 1) for _, raw in got]
        lasts = [(raw >> self.last_bit) & 1 for _, raw in got]
        last_errors = []
        for i, t_entry, n in tensors:
            ends[i] = got[pos + n - 1][0] - t0 + 1      # its last beat + 1
            want = [0] * (n - 1) + [1]
            if lasts[pos:pos + n] != want:
                last_errors.append(f"output {t_entry.name!r}: 'last' on beats "
                                   f"{[k for k, v in enumerate(lasts[pos:pos + n]) if v]}, expected on beat {n - 1}")
            pos += n
        outs = {k: v[None] for k, v in output_tensors(program, data, segment).items()}   # batch axis
        bad, first_out = 0, None
        for name, want in outs_expected.items():
            diff = np.flatnonzero(outs[name].reshape(-1) != np.asarray(want).reshape(-1))
            bad += diff.size
            if diff.size and first_out is None:
                k = int(diff[0])
                first_out = (f"first mismatch: output {name!r} element {k}: hardware "
                             f"{int(outs[name].reshape(-1)[k])}, golden model {int(np.asarray(want).reshape(-1)[k])}")
        if last_errors:
            bad += len(last_errors)
            first_out = first_out or "first mismatch: " + last_errors[0]
        rec = SegmentRecord(segment=segment, ends=ends, latency=got[-1][0] - t0, beats_in=len(beats),
                            beats_out=n_out, bytes_in=tensor_bytes(program, segment, 0),
                            bytes_out=tensor_bytes(program, segment, 1), output_mismatches=bad,
                            first_mismatch=first_out)
        return outs, rec

    def _error_note(self) -> str:
        return "; the error output is high" if self._flag("error") else ""


def descriptor_shares(program: Program, ends: dict[int, int]) -> list[int]:
    """Each descriptor's share of the total as ``qhw.engine.cycles.predict`` computes it, from the
    measured ends (``ends[i]``, ``qhw.engine.cycles.descriptor_end``: MATMUL its last beat's read
    + ``read_latency`` + 1, POOL its last read + 1, INPUT its last write + 1, OUTPUT its last beat + 1)."""
    shares, end = [], 0
    for i, d in enumerate(program.descriptors):
        if d.op in ("HALT", "END", "ADD") or i not in ends:
            shares.append(0)
            continue
        done = ends[i]
        shares.append(max(done, end) - end)
        end = max(done, end)
    return shares
