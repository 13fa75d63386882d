"""``OutputQueue``: the result FIFO between the never-stalling datapath and the ``out`` stream."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..contract import FIFO_LATENCY
from .config import ArrayConfig, check_config
from .layouts import out_layout

__all__ = ["OutputQueue"]

# ``SyncFIFOBuffered``: a write is readable two cycles later (its memory, then its output register).


class OutputQueue(wiring.Component):
    """``config.fifo_depth`` result rows, in order, with back-pressure on ``o``.

    ``i`` cannot wait (the datapath never stalls): a row written while the queue is full would be
    lost. The issuer's credits make that impossible; the queue only holds the rows. ``taken``
    pulses for each row that leaves on ``o`` (the issuer's credit return).
    """

    def __init__(self, *, config: ArrayConfig):
        check_config(config)
        self.config = config
        super().__init__({
            "i": In(stream.Signature(out_layout(config), always_ready=True)),
            "o": Out(stream.Signature(out_layout(config))),
            "taken": Out(1),
        })

    @property
    def depth(self) -> int:
        """Rows held: ``config.fifo_depth``."""
        return self.config.fifo_depth

    @property
    def latency(self) -> int:
        """2: a row on ``i`` to its ``o`` handshake when the queue is empty and ``o.ready`` is high."""
        return FIFO_LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=len(self.i.payload.as_value()), depth=self.depth)
        m.d.comb += [
            fifo.w_en.eq(self.i.valid), fifo.w_data.eq(self.i.payload),
            self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data), fifo.r_en.eq(self.o.ready),
            self.taken.eq(self.o.valid & self.o.ready),
        ]
        return m
