"""Formal harnesses: each wraps one component (unchanged) and states its properties.

The components carry no ``Assert``/``Assume`` of their own (the generated Verilog stays as it
is); a harness instantiates the component, drives what the rest of the accelerator would drive
(or leaves it free), and asserts the property. Every free input is a port of the harness, so the
solver may choose any value on any cycle, reset included.

* ``StreamRules``: the valid/ready rule on every stream of a component: inputs assumed, outputs
  asserted ("once ``valid`` is high it stays high with a stable payload until ``ready``").
* ``CreditHarness``: the issuer's credits against the output queue, with the datapath between them
  replaced by its fixed latency (it never stalls, so only its delay matters to the credits).
* ``LaneHarness``: a requantization lane against combinational references of the arithmetic
  contract's ``single`` and ``tflite`` rules, delayed by the lane's latency.
* ``BankHarness``, ``ResultCountHarness``: double buffering and the result-row count.
* ``LivenessHarness``: the whole top from reset, one command, ``busy`` low within the cycle model.
* ``Im2colBoundHarness``: the engine's im2col address generator never leaves the scratchpad (a
  ``GeometryHarness``: one fixed descriptor geometry, the base of the engine's other generator bounds).
"""

from __future__ import annotations

from amaranth.hdl import Assert, Assume, Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring

from ..contract import FIFO_LATENCY, ISSUE_LATENCY, MODE_CODES, PARAMS_READ_LATENCY
from ..errors import ConfigError
from ..hw.command import CommandRegister
from ..hw.config import ArrayConfig, check_config
from ..hw.issuer import Issuer
from ..hw.loader import Loader
from ..hw.output_queue import OutputQueue
from ..hw.requant import RequantLane

__all__ = ["BUSY_FALL_CYCLES", "IM2COL_GEOMETRIES", "LANE_REFERENCES", "BankHarness", "CreditHarness",
           "Im2colBoundHarness", "LaneHarness", "LivenessHarness", "ResultCountHarness", "StreamRules",
           "component_ports", "lane_reference", "lane_reference_tflite"]


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


def open_submodule(module: Module, name: str, platform) -> Module:
    """Elaborate ``module``'s submodule ``name`` in place (under its ``ResetInserter``, if any) and return
    its ``Module``, so a property can name the internal state of a part inside a part; the design is
    unchanged."""
    from amaranth.hdl._xfrm import TransformedElaboratable

    sub, src_loc = module._named_submodules[name]
    inner = sub._elaboratable_ if isinstance(sub, TransformedElaboratable) else sub
    opened = _elaborate(inner, platform)
    if isinstance(sub, TransformedElaboratable):
        sub._elaboratable_ = opened
    else:
        module._named_submodules[name] = (opened, src_loc)
    return opened


def stream_assumed(m: Module, port, name: str) -> None:
    """The stream rule on an input stream of a unit: an offered payload stays until taken."""
    payload = Value.cast(port.payload)
    waiting, last = Signal(name=f"{name}_waiting"), Signal.like(payload, name=f"{name}_last")
    m.d.sync += [waiting.eq(port.valid & ~port.ready), last.eq(payload)]
    m.d.comb += Assume(~waiting | (port.valid & (payload == last)))


