"""``CommandRegister``: accepts one GEMM command at a time, checks it, holds it while the GEMM runs."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract import MODE_CODES
from .config import ArrayConfig, check_config
from .const_compare import above
from .layouts import command_layout

__all__ = ["CommandRegister", "gemm_signature"]


def gemm_signature(config: ArrayConfig) -> wiring.Signature:
    """The running GEMM, as the command register drives it: ``start`` pulses in the cycle a good
    command is accepted, with that command on ``new`` (the blocks reset their tile counters and
    register their per-command terminal conditions from it); ``cmd`` holds the command from the
    next cycle until the next one."""
    return wiring.Signature({"start": Out(1), "new": Out(command_layout(config)), "cmd": Out(command_layout(config))})


class CommandRegister(wiring.Component):
    """One command at a time: ``cmd.ready`` is high while idle, from the second cycle a command is offered.

    A command the hardware cannot run is accepted and dropped, and ``error`` is set until the next
    command: M, K or N = 0 (M = 0 would never end a tile), K > ``max_k``, a ``mode`` that is not
    built, or M > ``acc_depth`` with K > ``rows`` (it would alias accumulator rows). A good command
    pulses ``gemm.start`` and raises ``busy``, which stays high until ``done`` (every tile loaded
    and issued, every result taken).
    """

    def __init__(self, *, config: ArrayConfig):
        check_config(config)
        self.config = config
        super().__init__({
            "cmd": In(stream.Signature(command_layout(config))),
            "gemm": Out(gemm_signature(config)),
            "done": In(1),
            "busy": Out(1),
            "error": Out(1),
        })

    @property
    def latency(self) -> int:
        """1: the command handshake to ``gemm.cmd`` (``gemm.start`` is in the handshake's cycle)."""
        return 1

    def elaborate(self, platform):
        m = Module()
        c = self.config
        new = self.cmd.payload
        built = 0
        for mode in c.rounding:
            built = built | (new.mode == MODE_CODES[mode])
        bad = Signal()
        if c.area_first:
            m.d.comb += bad.eq((new.m == 0) | (new.k == 0) | (new.n == 0) | (new.k > c.max_k) | ~built
                               | ((new.k > c.rows) & (new.m > c.acc_depth)))
        else:
            # (ECP5) Two checks of about 30 bits each, registered apart (``bad_r`` and ``bad2_r``),
            # their constant compares as logic instead of carry chains: one 47-input check through
            # carry chains was the 8x8 accelerator's late ``bad_r`` (6.55-6.70 ns).
            bad2 = Signal()
            m.d.comb += [bad.eq((new.m == 0) | (new.n == 0)),
                         bad2.eq((new.k == 0) | above(new.k, c.max_k) | ~built
                                 | (above(new.k, c.rows) & above(new.m, c.acc_depth)))]
        # The command is registered and checked a cycle before it is taken, so ``start`` (which
        # every block's counters load on) is one LUT from registers: a command is taken once it has
        # been offered for a cycle. What starts is always the registered, checked copy (the stream
        # rule makes it the payload; a producer that breaks the rule cannot start an unchecked
        # command). Measured from the handshake nothing changes; an idle register takes a newly
        # offered command a cycle later.
        seen = Signal()         # cmd.valid last cycle without a handshake: ``held`` is that payload
        bad_r = Signal()
        if c.area_first:
            # iCE40: no copy (a logic cell per bit); the stream rule (the payload holds while offered)
            # makes the payload in the handshake's cycle the one checked a cycle before.
            held = new
            m.d.sync += [seen.eq(self.cmd.valid & ~self.cmd.ready), bad_r.eq(bad)]
        else:
            held = Signal.like(new, name="held")
            bad2_r = Signal()
            m.d.sync += [seen.eq(self.cmd.valid & ~self.cmd.ready), held.eq(new), bad_r.eq(bad), bad2_r.eq(bad2)]
            bad_r = bad_r | bad2_r
        m.d.comb += self.cmd.ready.eq(~self.busy & seen)
        m.d.comb += [self.gemm.start.eq(self.cmd.valid & self.cmd.ready & ~bad_r), self.gemm.new.eq(held)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += self.error.eq(bad_r)
        with m.If(self.gemm.start):
            m.d.sync += [self.gemm.cmd.eq(held), self.busy.eq(1)]
        with m.Elif(self.busy & self.done):
            m.d.sync += self.busy.eq(0)
        return m
