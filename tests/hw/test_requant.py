# amaranth: UnusedElaboratable=no
"""Requantization lane: bit-exact with qhw.arith.Requant on ties, saturation and random cases, one per cycle."""

import zlib

import numpy as np
import pytest
from amaranth_sim import run_sim

from qhw.arith import INT32_MAX, INT32_MIN, Requant
from qhw.hw.config import MODE_CODES, ArrayConfig
from qhw.hw.requant import RequantLane

INT8 = ArrayConfig(rows=2, cols=2)                                   # sum 28 bits, acc 33 bits
WIDE = ArrayConfig(rows=2, cols=2, act_bits=16, weight_bits=16)      # sum 43 bits, acc 44 bits
UINT8 = ArrayConfig(rows=2, cols=2, act_signed=False)


def f32_bits(x) -> int:
    return int(np.asarray(x, dtype=np.float32).view(np.uint32))


def run_lane(config, mode, zero_point, qmin, qmax, vectors, steady_constants=False):
    """Feed (acc, bias, m0, shift[, float32 scale]) one per cycle; return the outputs in order.

    ``mode`` is one mode for every beat or a list with one per beat. Once the inputs end, ``mode``
    is set to a code that is not a mode: beats in flight must not depend on it.
    """
    dut = RequantLane(config=config, steady_constants=steady_constants)
    modes = [mode] * len(vectors) if isinstance(mode, str) else mode
    out = []

    async def bench(ctx):
        ctx.set(dut.zero_point, zero_point)
        ctx.set(dut.qmin, qmin)
        ctx.set(dut.qmax, qmax)
        for t in range(len(vectors) + dut.latency):
            if t < len(vectors):
                acc, bias, m0, shift, *scale = vectors[t]
                ctx.set(dut.mode, MODE_CODES[modes[t]])
                ctx.set(dut.scale, f32_bits(scale[0] if scale else m0 * 2.0 ** (shift - 31)))
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.acc, acc)
                ctx.set(dut.bias, bias)
                ctx.set(dut.multiplier, m0)
                ctx.set(dut.shift, shift)
            else:
                ctx.set(dut.i_valid, 0)
                ctx.set(dut.mode, 3)
            _, _, valid, value = await ctx.tick().sample(dut.o_valid, dut.o)
            if valid:
                out.append(value)

    run_sim(dut, bench)
    return out


def golden(mode, zero_point, qmin, qmax, vectors):
    acc = np.array([v[0] + v[1] for v in vectors], dtype=np.int64)
    m0 = np.array([v[2] for v in vectors], dtype=np.int64)
    shift = np.array([v[3] for v in vectors], dtype=np.int64)
    scale = np.array([v[4] if len(v) > 4 else v[2] * 2.0 ** (v[3] - 31) for v in vectors], dtype=np.float32)
    rq = Requant(mode=mode, multiplier=m0, shift=shift, scale=scale,
                 zero_point=zero_point, qmin=qmin, qmax=qmax)
    with np.errstate(over="ignore"):      # float32 overflow to inf is part of the onnx cases
        return rq.apply(acc).tolist()


def tie_vectors():
    """Exact halfway cases of ``single`` rounding and of both tflite rounding steps, both signs."""
    vectors = []
    for shift in (30, 10, 1, 0, -1, -3, -8, -20, -31):
        total = 31 - shift
        m0 = 1 << 30
        # acc * 2**30 is a tie at 2**(total - 1) when acc is an odd multiple of 2**(total - 31).
        step = 1 << max(total - 31, 0)
        for odd in (1, 3, 5, 7, 101):
            for sign in (1, -1):
                acc = sign * odd * step
                if abs(acc) < 1 << 26:
                    vectors.append((acc, 0, m0, shift))
                    assert total < 31 or (acc * m0) % (1 << total) == 1 << (total - 1)
    # tflite: SRDHM tie at x*M0 = (2j+1) * 2**30; RoundingDivideByPOT ties at odd multiples of 2**(right-1).
    for shift in (0, -1, -2, -5):
        for q in (1, 3, -1, -3, 5, -7):
            vectors.append(((2 * q + 1) << max(-shift - 1, 0), 0, 1 << 30, shift))
    return vectors