class GeometryHarness(Elaboratable):
    """An address generator of the network engine under one fixed descriptor geometry (a bounded proof
    each): the fields the generator multiplies when it takes a descriptor are driven as constants
    (Yosys folds its products; the solver does not multiply free values), every other descriptor field
    is a free input (``fields``); descriptors arrive when the solver chooses (the stream rule assumed on
    ``desc``) and satisfy ``legal`` (the compiler's checks); the output stream's ``ready`` is free.

    Subclasses set ``GEOMETRIES`` (name -> the fixed fields), ``WHAT`` and ``HOLDS`` (for messages),
    ``OUT`` (the output stream), and define ``words_needed(g)``, ``legal(d, g)`` (terms assumed of an
    offered descriptor) and ``asserts(agen, g)``. ``build`` makes the generator (a mutant in the tests)."""

    GEOMETRIES: dict = {}
    WHAT = HOLDS = OUT = ""

    def __init__(self, *, geometry: str, words: int, build):
        self._MustUse__silence = True       # no "never used" warning when a check below refuses it
        if geometry not in self.GEOMETRIES:
            raise ConfigError(f"{self.WHAT}: unknown geometry {geometry!r}; known: {', '.join(self.GEOMETRIES)}")
        g = self.GEOMETRIES[geometry]
        if not isinstance(words, int) or words < self.words_needed(g):
            raise ConfigError(f"{self.WHAT}: words must be an integer that holds {self.HOLDS}, not {words!r}")
        self.geometry, self.words = geometry, words
        self.agen = build()
        layout = self.agen.desc.payload.shape()
        self.fields = {name: Signal(field.shape, name=f"desc_{name}") for name, field in layout if name not in g}
        self._MustUse__silence = False

    @property
    def dut(self):
        return self.agen

    def words_needed(self, g: dict) -> int:
        raise NotImplementedError

    def legal(self, d, g: dict) -> list:
        raise NotImplementedError

    def asserts(self, agen, g: dict) -> list:
        raise NotImplementedError

    @property
    def ports(self) -> list:
        a = self.agen
        o = getattr(a, self.OUT)
        return [*self.fields.values(), a.desc.valid, a.desc.ready, o.valid, o.ready, Value.cast(o.payload), a.busy]

    def elaborate(self, platform):
        m = Module()
        m.submodules.agen = agen = self.agen
        d = agen.desc.payload
        g = self.GEOMETRIES[self.geometry]
        m.d.comb += [getattr(d, name).eq(value) for name, value in g.items()]
        m.d.comb += [getattr(d, name).eq(sig) for name, sig in self.fields.items()]
        m.d.comb += Assume(~agen.desc.valid | Cat(*self.legal(d, g)).all())
        stream_assumed(m, agen.desc, "desc")
        m.d.comb += self.asserts(agen, g)
        return m


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
        drained = _internal(loader_m, "drained")
        params_we = [[s for s in loader_m._driving if getattr(s, "name", "").startswith(f"params_we{b}_")]
                     for b in range(2)]
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
                Assert(drained[b] == (drain[b] == 0)),      # the loader's register copy of the test
                # a parameter beat lands a cycle after its handshake, in the bank being filled
                *(Assert(~we | (filling & (loading == b))) for we in params_we[b]),
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


def _clamp(v, lo, hi):
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def lane_reference(acc, bias, m0, shift, zero_point, qmin, qmax):
    """``single`` per ``qhw.arith.mul_shift_single`` as Amaranth expressions:
    ``clamp(clip((a*M0 + 2**(30-shift)) >> (31-shift), +-2**31) + zero_point, qmin, qmax)``."""
    a = acc + bias
    total = (31 - shift).as_unsigned()[:6]                  # 1..62 for shift in [-31, 30]
    rounding = Const(1, 64) << (30 - shift).as_unsigned()[:6]
    r = (a * m0 + rounding) >> total
    r = _clamp(r, -(1 << 31), 1 << 31)
    return _clamp(r + zero_point, qmin, qmax)


