# amaranth: UnusedElaboratable=no
"""The pooling unit in the Amaranth simulator, bit-exact against the golden model's average rules
(``qhw.ops._average_i``) and pooling kernels (``qhw.kernels``): ties, saturation, every rule of each
rounding mode, padding, ``include_pad``. Random stimuli state their seed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from amaranth_sim import run_sim

from qhw.arith import average_onnx_scale, quantize_multiplier
from qhw.engine.isa import POOL_AVG, POOL_MAX, RULE_CODES
from qhw.graph import QParams
from qhw.hw.config import ArrayConfig
from qhw.hw.engine.pool import PoolLane, PoolReduce
from qhw.kernels import avgpool2d_sums, maxpool2d
from qhw.ops import _average_i

CONFIG = ArrayConfig(rows=8, cols=8)     # all three rounding modes


def window_sums(rng, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, n) pairs: extremes and exact ties (S = k n + n/2) for every n <= 9, then random windows."""
    s, n = [], []
    for c in range(1, 10):
        for t in (-255 * c, 255 * c, 0, 1, -1, c // 2, -(c // 2), 3 * c + c // 2, -(7 * c + c // 2), c - 1):
            s.append(t)
            n.append(c)
    c = rng.integers(1, 10, count)
    return np.array(s + list(rng.integers(-255, 256, count) * c // 2)), np.array(n + list(c))


def lane_results(rule: str, total, count, params, zp: int, qmin: int, qmax: int, avg_lane: bool = True) -> list[int]:
    dut = PoolLane(config=CONFIG, avg_lane=avg_lane)
    got: list[tuple[int, int]] = []

    async def bench(ctx):
        ctx.set(dut.zero_point, zp)
        ctx.set(dut.qmin, qmin)
        ctx.set(dut.qmax, qmax)
        await ctx.tick()
        for cycle in range(len(total) + dut.latency + 1):
            if cycle < len(total):
                i = cycle
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.rule, RULE_CODES[rule])
                ctx.set(dut.total, int(total[i]))
                ctx.set(dut.count, int(count[i]))
                mul, shift, scale = params(int(count[i]))
                ctx.set(dut.multiplier, mul)
                ctx.set(dut.shift, shift)
                ctx.set(dut.scale, scale)
            else:
                ctx.set(dut.i_valid, 0)
            await ctx.delay(1e-8)
            if ctx.get(dut.o_valid):
                got.append((cycle, ctx.get(dut.o)))
            await ctx.tick()

    run_sim(dut, bench)
    assert [c for c, _ in got] == list(range(dut.latency, dut.latency + len(total)))   # latency as documented
    return [v for _, v in got]


CASES = [  # (rule, mode, s_in, s_out, zp, qmin, qmax)
    ("div", "single", 0.05, 0.05, -3, -128, 127),
    ("div", "tflite", 0.05, 0.05, 100, -128, 127),        # saturates at qmax
    ("div", "single", 0.05, 0.05, -128, -128, 127),       # Relu-like: saturates at qmin
    ("single", "single", 0.05, 0.031, 5, -128, 127),
    ("single", "single", 0.05, 0.2, -128, -128, 127),
    ("tflite", "tflite", 0.05, 0.031, -7, -100, 90),      # narrow clamp
    ("tflite", "tflite", 0.013, 0.05, 0, -128, 127),
    ("onnx_int", "onnx", 0.05, 0.031, 3, -128, 127),
    ("onnx_int", "onnx", 0.05, 0.05, -128, -128, 127),
]


@pytest.mark.parametrize("case,avg_lane", [(c, True) for c in CASES] + [(c, False) for c in CASES if c[0] == "div"],
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)]
                         + [f"divider-only-{c[1]}-{i}" for i, c in enumerate(CASES) if c[0] == "div"])
