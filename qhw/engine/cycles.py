"""Cycle model of the network engine: the cycle every beat issues and every word is written.

The rules (``docs/engine.md``, "Timing contract") are the hardware's contract, stated so that a
cycle-accurate implementation meets them exactly:

* one activation beat issues per cycle at most; a tile's beats issue back to back;
* weight tile ``u`` is loaded from cycle ``L_u``, row ``i`` at ``L_u + i`` (one row per cycle,
  ``rows`` cycles per tile): ``L_u >= L_{u-1} + rows`` and ``L_u >= T_last(u-2) + cols`` (the bank
  it overwrites has been passed by tile ``u-2``'s last beat in every column), and its first beat
  issues at ``T_first(u) >= L_u + 1``;
* a tile's first beat issues at least ``agen_latency`` cycles after every word of the input planes it
  reads was written (a plane: one channel word of a tensor, every pixel; the whole tensor for a window
  layout), so the hardware needs one "plane written" token per plane, not per word;
* the result row of a beat of a last K tile is written ``writeback_latency`` cycles after it issues
  (a fused max/average pool writes its window ``pool_*_latency`` cycles after the window's last
  row); writes are in order: a result-producing beat may not issue before the previous write is
  ``writeback_latency - 1`` cycles old;
* INPUT writes one word per cycle from cycle 0 (``input_latency`` after its beat); POOL reads one
  word per cycle once its whole input is written; OUTPUT reads one word per cycle once its input is
  written, its beat ``output_latency`` later;
* ADD starts once both inputs are written (and the previous writes are done) and reads two words per
  output word (``a`` then ``b``: the scratchpad has one read port), writing each word ``add_latency``
  after its ``b`` read: one word per 2 cycles; a ``table_only`` ADD reads one word per cycle.

A descriptor's share of the total is the cycles from the previous descriptor's end to its own (last
beat issued, last word written or last output beat), so the shares sum to the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .agen import PAD, k_tiles, matmul_writes, pixel_words
from .config import EngineConfig
from .isa import IN_WINDOW, POOL_AVG, POOL_MAX, Descriptor
from .program import Program

__all__ = ["CycleReport", "TileEvent", "predict"]

NEVER = -(1 << 40)


@dataclass(frozen=True)
class TileEvent:
    """One weight tile as scheduled: descriptor, loop indices, load start, first and last beat."""

    descriptor: int
    mc: int
    nt: int
    kt: int
    load: int
    first: int
    last: int


@dataclass
class CycleReport:
    total: int                   # cycle of the last output beat + 1 (cycle 0: first input beat)
    per_descriptor: list[int]    # share of each descriptor (sums to ``total``)
    macs: int
    peak_macs_per_cycle: int
    tiles: list[TileEvent] = field(default_factory=list)   # the schedule, for testbenches to compare

    @property
    def utilization(self) -> float:
        return self.macs / (self.peak_macs_per_cycle * self.total) if self.total else 0.0


class _Timeline:
    def __init__(self, config: EngineConfig, words: int):
        self.cfg = config
        self.R, self.C = config.array.rows, config.array.cols
        self.written = np.full(words, NEVER, np.int64)   # cycle each word was last written
        self.issue = -1            # last cycle a beat (or pool/output read) used the read port
        self.load_free = 0         # first cycle the weight loader is free
        self.bank_last = [NEVER, NEVER]
        self.tile = 0
        self.last_write = NEVER
        self.input_at = 0
        self.events: list[TileEvent] = []
        self.log: dict | None = None
        self.descriptor = 0

    def ready(self, addr: np.ndarray) -> int:
        a = addr[addr != PAD]
        return int(self.written[a].max()) + self.cfg.agen_latency if a.size else 0

    def write(self, addr: np.ndarray, cycles: np.ndarray, lane: int = 0) -> None:
        keep = addr != PAD
        np.maximum.at(self.written, addr[keep], cycles[keep])
        if self.log is not None:     # (descriptor, word, lane) -> write cycle (a fused pool: its last row's)
            for a, c in zip(addr[keep].tolist(), cycles[keep].tolist()):
                key = (self.descriptor, a, lane)
                self.log[key] = max(self.log.get(key, c), c)
        if keep.any():
            self.last_write = max(self.last_write, int(cycles[keep].max()))

    # ---------------------------------------------------------------- descriptors
    def input(self, d: Descriptor) -> int:
        n = d["h"] * (d["wpos"] if d["kind"] == IN_WINDOW else d["w"] * d["pp"])
        start = max(self.input_at, self.last_write + 1 - self.cfg.input_latency)
        cycles = start + np.arange(n) + self.cfg.input_latency
        self.write(d["out_base"] + np.arange(n), cycles)
        self.input_at = start + n
        return int(cycles[-1]) + 1

    def matmul(self, d: Descriptor) -> int:
        cfg, R, C = self.cfg, self.R, self.C
        waddr, lane0 = matmul_writes(d, R, C)             # (NT, M), (NT,)
        kt_count, m = k_tiles(d), d["oh"] * d["ow"]
        taps = d["kh"] * d["kw"]
        if d["in_kind"] == IN_WINDOW:
            whole = self.ready(d["in_base"] + np.arange(d["in_h"] * d["in_w"]))
            plane = lambda nt, kt: whole  # noqa: E731
        else:
            cws = {d["in_cw0"] + nt * d["cw_step"] + kt // taps for nt in range(d["n_tiles"]) for kt in range(kt_count)}
            ready = {cw: self.ready(pixel_words(d["in_base"], d["in_h"], d["in_w"], d["in_pp"], cw, 1).reshape(-1))
                     for cw in cws}
            plane = lambda nt, kt: ready[d["in_cw0"] + nt * d["cw_step"] + kt // taps]  # noqa: E731
        wb = cfg.writeback_latency
        pool_lat = {POOL_MAX: cfg.pool_max_latency, POOL_AVG: cfg.pool_avg_latency}.get(d["pool"], 0)
        for mc, m0 in enumerate(range(0, m, d["m_chunk"])):
            rows = slice(m0, min(m, m0 + d["m_chunk"]))
            n = rows.stop - rows.start
            for nt in range(d["n_tiles"]):
                for kt in range(kt_count):
                    load = max(self.load_free, self.bank_last[self.tile % 2] + C)
                    first = max(self.issue + 1, load + 1, plane(nt, kt))
                    last_k = kt == kt_count - 1
                    if last_k:
                        first = max(first, self.last_write - wb + 1)
                    self.issue = first + n - 1
                    self.events.append(TileEvent(self.descriptor, mc, nt, kt, load, first, self.issue))
                    self.load_free = load + R
                    self.bank_last[self.tile % 2] = self.issue
                    self.tile += 1
                    if last_k:
                        self.write(waddr[nt, rows], first + np.arange(n) + wb + pool_lat, int(lane0[nt]))
        return self.issue + 1

    def pool(self, d: Descriptor) -> int:
        taps = d["kh"] * d["kw"]
        src = pixel_words(d["in_base"], d["in_h"], d["in_w"], d["in_pp"], d["in_cw0"], d["cws"])
        start = max(self.issue + 1, self.ready(src.reshape(-1)), self.last_write + 1)
        dst = pixel_words(d["out_base"], d["out_h"], d["out_w"], d["out_pp"], d["out_cw0"], d["cws"]).reshape(-1)
        lat = self.cfg.pool_max_latency if d["pool"] == POOL_MAX else self.cfg.pool_avg_latency
        self.write(dst, start + (np.arange(dst.size) + 1) * taps - 1 + lat)
        self.issue = start + dst.size * taps - 1
        return self.issue + 1

    def add(self, d: Descriptor) -> int:
        """ADD: once both inputs are written, word ``i`` reads ``a`` at ``start + 2i`` and ``b`` at
        ``start + 2i + 1`` (one read port) and is written ``add_latency`` after its ``b`` read; a
        ``table_only`` pass reads one word per cycle, each written ``add_latency`` after its read."""
        n = d["words"]
        src = d["a_base"] + np.arange(n)
        if not d["table_only"]:
            src = np.concatenate([src, d["b_base"] + np.arange(n)])
        start = max(self.issue + 1, self.ready(src), self.last_write + 1)
        step = 1 if d["table_only"] else 2
        last_read = start + np.arange(n) * step + step - 1
        self.write(d["out_base"] + np.arange(n), last_read + self.cfg.add_latency)
        self.issue = int(last_read[-1])
        return self.issue + 1

    def output(self, d: Descriptor) -> int:
        src = pixel_words(d["in_base"], d["h"], d["w"], d["pp"], d["cw0"], d["pp"]).reshape(-1)
        start = max(self.issue + 1, self.ready(src))
        self.issue = start + src.size - 1
        return self.issue + self.cfg.output_latency + 1


def predict(program: Program, config: EngineConfig, macs: int = 0, *, writes: dict | None = None) -> CycleReport:
    """Cycles of one inference of ``program`` on ``config`` (all segments back to back; host time
    between segments is not counted). ``writes``, if given, receives (descriptor, word, lane) -> the
    cycle that scratchpad write happens."""
    tl = _Timeline(config, config.act_words)
    tl.log = writes
    shares, end = [], 0
    for i, d in enumerate(program.descriptors):
        tl.descriptor = i
        if d.op in ("HALT", "END"):
            shares.append(0)
            continue
        done = getattr(tl, d.op.lower())(d)
        shares.append(max(done, end) - end)
        end = max(done, end)
    return CycleReport(total=end, per_descriptor=shares, macs=macs,
                       peak_macs_per_cycle=config.array.peak_macs_per_cycle, tiles=tl.events)
