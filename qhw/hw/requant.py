"""Requantization lane: int accumulator to output element, bit-exact with ``qhw.arith``.

One result per cycle, ``latency`` cycles after the input, for every mode in
``config.rounding`` (``single``, ``tflite``, ``onnx``); the mode is a run-time
input so one array can serve models from several conventions. ``onnx``'s
float32 arithmetic is done exactly in integer logic (no floating-point unit).

The pipeline is deep on purpose: at most one carry chain, one barrel shifter or
one DSP block between two registers, so the lane keeps up with the array's
clock on an FPGA (the 6-stage lane of earlier versions held the ECP5
accelerator to 47 MHz). The depth is ``config.requant_latency``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..contract import (
    BIAS_BITS,
    MODE_BITS,
    MODE_CODES,
    MULTIPLIER_BITS,
    ONNX_MANTISSA_BITS,
    ONNX_PATH_STAGES,
    SCALE_BITS,
    SERIAL_SHIFT_STAGES,
    SHIFT_BITS,
    TFLITE_BITS,
    fixed_path_stages,
    product_latency,
    requant_operand_bits,
    serial_product_latency,
)
from ..errors import ConfigError
from .config import ArrayConfig, check_config
from .mesh import act_shape
from .replica import replica
from .serial_mul import serial_product
from .skew import delayed
from .wide_mul import pipelined_product

__all__ = ["RequantLane"]


class RequantLane(wiring.Component):
    """``y = clamp(round(M0 * (acc + bias) * 2**(shift - 31)) + zero_point, qmin, qmax)``.

    Fixed-point path (``single``, ``tflite``), ``fixed_path_stages()`` + the multiply's stages:

    1. ``a = acc + bias`` (``config.accumulator_bits`` wide, exact); the shift's decodes (``single``'s
       rounding constant ``2**(30 - shift)``, TFLite's left/right shifts) are registered here.
    2. TFLite's int32 view ``sat32(a)``; the right shift's mask.
    3. Multiplicand: ``a`` for ``single``; for ``tflite`` ``wrap32(sat32(a) << max(shift, 0))``.
    4. ``t = multiplicand * M0 + c`` (``qhw.hw.wide_mul``: one register after the partial
       products, one per adder level), ``c = 2**(30 - shift)`` for ``single``, ``2**30`` for
       ``tflite`` (then ``t >> 31`` is gemmlowp's SaturatingRoundingDoublingHighMul for M0 >= 0).
    5. ``single``: arithmetic shift right by ``31 - shift``'s multiple of 8; ``tflite``:
       RoundingDivideByPOT by ``max(-shift, 0)``: the floor shift and whether the remainder passes
       the threshold.
    6. ``single``: shift right by the rest (``FIXED_SHIFT_STAGES``: one 62-bit shifter by 0..62 was the
       ECP5 accelerator's critical path); ``tflite``: add the round-up bit.
    7. ``single``: the narrowing; or ``tflite``'s result.

    ``onnx`` path (ONNX Runtime's float32 rule, ``qhw.arith.mul_scale_onnx``), ``ONNX_PATH_STAGES``
    + the multiply's stages, beside it:

    1. as above.
    2. ``|a|`` and its sign; the float32 ``scale`` split into mantissa and exponent.
    3. leading-zero count of ``|a|``.
    4. normalise.
    5. ``float32(a)``: 24-bit mantissa rounded half to even, exponent.
    6. the exact 48-bit mantissa product (``wide_mul``, 3 stages).
    7. round half to even to 24 bits: round and sticky bits, then the increment (2 stages).
    8. ``rint``: shift amount, then shift and remainder, then the round-up test, then the
       increment (4 stages);
       |values| >= 2**23 saturate, |values| < 0.5 give 0. Products below float32's normal
       range only ever round to 0, so subnormals need no special rounding.

    The shorter path is delayed to the longer one; then two output stages: ``+ zero_point``
    (the sign of ``onnx``'s magnitude folded in as a subtraction), and the clamp to
    ``[qmin, qmax]`` (the contract's intermediate clamp to +-2**31 cannot change the result while
    qmin/qmax are element values; ``rint(clip(v)) == clip(rint(v))`` since the bounds are integers).

    ``family="ecp5"`` builds the multipliers as ``MULT18X18D`` with their registers; any other
    value the portable equivalent (same latency).

    ``i_valid``, ``mode``, ``multiplier``, ``shift`` and ``scale`` travel with the data;
    ``zero_point``, ``qmin`` and ``qmax`` must be held steady while results are in flight (the lane
    registers them once, so they must also be set a cycle before the first input).

    ``steady_constants=True`` (the accelerator: the command holds them for the whole GEMM) lets a
    ``single``-only lane (not ``area_first``) make the clamp's compares a stage earlier, beside the
    fixed-point result. Without it the lane samples the constants where it always did (the engine's
    write-back delays each row's zero point and clamp to those stages).
    """

    def __init__(self, *, config: ArrayConfig, family: str | None = None, steady_constants: bool = False):
        check_config(config)
        if family not in (None, "ice40", "ecp5"):
            raise ConfigError(f"family must be None, 'ice40' or 'ecp5', not {family!r}")
        if not isinstance(steady_constants, bool):
            raise ConfigError(f"steady_constants must be True or False, not {steady_constants!r}")
        self.config, self.family, self.steady_constants = config, family, steady_constants
        out = act_shape(config)
        super().__init__({
            "i_valid": In(1),
            "acc": In(signed(config.sum_bits)),
            "bias": In(signed(BIAS_BITS)),
            "multiplier": In(unsigned(MULTIPLIER_BITS)),
            "shift": In(signed(SHIFT_BITS)),
            "scale": In(unsigned(SCALE_BITS)),      # float32 bits, >= 0 (onnx only)
            "mode": In(MODE_BITS),
            "zero_point": In(out),
            "qmin": In(out),
            "qmax": In(out),
            "o_valid": Out(1),
            "o": Out(out),
        })

    @property
    def latency(self) -> int:
        """Input to output, in cycles (``config.requant_latency``)."""
        return self.config.requant_latency

    def elaborate(self, platform):
        m = Module()
        c = self.config
        self._valid_tap = None          # set by a serial fixed-point path
        self._sat = None                # (flags, stage): the parallel fixed-point path's saturation
        self._bounds = None             # (not area_first) the clamp's registered differences
        self._pre = None                # (flags, stage): the clamp's compares, made beside ``r``
        if not c.area_first:
            self._bounds = self._clamp_bounds(m)

        def selects(mode):
            if mode not in c.rounding:
                return Const(0, 1)
            if len(c.rounding) == 1:
                return Const(1, 1)
            return self.mode == MODE_CODES[mode]

        # 1: the bias, and everything that travels with the data.
        a = Signal(signed(c.accumulator_bits), name="s1_a")
        tfl = Signal(name="s1_tflite")
        onx = Signal(name="s1_onnx")
        if c.requant_mul == "serial":
            # Inputs come requant_interval cycles apart: ``a`` is held until the multiply samples it
            # (stage 4), so no delay line carries it there (each flip-flop is a logic cell on iCE40).
            with m.If(self.i_valid):
                m.d.sync += a.eq(self.acc + self.bias)
            m.d.sync += [tfl.eq(selects("tflite")), onx.eq(selects("onnx"))]
        else:
            m.d.sync += [a.eq(self.acc + self.bias), tfl.eq(selects("tflite")), onx.eq(selects("onnx"))]

        paths = []      # (result, negate, ready after stage n)
        if "single" in c.rounding or "tflite" in c.rounding:
            paths.append(self._fixed(m, a, tfl))
        if "onnx" in c.rounding:
            paths.append(self._onnx(m, a))
        depth = max(ready for _, _, ready in paths)

        # Align the paths, then: + zero point (a subtraction for onnx's negative magnitudes) ...
        aligned = [(delayed(m, r, depth - ready, name=f"{r.name}_pad"),
                    delayed(m, neg, depth - ready, name=f"{r.name}_neg_pad")) for r, neg, ready in paths]
        # The fixed-point result is narrowed to _FIXED_R_BITS without its saturation; whether it
        # saturates (``over``) and which way (``below``) come beside it and take effect here.
        over, below = Const(0, 1), Const(0, 1)
        if self._sat is not None:
            flags, ready = self._sat
            flags = delayed(m, flags, depth - ready, name="fixed_sat_pad")
            over, below = flags[0], flags[1]
        if len(aligned) == 1:
            r, neg = aligned[0]
        else:
            is_onnx = delayed(m, onx, depth - 1, name="onnx")
            (r_fixed, _), (r_onnx, neg_onnx) = aligned
            r = Mux(is_onnx, r_onnx, r_fixed)
            neg = is_onnx & neg_onnx
            over = over & ~is_onnx
        if c.area_first:
            zero_point, qmin, qmax = self._constant_copies(m)
            y = Signal(signed(len(r) + 2), name="out_y")
            # A saturated fixed-point result is +-2**33, beyond any qmin/qmax (element values), as
            # zero_point + the saturated value was: the clamp below gives the same bound.
            lo, hi = -(1 << (_FIXED_R_BITS - 1)), (1 << (_FIXED_R_BITS - 1)) - 1
            m.d.sync += y.eq(Mux(over, Mux(below, lo, hi), Mux(neg, zero_point - r, zero_point + r)))
            # ... and the clamp.
            m.d.sync += self.o.eq(Mux(y < qmin, qmin, Mux(y > qmax, qmax, y)))
        else:
            pre = self._pre if len(paths) == 1 and self._pre is not None and self._pre[1] == depth else None
            self._early_clamp(m, r, neg, over, below, pre)
        _check_stages("the lane", depth + 2, c.requant_latency)     # the paths, then y and the clamp
        tap = self._valid_tap
        if tap is None:
            m.d.comb += self.o_valid.eq(delayed(m, self.i_valid, c.requant_latency, name="valid"))
        else:       # the serial path's valid at its product, carried on
            valid, stage = tap
            m.d.comb += self.o_valid.eq(delayed(m, valid, c.requant_latency - stage, name="valid_out"))
        return m

    def _constant_copies(self, m):
        """The lane's own registered copies of ``zero_point``, ``qmin`` and ``qmax``: one register from
        the command register to every lane takes the fan-out route off the adder and the clamp."""
        copies = tuple(replica(v, name=f"{n}_r") for v, n in
                       ((self.zero_point, "zero_point"), (self.qmin, "qmin"), (self.qmax, "qmax")))
        m.d.sync += [r.eq(v) for r, v in zip(copies, (self.zero_point, self.qmin, self.qmax))]
        return copies

    def _clamp_bounds(self, m):
        """The lane's copies of the per-command constants and the clamp's differences
        (``_early_clamp``): (zero_point, qmin, qmax, d_min, d_max, compare width), all registers."""
        zero_point, qmin, qmax = self._constant_copies(m)
        d = signed(self.o.shape().width + 2)
        d_min, d_max = Signal(d, name="clamp_dmin"), Signal(d, name="clamp_dmax")
        m.d.sync += [d_min.eq(qmin - zero_point), d_max.eq(qmax - zero_point)]
        return zero_point, qmin, qmax, d_min, d_max, d.width + 1

    def _clamp_early_flags(self, m, value, stage):
        """``single`` alone: the clamp's compares on the shifted product ``value`` (whose low
        ``_FIXED_R_BITS`` are ``r``), registered beside ``r`` (stage ``stage``) instead of behind it:
        whether ``value`` fits the compare's width, as all-equal flags of overlapping groups of 8
        bits (one LUT level each; their AND follows), its sign, and its low bits against the
        differences (an 11-bit carry chain). The 24-bit all-equal test, the compare and the
        saturation select behind ``r`` were the 8x8 accelerator's critical path (6.8-7.3 ns)."""
        *_, d_min, d_max, w = self._bounds
        top = value[w - 1:]
        flags = []
        for lo in range(0, len(top) - 1, 7):
            g = top[lo:lo + 8]
            f = Signal(name=f"s{stage}_clamp_fits{len(flags)}")
            m.d.sync += f.eq(g.all() | ~g.any())
            flags.append(f)
        lt, gt, sign = (Signal(name=f"s{stage}_clamp_{n}") for n in ("lt", "gt", "sign"))
        low = value[:w].as_signed()
        m.d.sync += [lt.eq(low < d_min), gt.eq(low > d_max), sign.eq(value[-1])]
        self._pre = ((Cat(flags), lt, gt, sign), stage)

    def _early_clamp(self, m, r, neg, over, below, pre):
        """The clamp decided beside ``zero_point +- r`` (ECP5: the 36-bit compare after that add
        was the 8x8 accelerator's critical path). ``y < qmin`` is ``r < qmin - zero_point``
        (``r > zero_point - qmin`` when negated); the differences are registered from the
        lanes' constants, held steady like them. Only ``y``'s low bits are kept: it is the
        output only when it lies in ``[qmin, qmax]``, so the last stage is a 3:1 multiplexer.
        ``pre`` (``single`` alone): the compares were made a stage earlier, beside ``r``."""
        out = self.o.shape()
        zero_point, qmin, qmax, d_min, d_max, w = self._bounds
        if pre is not None:
            (flags, lt_r, gt_r, sign), _ = pre
            fits = flags.all()
            lt, gt = Mux(fits, lt_r, sign), Mux(fits, gt_r, ~sign)
        else:
            # ``r`` against the bounds without a carry chain over its 34 bits: a value outside the
            # differences' range decides by its sign, and the low bits compare only when it is inside.
            fits = ~r[w - 1:].any() | (r[w - 1:].all() if r.shape().signed else Const(0, 1))
            r_lo = r[:w].as_signed()
            sign = r[-1] if r.shape().signed else Const(0, 1)      # onnx's magnitude alone is unsigned
            pos_big, neg_big = ~fits & ~sign, ~fits & sign
            lt, gt = neg_big | (fits & (r_lo < d_min)), pos_big | (fits & (r_lo > d_max))
            if "onnx" in self.config.rounding:       # onnx's magnitudes are subtracted from the zero point
                lt = Mux(neg, pos_big | (fits & (r_lo > -d_min)), lt)
                gt = Mux(neg, neg_big | (fits & (r_lo < -d_max)), gt)
            # A saturated fixed-point result (``over``) is beyond any element bound, ``below`` says which.
            lt, gt = Mux(over, below, lt), Mux(over, ~below, gt)
        y_lt, y_gt = Signal(name="out_lt"), Signal(name="out_gt")
        y = Signal(out, name="out_y")
        m.d.sync += [y_lt.eq(lt), y_gt.eq(gt), y.eq(Mux(neg, zero_point - r, zero_point + r)[:out.width])]
        m.d.sync += self.o.eq(Mux(y_lt, qmin, Mux(y_gt, qmax, y)))

    def _fixed(self, m, a, tfl):
        """``single``/``tflite``; returns (result register, 0, stage it is ready after)."""
        c = self.config
        has_tflite = "tflite" in c.rounding
        shift = self.shift

        serial = c.requant_mul == "serial"
        # 1: decode the shift. A serial lane's inputs come at least requant_interval cycles apart, so
        # these registers hold their element (load on i_valid) until the multiply has sampled it,
        # instead of delay lines carrying it to stage 3.
        total = Signal(range(64), name="s1_total")                 # single: right shift 31 - shift
        m0 = Signal(unsigned(MULTIPLIER_BITS), name="s1_m0")
        s1 = [total.eq((31 - shift).as_unsigned()[:6]), m0.eq(self.multiplier)]
        if has_tflite:
            left = Signal(range(31), name="s1_left")
            right = Signal(range(32), name="s1_right")
            s1 += [left.eq(Mux(shift > 0, shift, 0)), right.eq(Mux(shift < 0, -shift, 0))]
        if serial:
            shift_h = Signal.like(shift, name="s1_shift")
            with m.If(self.i_valid):
                m.d.sync += [*s1, shift_h.eq(shift)]
        else:
            m.d.sync += s1

        def to_s3(value, name):
            """A stage-1 value at stage 3: held (serial) or two registers later."""
            return value if serial else delayed(m, value, 2, name=name)

        # The rounding constant, decoded where the multiplier registers it: 2**(30 - shift) for
        # single, 2**30 for tflite (carrying 6 bits costs less than carrying 62). Its position is
        # subtracted before the delay line, so only the decode is in front of the register.
        round_at = ((30 - shift_h).as_unsigned()[:6] if serial
                    else delayed(m, (30 - shift).as_unsigned()[:6], 3, name="round_at"))
        addend = (Const(1, 62) << round_at)[:64]     # a 6-bit shift of 1: bits 64 and up are zero
        if has_tflite:
            addend = Mux(delayed(m, tfl, 2, name="tflite_add"), Const(1 << 30, 62), addend)

        # 2-3: the multiplicand.
        op_bits = requant_operand_bits(c.accumulator_bits)
        op = Signal(signed(op_bits), name="s3_op")
        if has_tflite:
            a32 = Signal(signed(TFLITE_BITS), name="s2_a32")
            a2 = Signal.like(a, name="s2_a")
            lo, hi = -(1 << (TFLITE_BITS - 1)), (1 << (TFLITE_BITS - 1)) - 1
            m.d.sync += [a32.eq(Mux(a < lo, lo, Mux(a > hi, hi, a))), a2.eq(a)]
            tfl3 = delayed(m, tfl, 1, name="tflite_s2")
            left2 = delayed(m, left, 1, name="left_s2")
            # wraps like TFLite's int32 shift
            m.d.sync += op.eq(Mux(tfl3, (a32 << left2)[:TFLITE_BITS].as_signed(), a2))
        elif serial:
            m.d.comb += op.eq(a)            # held from stage 1 until the multiply samples it
        else:
            m.d.sync += op.eq(delayed(m, a, 1, name="a_s2"))

        # 4: t = op * M0 + rounding constant.
        if serial:
            # One bit of M0 per cycle (no DSP). What travels with the data rides in the unit's tag
            # registers instead of a delay line as long as the multiply.
            tags = {"total": total}
            if has_tflite:
                tags.update(right=right, tfl=delayed(m, tfl, 2, name="tflite_s3"))
            # (The constant is at most 2**61 for shifts in [-31, 30]: its 62 bits are the value.)
            t, held = serial_product(m, op, to_s3(m0, "m0"), addend=addend[:62],
                                     start=delayed(m, self.i_valid, 3, name="start"), tags=tags, name="s4_prod")
            mul_latency = serial_product_latency(MULTIPLIER_BITS)
        else:
            t = pipelined_product(m, op, delayed(m, m0, 2, name="m0"), addend=addend, name="s4_prod",
                                  family=self.family)
            mul_latency = product_latency(op_bits, True, MULTIPLIER_BITS, addend=True)
        ready = 3 + mul_latency     # stages 1-3, the product
        # Then the shift (FIXED_SHIFT_STAGES), and the round-up or the narrowing; a serial lane loads
        # a shift register and shifts 2 bits per cycle instead, SERIAL_SHIFT_STAGES more.
        built = ready + (1 + SERIAL_SHIFT_STAGES if serial else 2) + 1     # 2: the split shift below
        _check_stages("the fixed-point path", built, fixed_path_stages(c.requant_mul) + mul_latency)
        r = Signal(signed(_FIXED_R_BITS), name=f"s{built}_fixed_r")

        def beside(name, value, stage, held_name):
            """``value`` (ready after stage 1) ready after ``stage`` (>= ``ready - 1``): a delay line, or
            the serial unit's held tag (valid up to stage ``ready - 1``, its last step) and registers."""
            if c.requant_mul != "serial":
                return delayed(m, value, stage - 1, name=name)
            return delayed(m, held[held_name], stage - (ready - 1), name=name)

        total_x = beside("total", total, ready, "total")
        if serial:
            right_t = beside("right", right, ready - 1, "right") if has_tflite else None
            return self._serial_shift(m, t, total_x, ready, r, has_tflite, right_t,
                                      delayed(m, right_t, 1, name="right_x") if has_tflite else None,
                                      beside("tflite", tfl, ready, "tfl") if has_tflite else None)
        # 5: single's right shift by the multiple of 8 of ``total``, then by the rest (a 62-bit
        # shifter by 0..62 in one stage is too deep for the clock).
        single_hi = Signal.like(t, name=f"s{ready + 1}_single_hi")
        m.d.sync += single_hi.eq(t >> Cat(Const(0, 3), total_x[3:]))
        total_lo = delayed(m, total_x[:3], 1, name="total_lo")
        sh_single = Signal.like(t, name=f"s{ready + 2}_single")
        m.d.sync += sh_single.eq(single_hi >> total_lo)
        # single's narrowing: the low bits, and the saturation flags beside them (applied at the
        # zero point's add: the 29-bit all-equal test and a 34-bit select were one stage here).
        sat = Signal(2, name=f"s{built}_fixed_sat")
        self._sat = (sat, built)
        over = _overflows(sh_single, _FIXED_R_BITS)
        if not has_tflite:
            m.d.sync += [r.eq(sh_single[:_FIXED_R_BITS]), sat.eq(Cat(over, sh_single[-1]))]
            if self._bounds is not None and self.steady_constants:
                self._clamp_early_flags(m, sh_single, built)
            return r, Const(0, 1), built

        # 5: RoundingDivideByPOT(q, right): floor shift, and whether the remainder passes the
        # threshold (mask >> 1) + (q < 0).
        q = (t >> 31)[:32].as_signed()                             # |op * M0 + 2**30| < 2**62
        # The mask and both thresholds are decoded from `right` one stage ahead (no adders).
        right_t = beside("right", right, ready - 1, "right")
        mask = Signal(31, name=f"s{ready}_mask")          # 2**right - 1 (right <= 31)
        half = Signal(30, name=f"s{ready}_half")          # mask >> 1
        half1 = Signal(31, name=f"s{ready}_half1")        # (mask >> 1) + 1
        m.d.sync += [mask.eq(Cat(right_t > k for k in range(31))),
                     half.eq(Cat(right_t > k + 1 for k in range(30))),
                     half1.eq(Cat((right_t == k + 1) | ((k == 0) & (right_t == 0)) for k in range(31)))]
        right_x = delayed(m, right_t, 1, name="right_x")
        sh_tflite = Signal(signed(32), name=f"s{ready + 1}_tflite")
        up = Signal(name=f"s{ready + 1}_up")
        m.d.sync += [sh_tflite.eq(q >> right_x), up.eq((q & mask) > Mux(q < 0, half1, half))]
        # 6: the round-up add (tflite), while single's shift finishes.
        rounded = Signal(signed(33), name=f"s{ready + 2}_tflite")
        m.d.sync += rounded.eq(sh_tflite + up)
        # 7: the narrowing (single), or the rounded result (tflite).
        tfl_x = beside("tflite", tfl, ready + 2, "tfl")
        m.d.sync += [r.eq(Mux(tfl_x, rounded, sh_single[:_FIXED_R_BITS])), sat.eq(Cat(over & ~tfl_x, sh_single[-1]))]
        return r, Const(0, 1), built

    def _serial_shift(self, m, t, total_x, ready, r, has_tflite, right_t, right_x, tfl_t):
        """The serial lane's steps 5-6: its element arrives every ``requant_interval`` cycles, so one
        register shifting 2 bits per cycle (``SERIAL_SHIFT_STAGES`` cycles: up to 62 places) replaces
        the 6-level barrel shifters of ``single``'s ``t >> (31 - shift)`` and TFLite's ``q >> right``.
        ``t``, ``total_x``, ``right_x``, ``tfl_t`` are ready after stage ``ready``, ``right_t`` one stage earlier;
        returns the fixed-point result as ``_fixed`` does."""
        load = delayed(m, self.i_valid, ready, name="valid")       # t is this element's product
        self._valid_tap = (load, ready)
        sh = Signal.like(t, name="serial_sh")
        left = Signal(range(64), name="serial_left")               # places still to shift
        if has_tflite:
            q = (t >> 31)[:32].as_signed()                         # as in the parallel path below
            src, amount = Mux(tfl_t, q, t), Mux(tfl_t, right_x, total_x)
            # TFLite's round-up test beside it (as the parallel path), held with the element.
            mask = Cat(right_t > k for k in range(31))
            half = Cat(right_t > k + 1 for k in range(30))
            half1 = Cat((right_t == k + 1) | ((k == 0) & (right_t == 0)) for k in range(31))
            masks = Signal(92, name=f"s{ready}_masks")
            m.d.sync += masks.eq(Cat(mask, half, half1))
            up = Signal(name="serial_up")
            tfl_h = Signal(name="serial_tflite")
            with m.If(load):
                m.d.sync += [up.eq((q & masks[:31]) > Mux(q < 0, masks[61:92], masks[31:61])), tfl_h.eq(tfl_t)]
        else:
            src, amount = t, total_x
        # sh is done SERIAL_SHIFT_STAGES + 1 stages after t; r is registered from it.
        done = ready + 1 + SERIAL_SHIFT_STAGES
        if not has_tflite:
            # single alone: saturated to act_bits + 2 bits, r still clamps exactly (a saturated
            # r +- zero_point is outside every element value), and the zero point's add and the
            # clamp behind it are 12-bit carry chains instead of 36. The load shifts by the
            # amount's low two bits, so the steps (2 places, at most 60) end a cycle before r
            # samples sh, and the saturation test is registered in that cycle (the 56-bit
            # all-equal test in front of r was the UP5K accel's critical path).
            with m.If(load):
                m.d.sync += [sh.eq(src >> amount[:2]), left.eq(Cat(Const(0, 2), amount[2:]))]
            with m.Elif(left != 0):
                m.d.sync += [sh.eq(sh >> 2), left.eq(left - 2)]
            r = Signal(signed(self.config.act_bits + 2), name=r.name)
            top = sh[len(r) - 1:]
            fits, below = Signal(name="serial_fits"), Signal(name="serial_below")
            m.d.sync += [fits.eq(top.all() | ~top.any()), below.eq(sh[-1])]
            lo, hi = -(1 << (len(r) - 1)), (1 << (len(r) - 1)) - 1
            m.d.sync += r.eq(Mux(fits, sh[:len(r)].as_signed(), Mux(below, lo, hi)))
            return r, Const(0, 1), done + 1
        with m.If(load):
            m.d.sync += [sh.eq(src), left.eq(amount)]
        with m.Elif(left >= 2):
            m.d.sync += [sh.eq(sh >> 2), left.eq(left - 2)]
        with m.Elif(left == 1):
            m.d.sync += [sh.eq(sh >> 1), left.eq(0)]
        narrowed = _saturate(sh, _FIXED_R_BITS)
        if has_tflite:
            narrowed = Mux(tfl_h, sh[:_FIXED_R_BITS].as_signed() + up, narrowed)
        m.d.sync += r.eq(narrowed)
        return r, Const(0, 1), done + 1

    def _onnx(self, m, a):
        """The float32 path; returns (|rint result| register, its sign, stage it is ready after)."""
        # 1: the scale travels with the data.
        scale = Signal(SCALE_BITS, name="s1_scale")
        m.d.sync += scale.eq(self.scale)
        # 2: magnitude and sign of a; the scale's mantissa and exponent.
        mag = Signal(48, name="s2_mag")
        neg = Signal(name="s2_neg")
        s_man = Signal(24, name="s2_s_man")
        s_exp = Signal(signed(10), name="s2_s_exp")
        s_tiny = Signal(name="s2_s_tiny")
        exp_field = scale[23:31]
        m.d.sync += [
            mag.eq(Mux(a < 0, -a, a)), neg.eq(a < 0),
            s_man.eq(Cat(scale[:23], 1)), s_exp.eq(exp_field - 150),
            # Zero or subnormal scale: |product| < 2**48 * 2**-126 rounds to 0.
            s_tiny.eq(exp_field == 0),
        ]
        # 3: leading zeros (ones below the 48 bits cap the count at 48 for a = 0).
        _, count = _leading_zeros(Cat(Const(0xFFFF, 16), mag))
        lz = Signal(range(49), name="s3_lz")
        mag3 = Signal(48, name="s3_mag")
        zero3 = Signal(name="s3_zero")
        m.d.sync += [lz.eq(count), mag3.eq(mag), zero3.eq(mag == 0)]
        # 4: normalise.
        norm = Signal(48, name="s4_norm")
        m.d.sync += norm.eq((mag3 << lz)[:48])
        exp4 = Signal(signed(8), name="s4_exp")
        m.d.sync += exp4.eq(24 - lz)
        # 5: float32(a), rounded half to even.
        top = norm[24:48]
        up = norm[23] & (norm[:23].any() | top[0])
        # The increment carries out only from all ones: decided without the carry chain, so the
        # exponent's increment runs beside the mantissa's instead of after it.
        man_r = Signal(25)
        carry = Signal()
        m.d.comb += [man_r.eq(top + up), carry.eq(top.all() & up)]
        a_man = Signal(24, name="s5_a_man")
        a_exp = Signal(signed(8), name="s5_a_exp")
        m.d.sync += [a_man.eq(Mux(carry, 1 << 23, man_r[:24])), a_exp.eq(exp4 + carry)]
        # 6: the exact mantissa product; its exponent and zero flag beside it.
        prod = pipelined_product(m, a_man, delayed(m, s_man, 3, name="s_man"), name="s6_fprod",
                                 family=self.family)
        lat = product_latency(ONNX_MANTISSA_BITS, False, ONNX_MANTISSA_BITS, addend=False)
        p_exp = Signal(signed(11), name="s6_fexp")
        p_zero = Signal(name="s6_fzero")
        m.d.sync += [p_exp.eq(a_exp + delayed(m, s_exp, 3, name="s_exp")),
                     p_zero.eq(delayed(m, zero3, 2, name="zero") | delayed(m, s_tiny, 3, name="s_tiny"))]
        p_exp = delayed(m, p_exp, lat - 1, name="fexp")
        p_zero = delayed(m, p_zero, lat - 1, name="fzero")
        n = 5 + lat     # prod, p_exp, p_zero ready after stage n
        prod = prod[:48]
        # 7: round the product to a float32 mantissa, half to even.
        hi = prod[47]
        keep = Signal(24, name=f"s{n + 1}_keep")
        rbit = Signal(name=f"s{n + 1}_rbit")
        sticky = Signal(name=f"s{n + 1}_sticky")
        exp7 = Signal(signed(12), name=f"s{n + 1}_exp")
        m.d.sync += [
            keep.eq(Mux(hi, prod[24:48], prod[23:47])),
            rbit.eq(Mux(hi, prod[23], prod[22])),
            sticky.eq(Mux(hi, prod[:23].any(), prod[:22].any())),
            exp7.eq(p_exp + 23 + hi),
        ]
        zero7 = delayed(m, p_zero, 1, name="zero7")
        f_r = Signal(25)
        f_inc = Signal()
        f_carry = Signal()
        m.d.comb += [f_inc.eq(rbit & (sticky | keep[0])), f_r.eq(keep + f_inc), f_carry.eq(keep.all() & f_inc)]
        f_man = Signal(24, name=f"s{n + 2}_fman")
        f_exp = Signal(signed(12), name=f"s{n + 2}_fexp")
        f_zero = delayed(m, zero7, 1, name="fzero7")
        m.d.sync += [f_man.eq(Mux(f_carry, 1 << 23, f_r[:24])), f_exp.eq(exp7 + f_carry)]
        # 8: rint(f_man * 2**f_exp), half to even; |v| >= 2**23 saturates, |v| < 0.5 is 0.
        sh = Signal(range(25), name=f"s{n + 3}_sh")
        gone = Signal(name=f"s{n + 3}_gone")
        sat = Signal(name=f"s{n + 3}_sat")
        m.d.sync += [sh.eq(Mux((f_exp < 0) & (f_exp > -25), -f_exp, 0)),
                     gone.eq(f_zero | (f_exp <= -25)), sat.eq(f_exp >= 0)]
        man8 = delayed(m, f_man, 1, name="fman")
        q = Signal(24, name=f"s{n + 4}_q")
        rem = Signal(24, name=f"s{n + 4}_rem")
        half = Signal(25, name=f"s{n + 4}_half")
        m.d.sync += [q.eq(man8 >> sh), rem.eq(man8 & ((Const(1, 25) << sh) - 1)), half.eq((Const(1, 25) << sh) >> 1)]
        # Whether to round up (a compare), then the increment: two stages, one carry chain each.
        q10 = Signal(24, name=f"s{n + 5}_q")
        up = Signal(name=f"s{n + 5}_up")
        m.d.sync += [q10.eq(q), up.eq((rem > half) | ((rem == half) & q[0]))]
        gone10 = delayed(m, gone, 2, name="gone")
        sat10 = delayed(m, sat, 2, name="sat")
        r_mag = Signal(25, name=f"s{n + 6}_onnx_mag")
        with m.If(gone10):
            m.d.sync += r_mag.eq(0)
        with m.Elif(sat10):
            m.d.sync += r_mag.eq(1 << 24)
        with m.Else():
            m.d.sync += r_mag.eq(q10 + up)
        ready = n + 6
        _check_stages("the onnx path", ready, ONNX_PATH_STAGES + lat)
        return r_mag, delayed(m, neg, ready - 2, name="neg"), ready


def _check_stages(what: str, built: int, contract: int) -> None:
    if built != contract:
        raise ConfigError(f"RequantLane: {what} was built with {built} stages, but the hardware contract "
                          f"(qhw.contract) says {contract}")


# The fixed-point result is narrowed to this width before it waits for the onnx path and meets
# the zero point: |r| >= 2**32 clamps to qmin or qmax (element values, at most 16 bits) exactly
# as the full value would. 34 bits hold tflite's int32 result plus its round-up bit.
_FIXED_R_BITS = 34


def _overflows(value, bits):
    """Whether ``value`` is outside the signed ``bits``-bit range (its top bits not all equal)."""
    top = value[bits - 1:]
    return ~(top.all() | ~top.any())


def _saturate(value, bits):
    """``value`` clamped to a signed ``bits``-bit range (an all-equal test of the top bits)."""
    top = value[bits - 1:]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(top.all() | ~top.any(), value[:bits].as_signed(), Mux(value[-1], lo, hi))


def _leading_zeros(v):
    """(all zero, leading-zero count) of ``v`` (power-of-two width) as a tree of 2:1 multiplexers."""
    n = len(v)
    if n == 2:
        return ~v[1] & ~v[0], ~v[1]
    hi_zero, hi_count = _leading_zeros(v[n // 2:])
    lo_zero, lo_count = _leading_zeros(v[:n // 2])
    return hi_zero & lo_zero, Cat(Mux(hi_zero, lo_count, hi_count), hi_zero)
