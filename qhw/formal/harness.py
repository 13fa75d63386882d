"""Formal harnesses: each wraps one component (unchanged) and states its properties.

The components carry no ``Assert``/``Assume`` of their own (the generated Verilog stays as it
is); a harness instantiates the component, drives what the rest of the accelerator would drive
(or leaves it free), and asserts the property. Every free input is a port of the harness, so the
solver may choose any value on any cycle, reset included.

* ``StreamRules``: the valid/ready rule on every stream of a component: inputs assumed, outputs
  asserted ("once ``valid`` is high it stays high with a stable payload until ``ready``").
* ``CreditHarness``: the issuer's credits against the output queue, with the datapath between them
  replaced by its fixed latency (it never stalls, so only its delay matters to the credits).
* ``LaneHarness``: a requantization lane against a combinational reference of the arithmetic
  contract's ``single`` rule, delayed by the lane's latency.
"""

from __future__ import annotations

from amaranth.hdl import Assert, Assume, Const, Elaboratable, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring

from ..contract import FIFO_LATENCY, ISSUE_LATENCY, PARAMS_READ_LATENCY
from ..errors import ConfigError
from ..hw.command import CommandRegister
from ..hw.config import ArrayConfig, check_config
from ..hw.issuer import Issuer
from ..hw.loader import Loader
from ..hw.output_queue import OutputQueue
from ..hw.requant import RequantLane

__all__ = ["BankHarness", "CreditHarness", "LaneHarness", "ResultCountHarness", "StreamRules", "component_ports",
           "lane_reference"]


def component_ports(component: wiring.Component) -> list:
    """Every port signal of ``component`` (the harness's free inputs and observable outputs)."""
    values = (Value.cast(value) for _, _, value in component.signature.flatten(component))
    return [v for v in values if isinstance(v, Signal)]        # not ``always_ready``'s constant


def _internal(module: Module, name: str) -> Signal:
    """The signal ``name`` that ``module`` (an elaborated ``Module``) drives, for a property on
    component state that has no port."""
    found = [s for s in module._driving if getattr(s, "name", None) == name]
    if len(found) != 1:
        raise ConfigError(f"formal harness: expected one signal {name!r} in the component, found {len(found)}")
    return found[0]


def _elaborate(component: wiring.Component, platform) -> Module:
    """``component``'s own ``Module``, so a property can name its internal signals."""
    module = component.elaborate(platform)
    component._MustUse__used = True        # elaborated here, not through Fragment.get
    return module


class StreamRules(Elaboratable):
    """The stream rules on every ``stream.Signature`` member of ``dut`` (not ``always_ready`` ones'
    ready side, which has no rule): ``In`` streams assumed, ``Out`` streams asserted."""

    def __init__(self, dut: wiring.Component):
        self.dut = dut
        self.streams = []       # (name, flow, interface)
        for name, member in dut.signature.members.items():
            if member.is_signature and isinstance(member.signature, stream.Signature):
                self.streams.append((name, member.flow, getattr(dut, name)))
        if not any(flow == wiring.Out for _, flow, _ in self.streams):
            raise ConfigError(f"{type(dut).__name__} has no output stream to check")

    @property
    def ports(self) -> list:
        return component_ports(self.dut)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        for name, flow, port in self.streams:
            payload = port.payload.as_value() if hasattr(port.payload, "as_value") else port.payload
            waiting = Signal(name=f"{name}_waiting")        # last cycle: valid and not ready
            last = Signal.like(payload, name=f"{name}_last_payload")
            m.d.sync += [waiting.eq(port.valid & ~port.ready), last.eq(payload)]
            rule = ~waiting | (port.valid & (payload == last))
            m.d.comb += (Assume(rule) if flow == wiring.In else Assert(rule))
        return m


