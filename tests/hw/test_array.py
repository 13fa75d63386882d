"""Skew, mesh and de-skew: each input row's dot products appear ``latency`` cycles later, banks switch per row."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from qhw.hw.array import SystolicArray
from qhw.hw.config import ArrayConfig
from qhw.kernels import matmul_exact


@pytest.mark.parametrize("rows, cols, tile_rows, tile_cols, tile_pipeline", [
    (2, 2, 1, 1, 1),
    (4, 4, 1, 1, 1),
    (4, 6, 2, 3, 1),
    (4, 4, 2, 2, 2),
    (3, 5, 1, 1, 0),
    (8, 8, 1, 1, 1),
])
def test_array_rows_and_bank_switch(rows, cols, tile_rows, tile_cols, tile_pipeline):
    cfg = ArrayConfig(rows=rows, cols=cols, tile_rows=tile_rows, tile_cols=tile_cols,
                      tile_pipeline=tile_pipeline, max_k=64, acc_depth=8)
    dut = SystolicArray(config=cfg)
    rng = np.random.default_rng(rows * 100 + cols)
    weights = [rng.integers(-128, 128, (rows, cols)) for _ in range(2)]
    weights[0][0, 0] = -128
    n = 12
    x = rng.integers(-128, 128, (n, rows))
    x[0, :] = -128                                  # extreme products
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
            row = t + 1 - dut.latency                 # the row sampled `latency` edges ago
            if 0 <= row < n:
                got[row] = [ctx.get(dut.psum_out[j]) for j in range(cols)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expected = np.array([matmul_exact(x[t:t + 1], weights[banks[t]])[0] for t in range(n)])
    assert np.array_equal(np.array([got[t] for t in range(n)]), expected)
