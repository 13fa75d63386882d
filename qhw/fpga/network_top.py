"""The network board top: the network engine (``qhw.hw.engine.NetworkEngine``) behind the host link.

Image in, logits out: the host loads the model once (``load`` frames, each 1 to ``frame_bytes / 4``
words of ``qhw.engine.load.load_words``), then per inference sends its input beats (``input``
frames, 1 to ``frame_bytes / rows`` beats of ``qhw.engine.load.input_beats``) and receives each
output beat as a ``result`` frame: ``rows`` bytes, then a byte whose bit 0 is the beat's ``last``.
A frame's units go to the engine one a cycle (``FrameUnpacker``); a stream's last frame is short
rather than padded, as a padding word would be read as the next load or the next image.

The engine's ``error`` is reported as ``rejected``; an ``input`` frame that arrives with no model
loaded is dropped and answered ``not_ready``; a reset frame resets the engine (the loaded model
survives: its memories are not reset and ``loaded`` is reset-less, so a reset mid-inference costs
no reload). On a board the top uses the platform's ``uart`` resource and default clock; with
``platform=None`` (simulation) ``rx``/``tx``/``tx_hold`` are plain signals (``qhw.fpga.board_top``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Elaboratable, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..engine.config import EngineConfig
from ..errors import ConfigError
from ..hw.engine.engine import NetworkEngine
from .board_top import connect_uart, frame_timeout, uart_divisor
from .link import HostLink, frame_layout
from .payload import DEFAULT_FRAME_BYTES, network_fifo_depth, network_info_bytes, result_bytes
from .protocol import OPCODES

__all__ = ["LOAD_SETTLE", "FrameUnpacker", "NetworkBoardTop"]

# Cycles after the load stream's last word before ``loaded`` is trusted: the LoadUnit steps through
# the sections left (empty ones one a cycle each), then ``done``, then the engine's flag. Measured
# on a header-only stream (all four sections empty, the longest case): ``loaded`` is high 6 cycles
# after the cycle of the last word's handshake; 6 here is that bound exactly (5 fails the test).
LOAD_SETTLE = 6


class FrameUnpacker(wiring.Component):
    """Accepted ``load``/``input`` frames (``frame``) to the engine's ``load`` words and ``i`` beats,
    one unit a cycle, low bytes first; the frame is released after its last unit.

    ``loaded`` is the engine's flag: ``input`` units wait until ``LOAD_SETTLE`` cycles after the last
    load word (the flag of a load just finished is then valid), and an ``input`` frame with the flag
    low is dropped with a one-cycle ``not_ready``."""

    def __init__(self, *, rows: int, max_payload: int):
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1 or rows & (rows - 1):
            raise ConfigError(f"rows must be a power of two, not {rows!r}")
        if not isinstance(max_payload, int) or isinstance(max_payload, bool) or max_payload < max(4, rows):
            raise ConfigError(f"max_payload must hold a load word and an input beat, not {max_payload!r}")
        self.rows, self.max_payload = rows, max_payload
        super().__init__({"frame": In(stream.Signature(frame_layout(max_payload))),
                          "load": Out(stream.Signature(32)), "i": Out(stream.Signature(8 * rows)),
                          "loaded": In(1), "not_ready": Out(1)})

    def elaborate(self, platform):
        m = Module()
        f = self.frame.payload
        is_load = f.op == OPCODES["load"]
        is_input = f.op == OPCODES["input"]
        idx = Signal(range(self.max_payload // 4 + 1))
        units = Signal(range(self.max_payload // 4 + 1))
        m.d.comb += units.eq(Mux(is_input, f.len >> exact_log2(self.rows), f.len >> 2))
        last = idx + 1 == units
        quiet = Signal(range(LOAD_SETTLE + 1), init=LOAD_SETTLE)
        settled = quiet == LOAD_SETTLE
        m.d.comb += [self.load.payload.eq(f.payload.word_select(idx, 32)),
                     self.i.payload.eq(f.payload.word_select(idx, 8 * self.rows)),
                     self.load.valid.eq(self.frame.valid & is_load),
                     self.i.valid.eq(self.frame.valid & is_input & settled & self.loaded)]
        step = (self.load.valid & self.load.ready) | (self.i.valid & self.i.ready)
        with m.If(step):
            m.d.sync += idx.eq(Mux(last, 0, idx + 1))
            with m.If(last):
                m.d.comb += self.frame.ready.eq(1)
        with m.If(self.frame.valid & is_input & settled & ~self.loaded):
            m.d.comb += [self.frame.ready.eq(1), self.not_ready.eq(1)]
        with m.If(self.load.valid & self.load.ready):
            m.d.sync += quiet.eq(0)
        with m.Elif(~settled):
            m.d.sync += quiet.eq(quiet + 1)
        return m


class NetworkBoardTop(Elaboratable):
    """``NetworkEngine(engine, family)`` with a UART link at ``baud`` (or an explicit ``divisor``:
    cycles per bit); ``frame_bytes``: the largest ``load``/``input`` payload (a multiple of 4 and of
    ``rows``); ``image``: a ``.qbin`` embedded in the memories (``qhw generate --embed``); ``uart``
    False (simulation only): ``rx_byte``/``tx_byte`` byte streams instead of the UART pins."""

    def __init__(self, *, engine: EngineConfig, family: str | None = None, clk_hz: float | None = None,
                 baud: int = 115200, divisor: int | None = None, frame_bytes: int = DEFAULT_FRAME_BYTES,
                 image: bytes | None = None, uart: bool = True):
        if not isinstance(engine, EngineConfig):
            raise ConfigError(f"engine must be an EngineConfig, not {engine!r}")
        rows = engine.array.rows
        if (not isinstance(frame_bytes, int) or isinstance(frame_bytes, bool) or not 0 < frame_bytes <= 1024
                or frame_bytes % max(4, rows)):
            raise ConfigError(f"frame_bytes must be a multiple of {max(4, rows)} in (0, 1024], not {frame_bytes!r}")
        divisor = uart_divisor(clk_hz, baud, divisor)
        self.engine_config, self.divisor, self.frame_bytes = engine, divisor, frame_bytes
        self.engine = NetworkEngine(engine=engine, family=family, image=image)
        try:
            info = network_info_bytes(engine, frame_bytes)
        except ValueError as e:
            raise ConfigError(f"this engine does not fit the link's info frame: {e}") from None
        self.fifo_depth = network_fifo_depth(frame_bytes)
        self.link = HostLink(lengths={"load": frame_bytes, "input": frame_bytes}, units={"load": 4, "input": rows},
                             result_bytes=result_bytes(engine), info=info, divisor=divisor,
                             fifo_depth=self.fifo_depth, timeout=frame_timeout(divisor, clk_hz), uart=uart)
        self.uart = uart
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)
        self.tx_hold = Signal()
        if not uart:                    # simulation: bytes as streams, one a cycle (``HostLink``)
            self.rx_byte, self.tx_byte = self.link.rx_byte, self.link.tx_byte

    def elaborate(self, platform):
        m = Module()
        connect_uart(m, platform, self)
        link, eng = self.link, self.engine
        m.submodules.link = link
        m.submodules.engine = ResetInserter(link.soft_reset)(eng)
        unpack = FrameUnpacker(rows=self.engine_config.array.rows, max_payload=link.max_payload)
        m.submodules.unpack = ResetInserter(link.soft_reset)(unpack)
        if self.uart:
            m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        m.d.comb += [link.tx_hold.eq(self.tx_hold), link.rejected.eq(eng.error), link.not_ready.eq(unpack.not_ready),
                     unpack.loaded.eq(eng.loaded)]
        wiring.connect(m, link.data, unpack.frame)
        wiring.connect(m, unpack.load, eng.load)
        wiring.connect(m, unpack.i, eng.i)
        o = eng.o
        m.d.comb += [link.result.payload.eq(Cat(o.payload.data, o.payload.last)), link.result.valid.eq(o.valid),
                     o.ready.eq(link.result.ready)]
        return m

