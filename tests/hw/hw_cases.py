"""Shared helper of the hardware tests: GEMM cases (``qhw.sim.gemm``) with the golden model's output, and an array run.

A plain module (not conftest.py) so its name cannot collide with tests/conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth_sim import run_sim

from qhw.hw.config import ArrayConfig
from qhw.hw.driver import GemmProgram, plan_gemm
from qhw.kernels import matmul_exact
from qhw.runtime import GoldenBackend
from qhw.sim.gemm import random_gemm


@dataclass
class GemmCase:
    program: GemmProgram
    expected: np.ndarray


def make_case(config: ArrayConfig, m: int, k: int, n: int, *, mode: str, seed: int, **fixed) -> GemmCase:
    """``qhw.sim.gemm.random_gemm`` drawn from ``default_rng(seed)`` (``fixed`` operands and
    parameters replace random ones), planned for the array, with the golden model's output."""
    call = random_gemm(config, m, k, n, mode=mode, rng=np.random.default_rng(seed), **fixed)
    program = plan_gemm(config, call.x, call.w, call.bias, call.requant)
    return GemmCase(program=program, expected=GoldenBackend().run([call])[0])


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

    run_sim(dut, bench)
    expected = np.array([matmul_exact(x[t:t + 1], weights[banks[t]])[0] for t in range(n)])
    return np.array([got[t] for t in range(n)]), expected
