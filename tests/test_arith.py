"""Edge cases and property tests of the arithmetic contract (qhw.arith) and the exact kernels.

Every rule is checked against an independent reference written with Python
integers (exact, unbounded) or with NumPy float32 scalars evaluated step by step.
Hypothesis runs derandomized, so every run draws the same examples.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qhw import arith, kernels
from qhw.arith import INT32_MAX, INT32_MIN
from qhw.errors import ArithmeticContractError, ConfigError

SETTINGS = settings(derandomize=True, max_examples=1000, deadline=None)

int32s = st.integers(INT32_MIN, INT32_MAX)
accs47 = st.integers(-(1 << 47) + 1, (1 << 47) - 1)
multipliers = st.integers(0, INT32_MAX)
shifts = st.integers(-31, 30)


# --------------------------------------------------------------------------- Python-int references


def c_div(a: int, b: int) -> int:
    """C integer division (truncates towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def wrap32(x: int) -> int:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def ref_single(acc: int, m0: int, shift: int) -> int:
    total = 31 - shift
    r = (acc * m0 + (1 << (total - 1))) >> total      # Python >> floors
    return max(-(1 << 31), min(1 << 31, r))


def ref_srdhm(a: int, b: int) -> int:
    """gemmlowp fixedpoint.h SaturatingRoundingDoublingHighMul, line by line."""
    overflow = a == b == INT32_MIN
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    high = wrap32(c_div(ab + nudge, 1 << 31))
    return INT32_MAX if overflow else high


def ref_rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT on int32, line by line."""
    mask = wrap32((1 << exponent) - 1)
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def ref_tflite(acc: int, m0: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier (double rounding) on an int32 accumulator."""
    x = max(INT32_MIN, min(INT32_MAX, acc))
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    return ref_rdbpot(ref_srdhm(wrap32(x * (1 << left_shift)), m0), right_shift)


def ref_onnx(acc: int, scale: float, lo: float, hi: float) -> int:
    """ORT MlasRequantizeOutput with NumPy float32 scalars: convert, multiply, clamp, round-half-even."""
    v = np.float32(acc) * np.float32(scale)
    assert isinstance(v, np.float32)
    v = min(max(v, np.float32(lo)), np.float32(hi))
    return int(round(float(v)))                       # Python round(): half to even


def round_half_away(q: Fraction) -> int:
    mag = math.floor(abs(q) + Fraction(1, 2))
    return mag if q >= 0 else -mag


def check_elementwise(fn, ref, *arrays):
    """fn on whole arrays equals ref applied element by element."""
    got = fn(*arrays)
    want = [ref(*(int(a) if np.issubdtype(np.asarray(a).dtype, np.integer) else float(a) for a in args))
            for args in zip(*arrays)]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.int64))


# --------------------------------------------------------------------------- qrange / saturate


def test_qrange_and_saturate():
    assert arith.qrange(8) == (-128, 127)
    assert arith.qrange(8, narrow=True) == (-127, 127)
    assert arith.qrange(8, signed=False) == (0, 255)
    assert arith.qrange(32) == (INT32_MIN, INT32_MAX)
    assert arith.qrange(64) == (-(1 << 63), (1 << 63) - 1)
    for bad in (1, 65, 8.0, True):
        with pytest.raises(ConfigError):
            arith.qrange(bad)
    np.testing.assert_array_equal(arith.saturate([-300, -128, 0, 127, 300], -128, 127),
                                  [-128, -128, 0, 127, 127])


# --------------------------------------------------------------------------- quantize_multiplier


def reconstruct(m0: int, shift: int) -> Fraction:
    return Fraction(m0) * Fraction(2) ** (shift - 31)


