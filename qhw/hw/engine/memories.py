"""The engine's on-chip memories (``amaranth.lib.memory``; block RAM on ECP5, EBR/SPRAM on iCE40).

* ``Scratchpad``: ``words`` words of ``rows`` int8 lanes (one activation beat each), one synchronous
  read port and one write port that writes either a whole word (``w_full``: INPUT, POOL) or the
  first ``cols`` lanes of ``w_data`` at lane offset ``w_lane`` (a lane-granular write enable), so a
  ``cols < rows`` N tile's result row lands inside its word (docs/engine.md, "Write-back").
* ``WeightStore``: the weight memory, one ``cols``-byte tile row per read (the loader's only port);
  block RAM, or (``ram="spram"``) the iCE40 UP5K's single-port ``SB_SPRAM256KA`` blocks with the
  write and read addresses muxed on one port (writes only while loading, reads only while running).

Timing (docs/engine.md, "Timing contract"): the scratchpad's read is registered twice, the block
RAM's synchronous read and a register right after it (``SPAD_READ_LATENCY``, 2), so a reader's logic
never follows the block RAM's clock-to-out. A word written in cycle ``W`` (write enable high in ``W``)
is read by an address presented in ``W + 1``, its data valid in ``W + 1 + SPAD_READ_LATENCY``: the
contract's ``agen_latency``. Reads are not transparent: a read in the write's own cycle sees the old word.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ...contract import SPAD_READ_LATENCY
from ...errors import ConfigError
from ..spram import Spram

__all__ = ["Scratchpad", "WeightStore"]


def _positive(name: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{name} must be a positive integer, not {v!r}")


class Scratchpad(wiring.Component):
    """Activation scratchpad.

    Parameters
    ----------
    rows:
        Lanes per word (the array's rows: one activation beat).
    cols:
        Lanes per written result row; must divide ``rows``.
    words:
        Depth in words (``EngineConfig.act_words``).
    init:
        Initial contents, a sequence of at most ``words`` words of ``rows`` ints (embedded models).
    """

    def __init__(self, *, rows: int, cols: int, words: int, init=()):
        for name, v in (("rows", rows), ("cols", cols), ("words", words)):
            _positive(name, v)
        if rows % cols:
            raise ConfigError(f"cols must divide rows, not {rows}x{cols}")
        init = [list(w) for w in init]
        if len(init) > words or any(len(w) != rows for w in init):
            raise ConfigError(f"init must be at most {words} words of {rows} lanes")
        self.rows, self.cols, self.words, self._init = rows, cols, words, init
        aw = max(1, ceil_log2(words))
        super().__init__({
            "r_addr": In(aw), "r_en": In(1), "r_hold": In(1), "r_data": Out(data.ArrayLayout(signed(8), rows)),
            "w_addr": In(aw), "w_lane": In(range(rows)), "w_en": In(1), "w_full": In(1),
            "w_data": In(data.ArrayLayout(signed(8), rows)),
        })

    @property
    def read_latency(self) -> int:
        """Address (with ``r_en``) to ``r_data``: ``SPAD_READ_LATENCY`` (the synchronous read, then a
        register). ``r_en`` low keeps the block RAM's word, ``r_hold`` high the registers after it: a
        reader that stalls its reads (``ActivationReader``) holds both; the engine's readers never do."""
        return SPAD_READ_LATENCY

    @property
    def latency(self) -> int:
        """Write enable to the first cycle whose read data holds the word: ``1 + read_latency``
        (``agen_latency``)."""
        return 1 + SPAD_READ_LATENCY

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        m.submodules.mem = mem = Memory(shape=data.ArrayLayout(signed(8), R), depth=self.words, init=self._init)
        rd = mem.read_port()
        wr = mem.write_port(granularity=1)
        m.d.comb += [rd.addr.eq(self.r_addr), rd.en.eq(self.r_en), wr.addr.eq(self.w_addr)]
        word = rd.data
        for k in range(SPAD_READ_LATENCY - 1):     # datapath registers, no reset
            reg = Signal(data.ArrayLayout(signed(8), R), name=f"r_data_q{k + 1}", reset_less=True)
            with m.If(~self.r_hold):
                m.d.sync += reg.eq(word)
            word = reg
        m.d.comb += self.r_data.eq(word)
        for slot in range(R // C):          # a result row goes to lanes slot*C .. slot*C + C - 1
            hit = self.w_en & (self.w_full | (self.w_lane == slot * C))
            for j in range(C):
                m.d.comb += wr.en[slot * C + j].eq(hit)
                m.d.comb += wr.data[slot * C + j].eq(Mux(self.w_full, self.w_data[slot * C + j], self.w_data[j]))
        return m


class WeightStore(wiring.Component):
    """Weight memory: ``depth`` rows of ``cols`` int8, read one row per cycle.

    Parameters
    ----------
    cols:
        Bytes per row (the array's columns).
    depth:
        Rows (``weight_bytes // cols``).
    init:
        Initial contents (embedded weights), at most ``depth`` rows of ``cols`` ints (``ram="block"`` only).
    ram:
        ``"block"`` (an Amaranth memory, two ports) or ``"spram"`` (``Spram``, one port: a write wins the
        address; ``r_en`` must be low while ``w_en`` is high, as the engine guarantees: loading and running
        exclude each other). ``cols`` 4 or 8, at most 16 K rows.
    family:
        ``"ice40"``: ``ram="spram"`` instantiates ``SB_SPRAM256KA``; otherwise its behavioural model.
    """

    def __init__(self, *, cols: int, depth: int, init=(), ram: str = "block", family: str | None = None):
        _positive("cols", cols)
        _positive("depth", depth)
        init = [list(r) for r in init]
        if len(init) > depth or any(len(r) != cols for r in init):
            raise ConfigError(f"init must be at most {depth} rows of {cols} weights")
        if ram not in ("block", "spram"):
            raise ConfigError(f"ram must be 'block' or 'spram', not {ram!r}")
        if ram == "spram":
            if 8 * cols not in (32, 64) or depth > 1 << 14:
                raise ConfigError(f"ram spram holds rows of 4 or 8 weights, at most 16384 rows, not {depth} of {cols}")
            if init:
                raise ConfigError("ram spram cannot hold initial contents (SB_SPRAM256KA powers up undefined)")
        self.cols, self.depth, self._init, self.ram, self.family = cols, depth, init, ram, family
        aw = max(1, ceil_log2(depth))
        super().__init__({
            "r_addr": In(aw), "r_en": In(1), "r_data": Out(data.ArrayLayout(signed(8), cols)),
            "w_addr": In(aw), "w_en": In(1), "w_data": In(data.ArrayLayout(signed(8), cols)),
        })

    @property
    def latency(self) -> int:
        """Address to ``r_data``: 1 cycle (synchronous read)."""
        return 1

    def elaborate(self, platform):
        m = Module()
        if self.ram == "spram":
            m.submodules.spram = ram = Spram(width=8 * self.cols, family=self.family)
            m.d.comb += [ram.addr.eq(Mux(self.w_en, self.w_addr, self.r_addr)), ram.en.eq(self.w_en | self.r_en),
                         ram.we.eq(self.w_en), ram.wdata.eq(self.w_data), ram.wmask.eq(-1),
                         self.r_data.eq(ram.rdata)]
            return m
        m.submodules.mem = mem = Memory(shape=data.ArrayLayout(signed(8), self.cols), depth=self.depth,
                                        init=self._init)
        rd, wr = mem.read_port(), mem.write_port()
        m.d.comb += [rd.addr.eq(self.r_addr), rd.en.eq(self.r_en), self.r_data.eq(rd.data),
                     wr.addr.eq(self.w_addr), wr.en.eq(self.w_en), wr.data.eq(self.w_data)]
        return m
