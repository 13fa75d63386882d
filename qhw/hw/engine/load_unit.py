"""``LoadUnit``: the ``load`` stream (``qhw.engine.load.load_words``) into the program, weight,
parameter and table memories (docs/engine.md, "Loading"): one word per cycle, whenever no inference runs."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ...engine.isa import DESCRIPTOR_BITS, DESCRIPTOR_WORDS
from ...engine.load import LOAD_MAGIC, TABLE_WORDS
from ...errors import ConfigError
from ..replica import replica

__all__ = ["LoadUnit"]

CLEAR_GROUP = 4          # wide-word registers (32 bits each) per copy of the clear


def _write(addr_bits: int, width: int) -> wiring.Signature:
    return wiring.Signature({"en": Out(1), "addr": Out(addr_bits), "data": Out(width)})


class LoadUnit(wiring.Component):
    """Parameters: ``cols`` (bytes per weight row, a multiple of 4), and the memories' depths: ``programs``
    descriptors, ``weight_rows``, ``param_words`` (narrow store), ``param_entries`` (wide, ``4*cols`` words),
    ``tables`` (table slots: ``tag`` writes a slot's tag, ``tab`` one entry of it a cycle).

    ``pn``, ``tag`` and ``tab`` are written in the cycle their word is taken; ``prog``, ``wt`` and ``pw``
    the cycle after their last word (before ``done``)."""

    def __init__(self, *, cols: int, programs: int, weight_rows: int, param_words: int, param_entries: int,
                 tables: int = 1):
        if cols % 4:
            raise ConfigError(f"cols must be a multiple of 4 for the load unit, not {cols!r}")
        self.cols, self.programs, self.weight_rows = cols, programs, weight_rows
        self.param_words, self.param_entries, self.tables = param_words, param_entries, tables
        bits = lambda n: max(1, ceil_log2(n))      # noqa: E731
        super().__init__({
            "load": In(stream.Signature(unsigned(32))),
            "running": In(1),
            "prog": Out(_write(bits(programs), DESCRIPTOR_BITS)),
            "wt": Out(_write(bits(weight_rows), 8 * cols)),
            "pn": Out(_write(bits(param_words), 32)),
            "pw": Out(_write(bits(param_entries), 32 * 4 * cols)),
            "tag": Out(wiring.Signature({"en": Out(1), "slot": Out(range(tables)), "data": Out(24)})),
            "tab": Out(wiring.Signature({"en": Out(1), "slot": Out(range(tables)), "index": Out(8),
                                         "data": Out(8)})),
            "poff": Out(24), "loaded": Out(1), "error": Out(1), "done": Out(1), "begin": Out(1),
            "failed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        word = self.load.payload
        take = self.load.valid & self.load.ready
        phase = Signal(range(6))            # 0 header, 1 program, 2 weights, 3 params, 4 tables, 5 end
        hdr = Signal(range(5))
        counts = Signal(data.ArrayLayout(unsigned(32), 4))
        ent = Signal(range(TABLE_WORDS))    # a table's word: 0 its tag, then its entries
        tslot = Signal(range(self.tables))
        left = Signal(unsigned(32))
        bad = Signal()
        idx = Signal(unsigned(32))          # words into the section
        slot = Signal(range(4 * C))
        # a wide word (descriptor, weight row, parameter entry) is assembled in ``buf``, each word
        # register loaded straight from the stream (an enable, no multiplexer per bit), and written the
        # cycle after its last word, from the registers; that write clears them (but the next word's),
        # so a short last word is zero-filled
        buf = Signal(data.ArrayLayout(unsigned(32), 4 * C))
        w_en = Signal(3)                    # the write of a wide word to prog, wt or pw: this cycle
        w_addr = Signal(unsigned(32))
        # the clear, one copy per group of ``CLEAR_GROUP`` words (``qhw.hw.replica``: each drives the resets
        # of its words' flip-flops, a fan-out of 32 per word)
        clears = [replica(Signal(), name=f"clear{g}") for g in range(-(-4 * C // CLEAR_GROUP))]
        m.d.sync += [w_en.eq(0)] + [c.eq(0) for c in clears]
        clear = [c.eq(1) for c in clears]
        # ``left != 0`` and ``left == 1`` as flags, set with ``left`` (the stream's ``ready`` and the wide
        # word's write are then not behind a 32-bit zero test)
        left_nz, left_one = Signal(name="left_nz"), Signal(name="left_one")

        def set_left(v):
            return [left.eq(v), left_nz.eq(v != 0), left_one.eq(v == 1)]
        for k in range(4 * C):
            load = Signal(name=f"buf_load{k}")
            zero = Signal(name=f"buf_zero{k}")       # a clear, not this word's load: the flip-flop's reset
            m.d.comb += [load.eq(take & (phase >= 1) & (phase <= 3) & (slot == k)),
                         zero.eq(clears[k // CLEAR_GROUP] & ~load)]
            with m.If(zero):
                m.d.sync += buf[k].eq(0)
            with m.Elif(load):
                m.d.sync += buf[k].eq(word)
        for ph, port in ((1, self.prog), (2, self.wt), (3, self.pw)):
            m.d.comb += [port.en.eq(w_en[ph - 1]), port.addr.eq(w_addr), port.data.eq(buf.as_value())]
        # the narrow writes' address and data, meaningful with their enables (no multiplexer for the idle value)
        m.d.comb += [self.pn.addr.eq(idx), self.pn.data.eq(word), self.tag.slot.eq(tslot), self.tag.data.eq(word),
                     self.tab.slot.eq(tslot), self.tab.index.eq(ent - 1), self.tab.data.eq(word)]
        fits = Signal()
        m.d.comb += self.failed.eq(bad)
        m.d.comb += self.load.ready.eq(~self.running & ((phase == 0) | ((phase != 5) & left_nz)))

        # ``done`` (the restart of every unit) is a register: high exactly in phase 5
        at_end = Signal(name="at_end")
        m.d.comb += self.done.eq(at_end)
        with m.If(phase == 0), m.If(take):
            with m.If(hdr == 0):
                with m.If(word == LOAD_MAGIC):
                    m.d.comb += self.begin.eq(1)
                    m.d.sync += [hdr.eq(1), self.loaded.eq(0), self.error.eq(0)]
                with m.Else():
                    m.d.sync += self.error.eq(1)
            with m.Else():
                m.d.sync += [counts[(hdr - 1)[:2]].eq(word), hdr.eq(hdr + 1)]
                with m.If(hdr == 4):
                    m.d.sync += [hdr.eq(0), phase.eq(1), *set_left(counts[0]), idx.eq(0), slot.eq(0), *clear,
                                 ent.eq(0), tslot.eq(0)]
                    m.d.comb += fits.eq((counts[0] <= self.programs * DESCRIPTOR_WORDS)
                                        & (counts[1] * 4 <= self.weight_rows * C)
                                        & (counts[2] <= self.param_words) & (counts[2] <= self.param_entries * 4 * C)
                                        & (word <= self.tables * TABLE_WORDS))
                    m.d.sync += [bad.eq(~fits), self.poff.eq(counts[1])]
        with m.Elif(phase == 5):
            m.d.sync += [phase.eq(0), at_end.eq(0), self.loaded.eq(~bad), self.error.eq(bad)]
        with m.Elif(~left_nz):
            m.d.sync += [phase.eq(phase + 1), at_end.eq(phase == 4), idx.eq(0), slot.eq(0)]
            with m.If(phase == 1):
                m.d.sync += set_left(counts[1])
            with m.Elif(phase == 2):
                m.d.sync += set_left(counts[2])
            with m.Elif(phase == 3):
                m.d.sync += set_left(counts[3])
        with m.Elif(take):
            m.d.sync += [left.eq(left - 1), left_nz.eq(~left_one), left_one.eq(left == 2), idx.eq(idx + 1),
                         slot.eq(slot + 1)]
            per = {1: DESCRIPTOR_WORDS, 2: C // 4, 3: 4 * C}
            for ph, n in per.items():
                with m.If(phase == ph):
                    full = (slot == n - 1) | left_one
                    with m.If(full):
                        m.d.sync += [slot.eq(0), w_en.eq(~bad << (ph - 1)), *clear, w_addr.eq(idx // n)]
            with m.If(phase == 3):
                m.d.comb += self.pn.en.eq(~bad)
            with m.If(phase == 4):
                m.d.comb += [self.tag.en.eq(~bad & (ent == 0)), self.tab.en.eq(~bad & (ent != 0))]
                with m.If(ent == TABLE_WORDS - 1):
                    m.d.sync += [ent.eq(0), tslot.eq(tslot + 1)]
                with m.Else():
                    m.d.sync += ent.eq(ent + 1)
        return m