class CreditHarness(Elaboratable):
    """``Issuer`` -> (the datapath's latency) -> ``OutputQueue``, the queue's ``taken`` back as credits.

    Asserted: the issuer's credit counter never exceeds the queue depth; the queue is never written
    while full nor gives a row while empty; and, as the lemma that makes k-induction close, the
    credit counter equals the result rows in the datapath plus the rows in the queue.
    ``issuer``/``queue`` are the classes to build (a mutant in the tests).
    """

    def __init__(self, *, config: ArrayConfig, issuer=Issuer, queue=OutputQueue):
        check_config(config)
        self.config = config
        self.issuer, self.queue = issuer(config=config), queue(config=config)
        # Issue register to the queue's input: the array, accumulator, lane sharing and lanes.
        self.delay = config.latency - ISSUE_LATENCY - FIFO_LATENCY

    @property
    def ports(self) -> list:
        i, q = self.issuer, self.queue
        return [*component_ports(i), q.i.payload.as_value(), q.o.valid, q.o.ready, q.o.payload.as_value()]

    def elaborate(self, platform):
        m = Module()
        depth = self.config.fifo_depth
        issuer_m, queue_m = _elaborate(self.issuer, platform), _elaborate(self.queue, platform)
        m.submodules.issuer, m.submodules.queue = issuer_m, queue_m
        issuer, queue = self.issuer, self.queue
        outstanding = _internal(issuer_m, "outstanding")
        may_produce = _internal(issuer_m, "may_produce")
        wp, rp, rp_next = (_internal(queue_m, name) for name in ("wp", "rp", "rp_next"))
        slots = depth + 1

        # The datapath: a result row (a beat of the last K tile) reaches the queue `delay` cycles later.
        line = [Signal(name=f"row_in_flight_{k}") for k in range(self.delay)]
        m.d.sync += line[0].eq(issuer.tag.valid & issuer.tag.payload.last)
        m.d.sync += [b.eq(a) for a, b in zip(line, line[1:])]
        m.d.comb += [queue.i.valid.eq(line[-1]), issuer.taken.eq(queue.taken)]

        # Rows in the queue, counted here (the queue keeps no level of its own).
        held = Signal(range(depth + 2), name="rows_held")
        m.d.sync += held.eq(held + queue.i.valid - queue.taken)
        in_memory = Mux(wp >= rp, wp - rp, wp + slots - rp)
        in_flight = sum((issuer.tag.valid & issuer.tag.payload.last, *line), Const(0, range(self.delay + 2)))
        m.d.comb += [
            Assert(outstanding <= depth),
            Assert(held <= depth),                                  # never written when full
            Assert(~(queue.taken & (held == 0))),                   # never read when empty
            Assert(outstanding == in_flight + held),                # every credit is a row somewhere
            # Lemmas: the registered credit check, and the queue's pointers against its rows.
            Assert(may_produce == (outstanding < depth)),
            Assert((wp < slots) & (rp < slots) & (rp_next == Mux(rp == slots - 1, 0, rp + 1))),
            Assert(held == in_memory + queue.o.valid),
        ]
        return m


