"""The board top: the accelerator behind a UART host link (``qhw.fpga.protocol``).

``uart.rx`` -> ``UARTRx`` -> receive FIFO -> packet parser -> the accelerator's ``cmd``, ``params``,
``weights`` and ``act`` streams; the accelerator's ``out`` stream, the parser's credits and
replies -> frame sender -> ``UARTTx`` -> ``uart.tx``. On a board it uses the platform's
``uart`` resource and default clock; with ``platform=None`` (simulation) ``rx``/``tx`` are plain
signals of this object.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Elaboratable, Module, Signal
from amaranth.lib import io
from amaranth.lib.fifo import SyncFIFOBuffered

from ..errors import ConfigError
from ..hw.accel import Accelerator
from ..hw.config import ArrayConfig, check_config
from .protocol import INFO_BYTES, OPCODES, RESP, fifo_depth, info_bytes, packet_bytes
from .uart import UARTRx, UARTTx, check_divisor

__all__ = ["BoardTop"]

_IN_STREAMS = ("cmd", "params", "weights", "act")


class BoardTop(Elaboratable):
    """``Accelerator(config, family)`` with a UART link at ``baud`` (or an explicit ``divisor``: cycles per bit).

    ``family`` (``"ice40"``/``"ecp5"`` on a board, ``None`` in simulation) selects the DSP primitives of
    ``config.pe``."""

    def __init__(self, *, config: ArrayConfig, family: str | None = None, clk_hz: float | None = None,
                 baud: int = 115200, divisor: int | None = None):
        check_config(config)
        if divisor is None:
            if not clk_hz or not isinstance(baud, int) or baud <= 0:
                raise ConfigError(f"baud must be a positive integer, not {baud!r}")
            divisor = round(clk_hz / baud)
            if divisor >= 4 and abs(clk_hz / divisor - baud) / baud > 0.02:
                raise ConfigError(f"baud {baud} is more than 2% off any divisor of the {clk_hz / 1e6:g} MHz clock")
        check_divisor(divisor)
        info_bytes(config)      # checks rows/cols/max_k fit the info frame
        self.config, self.divisor = config, divisor
        self.accel = Accelerator(config=config, family=family)     # checks family against config.pe
        self.sizes = packet_bytes(config)
        self.fifo_depth = fifo_depth(config)
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        if platform is not None:
            uart = platform.request("uart", 0, dir="-")
            m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
            m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
            m.d.comb += [self.rx.eq(rx_buf.i), tx_buf.o.eq(self.tx)]
        m.submodules.accel = accel = self.accel
        m.submodules.urx = urx = UARTRx(divisor=self.divisor)
        m.submodules.utx = utx = UARTTx(divisor=self.divisor)
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx),
                     fifo.w_data.eq(urx.data), fifo.w_en.eq(urx.valid)]

        # ------------------------------------------------------------ parser
        max_bytes = max(self.sizes[s] for s in _IN_STREAMS)
        buf = Signal(8 * max_bytes)
        left = Signal(range(max_bytes + 1))
        sel = Signal(range(len(_IN_STREAMS)))
        credits = Signal(16)            # packets consumed, 'K' not yet sent
        credit_inc = Signal()
        info_req = Signal()             # sticky until the info frame is sent
        err_req = Signal()
        err_op = Signal(8)
        info_set, err_set = Signal(), Signal()
        with m.FSM(name="parser"):
            with m.State("IDLE"):
                m.d.comb += fifo.r_en.eq(1)
                with m.If(fifo.r_rdy):
                    op = fifo.r_data
                    with m.Switch(op):
                        for k, name in enumerate(_IN_STREAMS):
                            with m.Case(OPCODES[name]):
                                m.d.sync += [sel.eq(k), left.eq(self.sizes[name])]
                                m.next = "PAYLOAD"
                        with m.Case(OPCODES["info"]):
                            m.d.comb += info_set.eq(1)
                        with m.Default():
                            m.d.comb += err_set.eq(1)
                            m.d.sync += err_op.eq(op)
            with m.State("PAYLOAD"):
                m.d.comb += fifo.r_en.eq(1)
                with m.If(fifo.r_rdy):
                    m.d.sync += [buf.eq(Cat(buf[8:], fifo.r_data)), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "PUSH"
            with m.State("PUSH"):
                for k, name in enumerate(_IN_STREAMS):
                    port = getattr(accel, name)
                    # Bytes arrived in order into the top of ``buf``; the packet's first byte is at
                    # bit 8 * (max_bytes - size).
                    start = 8 * (max_bytes - self.sizes[name])
                    width = len(port.payload.as_value())
                    m.d.comb += port.payload.eq(buf[start:start + width])
                    with m.If(sel == k):
                        m.d.comb += port.valid.eq(1)
                        with m.If(port.ready):
                            m.d.comb += credit_inc.eq(1)
                            m.next = "IDLE"

        # ------------------------------------------------------------ frame sender
        out_bytes = self.sizes["out"]
        frame_bytes = 1 + max(out_bytes, INFO_BYTES)
        frame = Signal(8 * frame_bytes)
        flen = Signal(range(frame_bytes + 1))
        credit_dec = Signal()
        info_const = Const(int.from_bytes(bytes([RESP["info"]]) + info_bytes(c), "little"), 8 * (1 + INFO_BYTES))
        with m.If(flen == 0):
            with m.If(err_req):
                m.d.sync += [frame.eq(Cat(Const(RESP["error"], 8), err_op)), flen.eq(2), err_req.eq(0)]
            with m.Elif(info_req):
                m.d.sync += [frame.eq(info_const), flen.eq(1 + INFO_BYTES), info_req.eq(0)]
            with m.Elif(credits != 0):
                m.d.sync += [frame.eq(RESP["credit"]), flen.eq(1)]
                m.d.comb += credit_dec.eq(1)
            with m.Elif(accel.out.valid):
                m.d.comb += accel.out.ready.eq(1)
                m.d.sync += [frame.eq(Cat(Const(RESP["result"], 8), accel.out.payload.as_value())),
                             flen.eq(1 + out_bytes)]
        with m.Else():
            m.d.comb += [utx.i.valid.eq(1), utx.i.payload.eq(frame[:8])]
            with m.If(utx.i.ready):
                m.d.sync += [frame.eq(frame >> 8), flen.eq(flen - 1)]
        with m.If(info_set):
            m.d.sync += info_req.eq(1)
        with m.If(err_set):
            m.d.sync += err_req.eq(1)
        with m.If(credit_inc & ~credit_dec):
            m.d.sync += credits.eq(credits + 1)
        with m.Elif(credit_dec & ~credit_inc):
            m.d.sync += credits.eq(credits - 1)
        return m
