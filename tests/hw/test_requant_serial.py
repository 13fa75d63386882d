# amaranth: UnusedElaboratable=no
"""The serial requantization lane (``requant_mul="serial"``: bit-serial M0 multiply in logic cells, for
the iCE40 UP5K): the multiply alone over its corner cases, the lane bit-exact with qhw.arith.Requant with
one input every ``requant_interval`` cycles and junk on the inputs between them, and the accelerator
with serial lanes cycle-exact. Random cases state their seeds."""

import re
import zlib

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth_sim import run_sim
from hw_cases import make_case
from test_requant import golden, random_vectors, saturation_vectors, tie_vectors

from qhw.contract import MODE_CODES, serial_product_interval, serial_product_latency
from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig
from qhw.hw.requant import RequantLane
from qhw.hw.serial_mul import serial_product
from qhw.hw.simulate import simulate

FIXED = ("single", "tflite")
INT8 = ArrayConfig(rows=2, cols=2, rounding=FIXED, requant_mul="serial")                 # acc 33 bits
UINT8 = ArrayConfig(rows=2, cols=2, rounding=FIXED, requant_mul="serial", act_signed=False)
WIDE = ArrayConfig(rows=2, cols=2, rounding=FIXED, requant_mul="serial", act_bits=16, weight_bits=16)  # 44


def run_product(a_bits, b_bits, cases, junk_seed):
    """``(a, b, addend)`` started every interval cycles (random junk on the inputs, ``start`` low, in
    between); the products read at the contract's latency."""
    m = Module()
    a, b = Signal(signed(a_bits)), Signal(b_bits)
    addend, start = Signal(a_bits + b_bits - 1), Signal()
    t, _ = serial_product(m, a, b, addend=addend, start=start, name="p")
    lat, gap = serial_product_latency(b_bits), serial_product_interval(b_bits)
    rng = np.random.default_rng(junk_seed)
    got = {}

    async def bench(ctx):
        starts = {i * gap: case for i, case in enumerate(cases)}
        for cyc in range(len(cases) * gap + lat + 1):
            if cyc in starts:
                va, vb, vc = starts[cyc]
                ctx.set(start, 1)
            else:
                va = int(rng.integers(-(1 << (a_bits - 1)), 1 << (a_bits - 1)))
                vb, vc = int(rng.integers(0, 1 << b_bits)), int(rng.integers(0, 1 << 40))
                ctx.set(start, 0)
            ctx.set(a, va)
            ctx.set(b, vb)
            ctx.set(addend, vc)
            got[cyc] = ctx.get(t)      # t after cyc edges (read before the next one)
            await ctx.tick()

    run_sim(m, bench)
    return [got[i * gap + lat] for i in range(len(cases))]


def test_serial_product_corners():
    """Extremes of a signed 33-bit a, an unsigned 31-bit b and the addend (all bits of the addend's low
    and high parts), then random cases (seed 11), each exact."""
    A, B = 33, 31
    amin, amax, bmax = -(1 << (A - 1)), (1 << (A - 1)) - 1, (1 << B) - 1
    cases = [(x, y, c) for x in (amin, amax, -1, 0, 1, amin + 1) for y in (0, 1, bmax, 1 << 30)
             for c in (0, 1, (1 << 61), (1 << 31) - 1, 1 << 31, (1 << 62) - 1)]
    rng = np.random.default_rng(11)
    cases += [(int(rng.integers(amin, amax + 1)), int(rng.integers(0, bmax + 1)), int(rng.integers(0, 1 << 62)))
              for _ in range(40)]
    got = run_product(A, B, cases, junk_seed=12)
    expected = [x * y + c for x, y, c in cases]
    bad = [(case, g, e) for case, g, e in zip(cases, got, expected) if g != e]
    assert not bad, f"{len(bad)} of {len(cases)} wrong, first (a, b, addend), got, expected: {bad[:3]}"


def run_serial_lane(config, modes, zero_point, qmin, qmax, vectors, junk_seed):
    """One beat every ``config.requant_interval`` cycles (``i_valid`` low and random junk on every data
    input between beats); the outputs in order, with the cycle each left."""
    dut = RequantLane(config=config)
    gap = config.requant_interval
    rng = np.random.default_rng(junk_seed)
    out = []

    async def bench(ctx):
        ctx.set(dut.zero_point, zero_point)
        ctx.set(dut.qmin, qmin)
        ctx.set(dut.qmax, qmax)
        for cyc in range(len(vectors) * gap + dut.latency + 2):
            i, phase = divmod(cyc, gap)
            if phase == 0 and i < len(vectors):
                acc, bias, m0, shift = vectors[i][:4]
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.mode, MODE_CODES[modes[i]])
            else:
                acc, bias = int(rng.integers(-(1 << 30), 1 << 30)), int(rng.integers(-(1 << 31), 1 << 31))
                m0, shift = int(rng.integers(0, 1 << 31)), int(rng.integers(-31, 31))
                ctx.set(dut.i_valid, 0)
                ctx.set(dut.mode, int(rng.integers(0, 4)))
            ctx.set(dut.acc, acc)
            ctx.set(dut.bias, bias)
            ctx.set(dut.multiplier, m0)
            ctx.set(dut.shift, shift)
            _, _, valid, value = await ctx.tick().sample(dut.o_valid, dut.o)
            if valid:
                out.append((cyc, value))

    run_sim(dut, bench)
    return out


