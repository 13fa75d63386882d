"""Cycle model of the network engine: the cycle every beat issues and every word is written.

The rules (``docs/engine.md``, "Timing contract") are the hardware's contract, stated so that a
cycle-accurate implementation meets them exactly:

* one activation beat issues per cycle at most; a tile's beats issue back to back;
* weight tile ``u`` is loaded from cycle ``L_u``, row ``i`` at ``L_u + i`` (one row per cycle,
  ``rows`` cycles per tile): ``L_u >= L_{u-1} + rows`` and ``L_u >= T_last(u-2) + cols`` (the bank
  it overwrites has been passed by tile ``u-2``'s last beat in every column), and its first beat
  issues at ``T_first(u) >= L_u + weight_latency``;
* a beat issues ``read_latency`` cycles after its word's read (address) cycle, when the word arrives;
* a tile's first beat issues at least ``agen_latency`` cycles after every word of the input planes it
  reads was written (a plane: one channel word of a tensor, every pixel; the whole tensor for a window
  layout), so the hardware needs one "plane written" token per plane, not per word;
* the result row of a beat of a last K tile is written ``writeback_latency`` cycles after it issues
  (a fused max/average pool writes its window ``pool_*_latency`` cycles after the window's last
  row); writes are in order: a result-producing beat may not issue before the previous write is
  ``writeback_latency - 1`` cycles old;
* INPUT writes one word per cycle from cycle 0 (``input_latency`` after its beat); POOL reads one
  word per cycle once its whole input is written (its first read 2 cycles after the last write it
  needs: the write counter counts it the cycle after, the descriptor is taken then), each window
  written ``read_latency`` + ``pool_*_latency`` after its last read; OUTPUT reads one word per cycle
  once its input is written, its beat ``output_latency`` later;
* ADD starts once every earlier write is done (``dep_base``) and reads two words per
  output word (``a`` then ``b``: the scratchpad has one read port), writing each word ``add_latency``
  after its ``b`` read: one word per 2 cycles; a ``table_only`` ADD reads one word per cycle.

A descriptor's share of the total is the cycles from the previous descriptor's end to its own (last
beat issued, last word written or last output beat), so the shares sum to the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .agen import PAD, k_tiles, matmul_reads, matmul_writes, pixel_words, pool_geometry
from .config import EngineConfig
from .isa import IN_WINDOW, POOL_AVG, POOL_MAX, Descriptor
from .program import Program

__all__ = ["CycleReport", "TileEvent", "descriptor_end", "predict"]

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
        self.windex = np.zeros(words, np.int64)          # 1-based global index of each word's last write
        self.wlog: list[int] = []  # cycle of every scratchpad write, in the one global write order
        self.read = -2             # last cycle the read port was used (a beat's address, a POOL/OUTPUT read)
        self.load_free = 0         # first cycle the weight loader is free
        self.bank_last = [NEVER, NEVER]
        self.tile = 0
        self.order_ready = 0       # earliest issue of a descriptor's first result-producing beat
        self.input_at = 0
        self.events: list[TileEvent] = []
        self.log: dict | None = None
        self.descriptor = 0

    @property
    def last_write(self) -> int:
        return self.wlog[-1] if self.wlog else NEVER

    def ready(self, need: int) -> int:
        """First cycle a MATMUL beat may issue once ``need`` writes are done: the write counter counts a
        write the cycle after it (the address may go out then), the word arrives ``read_latency`` later:
        ``agen_latency`` after the ``need``-th write."""
        if need > len(self.wlog):
            raise RuntimeError(f"descriptor {self.descriptor} waits for write {need} of {len(self.wlog)}")
        return self.wlog[need - 1] + self.cfg.agen_latency if need > 0 else 0

    def taken(self, need: int) -> int:
        """First read of a POOL, ADD or OUTPUT once ``need`` writes are done: the descriptor is taken when
        the write counter holds them (the cycle after the write), its first read the cycle after."""
        return self.ready(need) - self.cfg.read_latency + 1 if need > 0 else 0

    def check(self, addr: np.ndarray, need: int) -> None:
        """The dependence fields are sufficient: every word read was written by write ``need``."""
        a = addr[addr != PAD]
        if a.size and int(self.windex[a].max()) > need:
            raise RuntimeError(f"descriptor {self.descriptor}: dependence count {need} is too small "
                               f"(a word it reads is write {int(self.windex[a].max())})")

    def write(self, addr: np.ndarray, cycles: np.ndarray, lane: int = 0) -> None:
        keep = addr != PAD
        for a, c in zip(addr[keep].tolist(), cycles[keep].tolist()):
            if self.wlog and c <= self.wlog[-1]:
                raise RuntimeError(f"descriptor {self.descriptor}: write at cycle {c} is not after the "
                                   f"previous one ({self.wlog[-1]}): one write port, in order")
            self.wlog.append(c)
            self.windex[a] = len(self.wlog)
            if self.log is not None:     # (descriptor, word, lane) -> write cycle (a fused pool: its window's)
                self.log[(self.descriptor, a, lane)] = c

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
        pkh, pkw = pool_geometry(d)
        mm = np.arange(d["oh"] * d["ow"])
        window_last = ((mm // d["ow"]) % pkh == pkh - 1) & ((mm % d["ow"]) % pkw == pkw - 1)
        waddr = np.where(window_last[None, :], waddr, PAD)  # a fused pool writes on its window's last row
        reads = matmul_reads(d)                            # (NT, KT, M)
        kt_count, m = k_tiles(d), d["oh"] * d["ow"]
        taps = d["kh"] * d["kw"]
        window = d["in_kind"] == IN_WINDOW
        wb = cfg.writeback_latency
        RL = cfg.read_latency            # a beat issues when its word arrives, RL after its read
        pool_lat = {POOL_MAX: cfg.pool_max_latency, POOL_AVG: cfg.pool_avg_latency}.get(d["pool"], 0)
        produced = False
        last_result = None
        for mc, m0 in enumerate(range(0, m, d["m_chunk"])):
            rows = slice(m0, min(m, m0 + d["m_chunk"]))
            n = rows.stop - rows.start
            for nt in range(d["n_tiles"]):
                for kt in range(kt_count):
                    need = d["dep_base"] + (0 if window else (nt * d["cw_step"] + kt // taps) * d["dep_step"])
                    self.check(reads[nt, kt, rows], need)
                    load = max(self.load_free, self.bank_last[self.tile % 2] + C)
                    first = max(self.read + 1 + RL, load + cfg.weight_latency, self.ready(need))
                    last_k = kt == kt_count - 1
                    if last_k and not produced:
                        first = max(first, self.order_ready)
                        produced = True
                    last = first + n - 1
                    self.read = last - RL
                    self.events.append(TileEvent(self.descriptor, mc, nt, kt, load, first, last))
                    self.load_free = load + R
                    self.bank_last[self.tile % 2] = last
                    self.tile += 1
                    if last_k:
                        self.write(waddr[nt, rows], first + np.arange(n) + wb + pool_lat, int(lane0[nt]))
                        last_result = last
        self.order_ready = last_result + pool_lat + 1
        return self.read + RL + 1

    def pool(self, d: Descriptor) -> int:
        taps = d["kh"] * d["kw"]
        src = pixel_words(d["in_base"], d["in_h"], d["in_w"], d["in_pp"], d["in_cw0"], d["cws"])
        self.check(src.reshape(-1), d["dep_base"])
        start = max(self.read + 1, self.taken(d["dep_base"]))
        dst = pixel_words(d["out_base"], d["out_h"], d["out_w"], d["out_pp"], d["out_cw0"], d["cws"]).reshape(-1)
        lat = self.cfg.pool_max_latency if d["pool"] == POOL_MAX else self.cfg.pool_avg_latency
        # read addresses from ``start``: a window's last word arrives ``read_latency`` after its read
        self.write(dst, start + (np.arange(dst.size) + 1) * taps - 1 + self.cfg.read_latency + lat)
        self.read = start + dst.size * taps - 1
        return self.read + 1

    def add(self, d: Descriptor) -> int:
        """ADD: taken once the read port is free and ``dep_base`` writes are done (every earlier write,
        so its writes follow every other unit's); word ``i`` reads ``a`` at ``start + 2i`` and ``b`` at
        ``start + 2i + 1`` (one read port) and is written ``add_latency`` after its ``b`` read; a
        ``table_only`` pass reads one word per cycle, each written ``add_latency`` after its read. The
        next read-side descriptor is taken in the cycle of its last write."""
        n = d["words"]
        src = d["a_base"] + np.arange(n)
        if not d["table_only"]:
            src = np.concatenate([src, d["b_base"] + np.arange(n)])
        self.check(src, d["dep_base"])
        start = max(self.read + 1, self.taken(d["dep_base"]))
        step = 1 if d["table_only"] else 2
        last_read = start + np.arange(n) * step + step - 1
        self.write(d["out_base"] + np.arange(n), last_read + self.cfg.add_latency)
        self.read = self.last_write
        return self.last_write + 1

    def output(self, d: Descriptor) -> int:
        src = pixel_words(d["in_base"], d["h"], d["w"], d["pp"], d["cw0"], d["pp"]).reshape(-1)
        self.check(src, d["dep_base"])
        start = max(self.read + 1, self.taken(d["dep_base"]))
        self.read = start + src.size - 1
        return self.read + self.cfg.output_latency + 1


def descriptor_end(op: str, config: EngineConfig, *, last_read: int | None = None,
                   last_write: int | None = None) -> int:
    """A descriptor's end as the model counts it, from what the hardware's debug tap shows: INPUT its
    last write + 1; MATMUL its last beat's read (the tap's ``issue``) + ``read_latency`` + 1 (the beat
    issues when its word arrives); POOL its last read + 1; OUTPUT its last read + ``output_latency`` + 1
    (its last beat + 1); ADD its last write + 1."""
    if op in ("INPUT", "ADD"):
        return last_write + 1
    if op == "MATMUL":
        return last_read + config.read_latency + 1
    if op == "POOL":
        return last_read + 1
    if op == "OUTPUT":
        return last_read + config.output_latency + 1
    raise ValueError(f"{op} has no end of its own")


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
