"""A plain 8N1 UART (receiver and transmitter) for the board top's host link.

``divisor`` is clock cycles per bit (``round(clk_hz / baud)``, at least 4). The receiver
synchronizes ``rx`` through two flip-flops, finds the start bit's middle and samples every
``divisor`` cycles; a byte is presented for one cycle on ``data``/``valid`` (no back-pressure: the
link puts it straight into a FIFO); a bad stop bit sets ``frame_error`` and a byte that arrives
while ``ready`` is low (the FIFO is full) sets ``overflow`` for that cycle instead of vanishing.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError

__all__ = ["UARTRx", "UARTTx", "check_divisor"]


def check_divisor(divisor) -> None:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ConfigError(f"UART divisor (clock cycles per bit) must be an integer of at least 4, not {divisor!r}")


class UARTRx(wiring.Component):
    """``rx`` pin in; ``data`` with a one-cycle ``valid`` per received byte taken (``ready``); ``frame_error``
    and ``overflow`` (a byte arrived with ``ready`` low and was dropped), one cycle each."""

    def __init__(self, *, divisor: int):
        check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "ready": In(1, init=1), "data": Out(8), "valid": Out(1),
                          "frame_error": Out(1), "overflow": Out(1)})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self.divisor))
        timer_zero = Signal(init=1)         # timer == 0, kept beside it (no compare in front of the outputs)
        bit = Signal(range(10))
        shreg = Signal(8)

        def load(value):
            m.d.sync += [timer.eq(value), timer_zero.eq(value == 0)]

        def count():
            m.d.sync += [timer.eq(timer - 1), timer_zero.eq(timer == 1)]

        with m.FSM(name="rx"):
            with m.State("IDLE"), m.If(~rx):
                load(self.divisor // 2 - 1)
                m.next = "START"
            with m.State("START"):
                with m.If(~timer_zero):
                    count()
                with m.Elif(rx):                    # glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    load(self.divisor - 1)
                    m.d.sync += bit.eq(0)
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(~timer_zero):
                    count()
                with m.Else():
                    load(self.divisor - 1)
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(~timer_zero):
                    count()
                with m.Else():
                    m.d.comb += [self.data.eq(shreg), self.valid.eq(rx & self.ready), self.frame_error.eq(~rx),
                                 self.overflow.eq(rx & ~self.ready)]
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Bytes from the ``i`` stream out on the ``tx`` pin (``ready`` while idle)."""

    def __init__(self, *, divisor: int):
        check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"tx": Out(1, init=1), "i": In(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        timer_zero = Signal(init=1)         # timer == 0, kept beside it
        frame = Signal(10, init=0x3FF)
        left = Signal(range(11))
        busy = Signal()                     # left != 0, kept beside it: ``ready`` is a flip-flop
        m.d.comb += self.i.ready.eq(~busy)
        m.d.comb += self.tx.eq(frame[0])
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [frame.eq(Cat(0, self.i.payload, 1)), left.eq(10), busy.eq(1),
                         timer.eq(self.divisor - 1), timer_zero.eq(0)]
        with m.Elif(busy):
            with m.If(~timer_zero):
                m.d.sync += [timer.eq(timer - 1), timer_zero.eq(timer == 1)]
            with m.Else():
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), left.eq(left - 1), busy.eq(left != 1),
                             timer.eq(self.divisor - 1), timer_zero.eq(0)]
        return m
