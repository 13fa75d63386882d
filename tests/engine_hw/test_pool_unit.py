# amaranth: UnusedElaboratable=no
"""Standalone POOL descriptors of a compiled model, on ``PoolAgen`` -> ``PoolReduce`` -> ``PoolLane``s
in the Amaranth simulator: every output word equals what the reference model (``qhw.engine.model``)
writes for that descriptor. The testbench is the scratchpad (the reference model's words before the
descriptor) and the pool table (the program image at ``pool_param``); it does no pooling math."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module

from qhw.engine.agen import pixel_words
from qhw.engine.isa import POOL_MAX, RULES
from qhw.engine.model import EngineModel, segment_ranges
from qhw.hw.engine.layouts import descriptor_const
from qhw.hw.engine.pool import PoolLane, PoolReduce
from qhw.hw.engine.pool_agen import PoolAgen

from .conftest import case_program, engine_for, run_sim


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
    R = config.rows
    rule = RULES[d["rule"]]
    m = Module()
    m.submodules.agen = agen = PoolAgen()
    m.submodules.reduce = red = PoolReduce(lanes=R, sum_bits=config.sum_bits)
    lanes = [PoolLane(config=config) for _ in range(R)]
    for j, lane in enumerate(lanes):
        m.submodules[f"lane{j}"] = lane
    words = {}
    pending = []

    def table(n):       # the pool table entry for n taps, as the store holds it
        if rule in ("single", "tflite"):
            m0, shift = np.frombuffer(image, "<i4", 2, d["pool_param"] + 8 * (n - 1))
            return int(m0), int(shift), 0
        if rule == "onnx_int":
            return 0, 0, int(np.frombuffer(image, "<u4", 1, d["pool_param"] + 4 * (n - 1))[0])
        return 0, 0, 0

    async def bench(ctx):
        ctx.set(agen.desc.payload, descriptor_const(d))
        ctx.set(agen.desc.valid, 1)
        await ctx.tick()
        ctx.set(agen.desc.valid, 0)
        ctx.set(agen.taps.ready, 1)
        for sig, v in ((red.kind, d["pool"]), (red.zp_in, d["pool_zp_in"]), (red.pad_value, d["pool_qmin"]),
                       (red.include_pad, d["include_pad"])):
            ctx.set(sig, v)
        for lane in lanes:
            for sig, v in ((lane.zero_point, d["pool_zp"]), (lane.qmin, d["pool_qmin"]),
                           (lane.qmax, d["pool_qmax"]), (lane.rule, d["rule"])):
                ctx.set(sig, v)
        taps_done, idle = False, 0
        while idle < lanes[0].latency + 3:
            await ctx.delay(1e-8)
            if not taps_done and ctx.get(agen.taps.valid):    # the scratchpad: the tap's word
                t = ctx.get(agen.taps.payload)
                ctx.set(red.taps.payload, {"values": [0] * R if t.pad else mem[t.addr].tolist(), "pad": t.pad,
                                           "first": t.first, "last": t.last})
                ctx.set(red.taps.valid, 1)
                if t.last:
                    pending.append(t.out_addr)
                taps_done = bool(t.done)
            else:
                ctx.set(red.taps.valid, 0)
            if ctx.get(red.windows.valid):
                w = ctx.get(red.windows.payload)
                if d["pool"] == POOL_MAX:
                    words[pending.pop(0)] = [w.total[j] for j in range(R)]
                else:
                    mul, shift, scale = table(w.count)
                    for j, lane in enumerate(lanes):
                        for sig, v in ((lane.i_valid, 1), (lane.total, w.total[j]), (lane.count, w.count),
                                       (lane.multiplier, mul), (lane.shift, shift), (lane.scale, scale)):
                            ctx.set(sig, v)
            else:
                for lane in lanes:
                    ctx.set(lane.i_valid, 0)
            if d["pool"] != POOL_MAX and ctx.get(lanes[0].o_valid):
                words[pending.pop(0)] = [ctx.get(lane.o) for lane in lanes]
            idle = idle + 1 if taps_done else 0
            await ctx.tick()

    run_sim(m, bench)
    return words


@pytest.mark.parametrize("rounding", ["single", "tflite", "onnx"])
def test_standalone_pools_match_reference(tmp_path, rounding):
    program, qm, _ = case_program(tmp_path, "pools", rounding)
    config = engine_for(qm.graph).array
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(21).integers(-128, 128, (1, *t_in.logical_shape))     # seed 21
    pools = [p for p in reference_pools(program, codes) if RULES[p[0]["rule"]] != "onnx_float"]
    assert {RULES[d["rule"]] for d, _, _ in pools} == ({"max", "div"} if rounding != "onnx" else {"max", "onnx_int"})
    for d, before, after in pools:
        got = run_pool(d, before, program.image, config)
        dst = pixel_words(d["out_base"], d["out_h"], d["out_w"], d["out_pp"], d["out_cw0"], d["cws"]).reshape(-1)
        assert sorted(got) == sorted(dst.tolist())
        bad = [a for a in dst.tolist() if got[a] != after[a].tolist()]
        assert not bad, f"{RULES[d['rule']]}: {len(bad)} wrong words, first {bad[0]}: {got[bad[0]]} != {after[bad[0]]}"

