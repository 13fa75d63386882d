"""``ActivationReader``: MATMUL descriptors to the array's activation beats, read from the scratchpad.

``Im2colAgen``'s address goes to the scratchpad's read port; the word comes back ``SPAD_READ_LATENCY``
cycles later as the beat, and a padding beat is replaced by the descriptor's input zero point
(docs/engine.md: "padding injects the input zero point, as the golden model pads"). The read port
and its register hold their words (``r_en`` low, ``r_hold`` high) while ``beats`` is not ready, so
back-pressure stalls the generator and the read pipeline together and no beat is lost or repeated.
A word written in cycle ``W`` reaches a beat in ``W + 1 + SPAD_READ_LATENCY`` at the earliest
(address in ``W + 1``): the contract's ``agen_latency``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...contract import SPAD_READ_LATENCY
from ...errors import ConfigError
from .im2col import ADDR_BITS, AGEN_LATENCY, Im2colAgen
from .layouts import descriptor_layout

__all__ = ["ActivationReader", "issue_layout"]


def issue_layout(rows: int) -> data.StructLayout:
    """One activation beat for the array: ``rows`` int8 lanes and the loop position (``nt``,
    ``last_k``, ``tile_last``, ``last``, as ``Im2colAgen``'s beat)."""
    return data.StructLayout({"data": data.ArrayLayout(signed(8), rows), "nt": unsigned(12), "last_k": 1,
                              "tile_last": 1, "last": 1})


class ActivationReader(wiring.Component):
    """``desc`` (MATMUL) -> ``beats``, through the scratchpad read port ``r_addr``/``r_en`` -> ``r_data``.

    Parameters
    ----------
    rows:
        Lanes per scratchpad word and per beat (the array's rows).
    """

    def __init__(self, *, rows: int):
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise ConfigError(f"rows must be a positive integer, not {rows!r}")
        self.rows = rows
        super().__init__({
            "desc": In(stream.Signature(descriptor_layout("MATMUL"))),
            "r_addr": Out(ADDR_BITS), "r_en": Out(1), "r_hold": Out(1), "r_data": In(data.ArrayLayout(signed(8), rows)),
            "beats": Out(stream.Signature(issue_layout(rows))),
        })

    @property
    def latency(self) -> int:
        """A descriptor's handshake to its first beat: ``Im2colAgen.latency`` + ``SPAD_READ_LATENCY``."""
        return AGEN_LATENCY + SPAD_READ_LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.agen = agen = Im2colAgen()
        wiring.connect(m, wiring.flipped(self.desc), agen.desc)
        a = agen.beats.payload
        stage = data.StructLayout({"valid": 1, "pad": 1, "zp": signed(16), "nt": unsigned(12), "last_k": 1,
                                   "tile_last": 1, "last": 1})
        # one stage per cycle of the read, all advanced together (the read port's too)
        stages = [Signal(stage, name=f"s{k}") for k in range(SPAD_READ_LATENCY)]
        s = stages[-1]
        advance = ~s.valid | self.beats.ready
        m.d.comb += [agen.beats.ready.eq(advance), self.r_en.eq(advance), self.r_hold.eq(~advance),
                     self.r_addr.eq(a.addr)]
        with m.If(advance):
            m.d.sync += [stages[0].valid.eq(agen.beats.valid), stages[0].pad.eq(a.pad), stages[0].zp.eq(a.zp),
                         stages[0].nt.eq(a.nt), stages[0].last_k.eq(a.last_k),
                         stages[0].tile_last.eq(a.tile_last), stages[0].last.eq(a.last)]
            m.d.sync += [nxt.eq(prev) for prev, nxt in zip(stages, stages[1:])]
        b = self.beats.payload
        m.d.comb += [self.beats.valid.eq(s.valid), b.nt.eq(s.nt), b.last_k.eq(s.last_k),
                     b.tile_last.eq(s.tile_last), b.last.eq(s.last)]
        for i in range(self.rows):
            m.d.comb += b.data[i].eq(Mux(s.pad, s.zp, self.r_data[i]))
        return m
