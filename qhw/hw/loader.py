"""``Loader``: fills the double-buffered weight and requantization-parameter banks, one tile at a time."""

from __future__ import annotations

from dataclasses import replace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract import MAX_GEMM_N_BITS
from .command import gemm_signature
from .config import ArrayConfig, check_config
from .layouts import params_layout, weights_layout
from .replica import replica
from .tile_walk import FLIP, Steps, assign, k_steps_if, lookahead

__all__ = ["Loader", "bank_signature"]

_PARAM_GROUP = 72       # parameter bits per copy of the bank write enable


def bank_signature(*, ahead: bool = False) -> wiring.Signature:
    """The loader's side of the two banks: ``full[b]`` while bank ``b`` holds a tile not yet fully
    issued; the issuer ``release``s a bank (payload: its index) with the tile's last activation beat.
    ``ahead`` (``ArrayConfig.area_first``) adds ``full_ahead``, the value ``full`` takes at the next
    edge but for this cycle's ``release`` (the issuer's registered ``act.ready`` is decided from it)."""
    members = {"full": Out(2), "release": In(stream.Signature(1, always_ready=True))}
    if ahead:
        members["full_ahead"] = Out(2)
    return wiring.Signature(members)


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
            "banks": Out(bank_signature(ahead=c.area_first)),
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
        # drained[b] is ``drain[b] == 0``, kept as a register (decided from this cycle's count and
        # release) so the bank-free test in WAIT is a LUT of registers, not a compare behind a mux.
        drained = Signal(2, name="drained", init=0b11)
        for b in range(2):
            released = release.valid & (release.payload == b)
            with m.If(drain[b] != 0):
                m.d.sync += drain[b].eq(drain[b] - 1)
            m.d.sync += drained[b].eq(Mux(released, c.bank_drain_cycles == 0, drain[b] <= 1))
        # (iCE40) ``full`` is loaded from ``full_ahead`` (its next value but for the release), which the
        # issuer reads, and the release.
        full_ahead = self.banks.full_ahead if c.area_first else None
        if full_ahead is not None:
            m.d.comb += full_ahead.eq(full)
            m.d.sync += full.eq(full_ahead & ~Mux(release.valid, Cat(release.payload == 0, release.payload == 1), 0))
        with m.If(release.valid):
            if full_ahead is None:
                m.d.sync += [full.bit_select(release.payload, 1).eq(0), drain[release.payload].eq(c.bank_drain_cycles)]
            else:
                m.d.sync += drain[release.payload].eq(c.bank_drain_cycles)

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
        # Compares on registers that change only at a tile's end or while idle, read only at a later
        # tile's write or end: free-running registers, one cycle behind their inputs, which is never
        # visible (a WAIT cycle always lies between a change and the next write).
        k_le_2r = Signal(name="k_le_2r")            # k_left <= 2 * rows
        n_le_2c = Signal(name="n_le_2c")            # n_left <= 2 * cols
        k_more = Signal(R, name="k_more")           # bit r: k_left > r + 1 (row r + 1 is a weight row)
        m.d.sync += [k_le_2r.eq(k_left <= 2 * R), n_le_2c.eq(n_left <= 2 * C),
                     k_more.eq(Cat(k_left > r + 1 for r in range(R)))]
        new = self.gemm.new

        # Each counter's value while no command runs (``idle``) and when a row is written
        # (``steps``), written once for the FSM below and the look-ahead form that overrides it on
        # ECP5 (``qhw.hw.tile_walk``). Idle (in WAIT), the counters follow the offered command, as
        # in the issuer.
        def idle():
            return [(row, 0), (k_left, new.k), (last_k, new.k <= R), (k_one, new.k <= R), (real, 1),
                    (n_left, new.n), (last_n, new.n <= C)]

        def steps():
            return Steps(
                advance=[(row, row + 1), (real, k_more.bit_select(row, 1))],
                tile=[(row, 0), (real, 1), *([(full.bit_select(bank, 1), 1)] if full_ahead is None else []),
                      (bank, FLIP)],
                k_last=[(k_left, cmd.k), (last_k, k_one), (n_left, n_left - C), (last_n, n_le_2c)],
                k_next=[(k_left, k_left - R), (last_k, k_le_2r)])

        with m.If(self.gemm.start):
            m.d.sync += run.eq(1)
        with m.If(~run):
            m.d.sync += assign(idle())

        # The parameter beat lands in its bank a cycle after its handshake (the bank is being filled:
        # its rows follow), from registers: the write enable reaches every parameter bit of the bank
        # (552 at 8x8), so it leaves flip-flops, a copy per bank and group of _PARAM_GROUP bits.
        # On iCE40 (``area_first``) the beat is written straight from the stream: logic cells, not
        # routes, are what runs out there.
        take = Signal()
        if not c.area_first:
            p_data = Signal.like(self.params.payload, name="params_r", reset_less=True)
            m.d.sync += p_data.eq(self.params.payload)
            width = len(p_data.as_value())
            for b in range(2):
                for lo in range(0, width, _PARAM_GROUP):
                    hi = min(lo + _PARAM_GROUP, width)
                    we = replica(Signal(name="params_we"), name=f"params_we{b}_{lo // _PARAM_GROUP}")
                    m.d.sync += we.eq(take & (bank == b))
                    with m.If(we):
                        m.d.sync += self.param_banks[b].as_value()[lo:hi].eq(p_data.as_value()[lo:hi])

        # The weight-row write leaves through registers: its one-hot enable, bank and data fan out
        # to every PE, so no logic may sit between them and the weight registers.
        write = Signal()
        zero = Signal()
        # ``row == R - 1`` as a register decided a cycle ahead. ECP5: the tile end's updates are
        # also selected last (below): from the state register through the tile end's fan-out and the
        # mux trees behind it the loader's ``busy``/``last_n``/``n_left`` were 4-5 LUT levels.
        # iCE40 (``area_first``): the register alone, in the ``If`` form (the UP5K board top's late
        # path went ``weights.valid`` -> ``write`` -> the row decode -> ``last_k`` -> ``n_left``'s enable).
        row_last = Signal(name="row_last", init=R == 1)
        if c.area_first:
            with m.If(~run):
                m.d.sync += row_last.eq(R == 1)
        m.d.sync += [self.w_bank.eq(bank), self.w_we.eq(Const(0, R) | (write << row)),
                     self.w_data.eq(Mux(zero, 0, self.weights.payload.as_value()))]
        with m.FSM(name="loader"):
            with m.State("WAIT"):
                bank_free = run & ~full.bit_select(bank, 1) & drained.bit_select(bank, 1)
                with m.If(bank_free & last_k):
                    m.next = "PARAMS"
                with m.Elif(bank_free):
                    m.next = "ROWS"
            with m.State("PARAMS"):
                m.d.comb += self.params.ready.eq(1)
                with m.If(self.params.valid):
                    m.d.comb += take.eq(1)
                    if c.area_first:
                        m.d.sync += self.param_banks[bank].eq(self.params.payload)
                    m.next = "ROWS"
            with m.State("ROWS"):
                with m.If(real):
                    m.d.comb += [self.weights.ready.eq(1), write.eq(self.weights.valid)]
                with m.Else():
                    m.d.comb += [zero.eq(1), write.eq(1)]   # zero-fill rows past K
                walk = steps()
                with m.If(write):
                    m.d.sync += assign(walk.advance)
                    if c.area_first:
                        m.d.sync += row_last.eq(row == R - 2)
                    with m.If(row_last):
                        m.d.sync += assign(walk.tile)
                        if full_ahead is not None:
                            m.d.comb += full_ahead.bit_select(bank, 1).eq(1)
                        if c.area_first:
                            m.d.sync += row_last.eq(R == 1)
                        k_steps_if(m, walk, last_k=last_k, last_n=last_n, run=run)
                        m.next = "WAIT"
        if not c.area_first:
            # Override the FSM's K and N walk with the same steps, a row's ``write`` selecting last
            # (it is only ever set in ROWS, so ``run`` is high with it); the row, its zero fill and
            # the bank stay the FSM's.
            end_k = row_last & last_k
            m.d.sync += row_last.eq(Mux(write, Mux(row_last, R == 1, row == R - 2), Mux(run, row_last, R == 1)))
            lookahead(m, replace(steps(), advance=(), tile=()), advance=write, run=run, start=self.gemm.start,
                      loads=idle(), tile_end=row_last, end_k=end_k, end=end_k & last_n, last_k=last_k)
        return m
