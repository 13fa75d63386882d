# amaranth: UnusedElaboratable=no
"""Standalone POOL descriptors of a compiled model on ``PoolUnit`` (``PoolAgen`` -> ``PoolReduce`` ->
``PoolLane``s) reading a ``Scratchpad`` that holds the reference model's words before the descriptor,
in the Amaranth simulator: every output word equals what the reference model (``qhw.engine.model``)
writes, at the cycle the timing contract gives (``kh*kw`` reads per word plus the pool latency). The
testbench only plays the store (the program image at ``p_addr``); it does no pooling math."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth_sim import run_sim

from qhw.engine.agen import pixel_words
from qhw.engine.isa import POOL_MAX, RULES
from qhw.engine.model import EngineModel, segment_ranges
from qhw.hw.engine.layouts import descriptor_const
from qhw.hw.engine.memories import Scratchpad
from qhw.hw.engine.pool_unit import PoolUnit

from .conftest import case_program, engine_for, own_scale_pools_program


def reference_pools(program, codes):
    """(descriptor, scratchpad before it, scratchpad after it) for every POOL of segment 0."""
    model = EngineModel(program)
    model.mem = np.zeros((1, model.act_words, program.rows), np.int8)
    first, end = segment_ranges(program)[0]
    t_in = next(t for t in program.tensors if t.direction == 0 and t.segment == 0)
    out = []
    for i in range(first, end):
        d = program.descriptors[i]
        before = model.mem[0].copy()
        model.current = i
        getattr(model, f"_{d.op.lower()}")(d, {t_in.name: codes}, {})
        if d.op == "POOL":
            out.append((d, before, model.mem[0].copy()))
    return out


def run_pool(d, mem, image, config):
    """Runs ``d`` on a ``PoolUnit`` reading a ``Scratchpad`` that holds ``mem``; the store (pool table)
    is the program image. Returns {word: values} written and the write cycles, counted from the cycle
    the first word's data arrives (the cycle model's first read)."""
    R = config.rows
    top = Module()
    top.submodules.unit = unit = PoolUnit(config=config)
    top.submodules.pad = pad = Scratchpad(rows=R, cols=config.cols, words=len(mem), init=mem.tolist())
    top.d.comb += [pad.r_addr.eq(unit.r_addr), pad.r_en.eq(unit.r_en), unit.r_data.eq(pad.r_data)]
    words, cycles = {}, []

    async def bench(ctx):
        ctx.set(unit.desc.payload, descriptor_const(d))
        ctx.set(unit.desc.valid, 1)
        await ctx.tick()
        ctx.set(unit.desc.valid, 0)
        cycle, start, p_addr, quiet = 0, None, 0, 0
        while quiet < unit.avg_latency + d["kh"] * d["kw"] + 3:     # no write for longer than a window
            entry = (bytes(image) + bytes(8))[p_addr:p_addr + 8]     # an onnx_int entry may end the image
            ctx.set(unit.p_data, int.from_bytes(entry, "little"))    # the store: read the cycle before
            await ctx.delay(1e-8)
            if start is None and ctx.get(unit.r_en):
                start = cycle + pad.read_latency                         # when its data arrives
            if ctx.get(unit.w_en):
                words[ctx.get(unit.w_addr)] = list(ctx.get(unit.w_data))
                cycles.append(cycle - start)
                quiet = 0
            elif start is not None:
                quiet += 1
            p_addr = ctx.get(unit.p_addr)
            await ctx.tick()
            cycle += 1

    run_sim(top, bench)
    return words, cycles


@pytest.mark.parametrize("rounding", ["single", "tflite", "onnx"])
def test_standalone_pools_match_reference(tmp_path, rounding):
    program, qm, _ = case_program(tmp_path, "pools", rounding)
    config = engine_for(qm.graph).array
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(21).integers(-128, 128, (1, *t_in.logical_shape))     # seed 21
    pools = [p for p in reference_pools(program, codes) if RULES[p[0]["rule"]] != "onnx_float"]
    assert {RULES[d["rule"]] for d, _, _ in pools} == ({"max", "div"} if rounding != "onnx" else {"max", "onnx_int"})
    eng = engine_for(qm.graph)
    for d, before, after in pools:
        got, cycles = run_pool(d, before, program.image, config)
        dst = pixel_words(d["out_base"], d["out_h"], d["out_w"], d["out_pp"], d["out_cw0"], d["cws"]).reshape(-1)
        assert sorted(got) == sorted(dst.tolist())
        taps = d["kh"] * d["kw"]         # the timing contract: word i written (i + 1) * taps - 1 + latency
        lat = eng.pool_max_latency if d["pool"] == POOL_MAX else eng.pool_avg_latency
        assert cycles == [(i + 1) * taps - 1 + lat for i in range(dst.size)]
        bad = [a for a in dst.tolist() if got[a] != after[a].tolist()]
        assert not bad, f"{RULES[d['rule']]}: {len(bad)} wrong words, first {bad[0]}: {got[bad[0]]} != {after[bad[0]]}"



@pytest.mark.parametrize("rounding", ["single", "tflite", "onnx"])
def test_pools_with_their_own_output_scale(tmp_path, rounding):
    """Pools whose output scale differs from their input's: the per-count (M0, shift) / scale table
    entries, and a padded 3x3 window whose tap count varies (pads 1, 0, 1, 1)."""
    program, qm = own_scale_pools_program(tmp_path, rounding)
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(8).integers(-128, 128, (1, *t_in.logical_shape))      # seed 8
    pools = [p for p in reference_pools(program, codes) if RULES[p[0]["rule"]] != "onnx_float"]
    want = {"single": {"single"}, "tflite": {"tflite"}, "onnx": {"onnx_int"}}[rounding]
    assert {RULES[d["rule"]] for d, _, _ in pools} == want
    for d, before, after in pools:
        got, _ = run_pool(d, before, program.image, engine_for(qm.graph).array)
        bad = [a for a in got if got[a] != after[a].tolist()]
        assert got and not bad, f"{RULES[d['rule']]}: {len(bad)} wrong words"