class BankHarness(Elaboratable):
    """``CommandRegister`` -> ``Loader`` and ``Issuer`` (banks joined as in the top).

    Asserted: the loader never writes a weight row or a parameter beat into a bank that an
    activation issued in the last ``window`` cycles still uses, ``window`` being the issue register
    to the parameter read (``array_latency + accumulate_latency + PARAMS_READ_LATENCY``): weights
    are used in the array, the bank's parameters when the row reaches the lanes.
    ``loader`` is the class to build (a mutant in the tests).
    """

    def __init__(self, *, config: ArrayConfig, loader=Loader):
        check_config(config)
        self.config = config
        self.command, self.loader, self.issuer = CommandRegister(config=config), loader(config=config), \
            Issuer(config=config)
        self.window = config.array_latency + config.accumulate_latency + PARAMS_READ_LATENCY

    @property
    def ports(self) -> list:
        cmd, loader, issuer = self.command, self.loader, self.issuer
        own = (issuer.act.valid, issuer.act.ready, issuer.act.payload, issuer.taken, issuer.a_in, issuer.bank_in,
               issuer.tag.valid, issuer.tag.payload, issuer.idle)      # the issuer's ports not joined to the loader
        return [*component_ports(cmd), *component_ports(loader), *(Value.cast(v) for v in own)]

    def elaborate(self, platform):
        m = Module()
        cmd, loader, issuer = self.command, self.loader, self.issuer
        loader_m = _elaborate(loader, platform)
        m.submodules.command, m.submodules.loader, m.submodules.issuer = cmd, loader_m, issuer
        wiring.connect(m, cmd.gemm, loader.gemm, issuer.gemm)
        wiring.connect(m, loader.banks, issuer.banks)
        m.d.comb += cmd.done.eq(~loader.busy & issuer.idle)
        full, drain = loader.banks.full, [_internal(loader_m, f"drain{b}") for b in range(2)]
        filling = ~loader_m._generated["loader"].ongoing("WAIT")
        loading = _internal(loader_m, "bank")

        # Cycles bank b is still in use: set by each beat issued with bank b, counting down.
        use = [Signal(range(self.window + 1), name=f"bank{b}_in_use") for b in range(2)]
        for b in range(2):
            beat = issuer.tag.valid & (issuer.tag.payload.bank == b)
            with m.If(beat):
                m.d.sync += use[b].eq(self.window)
            with m.Elif(use[b] != 0):
                m.d.sync += use[b].eq(use[b] - 1)
            busy = beat | (use[b] != 0)
            params = Value.cast(loader.param_banks[b])
            params_last = Signal.like(params, name=f"params{b}_last")
            m.d.sync += params_last.eq(params)
            m.d.comb += [
                Assert(~(busy & loader.w_we.any() & (loader.w_bank == b))),     # a weight row
                Assert(~(busy & (params != params_last))),                     # a parameter beat
                # Lemmas (they make the induction close): the harness's own count stays in range; a
                # released bank drains at least as long as it is in use; the tile just released has
                # the full drain ahead; the loader fills only a bank that is empty and drained.
                Assert(use[b] <= self.window),
                Assert((use[b] == 0) | full[b] | (drain[b] >= use[b])),
                Assert(~(beat & ~full[b]) | (drain[b] == self.config.bank_drain_cycles)),
                Assert(~(filling & (loading == b)) | (~full[b] & (drain[b] == 0))),
                # the registered weight write lands in a bank that was being filled a cycle ago
                Assert(~(loader.w_we.any() & (loader.w_bank == b)) | ((use[b] == 0) & (drain[b] == 0))),
            ]
        return m