@SETTINGS
@given(st.floats(min_value=2.0**-32, max_value=2.0**30 - 1, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_reconstructs(real):
    m0, shift = (int(v) for v in arith.quantize_multiplier(real))
    assert (1 << 30) <= m0 < (1 << 31)
    assert -31 <= shift <= 30
    assert abs(reconstruct(m0, shift) - Fraction(real)) <= Fraction(real) * Fraction(1, 1 << 31)


@pytest.mark.parametrize("real, m0, shift", [
    (0.5, 1 << 30, 0),
    (0.75, 0x60000000, 0),
    (1.5, 0x60000000, 1),
    (0.0123, 1690499128, -6),
    # std::round ties (half away from zero, not to even): mant * 2**31 = 2**30 + 0.5, 2**30 + 1.5
    (0.5 + 2.0**-32, (1 << 30) + 1, 0),
    (0.5 + 3 * 2.0**-32, (1 << 30) + 2, 0),
    # rounding carries into the exponent: mant * 2**31 = 2**31 - 0.5 -> 2**31 -> 2**30, shift + 1
    (1 - 2.0**-32, 1 << 30, 1),
    # zero and tiny values flush to (0, 0)
    (0.0, 0, 0),
    (1e-10, 0, 0),
    (2.0**-33, 0, 0),
    (float(np.nextafter(2.0**-32 - 2.0**-64, 0)), 0, 0),
    # ... but values that round up to 2**-32 are kept
    (2.0**-32 - 2.0**-64, 1 << 30, -31),
    (float(np.nextafter(2.0**-32, 0)), 1 << 30, -31),
    (2.0**-32, 1 << 30, -31),
    # the largest representable multiplier is (2**31 - 1) * 2**-1; anything that needs shift > 30 saturates
    (2.0**30 - 0.5, INT32_MAX, 30),
    (2.0**30 - 0.25, INT32_MAX, 30),
    (2.0**30, INT32_MAX, 30),
    (2.0**31, INT32_MAX, 30),
    (1e12, INT32_MAX, 30),
])
def test_quantize_multiplier_cases(real, m0, shift):
    assert tuple(int(v) for v in arith.quantize_multiplier(real)) == (m0, shift)


def test_quantize_multiplier_vectorized_and_invalid():
    reals = np.array([[0.0, 0.25], [3.0, 1e-12]])
    m0, shift = arith.quantize_multiplier(reals)
    assert m0.shape == shift.shape == reals.shape and m0.dtype == shift.dtype == np.int64
    for r, m, s in zip(reals.ravel(), m0.ravel(), shift.ravel()):
        assert (m, s) == tuple(arith.quantize_multiplier(r))
    for bad in (-1e-3, np.inf, np.nan):
        with pytest.raises(ArithmeticContractError):
            arith.quantize_multiplier(bad)


# --------------------------------------------------------------------------- single rounding


@SETTINGS
@given(accs47, multipliers, shifts)
def test_mul_shift_single_matches_bigint(acc, m0, shift):
    assert int(arith.mul_shift_single(acc, m0, shift)) == ref_single(acc, m0, shift)


def test_mul_shift_single_random_sweep():
    rng = np.random.default_rng(1234)
    n = 20000
    bits = rng.integers(0, 48, n)                     # spread magnitudes over the whole domain
    acc = (rng.integers(0, 1 << 47, n) >> (47 - bits)) * rng.choice([-1, 1], n)
    m0 = rng.integers(0, 1 << 31, n)
    shift = rng.integers(-31, 31, n)
    check_elementwise(arith.mul_shift_single, ref_single, acc, m0, shift)
    small = np.abs(acc) < (1 << 31)                    # an all-int32 array (may take a shorter path)
    check_elementwise(arith.mul_shift_single, ref_single, acc[small], m0[small], shift[small])


@pytest.mark.parametrize("acc, m0, shift, want", [
    # real = 0.5 (M0 = 2**30, shift = 0): ties go towards +infinity
    (1, 1 << 30, 0, 1), (-1, 1 << 30, 0, 0), (3, 1 << 30, 0, 2), (-3, 1 << 30, 0, -1),
    (5, 1 << 30, 0, 3), (-5, 1 << 30, 0, -2),
    # shift = 30 (largest multiplier, about 2**30) and -31 (total shift 62)
    (1, INT32_MAX, 30, 1 << 30), (-1, INT32_MAX, 30, -(1 << 30) + 1),   # +-(2**30 - 0.5): ties up
    (2, INT32_MAX, 30, INT32_MAX), (3, INT32_MAX, 30, 1 << 31),   # 3 * (2**30 - 0.5) clamps
    ((1 << 47) - 1, INT32_MAX, -31, 1 << 16), (-(1 << 47) + 1, INT32_MAX, -31, -(1 << 16)),
    ((1 << 31), 1 << 30, -31, 1),     # exactly 0.5 -> 1
    ((1 << 31) - 1, 1 << 30, -31, 0),
    # results clamp at +-2**31
    ((1 << 47) - 1, INT32_MAX, 30, 1 << 31), (-(1 << 47) + 1, INT32_MAX, 30, -(1 << 31)),
    (1 << 32, 1 << 30, 0, 1 << 31), (-(1 << 33), 1 << 30, 0, -(1 << 31)),
    # M0 = 0 (flushed tiny multiplier)
    (123456789, 0, 0, 0), (-123456789, 0, 0, 0),
])
def test_mul_shift_single_cases(acc, m0, shift, want):
    assert ref_single(acc, m0, shift) == want
    assert int(arith.mul_shift_single(acc, m0, shift)) == want


def test_mul_shift_single_rejects_large_accumulator():
    assert int(arith.mul_shift_single((1 << 47) - 1, 1 << 30, -20)) == ref_single((1 << 47) - 1, 1 << 30, -20)
    for acc in ((1 << 47), -(1 << 47), [0, 1 << 50]):
        with pytest.raises(ArithmeticContractError):
            arith.mul_shift_single(acc, 1 << 30, 0)


# --------------------------------------------------------------------------- gemmlowp / tflite


@SETTINGS
@given(int32s, int32s)
def test_srdhm_matches_gemmlowp(a, b):
    assert int(arith.saturating_rounding_doubling_high_mul(a, b)) == ref_srdhm(a, b)


@pytest.mark.parametrize("a, b, want", [
    (INT32_MIN, INT32_MIN, INT32_MAX),                 # the one overflow
    (INT32_MIN, INT32_MAX, -INT32_MAX),
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),
    (INT32_MIN, 1, -1), (INT32_MIN, -1, 1),
    # a*b / 2**31 = +-0.5, +-1.5: ties go towards +infinity (VQRDMULH), not away from zero
    (1 << 30, 1, 1), (-(1 << 30), 1, 0), (3 << 29, 2, 2), (-(3 << 29), 2, -1),
    (0, INT32_MIN, 0),
])
def test_srdhm_cases(a, b, want):
    assert ref_srdhm(a, b) == want
    assert int(arith.saturating_rounding_doubling_high_mul(a, b)) == want


@SETTINGS
@given(int32s, st.integers(0, 31))
def test_rounding_divide_by_pot_matches_gemmlowp(x, exponent):
    got = int(arith.rounding_divide_by_pot(x, exponent))
    assert got == ref_rdbpot(x, exponent)
    assert got == round_half_away(Fraction(x, 1 << exponent))   # what it means


@pytest.mark.parametrize("x, exponent, want", [
    (5, 0, 5), (INT32_MIN, 0, INT32_MIN), (INT32_MAX, 0, INT32_MAX),
    (1, 1, 1), (-1, 1, -1), (3, 1, 2), (-3, 1, -2), (-5, 2, -1), (-6, 2, -2),   # ties away from zero
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1), (1 << 30, 31, 1), (-(1 << 30), 31, -1),
    ((1 << 30) - 1, 31, 0), (-(1 << 30) + 1, 31, 0),
])
def test_rounding_divide_by_pot_cases(x, exponent, want):
    assert ref_rdbpot(x, exponent) == want
    assert int(arith.rounding_divide_by_pot(x, exponent)) == want


