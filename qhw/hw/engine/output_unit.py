"""``OutputUnit``: an OUTPUT descriptor's words, read one per cycle, to dense host beats.

Word ``i`` of the tensor is read at ``in_base + i`` (pixels in raster order, ``pp`` words each); word
``k`` of a pixel carries ``min(rows, c - k*rows)`` bytes, packed densely (channels fastest, ``rows``
bytes per beat, the tensor's last beat zero-padded and marked ``last``). Read, register, pack into
a small FIFO: with the host ready, a beat leaves ``output_latency`` (the scratchpad's read latency + 2)
cycles after the read that completes it. Reads stop while the FIFO could not hold their bytes (host back-pressure).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ...contract import SPAD_READ_LATENCY
from ...errors import ConfigError
from ..logic_mul import logic_mul
from ..skew import delayed
from .layouts import descriptor_layout

__all__ = ["OUTPUT_LATENCY", "OutputUnit"]

OUTPUT_LATENCY = SPAD_READ_LATENCY + 2     # the read, s2, the FIFO
_FIFO_DEPTH = 8


class OutputUnit(wiring.Component):
    """OUTPUT descriptors (``desc``) to ``o`` beats through the scratchpad read port.

    Parameters
    ----------
    rows:
        Lanes per word and bytes per beat.
    addr_bits:
        Scratchpad word address width.
    """

    def __init__(self, *, rows: int, addr_bits: int):
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 2:
            raise ConfigError(f"rows must be an integer of at least 2, not {rows!r}")
        self.rows, self.addr_bits = rows, addr_bits
        super().__init__({
            "desc": In(stream.Signature(descriptor_layout("OUTPUT"))),
            "r_addr": Out(addr_bits), "r_en": Out(1), "r_data": In(data.ArrayLayout(signed(8), rows)),
            "o": Out(stream.Signature(data.StructLayout({"data": unsigned(8 * rows), "last": 1}))),
            "finishing": Out(1), "idle": Out(1),
        })

    @property
    def latency(self) -> int:
        """A read to the beat it completes, host ready: ``OUTPUT_LATENCY`` (``EngineConfig.output_latency``)."""
        return OUTPUT_LATENCY

    def elaborate(self, platform):
        m = Module()
        R = self.rows
        d = Signal(descriptor_layout("OUTPUT"))
        run = Signal()
        i_word = Signal(unsigned(32), name="i_word")
        # the word count minus one, a cycle after the accept (h*w registered at the accept, then *pp); the
        # first read (word 0, possibly the accept's next cycle) asks only ``one_word``
        hw, n_words_m1 = Signal(unsigned(24), name="hw"), Signal(signed(33), name="n_words_m1")
        one_word = Signal(name="one_word")
        # the last-word test as flags (it is the unit's last step, into the read side's next accept):
        # ``first`` (i_word == 0, where only ``one_word`` is asked) and ``at_end`` (i_word == n_words_m1),
        # whose next value after word 0 is ``two_words`` (h*w*pp == 2, from the accept) and after word
        # k >= 1 ``k + 1 == n_words_m1`` (the count is ready from the accept's second cycle, before word 1)
        first, at_end, two_words = Signal(name="first_word"), Signal(name="at_end"), Signal(name="two_words")
        m.d.sync += n_words_m1.eq(logic_mul(hw, d.pp) - 1)
        k = Signal(unsigned(8))
        crem = Signal(signed(20))                 # channels of the pixel from word k on
        m.submodules.fifo = fifo = SyncFIFO(width=8 * R + 1, depth=_FIFO_DEPTH)
        s1 = Signal(data.StructLayout({"valid": 1, "bytes": range(R + 1), "last": 1}))
        s2 = Signal(data.StructLayout({"valid": 1, "bytes": range(R + 1), "last": 1,
                                       "data": data.ArrayLayout(signed(8), R)}))
        flush = Signal()
        # s1 (registered with the read) waits for the word: ``SPAD_READ_LATENCY - 1`` more registers
        stages = [s1]
        for n in range(SPAD_READ_LATENCY - 1):
            stages.append(delayed(m, stages[-1], 1, name=f"s1_wait{n}"))
        s1w = stages[-1]
        # words in flight (the stages, s2, the flush), a register counted a cycle ahead; the read decision
        # (which every read-side accept waits for) is a flag, ``room`` = FIFO level + in flight < depth - 1,
        # registered from both counts' next values (the FIFO's level moves by its write and read)
        inflight = Signal(range(SPAD_READ_LATENCY + 3))
        inflight_nx = Signal.like(inflight, name="inflight_nx")
        room = Signal(init=1, name="room")
        read = Signal()
        m.d.comb += read.eq(run & room)
        last_word = Mux(first, one_word, at_end)
        m.d.comb += [self.r_addr.eq(d.in_base + i_word), self.r_en.eq(read), self.finishing.eq(read & last_word)]
        with m.If(read):
            m.d.sync += [i_word.eq(i_word + 1), first.eq(0), at_end.eq(Mux(first, two_words, i_word + 1 == n_words_m1))]
            with m.If(last_word):
                m.d.sync += run.eq(0)
            with m.If(k + 1 == d.pp):
                m.d.sync += [k.eq(0), crem.eq(d.c)]
            with m.Else():
                m.d.sync += [k.eq(k + 1), crem.eq(crem - R)]
        m.d.sync += [s1.valid.eq(read), s1.bytes.eq(Mux(crem >= R, R, crem)), s1.last.eq(last_word),
                     s2.valid.eq(s1w.valid), s2.bytes.eq(s1w.bytes), s2.last.eq(s1w.last), s2.data.eq(self.r_data)]

        # the packer: residual bytes + this word's, a full beat (or the tensor's last) into the FIFO
        res = Signal(data.ArrayLayout(unsigned(8), R))
        rc = Signal(range(R + 1))
        comb = [Signal(unsigned(8), name=f"pk{j}") for j in range(2 * R)]
        for j in range(2 * R):
            pick = Const(0, 8)
            for b in reversed(range(R)):
                pick = Mux(j - rc == b, s2.data[b].as_unsigned(), pick)
            m.d.comb += comb[j].eq(Mux(j < rc, res[j] if j < R else 0, Mux(j - rc < s2.bytes, pick, 0)))
        total = rc + s2.bytes
        flush_next = ~flush & s2.valid & s2.last & (total > R)
        m.d.comb += inflight_nx.eq(read + sum(st.valid for st in stages) + flush_next)
        level_nx = fifo.level + (fifo.w_en & fifo.w_rdy) - (fifo.r_en & fifo.r_rdy)
        m.d.sync += [inflight.eq(inflight_nx), room.eq(level_nx + inflight_nx < _FIFO_DEPTH - 1)]
        beat = Signal(unsigned(8 * R))
        m.d.comb += [fifo.w_data.eq(Cat(beat, Const(0, 1)))]
        with m.If(flush):
            m.d.comb += [beat.eq(Cat(*[res[j] for j in range(R)])), fifo.w_en.eq(1), fifo.w_data[-1].eq(1)]
            m.d.sync += [flush.eq(0), rc.eq(0)]
        with m.Elif(s2.valid):
            with m.If(total >= R):
                m.d.comb += [beat.eq(Cat(*comb[:R])), fifo.w_en.eq(1),
                             fifo.w_data[-1].eq(s2.last & (total == R))]
                m.d.sync += [rc.eq(total - R)] + [res[j].eq(comb[R + j]) for j in range(R)]
                with m.If(s2.last & (total > R)):
                    m.d.sync += flush.eq(1)
            with m.Elif(s2.last):
                m.d.comb += [beat.eq(Cat(*comb[:R])), fifo.w_en.eq(1), fifo.w_data[-1].eq(1)]
                m.d.sync += rc.eq(0)
            with m.Else():
                m.d.sync += [rc.eq(total)] + [res[j].eq(comb[j]) for j in range(R)]
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.data.eq(fifo.r_data[:8 * R]),
                     self.o.payload.last.eq(fifo.r_data[-1]), fifo.r_en.eq(self.o.ready)]

        m.d.comb += [self.desc.ready.eq(~run | self.finishing),
                     self.idle.eq(~run & (inflight == 0) & ~fifo.r_rdy)]
        with m.If(self.desc.valid & self.desc.ready):
            dp = self.desc.payload
            one = [dp.h == 1, dp.w == 1, dp.pp == 1]
            two = [dp.h == 2, dp.w == 2, dp.pp == 2]
            m.d.sync += [d.eq(dp), run.eq(1), i_word.eq(0), k.eq(0), crem.eq(dp.c), hw.eq(logic_mul(dp.h, dp.w)),
                         one_word.eq(one[0] & one[1] & one[2]), first.eq(1),
                         two_words.eq((two[0] & one[1] & one[2]) | (one[0] & two[1] & one[2])
                                      | (one[0] & one[1] & two[2]))]
        return m
