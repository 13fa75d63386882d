"""The stream rule on the board tops' internal streams: the host link to the accelerator or the engine.

``BoardStreamRules`` wraps an unchanged board top (``qhw.fpga.board_top.BoardTop``: the GEMM
accelerator behind the link; ``qhw.fpga.network_top.NetworkBoardTop``: the network engine behind it)
and asserts, on every stream that joins the link to the payload, the rule the payload's own proofs
assume: once ``valid`` is high it stays high with a stable payload until ``ready``. The producer's
side is asserted, the consumer is the real one (its ``ready`` whatever it does). The tops are built
with ``uart=False``: the link's receive FIFO takes a free byte on any cycle (``rx_byte``), a superset
of what the UART receiver can deliver (a byte every ``10 * divisor`` cycles at most), and everything
after the FIFO is the board's logic unchanged (the receiver's framing-error flag, absent here, only
raises an error reply: it reaches none of the streams checked). ``tx_byte.ready``, ``tx_hold`` and the
reset are free on every cycle. A link reset frame (``soft_reset``) withdraws an offered frame by
design (the payload is reset in the same cycle), as ``restart`` does in the sequencer proof.

The network engine's datapath is cut (``board_cut_points``: the data the control never looks at
become free values, an over-approximation, docs/verification.md) so the solver sees its control.
"""

from __future__ import annotations

from amaranth.hdl import Assert, ClockDomain, Elaboratable, Module, Signal, Value

from ..errors import ConfigError

__all__ = ["BOARD_DIVISOR", "BOARD_FRAME_BYTES", "BoardStreamRules", "accel_board_rules", "network_board_rules"]

# The UART's cycles per bit in the proof (the smallest the link accepts): with ``uart=False`` it only
# sizes the link's frame timeout.
BOARD_DIVISOR = 4
# The network top's largest load/input frame in the proof (the default is 64): the unpacker's unit index
# and its multiplexers grow with it, not the logic it proves.
BOARD_FRAME_BYTES = 16


class BoardStreamRules(Elaboratable):
    """``top`` (a board top, unchanged) with the stream rule asserted on ``streams`` (name -> a
    ``stream.Interface`` of ``top``'s parts, observed where the producer drives it), except across a
    cycle of ``top.link.soft_reset``. ``cuts``: hierarchy paths below the harness (``top.top...``)
    cut before ``flatten`` (``script``)."""

    def __init__(self, top, streams: dict, *, cuts: tuple = (), lemmas=None, reset: bool = True):
        if not streams:
            raise ConfigError("board stream rules: no stream to check")
        self.top, self.streams, self.cuts, self.lemmas = top, dict(streams), tuple(cuts), lemmas
        # ``reset`` False: no reset input, the run starts from the registers' reset values (a mutant's
        # search from reset, where a free reset makes the solver crawl); the clock is then a port
        self.domain = None if reset else ClockDomain("sync", reset_less=True)

    @property
    def ports(self) -> list:
        t = self.top
        clock = [] if self.domain is None else [self.domain.clk]
        return [*clock, t.rx_byte.valid, t.rx_byte.payload, t.tx_byte.ready, t.tx_hold]

    @property
    def script(self) -> tuple[str, ...]:
        """Each cut (checked to select something, so a renamed unit fails loudly), then ``flatten``
        so that the cells behind the cuts, which nothing observes any more, are removed."""
        cmds = []
        for sel in self.cuts:
            cmds += [f"select -assert-min 1 {sel}", f"cutpoint {sel}"]
        return (*cmds, "select -clear", "flatten", "opt_clean")

    def elaborate(self, platform):
        m = Module()
        if self.domain is not None:
            m.domains.sync = self.domain
        # the top elaborated for simulation (``platform`` None: ``rx``/``tx`` plain signals, no pins)
        top_m = self.top.elaborate(None)
        self.top._MustUse__used = True
        m.submodules.top = top_m
        if self.lemmas is not None:
            m.d.comb += self.lemmas(top_m, platform)
        reset = self.top.link.soft_reset
        for name, port in self.streams.items():
            payload = Value.cast(port.payload)
            waiting = Signal(name=f"{name}_waiting")            # last cycle: offered, not taken, no link reset
            last = Signal.like(payload, name=f"{name}_last_payload")
            m.d.sync += [waiting.eq(port.valid & ~port.ready & ~reset), last.eq(payload)]
            m.d.comb += Assert(~waiting | (port.valid & (payload == last)))
        return m


