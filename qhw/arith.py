"""The arithmetic contract: requantization, rounding and saturation, written once.

Everything that turns an integer accumulator into a quantized output goes
through this module: the golden model calls it, the hardware generator mirrors
it, and the tests check both against it. ``docs/arithmetic.md`` is its prose
form; keep the two in step.

All functions are vectorized over NumPy arrays and pure (no graphs, no I/O).
Per-channel parameters broadcast against the accumulator's last axis unless
the caller reshapes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ArithmeticContractError, ConfigError

__all__ = [
    "ROUNDING_MODES",
    "INT32_MIN",
    "INT32_MAX",
    "ACC_LIMIT_BITS",
    "qrange",
    "quantize_multiplier",
    "onnx_scale",
    "mul_shift_single",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "mul_shift_tflite",
    "mul_scale_onnx",
    "Requant",
    "divide_round_half_away",
    "average_onnx_scale",
    "quantize_onnx_pool",
    "quantize_float",
    "dequantize",
    "saturate",
    "fma_f32",
    "add_left_shift",
    "add_multipliers",
    "add_rescaled",
    "add_with_multipliers",
    "qlinear_add_onnx",
    "qlinear_mul_onnx",
    "span_scalar_input0",
    "requantize_codes",
]

ROUNDING_MODES = ("single", "tflite", "onnx")
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
# Accumulators (after bias) must satisfy |acc| < 2**ACC_LIMIT_BITS in ``single`` mode.
ACC_LIMIT_BITS = 47


def qrange(bits: int, *, signed: bool = True, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-wide value; ``narrow`` drops the most negative code.

    >>> qrange(8), qrange(8, narrow=True), qrange(8, signed=False)
    ((-128, 127), (-127, 127), (0, 255))
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 64:
        raise ConfigError(f"bit width must be an integer from 2 to 64, not {bits!r}")
    if not signed:
        return 0, (1 << bits) - 1
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return (lo + 1 if narrow else lo), hi


def saturate(x: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """Clamp to [qmin, qmax] (inclusive) as int64."""
    return np.clip(np.asarray(x, dtype=np.int64), qmin, qmax)


# --------------------------------------------------------------------------- multipliers


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """TFLite ``QuantizeMultiplier``: real = M0 * 2**(shift - 31), M0 in [2**30, 2**31).

    Returns ``(M0, shift)`` as int64 arrays of the input's shape. ``real`` must be
    finite and >= 0. Zero and values below 2**-32 give M0 = 0, shift = 0 (the
    output is then always the zero point; values within 2**-64 below 2**-32 round
    up to M0 = 2**30, shift = -31). Values of 2**30 - 2**-2 or more (those whose
    rounded M0 would need shift > 30) saturate to M0 = 2**31 - 1, shift = 30, as
    TFLite's single-rounding build does; that largest multiplier is about 2**30.
    """
    r = np.asarray(real, dtype=np.float64)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ArithmeticContractError(
            f"real multipliers must be finite and non-negative, got min {np.min(r)!r}")
    mant, exp = np.frexp(r)  # r = mant * 2**exp, mant in [0.5, 1)
    # TFLite uses std::round (half away from zero); mant * 2**31 is exact in float64 and
    # positive, so floor(x + 0.5) is that rounding, ties included.
    m0 = np.floor(mant * (1 << 31) + 0.5).astype(np.int64)
    shift = exp.astype(np.int64)
    carry = m0 == (1 << 31)
    m0 = np.where(carry, m0 // 2, m0)
    shift = np.where(carry, shift + 1, shift)
    tiny = (shift < -31) | (r == 0)
    m0 = np.where(tiny, 0, m0)
    shift = np.where(tiny, 0, shift)
    big = shift > 30
    m0 = np.where(big, INT32_MAX, m0)
    shift = np.where(big, 30, shift)
    return m0.astype(np.int64), shift.astype(np.int64)


def onnx_scale(s_in, s_w, s_out) -> np.ndarray:
    """ONNX Runtime's requantization scale: float32(s_in * s_w) / s_out, each step in float32.

    This is the order ORT's QLinearConv and QLinearMatMul kernels evaluate it.
    """
    f = np.float32
    return (np.asarray(s_in, f) * np.asarray(s_w, f)).astype(f) / np.asarray(s_out, f)


# --------------------------------------------------------------------------- the three rules


def _floor_shift_product(acc: np.ndarray, m0: np.ndarray, total_shift: np.ndarray,
                         rounding: np.ndarray) -> np.ndarray:
    """floor((acc * m0 + rounding) / 2**total_shift) without int64 overflow.

    Valid for |acc| < 2**47, 0 <= m0 < 2**31, 1 <= total_shift <= 62,
    0 <= rounding < 2**62. Results whose magnitude exceeds 2**31 are clamped to
    +-2**31 (they saturate any output type anyway).
    """
    lo_mask = (1 << 31) - 1
    a_hi = acc >> 31                       # arithmetic shift: floor division
    a_lo = acc & lo_mask                   # in [0, 2**31)
    p = a_lo * m0 + rounding               # < 2**62 + 2**62: fits int64
    n = a_hi * m0 + (p >> 31)              # product = n * 2**31 + (p & lo_mask)
    p_lo = p & lo_mask
    ge = total_shift >= 31
    # total_shift >= 31: the low 31 bits cannot carry into the integer part.
    res_ge = n >> np.where(ge, total_shift - 31, 0)
    # total_shift < 31: result = n * 2**(31 - s) + floor(p_lo / 2**s); clamp n first.
    n_c = np.clip(n, -(1 << 31), 1 << 31)
    up = np.where(ge, 0, 31 - total_shift)
    res_lt = (n_c << up) + (p_lo >> np.where(ge, 0, total_shift))
    res = np.where(ge, res_ge, res_lt)
    return np.clip(res, -(1 << 31), 1 << 31)


def mul_shift_single(acc, m0, shift) -> np.ndarray:
    """``single`` rounding (TFLITE_SINGLE_ROUNDING): (acc*M0 + 2**(30-shift)) >> (31-shift).

    One rounding step; ties round towards +infinity (the shift is a floor).
    ``shift`` is in [-31, 30]; |acc| < 2**47. Returns int64, clamped to +-2**31.
    """
    acc = np.asarray(acc, dtype=np.int64)
    amax = max(int(acc.max()), -int(acc.min())) if acc.size else 0
    if amax >= (1 << ACC_LIMIT_BITS):
        raise ArithmeticContractError(f"accumulator magnitude must stay below 2**{ACC_LIMIT_BITS}, got {amax}")
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    total = 31 - shift
    rounding = np.left_shift(np.int64(1), total - 1)
    if amax < (1 << 31):  # |acc·M0| < 2**62 and rounding <= 2**61: the plain int64 formula cannot overflow
        return np.clip((acc * m0 + rounding) >> total, -(1 << 31), 1 << 31)
    return _floor_shift_product(acc, m0, total, rounding)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values (as int64 arrays).

    a*b / 2**31 rounded to nearest, ties towards +infinity (the negative nudge
    1 - 2**30 with C's truncating division makes -0.5 -> 0, like ARM VQRDMULH);
    the single overflow case a == b == INT32_MIN saturates to INT32_MAX.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b                                         # |ab| <= 2**62
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    t = ab + nudge
    # C's integer division truncates towards zero; emulate it on int64.
    q = np.where(t >= 0, t >> 31, -((-t) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, q)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: x / 2**exponent rounded half away from zero.

    ``exponent`` in [0, 31].
    """
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def mul_shift_tflite(acc, m0, shift) -> np.ndarray:
    """``tflite`` rounding: TFLite's default MultiplyByQuantizedMultiplier (double rounding).

    The accumulator is first saturated to int32 (TFLite keeps it in int32); a
    positive shift multiplies with int32 wrap-around as compiled TFLite does;
    then SaturatingRoundingDoublingHighMul and RoundingDivideByPOT.
    """
    acc = np.clip(np.asarray(acc, dtype=np.int64), INT32_MIN, INT32_MAX)
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = _wrap_int32(acc << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m0), right)


