"""Requantization lane: int accumulator to output element, bit-exact with ``qhw.arith``.

One result per cycle, ``latency`` cycles after the input, for every mode in
``config.rounding`` (``single``, ``tflite``, ``onnx``); the mode is a run-time
input so one array can serve models from several conventions. ``onnx``'s
float32 arithmetic is done exactly in integer logic (no floating-point unit).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from .config import BIAS_BITS, MODE_CODES, MULTIPLIER_BITS, SHIFT_BITS, ArrayConfig
from .mesh import act_shape

__all__ = ["RequantLane"]


class RequantLane(wiring.Component):
    """``y = clamp(round(M0 * (acc + bias) * 2**(shift - 31)) + zero_point, qmin, qmax)``.

    Stages (one register each, ``latency`` = 6):

    1. ``a = acc + bias`` (``config.acc_bits`` wide, exact).
    2. Multiplicand: ``a`` for ``single``; for ``tflite`` TFLite's int32 view,
       ``wrap32(sat32(a) << max(shift, 0))``.
    3. ``p = multiplicand * M0`` (exact, signed x unsigned 31-bit).
    4. ``single``: ``p + 2**(30 - shift)``; ``tflite``: ``q = floor((p + 2**30) / 2**31)``,
       which equals gemmlowp's SaturatingRoundingDoublingHighMul for M0 >= 0
       (its truncating division of ``p - 2**30 + 1`` for negative ``p`` is the same floor).
    5. ``single``: arithmetic shift right by ``31 - shift``; ``tflite``:
       RoundingDivideByPOT by ``max(-shift, 0)`` (floor shift plus a round-up bit).
    6. ``+ zero_point``, clamp to ``[qmin, qmax]`` (the contract's intermediate clamp
       to +-2**31 cannot change this result while qmin/qmax are element values).

    ``onnx`` (ONNX Runtime's float32 rule, ``qhw.arith.mul_scale_onnx``) runs beside them
    on the same stages:

    2. ``float32(a)``: sign, 24-bit mantissa and exponent, rounded half to even;
       the float32 ``scale`` input is split into mantissa and exponent.
    3. the exact 48-bit mantissa product.
    4. rounded half to even to 24 bits (the float32 product).
    5. rounded half to even to an integer (``rint``); |values| >= 2**23 saturate.
    6. as above: since ``qmin - zp`` and ``qmax - zp`` are integers, ``rint(clip(v))`` equals
       ``clip(rint(v))``. Products below float32's normal range only ever round to 0, so
       subnormals need no special rounding.

    ``i_valid`` travels with the data to ``o_valid``. ``mode``, ``zero_point``,
    ``qmin`` and ``qmax`` must be held steady while results are in flight.
    """

    def __init__(self, *, config: ArrayConfig):
        if not isinstance(config, ArrayConfig):
            raise ConfigError(f"config must be an ArrayConfig, not {config!r}")
        self.config = config
        out = act_shape(config)
        super().__init__({
            "i_valid": In(1),
            "acc": In(signed(config.sum_bits)),
            "bias": In(signed(BIAS_BITS)),
            "multiplier": In(unsigned(MULTIPLIER_BITS)),
            "shift": In(signed(SHIFT_BITS)),
            "scale": In(unsigned(32)),      # float32 bits, >= 0 (onnx only)
            "mode": In(2),
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
        has_tflite = "tflite" in c.rounding
        has_onnx = "onnx" in c.rounding

        def selects(mode):
            if mode not in c.rounding:
                return Const(0, 1)
            if len(c.rounding) == 1:
                return Const(1, 1)
            return self.mode == MODE_CODES[mode]

        is_tflite = selects("tflite")
        is_onnx = selects("onnx")

        def stage(n, shape, name):
            return Signal(shape, name=f"s{n}_{name}")

        # Controls carried down the pipeline alongside the data.
        valid = [self.i_valid] + [stage(n, 1, "valid") for n in range(1, 7)]
        shift = [self.shift] + [stage(n, signed(SHIFT_BITS), "shift") for n in range(1, 6)]
        for n in range(1, 7):
            m.d.sync += valid[n].eq(valid[n - 1])
        for n in range(1, 6):
            m.d.sync += shift[n].eq(shift[n - 1])

        # 1: add the bias.
        a = stage(1, signed(c.acc_bits), "a")
        m0 = [self.multiplier, stage(1, unsigned(MULTIPLIER_BITS), "m0"), stage(2, unsigned(MULTIPLIER_BITS), "m0")]
        m.d.sync += [a.eq(self.acc + self.bias), m0[1].eq(m0[0]), m0[2].eq(m0[1])]

        # Stages 2-5 of the fixed-point modes and of onnx run side by side; stage 5 selects.
        fixed_r = onnx_r = None
        if "single" in c.rounding or has_tflite:
            fixed_r = self._fixed(m, a, m0, shift, has_tflite, is_tflite, stage)
        if has_onnx:
            scale = stage(1, 32, "scale")
            m.d.sync += scale.eq(self.scale)
            onnx_r = self._onnx(m, a, scale)
        if onnx_r is None:
            r = fixed_r
        elif fixed_r is None:
            r = onnx_r
        else:
            r = Mux(is_onnx, onnx_r, fixed_r)

        # 6: zero point and clamp.
        y = Signal(signed(len(r) + 2))
        m.d.comb += y.eq(r + self.zero_point)
        m.d.sync += self.o.eq(Mux(y < self.qmin, self.qmin, Mux(y > self.qmax, self.qmax, y)))
        m.d.comb += self.o_valid.eq(valid[6])
        return m

    def _fixed(self, m, a, m0, shift, has_tflite, is_tflite, stage):
        """Stages 2-5 of ``single`` and ``tflite``; returns the stage-5 register."""
        c = self.config
        # 2: choose the multiplicand.
        op_bits = max(c.acc_bits, 32)
        op = stage(2, signed(op_bits), "op")
        if has_tflite:
            a32 = Signal(signed(32))
            lo, hi = -(1 << 31), (1 << 31) - 1
            m.d.comb += a32.eq(Mux(a < lo, lo, Mux(a > hi, hi, a)))
            left = Signal(range(31))
            m.d.comb += left.eq(Mux(shift[1] > 0, shift[1], 0))
            x = Signal(signed(32))
            m.d.comb += x.eq((a32 << left)[:32])  # wraps like compiled TFLite's int32 shift
            m.d.sync += op.eq(Mux(is_tflite, x, a))
        else:
            m.d.sync += op.eq(a)

        # 3: exact product.
        prod = stage(3, signed(op_bits + MULTIPLIER_BITS + 1), "prod")
        m.d.sync += prod.eq(op * m0[2])

        # 4: add the rounding constant (single) or take the rounded high half (tflite).
        t = stage(4, signed(len(prod) + 1), "t")
        nudge = Signal(unsigned(62))
        m.d.comb += nudge.eq(Const(1, 62) << (30 - shift[3]).as_unsigned()[:6])
        if has_tflite:
            m.d.sync += t.eq(Mux(is_tflite, (prod + (1 << 30)) >> 31, prod + nudge))
        else:
            m.d.sync += t.eq(prod + nudge)

        # 5: the shift.
        r = stage(5, signed(len(t) + 1), "r")
        total = Signal(range(64))
        m.d.comb += total.eq((31 - shift[4]).as_unsigned()[:6])
        single_r = t >> total
        if has_tflite:
            right = Signal(range(32))
            m.d.comb += right.eq(Mux(shift[4] < 0, -shift[4], 0))
            mask = Signal(32)
            m.d.comb += mask.eq((Const(1, 33) << right) - 1)
            remainder = Signal(32)
            m.d.comb += remainder.eq(t & mask)
            threshold = Signal(33)
            m.d.comb += threshold.eq((mask >> 1) + (t < 0))
            tflite_r = (t >> right) + (remainder > threshold)
            m.d.sync += r.eq(Mux(is_tflite, tflite_r, single_r))
        else:
            m.d.sync += r.eq(single_r)
        return r

    def _onnx(self, m, a, scale):
        """Stages 2-5 of the float32 path; returns the stage-5 register (rint result)."""
        # 2: float32(a) = (-1)**neg * man * 2**exp, rounded half to even; decode the scale.
        mag = Signal(48)
        m.d.comb += mag.eq(Mux(a < 0, -a, a))
        lz = Signal(range(49))
        m.d.comb += lz.eq(48)
        for i in range(48):                      # later (higher) bits win: leading-zero count
            with m.If(mag[i]):
                m.d.comb += lz.eq(47 - i)
        norm = Signal(48)
        m.d.comb += norm.eq((mag << lz)[:48])
        top = norm[24:48]
        up = norm[23] & (norm[:23].any() | top[0])
        man_r = Signal(25)
        m.d.comb += man_r.eq(top + up)
        a_man = Signal(24, name="s2_a_man")
        a_exp = Signal(signed(8), name="s2_a_exp")
        a_neg = Signal(name="s2_a_neg")
        a_zero = Signal(name="s2_a_zero")
        s_man = Signal(24, name="s2_s_man")
        s_exp = Signal(signed(10), name="s2_s_exp")
        s_tiny = Signal(name="s2_s_tiny")
        exp_field = scale[23:31]
        m.d.sync += [
            a_man.eq(Mux(man_r[24], 1 << 23, man_r[:24])),
            a_exp.eq(24 - lz + man_r[24]),
            a_neg.eq(a < 0), a_zero.eq(mag == 0),
            s_man.eq(Cat(scale[:23], 1)),
            s_exp.eq(exp_field - 150),
            # Zero or subnormal scale: |product| < 2**48 * 2**-126 rounds to 0.
            s_tiny.eq(exp_field == 0),
        ]
        # 3: exact mantissa product.
        prod = Signal(48, name="s3_fprod")
        p_exp = Signal(signed(11), name="s3_fexp")
        p_neg = Signal(name="s3_fneg")
        p_zero = Signal(name="s3_fzero")
        m.d.sync += [prod.eq(a_man * s_man), p_exp.eq(a_exp + s_exp), p_neg.eq(a_neg),
                     p_zero.eq(a_zero | s_tiny)]
        # 4: round the product to a float32 mantissa, half to even.
        hi = prod[47]
        keep = Signal(24)
        rbit = Signal()
        sticky = Signal()
        m.d.comb += [
            keep.eq(Mux(hi, prod[24:48], prod[23:47])),
            rbit.eq(Mux(hi, prod[23], prod[22])),
            sticky.eq(Mux(hi, prod[:23].any(), prod[:22].any())),
        ]
        f_r = Signal(25)
        m.d.comb += f_r.eq(keep + (rbit & (sticky | keep[0])))
        f_man = Signal(24, name="s4_fman")
        f_exp = Signal(signed(12), name="s4_fexp")
        f_neg = Signal(name="s4_fneg")
        f_zero = Signal(name="s4_fzero")
        m.d.sync += [f_man.eq(Mux(f_r[24], 1 << 23, f_r[:24])), f_exp.eq(p_exp + 23 + hi + f_r[24]),
                     f_neg.eq(p_neg), f_zero.eq(p_zero)]
        # 5: rint(f_man * 2**f_exp), half to even; |v| >= 2**23 saturates, |v| < 0.5 is 0.
        sh = Signal(range(25))
        m.d.comb += sh.eq(Mux((f_exp < 0) & (f_exp > -25), -f_exp, 0))
        q = Signal(24)
        rem = Signal(24)
        half = Signal(25)
        m.d.comb += [q.eq(f_man >> sh), rem.eq(f_man & ((Const(1, 25) << sh) - 1)),
                     half.eq((Const(1, 25) << sh) >> 1)]
        r_mag = Signal(25)
        with m.If(f_zero | (f_exp <= -25)):
            m.d.comb += r_mag.eq(0)
        with m.Elif(f_exp >= 0):
            m.d.comb += r_mag.eq(1 << 24)
        with m.Else():
            m.d.comb += r_mag.eq(q + ((rem > half) | ((rem == half) & q[0])))
        r = Signal(signed(27), name="s5_onnx_r")
        m.d.sync += r.eq(Mux(f_neg, -r_mag, r_mag))
        return r