@SETTINGS
@given(st.one_of(int32s, st.integers(-(1 << 40), 1 << 40)), multipliers, shifts)
def test_mul_shift_tflite_matches_transcription(acc, m0, shift):
    assert int(arith.mul_shift_tflite(acc, m0, shift)) == ref_tflite(acc, m0, shift)


@pytest.mark.parametrize("acc, m0, shift", [
    (1 << 29, 1 << 30, 3),             # left shift wraps: 2**32 -> 0
    (3 << 28, 1 << 30, 2),             # 3 * 2**30 wraps to -2**30
    (INT32_MAX, INT32_MAX, 30),
    (1 << 40, 1 << 30, -1),            # accumulator saturates to INT32_MAX first
    (-(1 << 40), 1 << 30, -1),
    (-6, 1 << 30, -1),                 # double rounding: -3 exactly, then -1.5 -> -2
    (1, 1 << 30, -1),                  # 0.25: 1*0.5 -> 1, then 0.5 -> 1 (single gives 0)
])
def test_mul_shift_tflite_cases(acc, m0, shift):
    assert int(arith.mul_shift_tflite(acc, m0, shift)) == ref_tflite(acc, m0, shift)


def test_mul_shift_tflite_wraps():
    assert int(arith.mul_shift_tflite(1 << 29, 1 << 30, 3)) == 0
    assert int(arith.mul_shift_tflite(3 << 28, 1 << 30, 2)) == -(1 << 29)
    assert int(arith.mul_shift_tflite(-6, 1 << 30, -1)) == -2
    assert int(arith.mul_shift_tflite(1, 1 << 30, -1)) == 1


