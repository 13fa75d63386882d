"""The accelerator top: full GEMMs in the Amaranth simulator, bit-exact with the golden model.

Random input gaps and output back-pressure are seeded; the seed is in the test id.
"""

import re

import numpy as np
import pytest
from amaranth_sim import run_sim
from hw_cases import make_case

from qhw.errors import ConfigError
from qhw.hw.accel import Accelerator
from qhw.hw.config import MODE_CODES, ArrayConfig
from qhw.hw.driver import fold_bias
from qhw.hw.layouts import command_layout
from qhw.hw.simulate import simulate


def cfg(rows, cols, **kw):
    kw.setdefault("max_k", 64)
    kw.setdefault("acc_depth", 32)
    return ArrayConfig(rows=rows, cols=cols, **kw)


def check(case, **sim_kw):
    res = simulate(case.program, **sim_kw)
    assert np.array_equal(res.outputs[0], case.expected), (res.outputs[0], case.expected)
    return res


# --------------------------------------------------------------------------- bit-exact GEMMs


@pytest.mark.parametrize("mode", ["single", "tflite", "onnx"])
@pytest.mark.parametrize("m, k, n", [(8, 16, 8), (9, 11, 6), (5, 4, 4)])
def test_gemm_4x4(mode, m, k, n):
    check(make_case(cfg(4, 4), m, k, n, mode=mode, seed=m * k * n))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_gemm_4x4_gaps_and_backpressure(seed):
    """Producers idle at random and the consumer stalls at random: no loss, no duplication."""
    mode = ("single", "tflite", "onnx")[seed % 3]
    case = make_case(cfg(4, 4), 7, 13, 10, mode=mode, seed=seed)
    check(case, seed=seed, in_gap=0.3, out_stall=0.5)


@pytest.mark.parametrize("mode, seed", [("single", 11), ("tflite", 12), ("onnx", 13)])
def test_gemm_8x8(mode, seed):
    case = make_case(cfg(8, 8), 20, 24, 16, mode=mode, seed=seed)
    check(case, seed=seed, in_gap=0.1, out_stall=0.3)


def test_gemm_8x8_full_rate():
    """K and N several tiles deep, M large enough that weight loads hide behind compute."""
    c = cfg(8, 8)
    m = c.min_m_for_full_rate
    case = make_case(c, m, 24, 16, mode="single", seed=5)
    res = check(case)
    assert max(np.diff(res.act_cycles)) == 1, "an activation slot was lost between tiles"
    assert res.cycles == c.ideal_cycles(m, 24, 16)


def test_gemm_2x2():
    check(make_case(cfg(2, 2), 3, 5, 3, mode="tflite", seed=7), seed=7, in_gap=0.2, out_stall=0.2)


@pytest.mark.parametrize("mode", ["single", "tflite", "onnx"])
def test_gemm_16x16(mode):
    check(make_case(cfg(16, 16), 3, 20, 18, mode=mode, seed=8))


@pytest.mark.parametrize("tiles", [{"tile_rows": 2, "tile_cols": 2}, {"tile_pipeline": 0},
                                   {"tile_rows": 2, "tile_cols": 1, "tile_pipeline": 2}],
                         ids=["tile2x2", "combinational", "pipeline2"])
def test_gemm_tile_variants(tiles):
    check(make_case(cfg(4, 4, **tiles), 6, 10, 7, mode="single", seed=9), seed=9, out_stall=0.3)


def test_gemm_per_tensor_uint8():
    c = cfg(4, 4, per_channel=False, act_signed=False)
    check(make_case(c, 6, 9, 5, mode="tflite", seed=10, x_zero_point=128, zero_point=128), seed=10,
          in_gap=0.2)
    check(make_case(c, 6, 9, 5, mode="onnx", seed=13, x_zero_point=128, zero_point=128), seed=13)


def test_gemm_int16():
    c = cfg(2, 4, act_bits=16, weight_bits=16)
    check(make_case(c, 4, 5, 6, mode="single", seed=14))


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("mode", ["single", "tflite", "onnx"])
def test_m_equals_1(mode):
    """One row per tile: the next K tile reads the accumulator row written in the same cycle."""
    check(make_case(cfg(4, 4), 1, 17, 9, mode=mode, seed=15))


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("m", [1, 2])
def test_same_row_back_to_back(rows, m):
    """Both weight banks loaded before the activations start, so a row's next K tile comes M
    cycles after its previous one: M = 1 is before the previous sum is written (forwarding from
    the adder's register), M = 2 in the cycle it is written (the transparent read port)."""
    case = make_case(cfg(rows, 4), m, 3 * rows, 4, mode="single", seed=21)
    res = check(case, act_start=4 * (rows + 1))
    t = res.act_cycles
    assert min(t[i + m] - t[i] for i in range(len(t) - m)) == m, t


