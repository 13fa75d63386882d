# amaranth: UnusedElaboratable=no
"""Fused pools (a MATMUL's write-back) on ``WritebackAgen`` -> ``FusedPool`` in the Amaranth simulator:
every pooled word equals the reference model's write for that descriptor (``EngineModel.log``),
``max_latency``/``avg_latency`` after its window's last row, as ``EngineConfig`` promises.

The conv's result rows fed in are the reference model's own: the same descriptor run by
``EngineModel`` with its pool removed (``pool = 0``, written to a spare area past the scratchpad)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth_sim import run_sim

from qhw.engine.agen import matmul_writes
from qhw.engine.isa import POOL_MAX, POOL_NONE, RULES, Descriptor
from qhw.engine.model import EngineModel, segment_ranges
from qhw.hw.engine.layouts import descriptor_const
from qhw.hw.engine.pool import FusedPool
from qhw.hw.engine.writeback import WritebackAgen

from .conftest import case_program, engine_for, own_scale_pools_program


def fused_cases(program, codes):
    """(index, descriptor, its unpooled result rows (NT, M, C) in write order, its logged writes)."""
    R, C = program.rows, program.cols
    model = EngineModel(program)
    model.mem = np.zeros((1, model.act_words, R), np.int8)
    model.log = {}
    first, end = segment_ranges(program)[0]
    t_in = next(t for t in program.tensors if t.direction == 0 and t.segment == 0)
    out = []
    for i in range(first, end):
        d = program.descriptors[i]
        before = model.mem.copy()
        model.current = i
        getattr(model, f"_{d.op.lower()}")(d, {t_in.name: codes}, {})
        if d.op != "MATMUL" or d["pool"] == POOL_NONE:
            continue
        pp = -(-d["n_tiles"] * C // R)
        plain = Descriptor("MATMUL", {**d.fields, "pool": POOL_NONE, "out_base": model.act_words,
                                      "out_h": d["oh"], "out_w": d["ow"], "out_pp": pp, "out_cw0": 0})
        ref = EngineModel(program, act_words=model.act_words + d["oh"] * d["ow"] * pp)
        ref.mem = np.zeros((1, ref.act_words, R), np.int8)
        ref.mem[:, :model.act_words] = before
        ref._matmul(plain, {}, {})
        waddr, lane0 = matmul_writes(plain, R, C)
        rows = np.stack([ref.mem[0, waddr[nt], lane0[nt]:lane0[nt] + C] for nt in range(d["n_tiles"])])
        writes = {(w, lane): list(v) for (di, w, lane), v in model.log.items() if di == i}
        out.append((i, d, rows, writes))
    return out


def run_fused(d, rows, image, config, pool_line):
    R, C = config.rows, config.cols
    m_total = d["oh"] * d["ow"]
    order = [(nt, mm) for m0 in range(0, m_total, d["m_chunk"]) for nt in range(d["n_tiles"])
             for mm in range(m0, min(m_total, m0 + d["m_chunk"]))]
    rule, n = RULES[d["rule"]], d["pkh"] * d["pkw"]
    mul = shift = scale = 0
    if rule in ("single", "tflite"):
        mul, shift = (int(v) for v in np.frombuffer(image, "<i4", 2, d["pool_param"] + 8 * (n - 1)))
    elif rule == "onnx_int":
        scale = int(np.frombuffer(image, "<u4", 1, d["pool_param"] + 4 * (n - 1))[0])
    from amaranth.hdl import Module
    top = Module()
    top.submodules.wb = wb = WritebackAgen(rows=R, cols=C)
    top.submodules.pool = fp = FusedPool(config=config, pool_line=pool_line)
    got, lasts = [], []

    async def bench(ctx):
        for sig, v in ((fp.kind, d["pool"]), (fp.rule, d["rule"]), (fp.zp_in, d["pool_zp_in"]), (fp.count, n),
                       (fp.multiplier, mul), (fp.shift, shift), (fp.scale, scale), (fp.zero_point, d["pool_zp"]),
                       (fp.qmin, d["pool_qmin"]), (fp.qmax, d["pool_qmax"])):
            ctx.set(sig, v)
        ctx.set(wb.desc.payload, descriptor_const(d))
        ctx.set(wb.desc.valid, 1)
        await ctx.tick()
        ctx.set(wb.desc.valid, 0)
        ctx.set(wb.dest.ready, 1)
        # a row taken from the generator goes to the pool the next cycle (as the write-back's s1 -> s2),
        # its ``px`` given a cycle ahead as ``px_next``
        k, cycle, tail, pending = 0, 0, 0, None
        while tail < fp.avg_latency + 2:
            await ctx.delay(1e-8)
            taken = None
            if k < len(order) and ctx.get(wb.dest.valid):
                taken = (ctx.get(wb.dest.payload), order[k])
                ctx.set(fp.px_next, taken[0].px)
                k += 1
            if pending is not None:
                dst, (nt, mm) = pending
                for sig, v in ((fp.i_valid, 1), (fp.values, rows[nt, mm].tolist()), (fp.px, dst.px),
                               (fp.win_first, dst.win_first), (fp.win_last, dst.win_last), (fp.keep, dst.keep),
                               (fp.addr, dst.addr), (fp.lane, dst.lane)):
                    ctx.set(sig, v)
                if dst.keep and dst.win_last:
                    lasts.append(cycle)
            else:
                ctx.set(fp.i_valid, 0)
                if taken is None:
                    tail += 1
            pending = taken
            await ctx.delay(1e-8)
            if ctx.get(fp.o_valid):
                got.append((cycle, ctx.get(fp.o_addr), ctx.get(fp.o_lane), list(ctx.get(fp.o))))
            await ctx.tick()
            cycle += 1

    run_sim(top, bench)
    lat = fp.max_latency if d["pool"] == POOL_MAX else fp.avg_latency
    return got, lasts, lat


@pytest.mark.parametrize("rows,cols,rounding", [(8, 8, "single"), (8, 4, "tflite"), (8, 8, "onnx")])
def test_digits_cnn_fused_pools(cnn_path, digits, rows, cols, rounding):
    from engine.conftest import quantize

    from qhw.engine.compiler import compile_model
    qm = quantize(cnn_path, digits["calib_x"], rounding=rounding)
    cfg = engine_for(qm.graph, rows=rows, cols=cols)
    program = compile_model(qm, cfg).program
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(4).integers(-128, 128, (1, *t_in.logical_shape))       # seed 4
    cases = fused_cases(program, codes)
    gap = "onnx_int" if rounding == "onnx" else "div"
    assert {RULES[d["rule"]] for _, d, _, _ in cases} == {"max", gap}     # MaxPool 2x2 and the GAP
    check(cases, program, cfg)


def test_random_model_fused_average(tmp_path):
    program, qm, _ = case_program(tmp_path, "pools", "single")
    cfg = engine_for(qm.graph)
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(6).integers(-128, 128, (1, *t_in.logical_shape))       # seed 6
    cases = fused_cases(program, codes)
    assert [RULES[d["rule"]] for _, d, _, _ in cases] == ["div"]          # the fused 2x2 AveragePool
    check(cases, program, cfg)


def check(cases, program, cfg):
    assert cases
    for i, d, rows, writes in cases:
        got, lasts, lat = run_fused(d, rows, program.image, cfg.array, cfg.pool_line)
        assert {(a, lane): v for _, a, lane, v in got} == writes, i
        assert len(got) == len(writes) == len(lasts)
        assert [c for c, _, _, _ in got] == [c + lat for c in lasts], i


@pytest.mark.parametrize("rounding", ["single", "tflite"])
def test_fused_average_with_its_own_output_scale(tmp_path, rounding):
    """The fused 2x2 AveragePool with its own output scale: the (M0, shift) entry of n = 4."""
    program, qm = own_scale_pools_program(tmp_path, rounding)
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(10).integers(-128, 128, (1, *t_in.logical_shape))     # seed 10
    cases = fused_cases(program, codes)
    assert [RULES[d["rule"]] for _, d, _, _ in cases] == [rounding]
    check(cases, program, engine_for(qm.graph))