# --------------------------------------------------------------------------- onnx (float32) rounding


@SETTINGS
@given(int32s, st.floats(min_value=2.0**-40, max_value=4.0, width=32),
       st.integers(-300, 0), st.integers(0, 300))
def test_mul_scale_onnx_matches_float32_steps(acc, scale, lo, hi):
    assert int(arith.mul_scale_onnx(acc, scale, lo, hi)) == ref_onnx(acc, scale, lo, hi)


@pytest.mark.parametrize("acc, scale, lo, hi, want", [
    # ties to even
    (5, 0.5, -128, 127, 2), (7, 0.5, -128, 127, 4), (-5, 0.5, -128, 127, -2), (-7, 0.5, -128, 127, -4),
    (1, 0.5, -128, 127, 0), (-1, 0.5, -128, 127, 0), (3, 0.5, -128, 127, 2), (-3, 0.5, -128, 127, -2),
    # float32(acc) rounds to nearest even before the product
    (16777217, 1.0, -2.0**31, 2.0**31, 16777216), (16777219, 1.0, -2.0**31, 2.0**31, 16777220),
    # clamp to [qmin - zp, qmax - zp] before rounding
    (1000, 1.0, -128, 127, 127), (-1000, 1.0, -128, 127, -128), (1000, 1.0, -133, 122, 122),
    (INT32_MAX, 4.0, -255, 0, 0), (INT32_MIN, 4.0, 0, 255, 0),
])
def test_mul_scale_onnx_cases(acc, scale, lo, hi, want):
    assert ref_onnx(acc, scale, lo, hi) == want
    assert int(arith.mul_scale_onnx(acc, np.float32(scale), lo, hi)) == want


def test_onnx_scale_is_float32_in_ort_order():
    f = np.float32
    s_in, s_w, s_out = f(0.0173), np.array([0.00731, 0.0042], f), f(0.291)
    got = arith.onnx_scale(s_in, s_w, s_out)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [(s_in * w) / s_out for w in s_w])


# --------------------------------------------------------------------------- Requant


MODES = arith.ROUNDING_MODES


def scalar_requant(rq: arith.Requant, c: int) -> arith.Requant:
    """Channel ``c`` of a per-channel Requant as a per-tensor one."""
    return arith.Requant(mode=rq.mode, multiplier=rq.multiplier[c:c + 1], shift=rq.shift[c:c + 1],
                         scale=rq.scale[c:c + 1], zero_point=rq.zero_point, qmin=rq.qmin, qmax=rq.qmax)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_requant_per_channel_axis(mode, axis):
    rng = np.random.default_rng(7)
    shape = [2, 3, 4]
    nch = shape[axis]
    s_w = rng.uniform(1e-3, 2e-2, nch).astype(np.float32)
    rq = arith.Requant.from_scales(mode=mode, s_in=np.float32(0.02), s_w=s_w, s_out=np.float32(0.05),
                                   zero_point=-9, qmin=-128, qmax=127)
    acc = rng.integers(-40000, 40000, shape)
    got = rq.apply(acc, axis=axis)
    moved = np.moveaxis(acc, axis, 0)
    want = np.stack([scalar_requant(rq, c).apply(moved[c]) for c in range(nch)])
    np.testing.assert_array_equal(got, np.moveaxis(want, 0, axis))
    assert got.min() >= -128 and got.max() <= 127