def accel_board_rules(config, *, top_class=None, reset: bool = True) -> BoardStreamRules:
    """``BoardTop(config)``: ``data`` (the link's accepted frames), ``cmd``, ``params``, ``weights``,
    ``act`` (routed by opcode into the accelerator) and ``out`` (the accelerator's results to the
    link). ``top_class``: the class to build instead (a mutant in the tests)."""
    from ..fpga.board_top import BoardTop
    from ..fpga.protocol import ACCEL_STREAMS

    top = (top_class or BoardTop)(config=config, divisor=BOARD_DIVISOR, uart=False)
    streams = {"data": top.link.data, **{s: getattr(top.accel, s) for s in ACCEL_STREAMS}, "out": top.accel.out}
    # the boundary's invariant (asserted, so proven too): the induction's unreachable states where a
    # stream is offered with no frame behind it are excluded
    return BoardStreamRules(top, streams, reset=reset, lemmas=lambda top_m, platform: top.offered_lemma())


def network_board_rules(config, *, frame_bytes: int = BOARD_FRAME_BYTES, image: bytes | None = None,
                        top_class=None, reset: bool = True) -> BoardStreamRules:
    """``NetworkBoardTop(engine=config, image=image)``: ``data`` (the link's accepted frames into the
    frame unpacker), ``load`` and ``i`` (the unpacker's words and beats into the engine), ``o`` (the
    engine's beats to the link), the engine's datapath cut (``board_cut_points``). ``top_class``: the
    class to build instead (a mutant in the tests)."""
    from ..fpga.network_top import NetworkBoardTop

    top = (top_class or NetworkBoardTop)(engine=config, divisor=BOARD_DIVISOR, uart=False, image=image,
                                         frame_bytes=max(frame_bytes, config.array.rows))
    e = top.engine
    return BoardStreamRules(top, {"data": top.link.data, "load": e.load, "i": e.i, "o": e.o},
                            cuts=board_cut_points("top.top.engine"), lemmas=_load_settle_lemma, reset=reset)


def _load_settle_lemma(top_m, platform) -> list:
    """The lemma that closes the induction on ``i``: the unpacker offers input beats only once the
    engine's ``loaded`` is final (``LOAD_SETTLE`` cycles after the last load word). After its last word
    the ``LoadUnit`` steps on alone (a phase a cycle, through the empty sections to ``done``, which sets
    ``loaded`` a cycle later) while the unpacker counts ``quiet`` up from 0: so while it steps alone,
    ``quiet < phase`` (both grow by one a cycle, ``quiet`` starts below), hence ``quiet`` < 5 and the
    unpacker is not settled; ``loaded`` changes only then or at a load word (not during an input frame)."""
    from .harness import _internal, open_submodule

    unpack_m = open_submodule(top_m, "unpack", platform)
    engine_m = open_submodule(top_m, "engine", platform)
    load_m = open_submodule(engine_m, "load", platform)
    quiet, phase, left = _internal(unpack_m, "quiet"), _internal(load_m, "phase"), _internal(load_m, "left")
    alone = (phase == 5) | ((phase >= 1) & (phase <= 4) & (left == 0))
    return [Assert(~alone | (quiet < phase))]



def board_cut_points(engine_path: str) -> tuple[str, ...]:
    """The engine's datapath cuts of the liveness proof (``qhw.formal.engine_liveness.CUT_POINTS``),
    below ``engine_path``."""
    from .engine_liveness import CUT_POINTS

    prefix = "top.dut"
    if not all(c.startswith(prefix) for c in CUT_POINTS):
        raise ConfigError("board stream rules: a liveness cut point is not below top.dut")
    return tuple(engine_path + c[len(prefix):] for c in CUT_POINTS)
