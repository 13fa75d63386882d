"""``ActivationReader``: MATMUL descriptors to the array's activation beats, read from the scratchpad.

``Im2colAgen``'s address goes to the scratchpad's synchronous read port; the word comes back the next
cycle into the beat register, and a padding beat is replaced by the descriptor's input zero point
(docs/engine.md: "padding injects the input zero point, as the golden model pads"). The read port
holds its word while ``beats`` is not ready, so back-pressure stalls the generator and the read
together and no beat is lost or repeated. A word written in cycle ``W`` reaches a beat in ``W + 2``
at the earliest (address in ``W + 1``): the contract's ``agen_latency``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

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
            "r_addr": Out(ADDR_BITS), "r_en": Out(1), "r_data": In(data.ArrayLayout(signed(8), rows)),
            "beats": Out(stream.Signature(issue_layout(rows))),
        })

    @property
    def latency(self) -> int:
        """A descriptor's handshake to its first beat: ``Im2colAgen.latency`` + 1 (the read)."""
        return AGEN_LATENCY + 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.agen = agen = Im2colAgen()
        wiring.connect(m, wiring.flipped(self.desc), agen.desc)
        a = agen.beats.payload
        valid = Signal()
        pad, zp = Signal(), Signal(signed(16))
        flags = Signal(data.StructLayout({"nt": unsigned(12), "last_k": 1, "tile_last": 1, "last": 1}))
        advance = ~valid | self.beats.ready
        m.d.comb += [agen.beats.ready.eq(advance), self.r_en.eq(advance), self.r_addr.eq(a.addr)]
        with m.If(advance):
            m.d.sync += [valid.eq(agen.beats.valid), pad.eq(a.pad), zp.eq(a.zp),
                         flags.nt.eq(a.nt), flags.last_k.eq(a.last_k), flags.tile_last.eq(a.tile_last),
                         flags.last.eq(a.last)]
        b = self.beats.payload
        m.d.comb += [self.beats.valid.eq(valid), b.nt.eq(flags.nt), b.last_k.eq(flags.last_k),
                     b.tile_last.eq(flags.tile_last), b.last.eq(flags.last)]
        for i in range(self.rows):
            m.d.comb += b.data[i].eq(Mux(pad, zp, self.r_data[i]))
        return m