@pytest.mark.parametrize("mode", MODES)
def test_requant_saturation_and_relu(mode):
    # real = 2**-5 exactly in every mode; zero point 7
    kw = dict(mode=mode, s_in=0.25, s_w=0.0625, s_out=0.5, zero_point=7)
    plain = arith.Requant.from_scales(**kw, qmin=-128, qmax=127)
    relu = arith.Requant.from_scales(**kw, qmin=7, qmax=127)
    relu6 = arith.Requant.from_scales(**kw, qmin=7, qmax=19)          # Q(6.0) = 6/0.5 + 7
    acc = np.array([0, 1000, -1000, 1 << 40, -(1 << 40), 4000, 4096, -4500, 320])
    np.testing.assert_array_equal(plain.apply(acc), [7, 38, -24, 127, -128, 127, 127, -128, 17])
    np.testing.assert_array_equal(relu.apply(acc), [7, 38, 7, 127, 7, 127, 127, 7, 17])
    np.testing.assert_array_equal(relu6.apply(acc), [7, 19, 7, 19, 7, 19, 19, 7, 17])


def test_requant_modes_on_ties():
    acc = np.array([80, -80, 48, -48, 16, -16])        # times 2**-5: +-2.5, +-1.5, +-0.5
    want = {"single": [3, -2, 2, -1, 1, 0], "tflite": [3, -3, 2, -2, 1, -1], "onnx": [2, -2, 2, -2, 0, 0]}
    for mode in MODES:
        rq = arith.Requant.from_scales(mode=mode, s_in=0.25, s_w=0.0625, s_out=0.5, zero_point=0,
                                       qmin=-128, qmax=127)
        np.testing.assert_array_equal(rq.apply(acc), want[mode], err_msg=mode)


def test_requant_rejects_bad_config():
    with pytest.raises(ConfigError):
        arith.Requant.from_scales(mode="floor", s_in=1.0, s_w=1.0, s_out=1.0, zero_point=0, qmin=0, qmax=1)
    with pytest.raises(ConfigError):
        arith.Requant.from_scales(mode="single", s_in=1.0, s_w=1.0, s_out=1.0, zero_point=0, qmin=2, qmax=1)


def test_modes_agree_within_one_lsb():
    """single, tflite and onnx on random accumulators with realistic multipliers (real in [1e-4, 1))."""
    rng = np.random.default_rng(2024)
    n_sets, n_acc = 200, 500
    lo, hi = arith.qrange(16)
    matches = dict.fromkeys(("single/tflite", "single/onnx", "tflite/onnx"), 0)
    for _ in range(n_sets):
        s_in = np.float32(rng.uniform(1e-3, 1e-1))
        s_w = np.float32(rng.uniform(1e-3, 1e-1))
        real = 10.0 ** rng.uniform(-4, 0)
        s_out = np.float32(np.float64(s_in) * np.float64(s_w) / real)
        limit = min(INT32_MAX, int(hi / real))          # outputs stay inside int16
        acc = rng.integers(-limit, limit + 1, n_acc)
        out = {m: arith.Requant.from_scales(mode=m, s_in=s_in, s_w=s_w, s_out=s_out, zero_point=0,
                                            qmin=lo, qmax=hi).apply(acc) for m in MODES}
        for key in matches:
            a, b = key.split("/")
            assert np.max(np.abs(out[a] - out[b])) <= 1, key
            matches[key] += int(np.sum(out[a] == out[b]))
    total = n_sets * n_acc
    print("\nexact match rates over", total, "accumulators:",
          ", ".join(f"{k} {v / total:.4%}" for k, v in matches.items()))


# --------------------------------------------------------------------------- other integer rules


@pytest.mark.parametrize("total, count, want", [
    (3, 2, 2), (-3, 2, -2), (5, 2, 3), (-5, 2, -3), (1, 2, 1), (-1, 2, -1),
    (6, 4, 2), (-6, 4, -2), (5, 4, 1), (-5, 4, -1), (7, 4, 2), (0, 9, 0), (-4, 9, 0), (-5, 9, -1),
])
def test_divide_round_half_away_cases(total, count, want):
    assert int(arith.divide_round_half_away(total, count)) == want