def test_n_and_k_one():
    check(make_case(cfg(4, 4), 3, 1, 1, mode="single", seed=16))


@pytest.mark.parametrize("mode", ["single", "tflite", "onnx"])
def test_largest_k_saturates_both_ends(mode):
    """K = max_k with extreme operands and int32 bias extremes: the accumulator's full range.

    Column 0 reaches the largest accumulator (K * (-128)**2 + INT32_MAX), column 1 the
    smallest (K * -128 * 127 + INT32_MIN); outputs saturate at both ends.
    """
    c = cfg(4, 4, max_k=41)
    m, k, n = 3, c.max_k, 5
    x = np.full((m, k), -128)
    x[1, ::2] = 127
    w = np.tile(np.array([-128, 127, -128, 127, 3]), (k, 1))
    bias = np.array([2**31 - 1, -(2**31), 0, 5, -5])
    case = make_case(c, m, k, n, mode=mode, seed=17, x=x, w=w, bias=bias, x_zero_point=0, zero_point=0,
                     real_scale=np.full(n, 1e-3))
    assert case.expected.max() == 127 and case.expected.min() == -128
    check(case)


def test_relu_clamp_and_saturation():
    """qmin = zero point (fused ReLU) and large scales saturate both ends."""
    case = make_case(cfg(4, 4), 6, 8, 8, mode="tflite", seed=18, zero_point=-10, qmin=-10, qmax=127,
                     real_scale=np.full(8, 0.5))
    assert (case.expected == -10).any() and (case.expected == 127).any()
    check(case)


def test_output_blocked_long():
    """The consumer refuses results for a long time: the credit limit stops activations at
    ``fifo_depth`` outstanding rows, and nothing is lost or duplicated when it resumes."""
    c = cfg(4, 4)
    m = c.fifo_depth + 9
    case = make_case(c, m, 4, 4, mode="single", seed=23)
    hold = 200
    res = check(case, out_start=hold, out_stall=0.2, seed=23)
    accepted_while_blocked = sum(t < hold for t in res.act_cycles)
    assert accepted_while_blocked == c.fifo_depth


def test_back_to_back_commands():
    """Two GEMMs with different shapes and modes run one after the other."""
    c = cfg(4, 4)
    a = make_case(c, 5, 9, 6, mode="single", seed=19)
    b = make_case(c, 3, 4, 9, mode="tflite", seed=20)
    d = make_case(c, 4, 6, 5, mode="onnx", seed=21)
    res = simulate([a.program, b.program, d.program], seed=19, in_gap=0.2, out_stall=0.2)
    for case, out in zip((a, b, d), res.outputs):
        assert np.array_equal(out, case.expected)


def test_bad_commands_are_dropped_and_flagged():
    """M = 0, K = 0, K > max_k, M > acc_depth with K > rows and an unbuilt mode set ``error``
    without starting; the next good command clears it and runs normally."""
    c = cfg(4, 4, max_k=16, acc_depth=8, rounding=("single", "tflite"))
    dut = Accelerator(config=c)
    good = make_case(c, 3, 6, 5, mode="single", seed=24)
    base = good.program.command
    bad = [dict(base, m=0), dict(base, k=0), dict(base, n=0), dict(base, k=17), dict(base, m=9, k=5),
           dict(base, mode=MODE_CODES["onnx"])]
    layout = command_layout(c)

    async def send(ctx, command):
        """Offer ``command`` until taken: the idle register takes it in the second cycle (checks registered)."""
        ctx.set(dut.cmd.valid, 1)
        ctx.set(dut.cmd.payload, layout.const(command))
        waited = 0
        while not (await ctx.tick().sample(dut.cmd.ready))[2]:
            waited += 1
        assert waited == 1
        ctx.set(dut.cmd.valid, 0)

    async def bench(ctx):
        for command in bad:
            await send(ctx, command)
            await ctx.tick()
            assert ctx.get(dut.error) and not ctx.get(dut.busy), command
        await send(ctx, dict(base, m=8, k=4))   # M = acc_depth, one K tile: fine
        await ctx.tick()
        assert not ctx.get(dut.error) and ctx.get(dut.busy)

    run_sim(dut, bench)


# --------------------------------------------------------------------------- latency and throughput


