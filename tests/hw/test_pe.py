"""PE: combinational MAC with two weight banks, selected by the bank bit travelling with the activation."""

import gc
import re
import warnings

import numpy as np
import pytest
from amaranth_sim import run_sim

from qhw.errors import ConfigError
from qhw.hw.pe import PE


def test_pe_mac_and_banks():
    dut = PE(act_shape=8, weight_bits=8, psum_bits=20)  # unsigned activations (uint8)
    rng = np.random.default_rng(3)
    cases = [(int(rng.integers(0, 256)), int(rng.integers(-(1 << 19), 1 << 19)), int(rng.integers(0, 2)))
             for _ in range(40)] + [(255, 0, 0), (255, 0, 1), (0, -(1 << 19), 1)]
    weights = (-128, 127)

    async def bench(ctx):
        for bank, w in enumerate(weights):
            ctx.set(dut.w_we, 1)
            ctx.set(dut.w_bank, bank)
            ctx.set(dut.w_data, w)
            await ctx.tick()
        ctx.set(dut.w_we, 0)
        for a, psum, bank in cases:
            ctx.set(dut.a_in, a)
            ctx.set(dut.psum_in, psum)
            ctx.set(dut.bank_in, bank)
            await ctx.delay(1e-7)
            assert ctx.get(dut.psum_out) == psum + a * weights[bank]
            assert ctx.get(dut.a_out) == a and ctx.get(dut.bank_out) == bank
        # Writing bank 1 does not disturb bank 0 (the one in use).
        ctx.set(dut.a_in, 3)
        ctx.set(dut.psum_in, 0)
        ctx.set(dut.bank_in, 0)
        ctx.set(dut.w_we, 1)
        ctx.set(dut.w_bank, 1)
        ctx.set(dut.w_data, 5)
        await ctx.tick()
        ctx.set(dut.w_we, 0)
        assert ctx.get(dut.psum_out) == 3 * -128
        ctx.set(dut.bank_in, 1)
        await ctx.delay(1e-7)
        assert ctx.get(dut.psum_out) == 15

    run_sim(dut, bench)


def test_pe_parameter_validation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the half-built PE is never elaborated, on purpose
        with pytest.raises(ConfigError, match=re.escape("psum_bits must be an integer of at least 2, not 1") + "$"):
            PE(act_shape=8, weight_bits=8, psum_bits=1)
        gc.collect()