def test_pool_lane_matches_golden_average(case, avg_lane):
    """``avg_lane=False`` (``--pool-avg div``): the divider alone gives the same codes at the same latency."""
    rule, mode, s_in, s_out, zp, qmin, qmax = case
    rng = np.random.default_rng([11, CASES.index(case)])          # seed 11 mixed with the case index
    total, count = window_sums(rng, 300)
    in_qp = QParams(scale=s_in, zero_point=0)
    out_qp = SimpleNamespace(scale=s_out, zero_point=zp, qmin=qmin, qmax=qmax)
    want = _average_i(SimpleNamespace(quant={"rounding": mode}), total, count, in_qp, out_qp)

    def params(n):   # the pool table entry for n (the compiler's words at pool_param)
        if rule == "onnx_int":
            return 0, 0, int(np.float32(average_onnx_scale(s_in, s_out, n)).view(np.uint32))
        if rule == "div":
            return 0, 0, 0
        m0, shift = quantize_multiplier(np.float64(s_in) / (np.float64(s_out) * n))
        return int(m0), int(shift), 0

    got = lane_results(rule, total, count, params, zp, qmin, qmax, avg_lane)
    bad = np.flatnonzero(np.array(got) != want)
    assert bad.size == 0, (f"{bad.size} mismatches, first S={total[bad[0]]} n={count[bad[0]]}: "
                           f"{got[bad[0]]} != {want[bad[0]]}")
    if rule == "div":      # the extremes saturate at both bounds
        assert (want == qmin).any() and (want == qmax).any()


@pytest.mark.parametrize("kind,include_pad", [(POOL_MAX, 0), (POOL_AVG, 0), (POOL_AVG, 1)])
def test_pool_reduce_matches_golden_windows(kind, include_pad):
    """A 3x3 stride-2 window with padding 1 on every side over a 5x5 8-lane input (seed 5): the taps
    fed in the standalone POOL's order; max/sum/count equal qhw.kernels'."""
    rng = np.random.default_rng(5)
    lanes, h, w, zp_in, qmin = 8, 5, 5, -9, -128
    x = rng.integers(-128, 128, (1, lanes, h, w))
    x[0, :, 0, 0] = 127                      # ties at the max in the first window
    x[0, :, 0, 1] = 127
    geo = dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    if kind == POOL_MAX:
        want_t = maxpool2d(x, pad_value=qmin, **geo)[0]
        want_n = None
    else:
        want_t, want_n = avgpool2d_sums(x, zero_point=zp_in, count_include_pad=bool(include_pad), **geo)
        want_t = want_t[0]
    oh, ow = want_t.shape[1:]
    taps = []
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(3):
                for kx in range(3):
                    y, xx = oy * 2 + ky - 1, ox * 2 + kx - 1
                    pad = not (0 <= y < h and 0 <= xx < w)
                    vals = [0] * lanes if pad else x[0, :, y, xx].tolist()
                    taps.append((vals, pad, ky == 0 and kx == 0, ky == 2 and kx == 2))
    dut = PoolReduce(lanes=lanes, sum_bits=CONFIG.sum_bits)
    got = []

    async def bench(ctx):
        ctx.set(dut.kind, kind)
        ctx.set(dut.zp_in, zp_in)
        ctx.set(dut.pad_value, qmin)
        ctx.set(dut.include_pad, include_pad)
        for i in range(len(taps) + 2):
            if i < len(taps):
                vals, pad, first, last = taps[i]
                ctx.set(dut.taps.payload, {"values": vals, "pad": pad, "first": first, "last": last})
                ctx.set(dut.taps.valid, 1)
            else:
                ctx.set(dut.taps.valid, 0)
            await ctx.delay(1e-8)
            if ctx.get(dut.windows.valid):
                p = ctx.get(dut.windows.payload)
                got.append(([p.total[j] for j in range(lanes)], p.count))
            await ctx.tick()

    run_sim(dut, bench)
    assert len(got) == oh * ow
    for k, (tot, n) in enumerate(got):
        oy, ox = divmod(k, ow)
        assert tot == want_t[:, oy, ox].tolist(), (oy, ox)
        if want_n is not None:
            assert n == want_n[oy, ox], (oy, ox)
