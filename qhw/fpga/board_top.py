"""The board top: the GEMM accelerator behind the host link (``qhw.fpga.link``, ``qhw.fpga.protocol``).

``HostLink`` delivers accepted ``cmd``/``params``/``weights``/``act`` frames; this top routes each to
the accelerator stream of its opcode, returns the accelerator's ``out`` beats as results, reports
its ``error`` as a ``rejected`` error frame, and resets it on a reset frame. On a board it uses the
platform's ``uart`` resource and default clock; with ``platform=None`` (simulation) ``rx``/``tx``
(and ``tx_hold``, the tests' stalled output consumer) are plain signals of this object.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Elaboratable, Module, ResetInserter, Signal
from amaranth.lib import io

from ..errors import ConfigError
from ..hw.accel import Accelerator
from ..hw.config import ArrayConfig, check_config
from .link import HostLink
from .payload import board_info_bytes, fifo_depth, packet_bytes
from .protocol import ACCEL_STREAMS, OPCODES
from .uart import check_divisor

__all__ = ["BoardTop", "connect_uart", "frame_timeout", "uart_divisor"]


def frame_timeout(divisor: int, clk_hz: float | None) -> int:
    """Idle cycles before a partial frame is abandoned: 64 byte times, and at least 20 ms on a board
    (a host's USB write may pause between packets)."""
    cycles = 64 * 10 * divisor
    return max(cycles, int(0.02 * clk_hz)) if clk_hz else cycles


def uart_divisor(clk_hz: float | None, baud, divisor: int | None) -> int:
    """Clock cycles per UART bit: ``divisor`` if given, else the clock over ``baud`` (within 2 %)."""
    if divisor is None:
        if not clk_hz or not isinstance(baud, int) or baud <= 0:
            raise ConfigError(f"baud must be a positive integer, not {baud!r}")
        divisor = round(clk_hz / baud)
        if divisor >= 4 and abs(clk_hz / divisor - baud) / baud > 0.02:
            raise ConfigError(f"baud {baud} is more than 2% off any divisor of the {clk_hz / 1e6:g} MHz clock")
    check_divisor(divisor)
    return divisor


def connect_uart(m: Module, platform, top) -> None:
    """On a board, ``top.rx``/``top.tx`` to the platform's first ``uart`` resource; in simulation
    (``platform`` None) they stay plain signals."""
    if platform is not None:
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [top.rx.eq(rx_buf.i), tx_buf.o.eq(top.tx)]


class BoardTop(Elaboratable):
    """``Accelerator(config, family)`` with a UART link at ``baud`` (or an explicit ``divisor``: cycles per bit).

    ``family`` (``"ice40"``/``"ecp5"`` on a board, ``None`` in simulation) selects the DSP primitives of
    ``config.pe``; ``uart`` False (simulation and proofs only): ``rx_byte``/``tx_byte`` byte streams
    instead of the UART pins (``HostLink``)."""

    def __init__(self, *, config: ArrayConfig, family: str | None = None, clk_hz: float | None = None,
                 baud: int = 115200, divisor: int | None = None, uart: bool = True):
        check_config(config)
        divisor = uart_divisor(clk_hz, baud, divisor)
        try:
            info = board_info_bytes(config)
        except ValueError as e:
            raise ConfigError(f"this array does not fit the link's info frame: {e}") from None
        self.config, self.divisor = config, divisor
        self.accel = Accelerator(config=config, family=family)     # checks family against config.pe
        self.sizes = packet_bytes(config)
        self.fifo_depth = fifo_depth(config)
        self.link = HostLink(lengths={s: self.sizes[s] for s in ACCEL_STREAMS}, result_bytes=self.sizes["out"],
                             info=info, divisor=divisor, fifo_depth=self.fifo_depth,
                             timeout=frame_timeout(divisor, clk_hz), uart=uart)
        self.uart = uart
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)
        self.tx_hold = Signal()
        if not uart:
            self.rx_byte, self.tx_byte = self.link.rx_byte, self.link.tx_byte

    def offered_lemma(self) -> list:
        """The boundary's invariant, for the board top's proof (after ``elaborate``): at most one
        stream is offered, and only with the link's frame behind it (``link.data.valid``)."""
        from amaranth.hdl import Assert

        o = self.offered
        return [Assert((o & (o - 1)) == 0), Assert(~o.any() | self.link.data.valid)]

    def elaborate(self, platform):
        m = Module()
        connect_uart(m, platform, self)
        link = self.link
        m.submodules.link = link
        m.submodules.accel = ResetInserter(link.soft_reset)(self.accel)
        if self.uart:
            m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        m.d.comb += [link.tx_hold.eq(self.tx_hold), link.rejected.eq(self.accel.error)]
        # A registered boundary between the link and the accelerator (on the UP5K the link's frame
        # decode and the accelerator's handshakes met across a full chip): the frame's opcode is decoded
        # into ``offered`` (one-hot, the stream the frame goes to) a cycle after the link offers it,
        # loaded only while it holds none, so each stream's ``valid`` is a flip-flop. It is cleared
        # with the link's ``data.valid`` (the frame taken, or the link's reset), so a set bit always
        # has the link's frame behind it (``offered_lemma``, proven with the streams' rule). The
        # result passes one register whose ``ready`` to the output queue is that register's
        # emptiness. A cycle per frame and per result; a frame takes at least 10 UART bit times a byte.
        frame = link.data.payload
        offered = Signal(len(ACCEL_STREAMS), name="offered")
        self.offered = offered
        taken = Signal()
        for i, name in enumerate(ACCEL_STREAMS):
            port = getattr(self.accel, name)
            width = len(port.payload.as_value())
            m.d.comb += [port.payload.eq(frame.payload[:width]), port.valid.eq(offered[i])]
            with m.If(offered[i]):
                m.d.comb += [link.data.ready.eq(port.ready), taken.eq(port.ready)]
        with m.If(taken | link.soft_reset):
            m.d.sync += offered.eq(0)
        with m.Elif(~offered.any() & link.data.valid):
            m.d.sync += offered.eq(Cat(frame.op == OPCODES[name] for name in ACCEL_STREAMS))
        out = self.accel.out
        result = Signal.like(out.payload, name="result", reset_less=True)
        result_valid = Signal(name="result_valid")
        m.d.comb += [out.ready.eq(~result_valid), link.result.payload.eq(result.as_value()),
                     link.result.valid.eq(result_valid)]
        with m.If(link.soft_reset):                # a result from before the reset is dropped, as the queue's
            m.d.sync += result_valid.eq(0)
        with m.Elif(~result_valid):
            m.d.sync += result_valid.eq(out.valid)
        with m.Elif(link.result.ready):
            m.d.sync += result_valid.eq(0)
        with m.If(~result_valid):
            m.d.sync += result.eq(out.payload)
        return m