class ResultCountHarness(Elaboratable):
    """``CommandRegister`` -> ``Loader`` and ``Issuer``: a command of M x K x N issues exactly
    ``M * ceil(N / cols)`` result rows (beats of a last K tile), none dropped, none repeated.

    A bounded property (``mode bmc``): commands are assumed to have M <= ``max_m``,
    N <= ``max_n_tiles * cols`` and K <= ``rows`` so that whole commands fit in the depth; the
    credits property carries the count on from the issue register to ``out``.
    """

    def __init__(self, *, config: ArrayConfig, issuer=Issuer, max_m: int = 2, max_n_tiles: int = 2):
        check_config(config)
        self.config, self.max_m, self.max_n_tiles = config, max_m, max_n_tiles
        self.command, self.loader, self.issuer = CommandRegister(config=config), Loader(config=config), \
            issuer(config=config)

    @property
    def ports(self) -> list:
        return BankHarness.ports.fget(self)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        cmd, loader, issuer = self.command, self.loader, self.issuer
        issuer_m = _elaborate(issuer, platform)
        m.submodules.command, m.submodules.loader, m.submodules.issuer = cmd, loader, issuer_m
        wiring.connect(m, cmd.gemm, loader.gemm, issuer.gemm)
        wiring.connect(m, loader.banks, issuer.banks)
        m.d.comb += cmd.done.eq(~loader.busy & issuer.idle)
        new = cmd.cmd.payload
        m.d.comb += Assume(~cmd.cmd.valid | ((new.m <= self.max_m) & (new.n <= self.max_n_tiles * c.cols)
                                             & (new.k <= c.rows)))

        run = _internal(issuer_m, "run")
        run_last = Signal()
        rows = Signal(range(self.max_m * self.max_n_tiles + 2), name="result_rows")
        row_beat = issuer.tag.valid & issuer.tag.payload.last
        m.d.sync += run_last.eq(run)
        with m.If(cmd.gemm.start):
            m.d.sync += rows.eq(0)
        with m.Elif(row_beat):
            m.d.sync += rows.eq(rows + 1)
        g = cmd.gemm.cmd
        expected = g.m * ((g.n + c.cols - 1) // c.cols)
        # Never more rows than the command has; the cycle after its last beat is issued (the tag is
        # on the issue register) exactly as many.
        m.d.comb += [Assert(rows + row_beat <= expected), Assert(~(run_last & ~run) | (rows + row_beat == expected))]
        return m


def lane_reference(acc, bias, m0, shift, zero_point, qmin, qmax):
    """``single`` per ``qhw.arith.mul_shift_single`` as Amaranth expressions:
    ``clamp(clip((a*M0 + 2**(30-shift)) >> (31-shift), +-2**31) + zero_point, qmin, qmax)``."""
    a = acc + bias
    total = (31 - shift).as_unsigned()[:6]                  # 1..62 for shift in [-31, 30]
    rounding = Const(1, 64) << (30 - shift).as_unsigned()[:6]
    r = (a * m0 + rounding) >> total
    lo, hi = -(1 << 31), 1 << 31
    r = Mux(r < lo, lo, Mux(r > hi, hi, r))
    y = r + zero_point
    return Mux(y < qmin, qmin, Mux(y > qmax, qmax, y))


class LaneHarness(Elaboratable):
    """A ``RequantLane`` (``single`` built) against ``lane_reference``, both fed the same inputs.

    The reference's result is delayed by the lane's latency and compared whenever the lane says
    ``o_valid``. Assumed: ``shift`` in [-31, 30] and ``zero_point``/``qmin``/``qmax`` held steady
    (the lane's documented input rules). ``m0_bits`` < 31 drives M0's high bits with zeros (a reduced
    width, for the solver), ``m0_value`` fixes M0 to one value; ``lane`` is the class to build (a mutant in the tests).
    """

    def __init__(self, *, config: ArrayConfig, lane=RequantLane, m0_bits: int = 31, m0_value: int | None = None):
        check_config(config)
        if config.rounding != ("single",):
            raise ConfigError(f"the lane proof needs a config built with rounding=('single',), not {config.rounding!r}")
        if not isinstance(m0_bits, int) or not 1 <= m0_bits <= 31:
            raise ConfigError(f"m0_bits must be an integer from 1 to 31, not {m0_bits!r}")
        if m0_value is not None and (not isinstance(m0_value, int) or not 0 <= m0_value < 1 << 31):
            raise ConfigError(f"m0_value must be an integer in [0, 2**31), not {m0_value!r}")
        self.config, self.m0_bits, self.m0_value = config, m0_bits, m0_value
        self.lane = lane(config=config)
        # Drives the lane's multiplier: a free m0_bits-wide value zero-extended, or a constant.
        self.m0 = Signal(m0_bits, name="m0") if m0_value is None else Const(m0_value, 31)

    @property
    def ports(self) -> list:
        free_m0 = [self.m0] if self.m0_value is None else []
        return [p for p in component_ports(self.lane) if p is not self.lane.multiplier] + free_m0

    def elaborate(self, platform):
        m = Module()
        m.submodules.lane = lane = self.lane
        steady = Signal()       # past the first cycle: the held inputs must not change any more
        m.d.sync += steady.eq(1)
        for port in (lane.zero_point, lane.qmin, lane.qmax):
            last = Signal.like(port, name=f"{port.name}_last")
            m.d.sync += last.eq(port)
            m.d.comb += Assume(~steady | (port == last))
        m.d.comb += Assume((lane.shift >= -31) & (lane.shift <= 30))
        m.d.comb += lane.multiplier.eq(self.m0)
        ref = Signal(signed(len(lane.o) + 1), name="reference")
        m.d.comb += ref.eq(lane_reference(lane.acc, lane.bias, self.m0, lane.shift,
                                          lane.zero_point, lane.qmin, lane.qmax))
        late = ref
        for k in range(self.lane.latency):
            nxt = Signal.like(ref, name=f"reference_{k + 1}")
            m.d.sync += nxt.eq(late)
            late = nxt
        m.d.comb += Assert(~lane.o_valid | (lane.o == late))
        return m