@pytest.mark.parametrize("mode", ["single", "tflite", "mixed"])
@pytest.mark.parametrize("config, zero_point, qmin, qmax", [
    (INT8, 0, -128, 127),
    (INT8, -5, -5, 127),          # fused ReLU
    (UINT8, 128, 0, 255),
    (WIDE, 7, -32768, 32767),     # 44-bit accumulator: the widest serial operand
], ids=["int8", "int8-relu", "uint8", "int16"])
def test_serial_lane_matches_golden(config, mode, zero_point, qmin, qmax):
    seed = zlib.crc32(f"serial {mode} {zero_point} {qmin} {qmax} {config.act_bits}".encode())
    rng = np.random.default_rng(seed)
    vectors = tie_vectors() + saturation_vectors(config) + random_vectors(config, rng, 34)
    modes = [FIXED[i % 2] for i in range(len(vectors))] if mode == "mixed" else [mode] * len(vectors)
    got = run_serial_lane(config, modes, zero_point, qmin, qmax, vectors, junk_seed=seed + 1)
    expected = [golden(md, zero_point, qmin, qmax, [v])[0] for md, v in zip(modes, vectors)]
    assert [cyc for cyc, _ in got] == [i * config.requant_interval + config.requant_latency
                                       for i in range(len(vectors))]
    bad = [(v, g, e) for v, (_, g), e in zip(vectors, got, expected) if g != e]
    assert not bad, f"{len(bad)} mismatches (seed {seed}), first (acc, bias, m0, shift), got, expected: {bad[:3]}"


@pytest.mark.parametrize("signed_acts, zero_point, qmin, qmax", [(True, -128, -128, 127), (False, 255, 0, 255)])
def test_serial_lane_single_only(signed_acts, zero_point, qmin, qmax):
    """``single`` alone (the UP5K build): the multiplicand is stage 1's held ``acc + bias``, not a
    delay line, so junk on ``acc``/``bias`` after the beat must not reach the product; the result is
    saturated to act_bits + 2 bits before the zero point (extreme zero points: still exact)."""
    config = ArrayConfig(rows=2, cols=2, rounding=("single",), requant_mul="serial", act_signed=signed_acts)
    seed = zlib.crc32(f"serial single only {signed_acts}".encode())
    # Products whose only bits beside the sign are near the top of the shift register (2**59 and
    # -2**59 after the shift by 1): they saturate (a saturation test that split its all-equal test
    # into groups and left the highest one out passed every other vector).
    top = [(0, 1 << 30, 1 << 30, 30), (0, -(1 << 30), 1 << 30, 30)]
    vectors = tie_vectors() + saturation_vectors(config) + top + random_vectors(config, np.random.default_rng(seed), 30)
    got = run_serial_lane(config, ["single"] * len(vectors), zero_point, qmin, qmax, vectors, junk_seed=seed + 1)
    assert [g for _, g in got] == golden("single", zero_point, qmin, qmax, vectors), f"seed {seed}"


def test_serial_lane_contract():
    """Latency and interval come from the contract; the serial multiply keeps the lane off the DSPs."""
    assert (INT8.requant_interval, INT8.requant_latency) == (32, 71)
    assert INT8.requant_passes == 32 and INT8.share_latency == 1       # one lane per column
    one = ArrayConfig(rows=4, cols=4, rounding=("single",), requant_mul="serial", requant_lanes=1)
    assert one.requant_passes == 128 and one.share_latency == 97
    assert ArrayConfig(rows=4, cols=4, rounding=("single",)).requant_interval == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(requant_mul="soft"), "requant_mul must be one of parallel, serial, not 'soft'"),
    (dict(requant_mul="serial"), "requant_mul serial builds the single and tflite modes only, not onnx "
                                 "(build with --rounding single or single,tflite)"),
])
def test_serial_lane_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        ArrayConfig(rows=2, cols=2, **kwargs)


@pytest.mark.parametrize("lanes, m, k, n", [(1, 6, 4, 4), (1, 5, 12, 4), (2, None, 8, 8), (4, None, 12, 8)])
def test_accelerator_with_serial_lanes(lanes, m, k, n):
    """4x4 ice40-dual accelerator, serial lanes (1 shared, 2, or one per column) reading the parameter
    bank in place: bit-exact GEMMs (one tile; three K tiles; two N tiles at full rate, m None =
    ``min_m_for_full_rate``, where the next tile's bank is loaded while serial lanes still read the
    current one) in the cycles the config predicts."""
    c = ArrayConfig(rows=4, cols=4, max_k=64, acc_depth=64, rounding=FIXED, pe="ice40-dual",
                    requant_mul="serial", requant_lanes=lanes)
    m = m or c.min_m_for_full_rate
    case = make_case(c, m, k, n, mode="tflite" if lanes == 2 else "single", seed=40 + lanes + k)
    ideal = c.ideal_cycles(m, k, n)
    res = simulate(case.program, max_cycles=2 * ideal)
    assert np.array_equal(res.outputs[0], case.expected)
    if (k <= 4 and n <= 4) or m >= c.min_m_for_full_rate:      # where ideal_cycles is exact
        assert res.cycles == ideal
