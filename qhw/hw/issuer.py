"""``Issuer``: admits activation beats into the array, one per cycle, within its credits."""

from __future__ import annotations

import operator

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract import GEMM_M_BITS, ISSUE_LATENCY, MAX_GEMM_N_BITS
from .command import gemm_signature
from .config import ArrayConfig, check_config
from .const_compare import above
from .layouts import act_layout
from .loader import bank_signature
from .tile_walk import FLIP, Steps, assign, k_steps_if, lookahead, next_value

__all__ = ["Issuer", "tag_layout"]


def tag_layout() -> data.StructLayout:
    """What travels beside an activation beat: its GEMM row ``m``, whether it belongs to the first
    and the last K tile, and its weight/parameter bank."""
    return data.StructLayout({"m": unsigned(GEMM_M_BITS), "first": 1, "last": 1, "bank": 1})


def _at_most(value, bound: int):
    """``value <= bound`` as logic (``above``), for the look-ahead form."""
    return ~above(value, bound)


class Issuer(wiring.Component):
    """Accepts the ``act`` beats of each tile of a loaded bank and registers them for the array.

    The issue register drives ``a_in``/``bank_in`` (the array samples it every cycle) and ``tag``,
    whose ``valid`` marks the cycles that carry a beat. The datapath behind it never stalls, so
    back-pressure is handled here, by credits: a beat of the last K tile (it will produce a result
    row) is accepted only while fewer than ``config.fifo_depth`` result rows are outstanding
    (issued and not yet ``taken`` from the output queue), so every row in flight has a queue slot.
    With shared requantization lanes such beats are also spaced ``config.requant_passes`` cycles
    apart. A tile's last beat ``release``s its bank to the loader.

    ``idle`` is high once every tile of the command is issued and every result row taken.

    For the clock, ``act.ready`` and the counters' enables depend on registers only: the tile's
    terminal conditions (last row, last K tile, last N tile) and the credit check are registers
    decided a cycle ahead, from ``gemm.new`` at the start and from down-counters afterwards.
    """

    def __init__(self, *, config: ArrayConfig):
        check_config(config)
        self.config = config
        c = config
        super().__init__({
            "gemm": In(gemm_signature(c)),
            "act": In(stream.Signature(act_layout(c))),
            "banks": In(bank_signature(ahead=c.area_first)),
            "taken": In(1),
            "a_in": Out(act_layout(c)),
            "bank_in": Out(1),
            "tag": Out(stream.Signature(tag_layout(), always_ready=True)),
            "idle": Out(1),
        })

    @property
    def latency(self) -> int:
        """1: an ``act`` handshake to its beat on ``a_in`` and ``tag`` (the issue register)."""
        return ISSUE_LATENCY

    def elaborate(self, platform):
        m = Module()
        c = self.config
        R, C = c.rows, c.cols
        cmd, new = self.gemm.cmd, self.gemm.new
        full = self.banks.full

        # Every terminal condition is a register decided a cycle ahead (from ``gemm.new`` at the
        # start, else from the counters' registered values), so ``act.ready`` and the counters'
        # enables are a LUT or two from registers instead of an adder and a compare.
        run = Signal()              # tiles left to issue in the current command
        bank = Signal()
        row = Signal(unsigned(GEMM_M_BITS))         # the beat's GEMM row (the tag's ``m``)
        rows_left = Signal(unsigned(GEMM_M_BITS))   # M - 1 - row
        last_row = Signal()                         # row == M - 1
        m1 = Signal(unsigned(GEMM_M_BITS))          # the command's M - 1, and whether M == 1
        m_one = Signal()
        k_left = Signal(range(c.max_k + 1))         # K - k0: weight rows from this tile on
        last_k = Signal()                           # k_left <= rows: the tile's rows produce results
        first_k = Signal()                          # k0 == 0
        k_one = Signal()                            # K <= rows
        n_left = Signal(unsigned(MAX_GEMM_N_BITS))  # N - n0
        last_n = Signal()                           # n_left <= cols

        # Each counter's value while no command runs (``idle``) and on an issued beat (``steps``),
        # written once for the two forms below (``qhw.hw.tile_walk``; ``le(x, k)`` is the form's
        # ``x <= k`` for a constant ``k``). Idle, the counters follow the offered command (``new``),
        # so at ``start`` they hold its values, loaded under a register (``run``) instead of
        # ``start``'s handshake logic.
        def idle(le):
            return [(row, 0), (rows_left, new.m - 1), (last_row, new.m == 1), (m1, new.m - 1), (m_one, new.m == 1),
                    (k_left, new.k), (last_k, le(new.k, R)), (first_k, 1), (k_one, le(new.k, R)),
                    (n_left, new.n), (last_n, le(new.n, C))]

        def steps(le):
            return Steps(
                advance=[(row, row + 1), (rows_left, rows_left - 1), (last_row, rows_left == 1)],
                tile=[(row, 0), (rows_left, m1), (last_row, m_one), (bank, FLIP)],
                k_last=[(k_left, cmd.k), (last_k, k_one), (first_k, 1), (n_left, n_left - C),
                        (last_n, le(n_left, 2 * C))],
                k_next=[(k_left, k_left - R), (last_k, le(k_left, 2 * R)), (first_k, 0)])

        with m.If(self.gemm.start):
            m.d.sync += run.eq(1)
        with m.If(~run):
            m.d.sync += assign(idle(operator.le))

        # Credits: ``may_produce`` is ``outstanding < fifo_depth`` for the coming cycle, registered
        # (each of this cycle's three outcomes compared on the register, then selected).
        outstanding = Signal(range(c.fifo_depth + 1))   # result rows issued and not yet taken
        may_produce = Signal(init=1)
        credit = may_produce
        gap_zero_after = None       # ``gap_zero``'s next value, given whether this cycle pushes
        if c.requant_passes > 1:
            # Shared lanes take ``requant_passes`` cycles per result row: space its beats as much.
            gap = Signal(range(c.requant_passes))
            gap_zero = Signal(init=1)           # gap == 0, decided a cycle ahead like the other conditions
            credit = may_produce & gap_zero

            def gap_zero_after(push):
                return Mux(push, 0, Mux(gap != 0, gap == 1, gap_zero))

            push = self.act.valid & self.act.ready & last_k
            m.d.sync += gap_zero.eq(gap_zero_after(push))
            with m.If(push):
                m.d.sync += gap.eq(c.requant_passes - 1)
            with m.Elif(gap != 0):
                m.d.sync += gap.eq(gap - 1)
        # (ECP5, one lane per column) ``gate`` is ``run & (credit | ~last_k)`` kept as a register
        # (its next value is theirs), so the handshake is one LUT of registers.
        # (iCE40) ``act.ready`` itself is a register, ``ready_r``, loaded with its next value (below):
        # on the UP5K board top ``bank`` -> ``full[bank]`` -> ``act.ready`` -> the link's stream
        # registers was three LUT levels, and every counter enable of the issuer sat behind it.
        gate = Signal(name="gate") if not c.area_first and c.requant_passes == 1 else None
        ready_r = Signal(name="ready_r") if c.area_first else None
        if ready_r is not None:
            m.d.comb += self.act.ready.eq(ready_r)
        elif gate is None:
            m.d.comb += self.act.ready.eq(run & full.bit_select(bank, 1) & (credit | ~last_k))
        else:
            m.d.comb += self.act.ready.eq(gate & full.bit_select(bank, 1))
        issue = Signal()
        m.d.comb += issue.eq(self.act.valid & self.act.ready)

        # The issue register.
        m.d.sync += [
            self.tag.valid.eq(issue), self.tag.payload.m.eq(row), self.tag.payload.first.eq(first_k),
            self.tag.payload.last.eq(last_k), self.tag.payload.bank.eq(bank), self.a_in.eq(self.act.payload),
        ]
        m.d.comb += self.bank_in.eq(self.tag.payload.bank)

        m.d.comb += self.banks.release.payload.eq(bank)
        if not c.area_first:
            # (ECP5) Every register's next value with and without a beat, from registers, then one
            # select by ``issue``: the beat's handshake decides last instead of first (through the
            # tile end ``issue & last_row`` and the mux trees behind it it was 5-6 LUT levels,
            # the 8x8 accelerator's late issuer paths). Constant compares are logic (``above``).
            m.d.comb += self.banks.release.valid.eq(issue & last_row)
            end_k = last_row & last_k
            end = end_k & last_n
            nxt = lookahead(m, steps(_at_most), advance=issue, run=run, start=self.gemm.start, loads=idle(_at_most),
                            tile_end=last_row, end_k=end_k, end=end, last_k=last_k)
            taken = self.taken
            push_next = Mux(taken, outstanding, outstanding + 1)         # a beat of the last K tile
            hold_next = Mux(taken, outstanding - 1, outstanding)
            push_may = ~Mux(taken, above(outstanding, c.fifo_depth - 1), above(outstanding, c.fifo_depth - 2))
            hold_may = ~Mux(taken, above(outstanding, c.fifo_depth), above(outstanding, c.fifo_depth - 1))
            m.d.sync += [outstanding.eq(Mux(issue & last_k, push_next, hold_next)),
                         may_produce.eq(Mux(issue & last_k, push_may, hold_may))]
            if gate is not None:
                (last_k_beat, last_k_idle) = nxt[last_k.name]
                m.d.sync += gate.eq(Mux(issue, ~end & (Mux(last_k, push_may, hold_may) | ~last_k_beat),
                                        (run | self.gemm.start) & (hold_may | ~last_k_idle)))
            m.d.comb += self.idle.eq(~run & (outstanding == 0))
            return m
        # (iCE40) The same steps as ``If`` statements under the beat's handshake.
        walk = steps(operator.le)
        with m.If(issue):
            m.d.sync += assign(walk.advance)
            with m.If(last_row):
                m.d.comb += self.banks.release.valid.eq(1)
                m.d.sync += assign(walk.tile)
                k_steps_if(m, walk, last_k=last_k, last_n=last_n, run=run)

        taken = self.taken

        def may_produce_after(push):
            """``may_produce``'s next value, given whether this cycle pushes (a beat of the last K tile)."""
            return Mux(push, Mux(taken, outstanding < c.fifo_depth, outstanding < c.fifo_depth - 1),
                       Mux(taken, outstanding <= c.fifo_depth, outstanding < c.fifo_depth))

        def credit_after(push):
            return may_produce_after(push) & (1 if gap_zero_after is None else gap_zero_after(push))

        push = issue & last_k
        m.d.sync += may_produce.eq(may_produce_after(push))
        with m.If(push & ~taken):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(taken & ~push):
            m.d.sync += outstanding.eq(outstanding - 1)
        m.d.comb += self.idle.eq(~run & (outstanding == 0))

        # ``ready_r``: ``run & full[bank] & (credit | ~last_k)`` of the next cycle, from each one's next
        # value, after a beat and without one, selected last by the beat (as ``lookahead``): the
        # handshake is one LUT from ``act.valid`` to ``ready_r``. ``last_k``'s next values come from
        # the same steps (a beat implies ``run``, so the ``If`` form's order and the advance-first
        # select agree); ``full_ahead`` is ``full``'s next value but for this cycle's release, which
        # only ever frees the bank a beat leaves (``bank`` at its tile's last row).
        last_k_beat, last_k_idle = next_value(steps(operator.le), last_k, loads=idle(operator.le), run=run,
                                              tile_end=last_row, end_k=last_row & last_k, last_k=last_k)
        ahead = self.banks.full_ahead
        ready_beat = (~(last_row & last_k & last_n) & ahead.bit_select(bank ^ last_row, 1)
                      & (credit_after(last_k) | ~last_k_beat))
        ready_idle = (run | self.gemm.start) & ahead.bit_select(bank, 1) & (credit_after(0) | ~last_k_idle)
        m.d.sync += ready_r.eq(Mux(issue, ready_beat, ready_idle))
        return m
