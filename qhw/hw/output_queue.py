"""``OutputQueue``: the result FIFO between the never-stalling datapath and the ``out`` stream."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..contract import FIFO_LATENCY
from .config import ArrayConfig, check_config
from .layouts import out_layout

__all__ = ["OutputQueue"]


class OutputQueue(wiring.Component):
    """``config.fifo_depth`` result rows, in order, with back-pressure on ``o``.

    ``i`` cannot wait (the datapath never stalls): a row written while the queue is full would be
    lost. The issuer's credits make that impossible, so the queue keeps no level and no ``full``
    (an up/down level counter between ``o.ready`` and the memory's enable set the whole
    accelerator's clock): a memory, its write and read pointers, and the read port's data register
    as the output register (``o.valid`` is a register). The read pointer's successor is kept ready,
    so ``o.ready`` only selects which register the pointer loads. ``taken`` pulses for each row that
    leaves on ``o`` (the issuer's credit return).
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
        """2: a row on ``i`` to its ``o`` handshake when the queue is empty and ``o.ready`` is high
        (the memory write, then the read into the output register)."""
        return FIFO_LATENCY

    def elaborate(self, platform):
        m = Module()
        # One slot more than the rows it can hold, so ``wp == rp`` only ever means empty.
        slots = self.depth + 1
        m.submodules.mem = mem = Memory(shape=out_layout(self.config), depth=slots, init=[])
        wr = mem.write_port()
        rd = mem.read_port()
        wp = Signal(range(slots), name="wp")
        rp = Signal(range(slots), name="rp")
        rp_next = Signal(range(slots), name="rp_next", init=1)     # rp + 1, wrapped, a cycle ahead
        m.d.comb += [wr.addr.eq(wp), wr.data.eq(self.i.payload), wr.en.eq(self.i.valid)]
        with m.If(self.i.valid):
            m.d.sync += wp.eq(Mux(wp == slots - 1, 0, wp + 1))

        # Read when a row waits in memory and the output register is empty or being taken.
        read = Signal()
        m.d.comb += [
            self.taken.eq(self.o.valid & self.o.ready),
            read.eq((wp != rp) & (~self.o.valid | self.o.ready)),
            rd.addr.eq(rp), rd.en.eq(read),
            self.o.payload.eq(rd.data),
        ]
        with m.If(read):
            m.d.sync += [rp.eq(rp_next), rp_next.eq(Mux(rp_next == slots - 1, 0, rp_next + 1)),
                         self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
