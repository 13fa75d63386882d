"""``Accumulator``: adds each K tile's partial-sum row into an on-chip memory row, one row per cycle."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..contract import ACCUMULATE_LATENCY
from .config import ArrayConfig, check_config
from .issuer import tag_layout
from .skew import delayed

__all__ = ["Accumulator", "row_layout"]

# Registers from ``psum`` to ``row``: the psum with the memory row read a cycle early, then the sum.


def row_layout(config: ArrayConfig) -> data.StructLayout:
    """A finished row: ``cols`` sums over all K (``sum_bits`` each, no bias) and its parameter bank."""
    return data.StructLayout({"sum": data.ArrayLayout(signed(config.sum_bits), config.cols), "bank": 1})


class Accumulator(wiring.Component):
    """``sum[m] = psum`` on the first K tile, ``sum[m] += psum`` on later ones; rows of the last K tile
    leave on ``row`` (not written back).

    ``tag`` is the issue register's sideband: the array's ``psum`` row of that beat arrives
    ``config.array_latency`` cycles later. The memory (``acc_depth`` rows) is read-modify-written
    once per cycle with the block RAM's clock-to-out, the adder and the write in different cycles:
    the row is read one cycle early and its data registered, and the sum is written from a register
    a cycle after the add. The read port is transparent for a write in its own cycle; the two
    younger writes, of the two beats just before (M <= 2: the same row's K tiles back to back), are
    taken from the adder's output registers instead (forwarding).

    ``next_bank`` is the bank of the row ``row`` carries in the next cycle, so the lanes can select
    their parameters into registers a cycle early.
    """

    def __init__(self, *, config: ArrayConfig):
        check_config(config)
        self.config = config
        c = config
        super().__init__({
            "tag": In(stream.Signature(tag_layout(), always_ready=True)),
            "psum": In(data.ArrayLayout(signed(c.psum_bits), c.cols)),
            "row": Out(stream.Signature(row_layout(c), always_ready=True)),
            "next_bank": Out(1),
        })

    @property
    def latency(self) -> int:
        """2: ``psum`` to ``row`` (the psum and the early-read memory row registered, then the sum)."""
        return ACCUMULATE_LATENCY

    def elaborate(self, platform):
        m = Module()
        c = self.config
        C = c.cols
        m.submodules.acc_mem = mem = Memory(shape=data.ArrayLayout(signed(c.sum_bits), C),
                                            depth=c.acc_depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=(wp,))
        # The delay lines carry only the memory address of ``m`` (a row past ``acc_depth`` has one K
        # tile, so it is neither read nor written nor forwarded): 7 of 16 bits fewer per stage.
        t = self.tag.payload
        tag = Signal(data.StructLayout({"valid": 1, "tag": data.StructLayout(
            {"m": range(c.acc_depth), "first": 1, "last": 1, "bank": 1})}))
        m.d.comb += [tag.valid.eq(self.tag.valid), tag.tag.m.eq(t.m), tag.tag.first.eq(t.first),
                     tag.tag.last.eq(t.last), tag.tag.bank.eq(t.bank)]
        tag_r = delayed(m, tag, c.array_latency - 1, name="tag_r")     # read address, a cycle early
        m.d.comb += rp.addr.eq(tag_r.tag.m)
        tag_d1 = delayed(m, tag_r, 1, name="tag_rd")
        tag_d = delayed(m, tag_d1, 1, name="tag_add")                   # with psum_d and addend
        # Datapath registers without reset (the tags, which have one, qualify them).
        psum_d = Signal(data.ArrayLayout(signed(c.psum_bits), C), reset_less=True)
        m.d.sync += psum_d.eq(self.psum)
        total = Signal(data.ArrayLayout(signed(c.sum_bits), C))
        last_total = Signal.like(total, reset_less=True)    # the sum of the beat one cycle older, written from here
        wrote = Signal()
        m.d.comb += wrote.eq(tag_d.valid & ~tag_d.tag.last)
        # The memory is written from registers a cycle after the add (the adder's carry chain and the
        # route to the block RAMs are not one cycle), so the two writes younger than a beat's read
        # are forwarded: the beat one cycle older from ``last_total``, two cycles older from what
        # ``last_total`` held a cycle before. Everything but the one-older choice is decided a cycle
        # ahead into ``addend`` (0 on the first K tile, else the two-older sum or the memory row), so
        # one multiplexer stands in front of the adder.
        w_addr = Signal.like(tag_d.tag.m, name="w_addr")
        w_en = Signal(name="w_en")
        forward1 = Signal()                                 # the one-older beat wrote this row (not first)
        addend = Signal.like(total, reset_less=True)
        forward2 = w_en & (w_addr == tag_d1.tag.m)          # for the beat in tag_d1: the two-older beat's row
        m.d.sync += [last_total.eq(total), w_addr.eq(tag_d.tag.m), w_en.eq(wrote),
                     forward1.eq(wrote & (tag_d.tag.m == tag_d1.tag.m) & ~tag_d1.tag.first)]
        for j in range(C):
            m.d.sync += addend[j].eq(Mux(tag_d1.tag.first, 0, Mux(forward2, last_total[j], rp.data[j])))
            m.d.comb += total[j].eq(Mux(forward1, last_total[j], addend[j]) + psum_d[j])
        m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(last_total), wp.en.eq(w_en)]
        # A register between this add and the lanes' bias add keeps two carry chains out of one cycle.
        m.d.sync += [self.row.payload.sum.eq(total), self.row.payload.bank.eq(tag_d.tag.bank),
                     self.row.valid.eq(tag_d.valid & tag_d.tag.last)]
        m.d.comb += self.next_bank.eq(tag_d.tag.bank)
        return m