def saturation_vectors(config):
    # The extremes a GEMM of max_k products can reach (the lane's acc input is exact over them).
    plo, phi = config.product_range
    lo, hi = plo * config.max_k, phi * config.max_k
    big = (1 << 31) - 1
    return [
        (hi, INT32_MAX, big, 30),       # largest accumulator, largest gain: saturates high
        (lo, INT32_MIN, big, 30),       # and low
        (hi, INT32_MAX, big, -31),      # largest right shift
        (lo, INT32_MIN, big, -31),
        (hi, 0, 0, 0),                  # M0 = 0: the zero point
        (0, INT32_MAX, 1 << 30, 5),     # tflite: left shift wraps int32
        (0, INT32_MIN, 1 << 30, 5),
        (1 << 26, INT32_MAX, big, 0),   # tflite: the sum clamps to int32 before the multiply
        (-(1 << 26), INT32_MIN, big, 0),
        (12345, -100, 1518500250, -7),
        (0, 0, big, 30),
        (-1, 0, big, 30),
        (1, 0, big, 30),
    ]


def random_vectors(config, rng, count):
    vectors = []
    plo, phi = config.product_range
    for _ in range(count):
        bits = int(rng.integers(1, config.sum_bits))
        acc = int(np.clip(rng.integers(-(1 << (bits - 1)), 1 << (bits - 1)), plo * config.max_k, phi * config.max_k))
        bias = int(rng.integers(-(1 << 20), 1 << 20))
        m0 = int(rng.integers(1 << 30, 1 << 31))
        shift = int(rng.integers(-31, 31)) if rng.random() < 0.3 else int(rng.integers(-bits, 2))
        vectors.append((acc, bias, m0, min(max(shift, -31), 30)))
    return vectors


def onnx_vectors(config, rng, count):
    """float32 cases: rint ties (x.5), int-to-float32 ties above 2**24, and random products
    chosen where float32 rounding changes the integer result against exact arithmetic."""
    vectors = []
    for scale in (0.5, 0.25, 1.5, 2.5, 0.125):
        for acc in (1, 3, 5, -1, -3, -5, 7, 9, -11):
            vectors.append((acc, 0, 0, 0, scale))
    for acc in ((1 << 24) + 1, (1 << 24) + 3, (1 << 25) + 2, (1 << 25) + 6, -(1 << 24) - 1, -(1 << 24) - 3):
        for scale in (2.0 ** -20, 2.0 ** -21, 2.0 ** -19 * 3):
            vectors.append((min(acc, config.product_range[1] * config.max_k), 0, 0, 0, scale))
    vectors += [(0, 0, 0, 0, 0.0), (12345, 0, 0, 0, 1e-40), (-(1 << 26), 0, 0, 0, 1e30), ((1 << 26), 0, 0, 0, 3.0e38)]
    # Where float32 matters: rint(float32(float32(a) * s)) differs from rint(a * s) in exact arithmetic.
    acc = rng.integers(-(1 << 26), 1 << 26, 200_000)
    scale = (2.0 ** rng.uniform(-26, -8, acc.size)).astype(np.float32)
    exact = np.rint(acc * scale.astype(np.float64))            # exact: |acc| < 2**27, 24-bit scale
    f32 = np.rint(acc.astype(np.float32) * scale)
    picked = np.flatnonzero(exact != f32)[:count]
    assert picked.size >= min(count, 20)
    vectors += [(int(acc[i]), 0, 0, 0, float(scale[i])) for i in picked]
    rest = rng.integers(-(1 << 20), 1 << 20, count)
    vectors += [(int(a), int(rng.integers(-1000, 1000)), 0, 0, float(np.float32(2.0 ** rng.uniform(-24, 2))))
                for a in rest]
    return vectors