@SETTINGS
@given(st.integers(-(1 << 40), 1 << 40), st.integers(1, 1 << 20))
def test_divide_round_half_away_matches_fraction(total, count):
    assert int(arith.divide_round_half_away(total, count)) == round_half_away(Fraction(total, count))


def test_quantize_float_cases():
    x = np.array([1.25, 1.75, -1.25, -1.75, 0.25, -0.25, 0.3, 100.0, -100.0, np.inf, -np.inf, -0.0],
                 np.float32)
    # x / 0.5 = 2.5, 3.5, -2.5, -3.5, 0.5, -0.5 (ties to even), 0.6, 200, -200, inf, -inf, -0
    np.testing.assert_array_equal(arith.quantize_float(x, 0.5, 3, -128, 127),
                                  [5, 7, 1, -1, 3, 3, 4, 127, -128, 127, -128, 3])
    np.testing.assert_array_equal(arith.quantize_float(x, 0.5, 128, 0, 255),
                                  [130, 132, 126, 124, 128, 128, 129, 255, 0, 255, 0, 128])
    # NaN maps to qmin whatever the zero point (ORT's x86 kernel)
    np.testing.assert_array_equal(arith.quantize_float([np.nan, np.nan], 0.5, -7, -128, 127), [-128, -128])
    np.testing.assert_array_equal(arith.quantize_float(np.nan, 0.5, 200, 0, 255), 0)


@pytest.mark.parametrize("x_bits, s_bits, want", [
    (1058956494, 1030839463, 10),      # 0.61872566 / 0.05892625 = 10.5 in float32 -> 10
    (3205599686, 1010578947, -50),     # -0.5686306 / 0.011487487 = -49.5 in float32 -> -50
])
def test_quantize_float_divides_in_float32(x_bits, s_bits, want):
    """x / scale is one float32 division; a reciprocal multiply or a float64 division rounds the other way."""
    x, s = np.uint32(x_bits).view(np.float32), np.uint32(s_bits).view(np.float32)
    assert int(np.rint(x * (np.float32(1) / s))) == int(np.rint(np.float64(x) / np.float64(s))) != want
    assert int(arith.quantize_float(x, s, 0, -128, 127)) == want


def test_dequantize_and_round_trip():
    np.testing.assert_array_equal(arith.dequantize([-128, 3, 127], 0.5, 3),
                                  np.array([-65.5, 0.0, 62.0], np.float32))
    assert arith.dequantize([1], np.float32(0.1), 0).dtype == np.float32
    rng = np.random.default_rng(3)
    s, zp = np.float32(0.037), -11
    x = rng.uniform(-4, 4, 1000).astype(np.float32)
    q = arith.quantize_float(x, s, zp, -128, 127)
    np.testing.assert_array_less(np.abs(arith.dequantize(q, s, zp) - x), s / 2 + 1e-6)
    q_all = np.arange(-128, 128)
    back = arith.quantize_float(arith.dequantize(q_all, s, zp), s, zp, -128, 127)
    np.testing.assert_array_equal(back, q_all)


# --------------------------------------------------------------------------- kernels


def object_matmul(a, b):
    return np.matmul(np.asarray(a).astype(object), np.asarray(b).astype(object))


def test_matmul_exact_float64_path():
    rng = np.random.default_rng(11)
    a = rng.integers(-255, 256, (3, 17, 200))
    b = rng.integers(-255, 256, (3, 200, 9))
    assert kernels.float64_is_exact(a, b)
    got = kernels.matmul_exact(a, b)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.matmul(a.astype(np.int64), b.astype(np.int64)))


def test_matmul_exact_int64_path():
    rng = np.random.default_rng(12)
    k = 1024
    a = rng.integers(INT32_MIN, INT32_MAX, (5, k), endpoint=True)
    b = rng.integers(-(1 << 20), 1 << 20, (k, 6))     # |sum| < 2**61: beyond float64's 2**53, inside int64
    assert not kernels.float64_is_exact(a, b)
    got = kernels.matmul_exact(a, b)
    np.testing.assert_array_equal(got, object_matmul(a, b).astype(np.int64))
    # float64 BLAS would not be exact here, which is why the int64 path exists
    assert np.any(np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64) != got)


