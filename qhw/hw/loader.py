"""``Loader``: fills the double-buffered weight and requantization-parameter banks, one tile at a time."""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract import MAX_GEMM_N_BITS
from .command import gemm_signature
from .config import ArrayConfig, check_config
from .layouts import params_layout, weights_layout

__all__ = ["Loader", "bank_signature"]


def bank_signature() -> wiring.Signature:
    """The loader's side of the two banks: ``full[b]`` while bank ``b`` holds a tile not yet fully
    issued; the issuer ``release``s a bank (payload: its index) with the tile's last activation beat."""
    return wiring.Signature({"full": Out(2), "release": In(stream.Signature(1, always_ready=True))})


class Loader(wiring.Component):
    """Writes the weight rows of each tile into the array's free bank, and the requantization
    parameters of each N tile into the parameter bank of the same index.

    Tiles come in the issuer's order (N tiles outer, K tiles inner); the banks alternate. A bank
    is free once its tile has been released and ``config.bank_drain_cycles`` have passed, so its
    last wavefront has left the array and read its parameters. For each tile the loader then takes
    one ``params`` beat (last K tile of an N tile only) and ``min(rows, K - k0)`` ``weights`` rows,
    and writes zero rows past K (one row per cycle, ``w_we`` one-hot).

    ``w_we``, ``w_bank`` and ``w_data`` drive the array's weight-write ports from registers (a row
    is written a cycle after its ``weights`` handshake; the array needs a tile's last row only
    after its first activation, two cycles after ``full``); ``param_banks`` is
    read by the requantization bank. ``busy`` is high from ``gemm.start`` until the last tile is loaded.
    """

    def __init__(self, *, config: ArrayConfig):
        check_config(config)
        self.config = config
        c = config
        super().__init__({
            "gemm": In(gemm_signature(c)),
            "weights": In(stream.Signature(weights_layout(c))),
            "params": In(stream.Signature(params_layout(c))),
            "banks": Out(bank_signature()),
            "w_we": Out(c.rows),
            "w_bank": Out(1),
            "w_data": Out(data.ArrayLayout(signed(c.weight_bits), c.cols)),
            "param_banks": Out(data.ArrayLayout(params_layout(c), 2)),
            "busy": Out(1),
        })

    @property
    def latency(self) -> int:
        """Cycles from a bank becoming free to the tile in it being ``full``, with no stream stalling:
        one to see the bank free, the parameter beat (last K tile only), then ``rows`` rows; at most
        ``1 + config.weight_load_cycles``."""
        return 1 + self.config.weight_load_cycles

    def elaborate(self, platform):
        m = Module()
        c = self.config
        R, C = c.rows, c.cols
        cmd = self.gemm.cmd
        full = self.banks.full
        release = self.banks.release

        # Bank b is reusable ``bank_drain_cycles`` after its release (the count starts at the release).
        drain = Array(Signal(range(c.bank_drain_cycles + 1), name=f"drain{b}") for b in range(2))
        # ``drained[b]`` is ``drain[b] == 0``, a register decided a cycle ahead: the bank-free test
        # in front of the state register is then one multiplexer of flip-flops, not a counter compare.
        drained = Array(Signal(init=1, name=f"drained{b}") for b in range(2))
        for b in range(2):
            with m.If(drain[b] != 0):
                m.d.sync += [drain[b].eq(drain[b] - 1), drained[b].eq(drain[b] == 1)]
        with m.If(release.valid):
            m.d.sync += [full.bit_select(release.payload, 1).eq(0), drain[release.payload].eq(c.bank_drain_cycles),
                         drained[release.payload].eq(c.bank_drain_cycles == 0)]

        run = self.busy             # tiles left in the current command
        bank = Signal()             # the bank the next tile goes to
        row = Signal(range(R))
        # Terminal conditions as registers decided a cycle ahead (as in the issuer).
        k_left = Signal(range(c.max_k + 1))         # K - k0: weight rows from this tile on
        last_k = Signal()                           # k_left <= rows
        k_one = Signal()                            # K <= rows
        real = Signal()                             # row < k_left: a weight row, not a zero row
        n_left = Signal(unsigned(MAX_GEMM_N_BITS))  # N - n0
        last_n = Signal()                           # n_left <= cols
        new = self.gemm.new
        with m.If(self.gemm.start):
            m.d.sync += [run.eq(1), row.eq(0), k_left.eq(new.k), last_k.eq(new.k <= R), k_one.eq(new.k <= R),
                         real.eq(1), n_left.eq(new.n), last_n.eq(new.n <= C)]

        # The weight-row write leaves through registers: its one-hot enable, bank and data fan out
        # to every PE, so no logic may sit between them and the weight registers.
        write = Signal()
        zero = Signal()
        m.d.sync += [self.w_bank.eq(bank), self.w_we.eq(Const(0, R) | (write << row)),
                     self.w_data.eq(Mux(zero, 0, self.weights.payload.as_value()))]
        with m.FSM(name="loader"):
            with m.State("WAIT"):
                bank_free = run & ~full.bit_select(bank, 1) & drained[bank]
                with m.If(bank_free & last_k):
                    m.next = "PARAMS"
                with m.Elif(bank_free):
                    m.next = "ROWS"
            with m.State("PARAMS"):
                m.d.comb += self.params.ready.eq(1)
                with m.If(self.params.valid):
                    m.d.sync += self.param_banks[bank].eq(self.params.payload)
                    m.next = "ROWS"
            with m.State("ROWS"):
                with m.If(real):
                    m.d.comb += [self.weights.ready.eq(1), write.eq(self.weights.valid)]
                with m.Else():
                    m.d.comb += [zero.eq(1), write.eq(1)]   # zero-fill rows past K
                with m.If(write):
                    m.d.sync += [row.eq(row + 1), real.eq(k_left > row + 1)]
                    with m.If(row == R - 1):
                        m.d.sync += [row.eq(0), real.eq(1), full.bit_select(bank, 1).eq(1), bank.eq(~bank)]
                        with m.If(last_k):
                            m.d.sync += [k_left.eq(cmd.k), last_k.eq(k_one),
                                         n_left.eq(n_left - C), last_n.eq(n_left <= 2 * C)]
                            with m.If(last_n):
                                m.d.sync += run.eq(0)
                        with m.Else():
                            m.d.sync += [k_left.eq(k_left - R), last_k.eq(k_left <= 2 * R)]
                        m.next = "WAIT"
        return m