def mul_scale_onnx(acc, scale_f32, lo: float, hi: float) -> np.ndarray:
    """``onnx`` rounding: ONNX Runtime's MlasRequantizeOutput before the zero point.

    float32(acc) * float32 scale (float32 product), clamped to [lo, hi] =
    [qmin - zp, qmax - zp], then rounded half to even. Returns int64.
    """
    v = np.asarray(acc, dtype=np.int64).astype(np.float32) * np.asarray(scale_f32, dtype=np.float32)
    v = np.clip(v, np.float32(lo), np.float32(hi))
    return np.rint(v).astype(np.int64)


# --------------------------------------------------------------------------- parameter bundle


@dataclass(frozen=True)
class Requant:
    """Per-channel requantization of one layer's accumulators.

    ``multiplier``/``shift`` drive ``single`` and ``tflite``; ``scale`` (float32)
    drives ``onnx``. All are 1-D with one entry per output channel (or one entry
    for per-tensor). ``qmin``/``qmax`` include any fused ReLU/Clip.
    """

    mode: str
    multiplier: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    zero_point: int
    qmin: int
    qmax: int

    def __post_init__(self):
        if self.mode not in ROUNDING_MODES:
            raise ConfigError(f"rounding must be one of {', '.join(ROUNDING_MODES)}, not {self.mode!r}")
        if self.qmin > self.qmax:
            raise ConfigError(f"qmin must not exceed qmax, got [{self.qmin}, {self.qmax}]")

    @classmethod
    def from_scales(cls, *, mode: str, s_in, s_w, s_out, zero_point: int, qmin: int, qmax: int) -> Requant:
        s_w = np.atleast_1d(np.asarray(s_w, dtype=np.float64))
        real = np.float64(s_in) * s_w / np.float64(s_out)
        m0, shift = quantize_multiplier(real)
        return cls(mode=mode, multiplier=m0, shift=shift,
                   scale=np.atleast_1d(onnx_scale(s_in, s_w, s_out)),
                   zero_point=int(zero_point), qmin=int(qmin), qmax=int(qmax))

    def apply(self, acc, axis: int = -1) -> np.ndarray:
        """Requantize int accumulators (bias already added); channel axis ``axis``."""
        acc = np.asarray(acc, dtype=np.int64)
        shape = [1] * acc.ndim
        if acc.ndim:
            shape[axis] = -1

        def per_channel(p):
            return np.asarray(p).reshape(shape) if np.size(p) > 1 else np.asarray(p).reshape(())

        if self.mode == "onnx":
            lo, hi = self.qmin - self.zero_point, self.qmax - self.zero_point
            return mul_scale_onnx(acc, per_channel(self.scale), lo, hi) + self.zero_point
        if self.mode == "single":
            r = mul_shift_single(acc, per_channel(self.multiplier), per_channel(self.shift))
        else:
            r = mul_shift_tflite(acc, per_channel(self.multiplier), per_channel(self.shift))
        return saturate(r + self.zero_point, self.qmin, self.qmax)