@pytest.mark.parametrize("rows, cols, tiles", [(4, 4, {}), (2, 6, {}), (4, 4, {"tile_rows": 2, "tile_pipeline": 2})])
def test_latency_property(rows, cols, tiles):
    """First result arrives exactly ``latency`` cycles after the first last-K-tile activation."""
    c = cfg(rows, cols, **tiles)
    m, k, n = 4, 2 * rows, cols
    res = check(make_case(c, m, k, n, mode="single", seed=21))
    first_last = (k // rows - 1) * m
    assert res.out_cycles[0] - res.act_cycles[first_last] == c.latency


def test_full_rate_from_min_m():
    c = cfg(4, 4)
    m, k, n = c.min_m_for_full_rate, 12, 8
    res = check(make_case(c, m, k, n, mode="single", seed=22))
    assert max(np.diff(res.act_cycles)) == 1
    assert res.cycles == c.ideal_cycles(m, k, n)


# --------------------------------------------------------------------------- host-side checks


def test_plan_rejects_k_above_max_k():
    c = cfg(4, 4, max_k=8)
    with pytest.raises(ConfigError, match=re.escape("K must be at most max_k=8, not 9") + "$"):
        make_case(c, 2, 9, 4, mode="single", seed=0)


def test_plan_rejects_m_above_acc_depth():
    c = cfg(4, 4, acc_depth=4)
    with pytest.raises(ConfigError, match=re.escape("M must be at most acc_depth=4 when K > rows, not 5") + "$"):
        make_case(c, 5, 8, 4, mode="single", seed=0)
    make_case(c, 5, 4, 4, mode="single", seed=0)   # one K tile needs no accumulator rows


def test_plan_rejects_unbuilt_mode():
    c = cfg(4, 4, rounding=("single",))
    with pytest.raises(ConfigError, match="^rounding mode 'tflite' is not built into this array"):
        make_case(c, 2, 4, 4, mode="tflite", seed=0)


def test_fold_bias():
    w = np.array([[1, 2], [3, 4]])
    assert fold_bias([10, 20], w, 2).tolist() == [10 - 2 * 4, 20 - 2 * 6]


# --------------------------------------------------------------------------- shared requantization lanes


@pytest.mark.parametrize("lanes", [2, 1])
@pytest.mark.parametrize("mode", ["single", "tflite", "onnx"])
def test_shared_requant_lanes_bit_exact(lanes, mode):
    """Fewer lanes than columns: each row is requantized in cols/lanes passes, with gaps and stalls."""
    c = cfg(4, 4, requant_lanes=lanes)
    check(make_case(c, 9, 11, 6, mode=mode, seed=10 * lanes + 1), seed=lanes, in_gap=0.2, out_stall=0.3)


@pytest.mark.parametrize("lanes", [2, 1])
@pytest.mark.parametrize("k", [4, 12])  # one K tile (every activation beat makes a row) and three
def test_shared_requant_lanes_cycles(lanes, k):
    c = cfg(4, 4, requant_lanes=lanes)
    m = c.min_m_for_full_rate
    res = check(make_case(c, m, k, 8, mode="single", seed=3))
    assert res.cycles == c.ideal_cycles(m, k, 8)
    assert c.latency == cfg(4, 4).latency + c.requant_passes


# --------------------------------------------------------------------------- DSP-mapped PEs (family None)


DSP_PES = ["ecp5-pipelined", "ice40-dual"]


@pytest.mark.parametrize("pe", DSP_PES)
@pytest.mark.parametrize("rows, cols", [(4, 4), (2, 3)])
def test_dsp_pe_full_rate_cycle_exact(pe, rows, cols):
    """Three K tiles and two N tiles back to back at full rate: each tile's bank switch happens while
    the previous tile's products are still in the array (and, for ecp5-pipelined, in the DSP
    pipeline). Bit-exact, no lost slot, and exactly ``ideal_cycles``."""
    c = cfg(rows, cols, pe=pe)
    m, k, n = c.min_m_for_full_rate, 3 * rows, 2 * cols
    res = check(make_case(c, m, k, n, mode="single", seed=31 + rows))
    assert max(np.diff(res.act_cycles)) == 1, "an activation slot was lost between tiles"
    assert res.cycles == c.ideal_cycles(m, k, n)


@pytest.mark.parametrize("pe", DSP_PES)
def test_dsp_pe_latency_property(pe):
    """First result exactly ``latency`` cycles after the first last-K-tile activation."""
    c = cfg(4, 4, pe=pe)
    m, k, n = 4, 8, 4
    res = check(make_case(c, m, k, n, mode="single", seed=32))
    assert res.out_cycles[0] - res.act_cycles[m] == c.latency
    assert c.latency == cfg(4, 4).latency + c.product_latency


@pytest.mark.parametrize("pe", DSP_PES)
@pytest.mark.parametrize("m, k", [(1, 4), (2, 4), (3, 4), (1, 10), (3, 10)])
def test_dsp_pe_small_m_bank_reuse(pe, m, k):
    """M far below ``min_m_for_full_rate`` with many tiles: each bank (weights and requantization
    parameters) is refilled as soon as ``bank_drain_cycles`` allow, while the rows of its previous
    tile are still in flight. With one K tile every tile loads parameters, so a bank's parameters are
    overwritten two tiles (2 * M cycles) later: a drain that forgot the product cycles lets that
    happen before the last rows have read them. M = 1 also reads back the accumulator row written
    in the same cycle."""
    c = cfg(4, 4, pe=pe)
    check(make_case(c, m, k, 13, mode="tflite", seed=40 + m + k))


@pytest.mark.parametrize("pe", DSP_PES)
@pytest.mark.parametrize("seed", [1, 2])
def test_dsp_pe_gaps_and_backpressure(pe, seed):
    mode = ("single", "tflite", "onnx")[(seed + len(pe)) % 3]
    c = cfg(4, 4, pe=pe)
    check(make_case(c, 9, 13, 10, mode=mode, seed=50 + seed), seed=seed, in_gap=0.3, out_stall=0.5)


def test_dsp_pe_2x2_modes_and_uint8():
    """2x2 of both kinds in every mode; ice40-dual with unsigned activations per tensor."""
    for pe in DSP_PES:
        c = cfg(2, 2, pe=pe)
        for i, mode in enumerate(("single", "tflite", "onnx")):
            check(make_case(c, 5, 7, 5, mode=mode, seed=60 + i), seed=i, in_gap=0.2, out_stall=0.2)
    c = cfg(2, 4, pe="ice40-dual", act_signed=False, per_channel=False)
    check(make_case(c, 6, 9, 5, mode="tflite", seed=63, x_zero_point=128, zero_point=128), seed=3)


def test_dsp_pe_shared_requant_lanes():
    c = cfg(4, 4, pe="ecp5-pipelined", requant_lanes=2)
    m = c.min_m_for_full_rate
    res = check(make_case(c, m, 12, 8, mode="single", seed=64))
    assert res.cycles == c.ideal_cycles(m, 12, 8)


def test_dsp_pe_back_to_back_commands():
    c = cfg(4, 4, pe="ecp5-pipelined")
    a = make_case(c, 5, 9, 6, mode="single", seed=65)
    b = make_case(c, 1, 4, 9, mode="onnx", seed=66)
    res = simulate([a.program, b.program], seed=65, in_gap=0.2, out_stall=0.2)
    for case, out in zip((a, b), res.outputs):
        assert np.array_equal(out, case.expected)



# --------------------------------------------------------------------------- the UP5K board top's accelerator


UP5K = dict(pe="ice40-dual", rounding=("single",), requant_mul="serial", requant_lanes=1, acc_depth=64)  # area_first


def test_up5k_accel_full_rate_cycle_exact():
    """The iCEBreaker board top's 8x2 accelerator (``area_first``: registered ``act.ready`` decided from
    each register's next value, the loader's ``row_last``): three K tiles and two N tiles at full
    rate in exactly ``ideal_cycles``, bit-exact."""
    c = cfg(8, 2, **UP5K)
    m, k, n = c.min_m_for_full_rate, 3 * 8, 2 * 2
    res = check(make_case(c, m, k, n, mode="single", seed=71))
    assert res.cycles == c.ideal_cycles(m, k, n)


@pytest.mark.parametrize("m, k, n", [(1, 10, 5), (3, 8, 4), (2, 17, 3)])
def test_up5k_accel_small_m_cycle_exact_against_the_model(m, k, n):
    """Small M, many tiles (bank reuse, a zero-filled last K tile, an N tile of one column): bit-exact,
    and the cycles equal those of the 8x2 generic accelerator with the same serial lane (the
    ``area_first`` handshakes move no cycle)."""
    c = cfg(8, 2, **UP5K)
    case = make_case(c, m, k, n, mode="single", seed=72 + m + k)
    res = check(case)
    ref = simulate(make_case(cfg(8, 2, **{**UP5K, "pe": "generic"}), m, k, n, mode="single", seed=72 + m + k).program)
    assert res.cycles == ref.cycles + c.product_latency - cfg(8, 2, **{**UP5K, "pe": "generic"}).product_latency


@pytest.mark.parametrize("seed", [1, 2])
def test_up5k_accel_gaps_and_backpressure(seed):
    c = cfg(8, 2, **UP5K)
    check(make_case(c, 9, 19, 5, mode="single", seed=73 + seed), seed=seed, in_gap=0.3, out_stall=0.5)