def naive_conv(x, w, pads, strides, dilations, group, x_zero, w_zero):
    """Direct loop convolution over output pixels and taps (Python ints in object arrays)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    t, l, b, r = pads
    oh = (h + t + b - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + l + r - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    wz = np.broadcast_to(np.asarray(w_zero), (m,))
    out = np.zeros((n, m, oh, ow), dtype=object)
    mg = m // group
    for oc, i, j in itertools.product(range(m), range(oh), range(ow)):
        g = oc // mg
        total = np.zeros(n, dtype=object)
        for ic, di, dj in itertools.product(range(cg), range(kh), range(kw)):
            y = i * strides[0] - t + di * dilations[0]
            xx = j * strides[1] - l + dj * dilations[1]
            if 0 <= y < h and 0 <= xx < wd:
                xv = x[:, g * cg + ic, y, xx].astype(object) - x_zero
                total = total + xv * (int(w[oc, ic, di, dj]) - int(wz[oc]))
        out[:, oc, i, j] = total
    return out.astype(np.int64)


CONV_CASES = {  # name: (C, M, kernel, pads (t, l, b, r), strides, dilations, depthwise)
    "plain": (3, 4, (3, 3), (0, 0, 0, 0), (1, 1), (1, 1), False),
    "pad-stride": (2, 3, (3, 2), (1, 2, 0, 1), (2, 1), (1, 1), False),
    "dilation": (2, 2, (2, 3), (2, 1, 1, 2), (1, 2), (2, 2), False),
    "depthwise": (4, 4, (3, 3), (1, 1, 1, 1), (1, 1), (1, 1), True),
    "depthwise-x2-stride": (3, 6, (3, 3), (1, 0, 1, 2), (2, 2), (1, 2), True),
}


@pytest.mark.parametrize("case", CONV_CASES, ids=list(CONV_CASES))
@pytest.mark.parametrize("per_channel_wzp", [False, True], ids=["wzp0", "wzp-per-channel"])
def test_conv2d_int_matches_naive(case, per_channel_wzp):
    c, m, kernel, pads, strides, dilations, depthwise = CONV_CASES[case]
    rng = np.random.default_rng(sorted(CONV_CASES).index(case))
    group = c if depthwise else 1
    x = rng.integers(-128, 128, (2, c, 7, 8))
    w = rng.integers(-128, 128, (m, c // group, *kernel))
    w_zero = rng.integers(-5, 6, m) if per_channel_wzp else 0
    kw = dict(pads=pads, strides=strides, dilations=dilations, group=group, x_zero=-17, w_zero=w_zero)
    got = kernels.conv2d_int(x, w, **kw)
    np.testing.assert_array_equal(got, naive_conv(x, w, **kw))


def test_pooling_rules():
    x = np.array([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]) - 10        # zero point -10 -> values 11..19 real
    got = kernels.avgpool2d_int(x, kernel=(2, 2), strides=(1, 1), pads=(1, 1, 0, 0), zero_point=-10)
    # mean of (q - zp) over valid taps: 1 -> 1, (1+2)/2 -> 2 (half away), ...
    want = np.array([[1, 2, 3], [3, 3, 4], [6, 6, 7]]) - 10
    np.testing.assert_array_equal(got[0, 0], want)
    neg = kernels.avgpool2d_int(np.array([[[[-3, -4]]]]), kernel=(1, 2), strides=(1, 1), pads=(0, 0, 0, 0),
                                zero_point=0)
    assert int(neg[0, 0, 0, 0]) == -4                               # -3.5 -> -4
    # max pool: padded taps hold the type minimum, so they never beat a real tap
    mp = kernels.maxpool2d(np.array([[[[-100, -50], [-70, -120]]]]), kernel=(2, 2), strides=(1, 1),
                           pads=(1, 1, 1, 1), pad_value=-128)
    np.testing.assert_array_equal(mp[0, 0], [[-100, -50, -50], [-70, -50, -50], [-70, -70, -120]])
