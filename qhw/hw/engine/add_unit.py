"""``AddUnit``: an ``ADD`` descriptor (TFLite ADD, docs/engine.md "Residual Add"), scratchpad to scratchpad,
and ``TableUnit``: the 256-entry int8 table activations on a write-back path.

Per output word the unit reads ``a`` then ``b`` through the scratchpad's one read port (two reads per
word; a ``table_only`` pass reads ``a`` only, one per cycle), runs ``rows`` lanes (``AddLane``s of two,
which share their output rescale) of TFLite ADD integer arithmetic (``qhw.arith.add_with_multipliers``:
each ``(q - zp) << left_shift`` times its ``(M0, shift)``, summed, times the output ``(M0, shift)``,
+ zero point, clamped), then the table stage, and writes the word ``add_latency``
(``qhw.contract.ADD_LATENCY``) cycles after its ``b`` read was
requested: the timing contract's "one word per 2 cycles after a fixed latency".
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...contract import (
    ADD_LANE_LATENCY,
    ADD_LATENCY,
    ADD_MODES,
    ADD_MUL_STAGES,
    MODE_CODES,
    SPAD_READ_LATENCY,
    TABLE_READ_LATENCY,
)
from ...errors import ConfigError
from ..skew import delayed
from ..wide_mul import operand_chunks
from .layouts import descriptor_layout
from .pool_agen import ADDR_BITS

__all__ = ["AddLane", "AddUnit", "TableUnit", "add_unit_signature", "check_table_read_latency", "mul_shift"]


def _check_modes(modes) -> tuple:
    modes = tuple(modes)
    if not modes or any(mode not in ADD_MODES for mode in modes) or len(set(modes)) != len(modes):
        raise ConfigError(f"modes must be distinct rounding modes of {ADD_MODES}, not {modes!r}")
    return modes

_X_BITS = 34          # the sum of two rescaled inputs (|v| <= 2**31 each)
_R_BITS = 34          # a rescaled value: single's result clamped to +-2**31, tflite's int32 + its round-up


def _sat(v, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def _fits(v, bits: int):
    """``v`` (signed) holds in ``bits`` signed bits: its bits from ``bits - 1`` up are all equal."""
    top = v[bits - 1:]
    return (top == 0) | (top == (1 << len(top)) - 1)


def _shift_round(m: Module, p, k, sat, *, name: str):
    """``single``'s rounding right shift by ``k + 1`` over two registers, formed as
    ``((p >> k) + 1) >> 1`` = ``floor((p + 2**k) / 2**(k + 1))`` (no wide rounding adder), the shift
    split in a coarse one by ``8 * (k >> 3)`` (register 1) and a fine one by ``k & 7`` (register 2).

    ``sat``: the result clamped to ``+-2**sat`` (inclusive): the floor shift is saturated to ``sat + 2``
    bits, which the round then maps onto ``+-2**sat`` exactly (the overflow test of the coarse shift is
    per byte, a suffix of ``p``'s bits equal to its sign). ``sat=None``: the caller guarantees
    ``|result| <= 2**31`` (no clamp). Returns the result's width (``sat + 2``, 33 for None) and the
    value in the second register's cycle, for the caller to register."""
    A = (31 if sat is None else sat) + 2        # the floor shift's bits
    W = len(p)
    kc, kf = k[3:], k[:3]
    c = Signal(signed(A + 7), name=f"{name}_coarse")
    ovf = Signal(name=f"{name}_coarse_ovf")
    with m.Switch(kc):
        for j in range(1 << len(kc)):
            with m.Case(j):
                lo = min(8 * j, W - 1)
                m.d.sync += c.eq(p[lo:].as_signed())
                if sat is not None and lo + A + 7 < W:
                    m.d.sync += ovf.eq(~_fits(p[lo:].as_signed(), A + 7))
                else:
                    m.d.sync += ovf.eq(0)
    kf2 = Signal(3, name=f"{name}_fine")
    m.d.sync += kf2.eq(kf)
    if sat is not None:
        neg = Signal(name=f"{name}_neg")
        m.d.sync += neg.eq(p[W - 1])
        c = Mux(ovf, Mux(neg, -(1 << (A + 6)), (1 << (A + 6)) - 1), c)
    a = Signal(signed(A + 7), name=f"{name}_floor")
    m.d.comb += a.eq(c >> kf2)
    if sat is not None:
        a = Mux(_fits(a, A), a[:A].as_signed(), Mux(a[A + 6], -(1 << (A - 1)), (1 << (A - 1)) - 1))
    else:
        a = a[:A].as_signed()
    return A, (a + 1) >> 1


def _split_product(m: Module, x, m0, *, name: str):
    """``x * M0`` (``x`` as a ``signed(len(x))`` register would hold it, ``M0`` as a 31-bit one) as a sum
    of registered partial products, each at most 18x18 signed (one ``MULT18X18D``), both operands split
    as ``pipelined_product`` splits them (``operand_chunks``). Returns the sum (no register)."""
    a, b = Signal(signed(len(Value.cast(x))), name=f"{name}_xc"), Signal(31, name=f"{name}_m0c")
    m.d.comb += [a.eq(x), b.eq(m0)]
    total = 0
    for i, (ca, sa) in enumerate(operand_chunks(a)):
        for j, (cb, sb) in enumerate(operand_chunks(b)):
            pp = Signal((ca * cb).shape(), name=f"{name}_pp{i}{j}")
            m.d.sync += pp.eq(ca * cb)
            total = total + (pp << (sa + sb))
    return total


def mul_shift(m: Module, x, m0, shift, tflite, *, name: str, pre_shift=None, sat=31):
    """``mul_shift_single`` / ``mul_shift_tflite`` (``qhw.arith``) of ``x`` by ``(m0, shift)`` in
    ``ADD_MUL_STAGES`` registers; ``tflite`` selects the rule (a ``Const``: only that rule is built).
    All inputs arrive together. Returns the result register.

    ``sat``: ``single``'s result is clamped to ``+-2**sat`` instead of arith's ``+-2**31`` (equal when
    it fits): a smaller ``sat`` narrows the datapath for a caller that clamps the result further.

    With ``pre_shift`` the value is ``x << pre_shift``: ``single`` forms ``(x*M0 + 2**(t-1)) >> t``
    with ``t = 31 - shift - pre_shift`` (a ``len(x)`` x 31-bit product and a 49-bit shift instead of
    an 80-bit one), ``tflite`` ``(x * M0) << pre_shift``; either way the multiplier sees only ``x``'s
    bits (TFLite ADD's ``(q - zp) << 20``: a 17 x 31-bit product, 2 MULT18X18D instead of 4). Exact
    when ``shift <= 0`` and ``|x << pre_shift| < 2**31`` (then tflite's int32 view and left shift
    change nothing, ``t >= 1``, and ``|result| <= 2**31``, so nothing is clamped): ADD's input
    multipliers are at most 1/2, so their shifts are never positive, and the compiler's
    ``add_left_shift(8)`` = 20 keeps ``(q - zp) << 20`` below ``2**29``."""
    fixed = isinstance(tflite, Const)        # one rule built: no register, so synthesis folds the other
    build_single = not (fixed and tflite.value)
    build_tfl = not (fixed and not tflite.value)
    # 1: the multiplicand (tflite: int32 view, shifted left with int32 wrap-around), the shift decodes.
    bare = not (pre_shift is None and build_tfl)     # the multiplicand is ``x`` itself
    if not bare:
        op = Signal(signed(_X_BITS + 1), name=f"{name}_op")
        x32 = _sat(x, 32)
        left = Mux(shift > 0, shift, 0).as_unsigned()[:5]
        m.d.sync += op.eq(Mux(tflite, (x32 << left)[:32].as_signed(), x))
    else:
        op = Signal(signed(len(x)), name=f"{name}_op")
        m.d.sync += op.eq(x)
    ps = Value.cast(0 if pre_shift is None else pre_shift)
    m0_1, tfl1 = Signal(31, name=f"{name}_m0"), Signal(name=f"{name}_tfl")
    m.d.sync += m0_1.eq(m0)
    if fixed:
        tfl1 = tflite
    else:
        m.d.sync += tfl1.eq(tflite)
    tfl2 = tfl1 if fixed else delayed(m, tfl1, 1, name=f"{name}_tfl2")
    tfl3 = tfl2 if fixed else delayed(m, tfl2, 1, name=f"{name}_tfl3")
    r_single = r_tfl = None
    if build_single:
        # 2: the product; 3, 4: its rounding shift by t = 31 - shift - pre_shift (k = t - 1 >= 0; a
        # shift by the product's width or more leaves its sign, which rounds to 0)
        prod = Signal(signed(len(op) + 32), name=f"{name}_prod")
        if bare:
            # the multiplier-sized partial products of ``x`` and ``M0`` are registered in stage 1 (in
            # place of ``op``/``M0``'s copies), their sum in stage 2: the DSP blocks and the fabric sum
            # behind them are in different cycles (the sum was the ADD lane's path, 14.9 ns on ECP5)
            m.d.sync += prod.eq(_split_product(m, x, m0, name=name))
        else:
            m.d.sync += prod.eq(op * m0_1)
        shift = Value.cast(shift)
        kmax = min(len(prod) - 1, 30 + (1 << (len(shift) - 1)))     # the most negative shift: 62 for 6 bits
        k_raw = Const(30, signed(8)) - shift - ps
        k1 = Signal(range(kmax + 1), name=f"{name}_k")
        m.d.sync += k1.eq(Mux(k_raw < 0, 0, Mux(k_raw > kmax, kmax, k_raw)))
        k2 = delayed(m, k1, 1, name=f"{name}_k2")
        bits, r_single = _shift_round(m, prod, k2, None if pre_shift is not None else sat, name=name)
    if build_tfl:
        # 2: p = op * M0 + gemmlowp's nudge; 3: the high word, truncated towards zero; 4: tflite's
        # RoundingDivideByPOT: floor shift + (remainder > (mask >> 1) + (q < 0)).
        ps1 = Signal(len(ps), name=f"{name}_pre_shift")
        right = Signal(range(33), name=f"{name}_right")            # RoundingDivideByPOT exponent
        m.d.sync += [ps1.eq(ps), right.eq(Mux(shift < 0, -shift, 0))]
        nudge = Mux(op >= 0, Const(1 << 30, signed(32)), Const(1 - (1 << 30), signed(32)))
        p = Signal(signed(len(op) + 32 + (1 << len(ps1)) + 1), name=f"{name}_p")
        m.d.sync += p.eq(((op * m0_1) << ps1) + nudge)
        right2 = delayed(m, right, 1, name=f"{name}_right2")
        q3 = Signal(signed(_R_BITS), name=f"{name}_q")
        m.d.sync += q3.eq(Mux(p >= 0, p >> 31, -((-p) >> 31)))
        right3 = delayed(m, right2, 1, name=f"{name}_right3")
        mask = (Const(1, 33) << right3) - 1
        up = (q3 & mask) > ((mask >> 1) + (q3 < 0))
        r_tfl = (q3 >> right3) + up
        bits = _R_BITS
    r = Signal(signed(bits), name=f"{name}_r")
    m.d.sync += r.eq(r_tfl if r_single is None else r_single if r_tfl is None else Mux(tfl3, r_tfl, r_single))
    assert ADD_MUL_STAGES == 4      # the four registers above
    return r


class AddLane(wiring.Component):
    """``lanes`` (1 or 2) lanes of TFLite ADD: ``o = clamp(rescale(rescale(a') + rescale(b')) + zp, qmin,
    qmax)`` with ``a' = (a - a_zp) << left_shift`` (``qhw.arith.add_with_multipliers``), or ``o = a``
    when ``table_only``.

    The operands come one a cycle, as the scratchpad's one read port delivers them: ``x`` is ``a`` in
    one cycle and ``b`` (``x_is_b``) in the next, so one input rescale per lane serves both; a word's
    sum is thus ready one cycle in two, and the two lanes share one output rescale (lane 1's sum a
    cycle after lane 0's). ``i_valid`` marks the cycle a word is complete (its ``b``; its ``a`` for
    ``table_only``), and ``o`` is valid ``latency`` = ``ADD_LANE_LATENCY`` cycles later: the zero
    point (1), the input rescale (``ADD_MUL_STAGES``; ``a``'s result waits a cycle for ``b``'s), the
    sum (1), the output rescale (``ADD_MUL_STAGES``, lane 1's a cycle later: 1), the zero point and
    clamp (1). Words must come at least two cycles apart, except ``table_only`` ones (one a cycle); the
    descriptor inputs must be held steady while values are in flight.

    ``modes``: the rounding rules built (``ADD_MODES``); a descriptor's ``mode`` selects one only when
    both are, otherwise the rule is a constant and synthesis drops the other (about half a lane; the
    compiler refuses an Add whose rounding the engine was not generated with)."""

    def __init__(self, *, modes=ADD_MODES, lanes: int = 2):
        self.modes = _check_modes(modes)
        if lanes not in (1, 2) or isinstance(lanes, bool):
            raise ConfigError(f"lanes must be 1 or 2, not {lanes!r}")
        self.lanes = lanes
        lay = descriptor_layout("ADD")
        word = data.ArrayLayout(signed(8), lanes)
        super().__init__({"i_valid": In(1), "x": In(word), "x_is_b": In(1), "d": In(lay),
                          "o_valid": Out(1), "o": Out(word)})

    @property
    def latency(self) -> int:
        return ADD_LANE_LATENCY

    def elaborate(self, platform):
        m = Module()
        d = self.d
        tfl = d.mode == MODE_CODES["tflite"] if len(self.modes) == 2 else Const(self.modes == ("tflite",))
        is_b = Signal(name="x_is_b_1")
        ls = Signal(5, name="left_shift")
        m.d.sync += [is_b.eq(self.x_is_b), ls.eq(d.left_shift[:5])]
        # the cycle a word's b leaves the input rescale (its a's result one cycle ahead): its sum is taken
        sum_en = delayed(m, self.i_valid, 1 + ADD_MUL_STAGES, name="sum_en")
        totals = []
        for j in range(self.lanes):
            # q - zp (17 bits); the left shift is applied to the product (``mul_shift``'s ``pre_shift``)
            xd = Signal(signed(17), name=f"x_diff{j}")
            m.d.sync += xd.eq(self.x[j] - Mux(self.x_is_b, d.b_zp, d.a_zp))
            v = mul_shift(m, xd, Mux(is_b, d.b_mul, d.a_mul), Mux(is_b, d.b_shift, d.a_shift), tfl,
                          name=f"mi{j}", pre_shift=ls)
            va = Signal.like(v, name=f"va{j}")
            m.d.sync += va.eq(v)
            total = Signal(signed(len(v) + 1), name=f"total{j}")
            with m.If(sum_en):                   # held: lane 1's is rescaled a cycle after lane 0's
                m.d.sync += total.eq(va + v)
            totals.append(total)
        turn = delayed(m, sum_en, 1, name="turn0")          # lane 0's sum enters the output rescale
        # r only matters through clamp(r + zp, qmin, qmax), all three 16-bit: beyond +-2**16 it clamps alike
        sat = len(d.zp)
        assert len(d.qmin) <= sat and len(d.qmax) <= sat
        r = mul_shift(m, Mux(turn, totals[0], totals[-1]), d.out_mul, d.out_shift, tfl, name="mo", sat=sat)
        y = r + d.zp
        clamped = Mux(y < d.qmin, d.qmin, Mux(y > d.qmax, d.qmax, y))
        done = delayed(m, turn, ADD_MUL_STAGES, name="done0")  # lane 0's r; lane 1's the next cycle
        for j in range(self.lanes):
            passed = delayed(m, self.x[j], ADD_LANE_LATENCY - 1, name=f"a_pass{j}")
            with m.If(d.table_only | (done if j == 0 else delayed(m, done, 1, name="done1"))):
                m.d.sync += self.o[j].eq(Mux(d.table_only, passed, clamped))
        m.d.comb += self.o_valid.eq(delayed(m, self.i_valid, ADD_LANE_LATENCY, name="valid"))
        return m


def check_table_read_latency() -> None:
    """The one check of ``TABLE_READ_LATENCY`` for every user of the table (``TableUnit``, and the
    write-back, whose two stage registers are the table's read and its register)."""
    if TABLE_READ_LATENCY != 2:
        raise ConfigError(f"TABLE_READ_LATENCY must be 2 (the table's read and its register, which the "
                          f"write-back's two stage registers carry), not {TABLE_READ_LATENCY}")


class TableUnit(wiring.Component):
    """``lanes`` int8 codes -> ``table[code + 128]`` (one 256-entry memory per lane, so every lane looks
    up in the same cycle), or the codes unchanged when ``enable`` is low; ``latency``
    ``TABLE_READ_LATENCY`` (2): the block RAM's synchronous read (the bypass and ``enable`` registered
    beside it), then the output register, so no logic behind the table follows the block RAM's
    clock-to-out (on ECP5 the DP16KD's 5.8 ns plus its route: the 4x4 engine's critical path into the
    fused pool). ``tables`` slots of 256 entries each: ``select`` (with ``i``)
    picks one. The tables are written through ``load_*`` (one entry per cycle, broadcast to every
    lane's copy) when the model is loaded (``LoadUnit``), or given as ``init`` (``256*tables`` codes,
    slot after slot)."""

    def __init__(self, *, lanes: int, tables: int = 1, init=None):
        for name, v in (("lanes", lanes), ("tables", tables)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, not {v!r}")
        if init is not None and len(init) != 256 * tables:
            raise ConfigError(f"init must hold {256 * tables} table entries, not {len(init)}")
        check_table_read_latency()
        self.lanes, self.tables, self.init = lanes, tables, list(init or [])
        super().__init__({"i_valid": In(1), "i": In(data.ArrayLayout(signed(8), lanes)), "enable": In(1),
                          "select": In(range(tables)),
                          "o_valid": Out(1), "o": Out(data.ArrayLayout(signed(8), lanes)),
                          "load_en": In(1), "load_slot": In(range(tables)), "load_index": In(8),
                          "load_data": In(signed(8))})

    @property
    def latency(self) -> int:
        """``i`` to ``o``: ``TABLE_READ_LATENCY`` (the read, then the output register)."""
        return TABLE_READ_LATENCY

    def elaborate(self, platform):
        m = Module()
        en = Signal(name="enable_d")
        byp = Signal(data.ArrayLayout(signed(8), self.lanes), name="bypass")
        m.d.sync += [en.eq(self.enable), byp.eq(self.i)]
        m.d.comb += self.o_valid.eq(delayed(m, self.i_valid, TABLE_READ_LATENCY, name="valid"))
        for j in range(self.lanes):
            mem = Memory(shape=signed(8), depth=256 * self.tables, init=self.init)
            m.submodules[f"table{j}"] = mem
            wr, rd = mem.write_port(), mem.read_port()
            m.d.comb += [wr.en.eq(self.load_en), wr.addr.eq(Cat(self.load_index, self.load_slot)),
                         wr.data.eq(self.load_data),
                         rd.addr.eq(Cat(self.i[j].as_unsigned()[:7], ~self.i[j].as_unsigned()[7],   # code + 128
                                        self.select))]
            # the block RAM's word goes through one LUT (the bypass) into a register without reset
            out = Signal(signed(8), name=f"o_q{j}", reset_less=True)
            m.d.sync += out.eq(Mux(en, rd.data, byp[j]))
            m.d.comb += self.o[j].eq(out)
        return m


def add_unit_signature(rows: int, tables: int) -> wiring.Signature:
    """``AddUnit``'s ports (also an engine's stand-in without the unit)."""
    word = data.ArrayLayout(signed(8), rows)
    return wiring.Signature({
        "desc": In(stream.Signature(descriptor_layout("ADD"))),
        "r_addr": Out(ADDR_BITS), "r_en": Out(1), "r_data": In(word),
        "w_en": Out(1), "w_addr": Out(ADDR_BITS), "w_data": Out(word),
        "t_slot": In(range(tables)),
        "load_en": In(1), "load_slot": In(range(tables)), "load_index": In(8), "load_data": In(signed(8)),
        "busy": Out(1),
    })


class AddUnit(wiring.Component):
    """ADD descriptors (``desc``) on the scratchpad's ports.

    ``r_addr``/``r_en`` -> ``r_data`` ``SPAD_READ_LATENCY`` cycles later (``Scratchpad``);
    ``w_en``/``w_addr``/``w_data`` write whole words; ``load_*`` fill the tables (``TableUnit``, ``tables``
    slots), ``t_slot`` is the slot of the offered descriptor's ``table`` (taken with it).
    A descriptor is taken when ``desc.ready`` (idle: no read left, and the previous descriptor's last
    word in its write cycle or written); its first read is requested the next cycle; reads follow back
    to back (``a_i``, ``b_i``, ``a_{i+1}``, ...; ``a_i`` only for ``table_only``), and word ``i`` is
    written ``latency`` cycles after its last read request.

    Parameters
    ----------
    rows:
        Lanes per scratchpad word.
    modes:
        The rounding rules the lanes build (``AddLane``): the engine's rounding modes among ``ADD_MODES``.
    """

    def __init__(self, *, rows: int, tables: int = 1, init=None, modes=ADD_MODES):
        self.modes = _check_modes(modes)
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise ConfigError(f"rows must be a positive integer, not {rows!r}")
        if not isinstance(tables, int) or isinstance(tables, bool) or tables < 1:
            raise ConfigError(f"tables must be a positive integer, not {tables!r}")
        self.rows, self.tables, self.init = rows, tables, init
        super().__init__(add_unit_signature(rows, tables))

    @property
    def latency(self) -> int:
        """A word's last read request to its write (``EngineConfig.add_latency``)."""
        return ADD_LATENCY

    def elaborate(self, platform):
        m = Module()
        R = self.rows
        d = Signal(descriptor_layout("ADD"))
        i = Signal(unsigned(20), name="word")
        phase = Signal(name="phase")             # 0: read a_i, 1: read b_i
        busy = self.busy
        # the lanes read the descriptor register until a word's last stage: take the next one in the
        # cycle the last word is written (its first read is then one cycle after that write)
        inflight = Signal(range(ADD_LATENCY + 1), name="inflight")
        m.d.comb += self.desc.ready.eq(~busy & (inflight == 0))
        slot = Signal(range(self.tables), name="table_slot")
        words_m1 = Signal(unsigned(20), name="words_m1")   # the last word's index: its test is an equality
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += [d.eq(self.desc.payload), slot.eq(self.t_slot), i.eq(0), phase.eq(0),
                         busy.eq(self.desc.payload.words != 0), words_m1.eq(self.desc.payload.words - 1)]
        last_read = Signal(name="last_read")     # this cycle's read completes word i
        m.d.comb += last_read.eq(busy & (d.table_only | phase))
        with m.If(last_read):
            m.d.sync += inflight.eq(ADD_LATENCY - 1)
        with m.Elif(inflight != 0):
            m.d.sync += inflight.eq(inflight - 1)
        with m.If(busy):
            m.d.comb += [self.r_en.eq(1), self.r_addr.eq(Mux(phase, d.b_base, d.a_base) + i)]
            with m.If(last_read):
                m.d.sync += [i.eq(i + 1), phase.eq(0)]
                with m.If(i == words_m1):
                    m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += phase.eq(1)
        # data: each word arrives ``SPAD_READ_LATENCY`` cycles after its read; the lanes take a, then b,
        # the word complete when its last read's word arrives
        in_valid = delayed(m, last_read, SPAD_READ_LATENCY, name="in_valid")
        is_b = delayed(m, busy & phase, SPAD_READ_LATENCY, name="data_is_b")
        out_addr = Signal(ADDR_BITS, name="out_addr")
        m.d.comb += out_addr.eq(d.out_base + i)
        pairs = [AddLane(modes=self.modes, lanes=min(2, R - j)) for j in range(0, R, 2)]
        for k, pair in enumerate(pairs):
            m.submodules[f"lanes{2 * k}"] = pair
            m.d.comb += [pair.i_valid.eq(in_valid), pair.d.eq(d), pair.x_is_b.eq(is_b)]
            m.d.comb += [pair.x[j].eq(self.r_data[2 * k + j]) for j in range(pair.lanes)]
        m.submodules.table = table = TableUnit(lanes=R, tables=self.tables, init=self.init)
        m.d.comb += [table.i_valid.eq(pairs[0].o_valid), table.enable.eq(d.table != 0), table.select.eq(slot),
                     table.load_en.eq(self.load_en), table.load_slot.eq(self.load_slot),
                     table.load_index.eq(self.load_index),
                     table.load_data.eq(self.load_data)]
        m.d.comb += [table.i[2 * k + j].eq(pair.o[j]) for k, pair in enumerate(pairs) for j in range(pair.lanes)]
        # the write address travels with the word: its last read, the read, the lane, the table
        w_addr = delayed(m, out_addr, SPAD_READ_LATENCY + ADD_LANE_LATENCY + table.latency, name="w_addr")
        m.d.comb += [self.w_en.eq(table.o_valid), self.w_addr.eq(w_addr), self.w_data.eq(table.o)]
        return m