def lane_reference_tflite(acc, bias, m0, shift, zero_point, qmin, qmax):
    """``tflite`` per ``qhw.arith.mul_shift_tflite``, written as the contract states it (gemmlowp's
    two steps, C's truncating division included), not as the lane computes it:
    ``x = wrap32(sat32(a) << max(shift, 0))``; ``q = SaturatingRoundingDoublingHighMul(x, M0)``
    (nudge ``2**30`` or ``1 - 2**30`` by the product's sign, then a division by ``2**31`` towards
    zero); ``r = RoundingDivideByPOT(q, max(-shift, 0))``; ``clamp(r + zero_point, qmin, qmax)``.
    (M0 < 2**31, so SRDHM's INT32_MIN * INT32_MIN overflow case cannot arise.)"""
    a = _clamp(acc + bias, -(1 << 31), (1 << 31) - 1)
    left = Mux(shift > 0, shift, 0).as_unsigned()[:5]
    right = Mux(shift < 0, -shift, 0).as_unsigned()[:6]
    x = (a << left)[:32].as_signed()                        # int32 wrap-around
    ab = x * m0
    t = ab + Mux(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = Mux(t >= 0, t >> 31, -((-t) >> 31))                 # truncating division by 2**31
    mask = (Const(1, 33) << right) - 1
    remainder = q & mask
    threshold = (mask >> 1) + (q < 0)
    r = (q >> right) + (remainder > threshold)
    return _clamp(r + zero_point, qmin, qmax)


LANE_REFERENCES = {"single": lane_reference, "tflite": lane_reference_tflite}


class LaneHarness(Elaboratable):
    """A ``RequantLane`` built with ``single`` and/or ``tflite`` against the combinational references
    of those rules (``lane_reference``, ``lane_reference_tflite``), both fed the same inputs.

    The reference of the input's ``mode`` is delayed by the lane's latency and compared whenever the
    lane says ``o_valid``. Assumed: ``shift`` in [-31, 30], ``mode`` a built one, and
    ``zero_point``/``qmin``/``qmax`` held steady (the lane's documented input rules). ``m0_free``
    lists M0's free bits (a reduced width, for the solver; the other bits are zero; default all 31),
    ``m0_value`` fixes M0 to one value; ``lane`` is the class to build (a mutant in the tests).
    """

    def __init__(self, *, config: ArrayConfig, lane=RequantLane, m0_free=tuple(range(31)),
                 m0_value: int | None = None):
        check_config(config)
        if not config.rounding or not set(config.rounding) <= set(LANE_REFERENCES):
            raise ConfigError(f"the lane proof needs a config built with rounding among {tuple(LANE_REFERENCES)}, "
                              f"not {config.rounding!r}")
        m0_free = tuple(m0_free)
        if not m0_free or len(set(m0_free)) != len(m0_free) or \
                not all(isinstance(b, int) and 0 <= b < 31 for b in m0_free):
            raise ConfigError(f"m0_free must list distinct bit positions from 0 to 30, not {m0_free!r}")
        if m0_value is not None and (not isinstance(m0_value, int) or not 0 <= m0_value < 1 << 31):
            raise ConfigError(f"m0_value must be an integer in [0, 2**31), not {m0_value!r}")
        self.config, self.m0_free, self.m0_value = config, m0_free, m0_value
        # The constants are assumed steady: the accelerator's form (its clamp's compares beside ``r``).
        self.lane = lane(config=config, steady_constants=True)
        # Drives the lane's multiplier: free bits at the m0_free positions, or a constant.
        self.m0_bits = Signal(len(m0_free), name="m0")
        if m0_value is not None:
            self.m0 = Const(m0_value, 31)
        else:
            bits = [Const(0, 1)] * 31
            for k, b in enumerate(m0_free):
                bits[b] = self.m0_bits[k]
            self.m0 = Cat(*bits)

    @property
    def ports(self) -> list:
        free_m0 = [self.m0_bits] if self.m0_value is None else []
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
        modes = self.config.rounding
        m.d.comb += Assume(Cat(*(lane.mode == MODE_CODES[mode] for mode in modes)).any())
        m.d.comb += lane.multiplier.eq(self.m0)
        ref = Signal(signed(len(lane.o) + 1), name="reference")
        args = (lane.acc, lane.bias, self.m0, lane.shift, lane.zero_point, lane.qmin, lane.qmax)
        with m.Switch(lane.mode):
            for mode in modes:
                with m.Case(MODE_CODES[mode]):
                    m.d.comb += ref.eq(LANE_REFERENCES[mode](*args))
        late = ref
        for k in range(self.lane.latency):
            nxt = Signal.like(ref, name=f"reference_{k + 1}")
            m.d.sync += nxt.eq(late)
            late = nxt
        m.d.comb += Assert(~lane.o_valid | (lane.o == late))
        return m


# ``busy`` after the last result's handshake: the issuer's credit counter returns to zero on the
# next edge (``idle``), the command register lowers ``busy`` on the one after.
BUSY_FALL_CYCLES = 2


class LivenessHarness(Elaboratable):
    """The whole ``Accelerator`` from reset running one command of shape ``(m, k, n)``: ``busy``
    falls within the manifest's cycle model (a bounded property, ``mode bmc``).

    The harness offers every input as soon as the top can take it (``weights``, ``params`` and
    ``act`` always valid, ``out`` always ready; the command once, on the first cycle after reset)
    and leaves every payload but the command's shape and mode free: the bound must hold whatever
    the data. Asserted: ``cycles`` (edges since the command handshake) past
    ``config.ideal_cycles(m, k, n)`` (the handshake to the last result's handshake), ``busy`` is
    low. The model is exact for a single tile or ``m >= config.min_m_for_full_rate``; other shapes
    are refused. ``accelerator`` is the class to build (a mutant in the tests).
    """

    def __init__(self, *, config: ArrayConfig, m: int, k: int, n: int, mode: str | None = None,
                 accelerator=None):
        from ..hw.accel import Accelerator

        self._MustUse__silence = True       # no "never used" warning when a check below refuses it
        check_config(config)
        for what, value in (("m", m), ("k", k), ("n", n)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"liveness: {what} must be a positive integer, not {value!r}")
        if k > config.max_k:
            raise ConfigError(f"liveness: k {k} exceeds max_k {config.max_k}")
        kt, nt = config.gemm_tiles(k, n)
        if kt > 1 and m > config.acc_depth:
            raise ConfigError(f"liveness: m {m} exceeds acc_depth {config.acc_depth} with {kt} K tiles")
        if kt * nt > 1 and m < config.min_m_for_full_rate:
            raise ConfigError(f"liveness: the cycle model is exact for one tile or m >= "
                              f"{config.min_m_for_full_rate} (min_m_for_full_rate), not m {m} over {kt * nt} tiles")
        mode = config.rounding[0] if mode is None else mode
        if mode not in config.rounding:
            raise ConfigError(f"liveness: mode {mode!r} is not built ({config.rounding})")
        self.config, self.shape, self.mode = config, (m, k, n), mode
        self.bound = config.ideal_cycles(m, k, n)
        self.dut = (Accelerator if accelerator is None else accelerator)(config=config)
        out = self.dut.cmd.payload.zero_point.shape()
        self.free = [Signal(out, name=f"cmd_{name}") for name in ("zero_point", "qmin", "qmax")]
        self._MustUse__silence = False

    @property
    def depth(self) -> int:
        """BMC steps that reach a cycle past the bound: reset, the handshake, then the edges."""
        return self.bound + BUSY_FALL_CYCLES + 4

    @property
    def ports(self) -> list:
        d = self.dut
        return [*self.free, *(Value.cast(p) for p in (d.weights.payload, d.params.payload, d.act.payload)),
                d.busy, d.out.valid, Value.cast(d.out.payload)]

    def elaborate(self, platform):
        mm = Module()
        mm.submodules.dut = d = self.dut
        m, k, n = self.shape
        sent = Signal()         # the command has been taken
        cmd = d.cmd.payload
        mm.d.comb += [
            d.cmd.valid.eq(~sent), cmd.m.eq(m), cmd.k.eq(k), cmd.n.eq(n), cmd.mode.eq(MODE_CODES[self.mode]),
            cmd.zero_point.eq(self.free[0]), cmd.qmin.eq(self.free[1]), cmd.qmax.eq(self.free[2]),
            d.weights.valid.eq(1), d.params.valid.eq(1), d.act.valid.eq(1), d.out.ready.eq(1),
        ]
        last = self.bound + BUSY_FALL_CYCLES + 1
        cycles = Signal(range(last + 1), name="cycles")     # edges since the command handshake, saturating
        with mm.If(d.cmd.valid & d.cmd.ready):
            mm.d.sync += [sent.eq(1), cycles.eq(1)]
        with mm.Elif(sent & (cycles < last)):
            mm.d.sync += cycles.eq(cycles + 1)
        expected = m * -(-n // self.config.cols)
        rows = Signal(range(expected + 2), name="rows_out")
        with mm.If(d.out.valid & d.out.ready & (rows <= expected)):
            mm.d.sync += rows.eq(rows + 1)
        mm.d.comb += [
            # every result row has left by the model's last handshake ...
            Assert(~(sent & (cycles > self.bound)) | (rows == expected)),
            # ... and busy falls BUSY_FALL_CYCLES later
            Assert(~(sent & (cycles > self.bound + BUSY_FALL_CYCLES) & d.busy)),
        ]
        return mm


# The descriptor geometries of the im2col bound (one bounded proof each): the fields that enter a
# product in the address generator are fixed per geometry (the solver does not multiply free values);
# the base address, the channel-word fields, the tiling and the chunking stay free.
IM2COL_GEOMETRIES = {
    # a 3x3 convolution, padding 1 on every side, stride 2, 2 words per pixel: every pad case
    "conv3x3_s2_pad": dict(in_kind=0, in_h=3, in_w=3, in_pp=2, kh=3, kw=3, sh=2, sw=2, dh=1, dw=1,
                           pt=1, pl=1, pb=1, pr=1, oh=2, ow=2),
    # a dilated 2x2 kernel without padding, stride 1 (3 words per pixel)
    "conv2x2_d2": dict(in_kind=0, in_h=3, in_w=3, in_pp=3, kh=2, kw=2, sh=1, sw=1, dh=2, dw=2,
                       pt=0, pl=0, pb=0, pr=0, oh=1, ow=1),
    # a window-layout input (one word per padded pixel group), 3 kernel rows, padding on top
    "window": dict(in_kind=1, in_h=3, in_w=2, in_pp=1, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1,
                   pt=1, pl=0, pb=1, pr=0, oh=3, ow=2),
}


IM2COL_MAX_N_TILES = 3     # N tiles per descriptor in the im2col bound (small sizes, for the solver)


class Im2colBoundHarness(GeometryHarness):
    """``Im2colAgen`` (``qhw.hw.engine.im2col``): every word it emits (a beat that is not padding)
    is below ``words``, the scratchpad's size, for descriptors that pass the compiler's checks.

    Descriptors arrive when the solver chooses (``desc.valid`` free, the stream rule assumed), and
    ``beats.ready`` is free. Each offered descriptor has the geometry ``geometry`` (a name of
    ``IM2COL_GEOMETRIES``: layout, input size, words per pixel, kernel, strides, dilations, pads and
    output size fixed) and free legal values of the rest: the input inside the scratchpad
    (``in_base + in_h * in_w * in_pp <= words``), its channel words inside a pixel (``in_cw0 +
    (n_tiles - 1) * cw_step + kcw <= in_pp``; a window input reads one word per pixel group),
    ``kcw``, ``m_chunk`` >= 1 and ``n_tiles`` from 1 to ``IM2COL_MAX_N_TILES``. A bounded property
    (``mode bmc``). ``agen`` is the class to build (a mutant in the tests).
    """

    GEOMETRIES, WHAT, HOLDS, OUT = IM2COL_GEOMETRIES, "im2col bound", "the input", "beats"

    def __init__(self, *, geometry: str, words: int = 64, agen=None):
        from ..hw.engine.im2col import Im2colAgen
        super().__init__(geometry=geometry, words=words, build=Im2colAgen if agen is None else agen)

    def words_needed(self, g: dict) -> int:
        return g["in_h"] * g["in_w"] * g["in_pp"]

    def legal(self, d, g: dict) -> list:
        from ..engine.isa import IN_WINDOW

        window = g["in_kind"] == IN_WINDOW
        size = g["in_h"] * g["in_w"] * (1 if window else g["in_pp"])
        legal = [d.in_base + size <= self.words, (d.n_tiles >= 1) & (d.n_tiles <= IM2COL_MAX_N_TILES),
                 d.kcw >= 1, d.m_chunk >= 1]
        if not window:      # in_cw0 + (n_tiles - 1) * cw_step + kcw <= in_pp, without a free product
            legal.append(Cat(*((d.n_tiles != t) | (d.in_cw0 + (t - 1) * d.cw_step + d.kcw <= g["in_pp"])
                               for t in range(1, IM2COL_MAX_N_TILES + 1))).all())
        return legal

    def asserts(self, agen, g: dict) -> list:
        b = agen.beats
        return [Assert(~(b.valid & ~b.payload.pad) | (b.payload.addr < self.words))]