# --------------------------------------------------------------------------- other integer rules


def average_onnx_scale(s_in, s_out, count) -> np.ndarray:
    """ONNX Runtime's QLinear(Global)AveragePool scale: s_in / (s_out * float32(count)), float32."""
    f = np.float32
    return np.asarray(s_in, f) / (np.asarray(s_out, f) * np.asarray(count).astype(f))


def quantize_onnx_pool(v, scale, zero_point: int, qmin: int, qmax: int, code_offset: int = 0) -> np.ndarray:
    """ONNX Runtime's QLinearAveragePool output rule: rint(float32(v / scale) + zp), clamped.

    The zero point is added in float32 before rounding (unlike QuantizeLinear), so the
    result depends on the zero point as the model stores it: ``code_offset`` is 128 for a
    uint8 model (whose zero point is qhw's signed one + 128).
    """
    f = np.float32
    y = (np.asarray(v, f) / f(scale)).astype(f) + f(zero_point + code_offset)
    return saturate(np.rint(y).astype(np.int64) - code_offset, qmin, qmax)


def divide_round_half_away(total, count) -> np.ndarray:
    """total / count rounded half away from zero (the average-pool rule), count > 0."""
    total = np.asarray(total, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    mag = (np.abs(total) + count // 2) // count
    return np.where(total < 0, -mag, mag)


def quantize_float(x, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Float to integer as ONNX QuantizeLinear: saturate(rint(x / scale) + zp), float32 math."""
    x = np.asarray(x, dtype=np.float32)
    v = np.rint(x / np.asarray(scale, dtype=np.float32)) + np.float32(0)
    # NaN -> qmin, as ORT's x86 MLAS kernel (MAXPS returns the bound for a NaN operand).
    v = np.clip(np.where(np.isnan(v), np.float32(-np.inf), v), np.float32(-2.0**40), np.float32(2.0**40))
    return saturate(v.astype(np.int64) + np.asarray(zero_point, dtype=np.int64), qmin, qmax)


def dequantize(q, scale, zero_point) -> np.ndarray:
    """Integer to float as ONNX DequantizeLinear: (q - zp) * scale in float32."""
    d = (np.asarray(q, dtype=np.int64) - np.asarray(zero_point, dtype=np.int64)).astype(np.float32)
    return d * np.asarray(scale, dtype=np.float32)


# --------------------------------------------------------------------------- elementwise ops


def fma_f32(a, b, c) -> np.ndarray:
    """float32 fused multiply-add ``round32(a*b + c)``, one rounding, as x86 FMA3 computes it.

    ``a*b`` of two float32 values is exact in float64; the float64 sum ``s`` may be inexact,
    and rounding it to float32 is then wrong only when ``s`` lands exactly on a float32
    midpoint: the exact error of the sum (TwoSum) says which way the true value lies.
    """
    p = np.asarray(a, np.float32).astype(np.float64) * np.asarray(b, np.float32).astype(np.float64)
    c = np.asarray(c, np.float32).astype(np.float64)
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    other = np.nextafter(r, np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)).astype(np.float32))
    midpoint = (r64 != s) & ((r64 + other.astype(np.float64)) / 2 == s)
    away = midpoint & (err != 0) & (np.sign(err) == np.sign(s - r64))
    return np.where(away, other, r).astype(np.float32)


def add_left_shift(bits: int) -> int:
    """TFLite ADD's headroom shift: 20 for 8-bit codes; 14 for 16-bit ones, so that
    (q - zp) * 2**left_shift stays below 2**30 for any zero point."""
    return 20 if bits <= 8 else 14


def add_multipliers(in_scales, s_out, left_shift: int):
    """TFLite ADD parameters for inputs of scales ``in_scales`` (float64 math, as TFLite).

    Each input is rescaled by s_i / (2 max s) (<= 0.5), the sum by 2 max s / (2**left_shift s_out).
    Returns ((M0_i, shift_i) arrays, (M0_out, shift_out)).
    """
    s = np.asarray(in_scales, dtype=np.float64)
    twice_max = 2.0 * float(s.max())
    m_in = quantize_multiplier(s / twice_max)
    m_out = quantize_multiplier(twice_max / ((1 << left_shift) * np.float64(s_out)))
    return m_in, m_out


def add_rescaled(diffs, in_scales, s_out, *, bits: int, mode: str) -> np.ndarray:
    """Sum of inputs of different scales, TFLite ``ADD`` (``single``/``tflite`` modes).

    ``diffs`` are the inputs' ``q - zp`` (int64, broadcast together). Each is shifted left by
    ``add_left_shift(bits)``, multiplied by its M0/shift, the results added, and the sum
    multiplied by the output M0/shift. Returns the rounded value before the output zero point.
    """
    left = add_left_shift(bits)
    (m0, sh), out = add_multipliers(in_scales, s_out, left)
    return add_with_multipliers(diffs, list(zip(m0, sh)), out, left, mode=mode)


def add_with_multipliers(diffs, in_multipliers, out_multiplier, left_shift: int, *, mode: str) -> np.ndarray:
    """TFLite ``ADD``'s integer part with its parameters given (``add_rescaled``'s body; the network
    engine's ADD descriptor carries these numbers): each ``(q - zp) << left_shift`` times its
    ``(M0, shift)``, summed, times the output ``(M0, shift)``. Before the output zero point."""
    mul = mul_shift_single if mode == "single" else mul_shift_tflite
    total = None
    for d, (m, k) in zip(diffs, in_multipliers):
        v = mul(np.asarray(d, dtype=np.int64) << left_shift, m, k)
        total = v if total is None else total + v
    return mul(total, *out_multiplier)


def _rne_pack(v: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """_mm_cvtps_epi32 (round half even; NaN and |v| >= 2**31 give INT32_MIN), then
    the saturating packs to qmin..qmax."""
    v = np.asarray(v, np.float32)
    bad = ~(np.abs(v) < np.float32(2.0**31))
    r = np.rint(np.where(bad, np.float32(0), v)).astype(np.int64)
    return saturate(np.where(bad, INT32_MIN, r), qmin, qmax)


def qlinear_add_onnx(a, b, sa, za: int, sb, zb: int, sc, zc: int, qmin: int, qmax: int,
                     *, input0_scalar: bool = False) -> np.ndarray:
    """ONNX Runtime's QLinearAdd (MLAS AVX2 kernel), codes and zero points as stored (uint8 raw).

    r_a = f32(s_a / s_c), r_b = f32(s_b / s_c), F = f32(z_c) - fma(r_a, z_a, f32(r_b z_b));
    y = cvt(fma(a, r_a, fma(b, r_b, F))), saturated. When the broadcast makes input 0 the
    scalar of each span (``span_scalar_input0``), ORT calls the kernel with the two inputs
    swapped, so the roles of a and b exchange in both formulas.
    """
    f = np.float32
    if input0_scalar:
        a, sa, za, b, sb, zb = b, sb, zb, a, sa, za
    ra = f(f(sa) / f(sc))
    rb = f(f(sb) / f(sc))
    fixed = f(f(zc) - fma_f32(ra, f(za), f(rb * f(zb))))
    a = np.asarray(a, np.int64).astype(f)
    b = np.asarray(b, np.int64).astype(f)
    return _rne_pack(fma_f32(a, ra, fma_f32(b, rb, fixed)), qmin, qmax)


def qlinear_mul_onnx(a, b, sa, za: int, sb, zb: int, sc, zc: int, qmin: int, qmax: int) -> np.ndarray:
    """ONNX Runtime's QLinearMul (MLAS SSE2 kernel), codes and zero points as stored:
    y = cvt(f32(f32((a - z_a)(b - z_b)) * f32(f32(s_a s_b) / s_c)) + f32(z_c)), saturated."""
    f = np.float32
    ratio = f(f(f(sa) * f(sb)) / f(sc))
    prod = ((np.asarray(a, np.int64) - za) * (np.asarray(b, np.int64) - zb)).astype(f)
    return _rne_pack((prod * ratio).astype(f) + f(zc), qmin, qmax)


def span_scalar_input0(shape0: tuple, shape1: tuple) -> bool:
    """True when ONNX Runtime's binary broadcaster treats input 0 as the scalar of each span
    (its innermost processed axis has stride 0): the axis is the last one, right-aligned
    over the shorter rank, whose broadcast extent exceeds 1 (or the shorter rank's first)."""
    if len(shape0) == 0:
        return True
    if len(shape1) == 0:
        return shape0[-1] <= 1
    k = min(len(shape0), len(shape1))
    for i in range(1, k + 1):
        d0, d1 = shape0[-i], shape1[-i]
        if max(d0, d1) > 1 or i == k:
            return d0 <= 1
    return True


def requantize_codes(q, in_scale, in_zp: int, out_scale, out_zp: int, qmin: int, qmax: int, *,
                     mode: str) -> np.ndarray:
    """Codes of one scale and zero point re-expressed in another (Concat inputs, layout ops).

    ``onnx``: DequantizeLinear then QuantizeLinear in float32 (ORT's QLinearConcat table and
    its DQ -> Q); ``single``/``tflite``: (q - zp_in) times QuantizeMultiplier(s_in / s_out).
    """
    q = np.asarray(q, dtype=np.int64)
    if float(in_scale) == float(out_scale) and in_zp == out_zp:
        return q
    if mode == "onnx":
        return quantize_float(dequantize(q, in_scale, in_zp), out_scale, out_zp, qmin, qmax)
    m0, shift = quantize_multiplier(np.float64(in_scale) / np.float64(out_scale))
    mul = mul_shift_single if mode == "single" else mul_shift_tflite
    return saturate(mul(q - in_zp, m0, shift) + out_zp, qmin, qmax)
