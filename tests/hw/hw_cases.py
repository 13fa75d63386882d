"""Shared helper of the hardware tests: random GEMM cases whose expected output comes from qhw's golden model.

A plain module (not conftest.py) so its name cannot collide with tests/conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator

from qhw.arith import Requant
from qhw.hw.config import ArrayConfig
from qhw.hw.driver import GemmProgram, fold_bias, plan_gemm
from qhw.kernels import matmul_exact


@dataclass
class GemmCase:
    program: GemmProgram
    expected: np.ndarray


def make_case(config: ArrayConfig, m: int, k: int, n: int, *, mode: str, seed: int,
              x=None, w=None, bias=None, x_zero_point=None, zero_point=None, qmin=None, qmax=None,
              real_scale=None) -> GemmCase:
    """A random GEMM (or the given operands) and its golden output ``Requant.apply((x - x_zp) @ w + bias)``."""
    rng = np.random.default_rng(seed)
    lo, hi = config.act_range
    wlo, whi = config.weight_range
    x = rng.integers(lo, hi + 1, (m, k)) if x is None else np.asarray(x)
    w = rng.integers(wlo, whi + 1, (k, n)) if w is None else np.asarray(w)
    if x_zero_point is None:
        x_zero_point = int(rng.integers(lo, hi + 1)) // 4
    bias = rng.integers(-(1 << 14), 1 << 14, n) if bias is None else np.asarray(bias)
    if zero_point is None:
        zero_point = int(rng.integers(lo, hi + 1)) // 8
    qmin = lo if qmin is None else qmin
    qmax = hi if qmax is None else qmax
    if real_scale is None:
        # Scales that map the accumulator spread onto a few output steps, so outputs are
        # neither all saturated nor all zero.
        spread = float(np.sqrt(k)) * (hi - lo) * (whi - wlo) / 12
        real_scale = rng.uniform(0.5, 2.0, n) * (hi - lo) / max(spread, 1.0) / 4
    requant = Requant.from_scales(mode=mode, s_in=1.0, s_w=real_scale, s_out=1.0,
                                  zero_point=zero_point, qmin=qmin, qmax=qmax)
    if not config.per_channel:
        requant = Requant.from_scales(mode=mode, s_in=1.0, s_w=np.atleast_1d(real_scale)[:1], s_out=1.0,
                                      zero_point=zero_point, qmin=qmin, qmax=qmax)
    acc = matmul_exact(x.astype(np.int64) - x_zero_point, w) + bias
    expected = requant.apply(acc)
    program = plan_gemm(config, x, w, fold_bias(bias, w, x_zero_point), requant)
    return GemmCase(program=program, expected=expected)


def run_array(dut, cfg, seed):
    """Load two weight banks, stream rows with random banks, collect rows ``dut.latency`` later."""
    rows, cols = cfg.rows, cfg.cols
    rng = np.random.default_rng(seed)
    lo, hi = cfg.act_range
    wlo, whi = cfg.weight_range
    weights = [rng.integers(wlo, whi + 1, (rows, cols)) for _ in range(2)]
    weights[0][0, 0] = wlo
    n = 12
    x = rng.integers(lo, hi + 1, (n, rows))
    x[0, :] = lo if cfg.act_signed else hi
    banks = rng.integers(0, 2, n)
    got = {}

    async def bench(ctx):
        for bank in range(2):
            for i in range(rows):
                ctx.set(dut.w_we, 1 << i)
                ctx.set(dut.w_bank, bank)
                ctx.set(dut.w_data, [int(v) for v in weights[bank][i]])
                await ctx.tick()
        ctx.set(dut.w_we, 0)
        for t in range(n + dut.latency):
            if t < n:
                ctx.set(dut.a_in, [int(v) for v in x[t]])
                ctx.set(dut.bank_in, int(banks[t]))
            await ctx.tick()
            row = t + 1 - dut.latency
            if 0 <= row < n:
                got[row] = [ctx.get(dut.psum_out[j]) for j in range(cols)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expected = np.array([matmul_exact(x[t:t + 1], weights[banks[t]])[0] for t in range(n)])
    return np.array([got[t] for t in range(n)]), expected