@pytest.mark.parametrize("mode", ["single", "tflite", "onnx"])
@pytest.mark.parametrize("config, zero_point, qmin, qmax", [
    (INT8, 0, -128, 127),
    (INT8, -5, -5, 127),          # fused ReLU: qmin = zero point
    (INT8, 3, -20, 20),           # narrow clip
    (UINT8, 128, 0, 255),
    (WIDE, 7, -32768, 32767),
], ids=["int8", "int8-relu", "int8-clip", "uint8", "int16"])
def test_lane_matches_golden(config, mode, zero_point, qmin, qmax):
    rng = np.random.default_rng(zlib.crc32(f"{mode} {zero_point} {qmin} {qmax}".encode()))
    vectors = tie_vectors() + saturation_vectors(config) + random_vectors(config, rng, 150)
    if mode == "onnx":
        vectors += onnx_vectors(config, rng, 100)
    got = run_lane(config, mode, zero_point, qmin, qmax, vectors)
    expected = golden(mode, zero_point, qmin, qmax, vectors)
    bad = [(v, g, e) for v, g, e in zip(vectors, got, expected) if g != e]
    assert len(got) == len(vectors)
    assert not bad, f"{len(bad)} mismatches, first (acc, bias, m0, shift), got, expected: {bad[:3]}"


def test_ties_are_exercised():
    """The tie table really contains halfway cases where the modes disagree."""
    vectors = tie_vectors()
    single = golden("single", 0, -128, 127, vectors)
    tflite = golden("tflite", 0, -128, 127, vectors)
    assert single != tflite


@pytest.mark.parametrize("rounding", [("single",), ("tflite",), ("onnx",)])
def test_single_mode_builds(rounding):
    # A narrow clip and random values; with steady constants a ``single``-only lane decides its
    # clamp's compares beside ``r`` (the accelerator's form), both forms are checked.
    config = ArrayConfig(rows=2, cols=2, rounding=rounding)
    rng = np.random.default_rng(7)
    vectors = tie_vectors() + saturation_vectors(config) + random_vectors(config, rng, 60)
    mode = rounding[0]
    if mode == "onnx":
        vectors += onnx_vectors(config, rng, 30)
    expected = golden(mode, 3, -20, 20, vectors)
    for steady in (False, True) if mode == "single" else (True,):
        assert run_lane(config, mode, 3, -20, 20, vectors, steady_constants=steady) == expected, steady


@pytest.mark.parametrize("config, latency", [
    (INT8, 19), (ArrayConfig(rows=2, cols=2, rounding=("single", "tflite")), 15), (WIDE, 19)])
def test_lane_latency_is_measured(config, latency):
    """One beat in: its result leaves exactly ``latency`` cycles later (the figure the accelerator's
    schedule and the manifest use), and nothing before it."""
    dut = RequantLane(config=config)
    assert dut.latency == config.requant_latency == latency
    seen = []

    async def bench(ctx):
        ctx.set(dut.mode, MODE_CODES[config.rounding[0]])
        ctx.set(dut.qmin, -100)
        ctx.set(dut.qmax, 100)
        ctx.set(dut.acc, 77)
        ctx.set(dut.multiplier, 1 << 30)
        ctx.set(dut.shift, 1)           # y = 77
        ctx.set(dut.i_valid, 1)
        for t in range(latency + 3):
            _, _, valid, value = await ctx.tick().sample(dut.o_valid, dut.o)
            ctx.set(dut.i_valid, 0)
            if valid:
                seen.append((t, value))

    run_sim(dut, bench)
    assert seen == [(latency, 77)]          # sample() sees the values just before edge t, i.e. after t edges


def test_mode_travels_with_each_beat():
    """``mode`` is sampled with the data: beats of different modes can follow each other."""
    vectors = random_vectors(INT8, np.random.default_rng(7), 60)
    modes = [("single", "tflite", "onnx")[i % 3] for i in range(len(vectors))]
    out = run_lane(INT8, modes, 0, -128, 127, vectors)
    expected = [golden(mode, 0, -128, 127, [v])[0] for mode, v in zip(modes, vectors)]
    assert out == expected
    assert len(set(modes)) == 3 and golden("single", 0, -128, 127, vectors) != expected


def test_lane_family_checked():
    from qhw.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^family must be None, 'ice40' or 'ecp5', not 'xilinx'$"):
        RequantLane(config=INT8, family="xilinx")
