# amaranth: UnusedElaboratable=no
"""``ActivationReader`` + ``Scratchpad`` in the Amaranth simulator: every activation beat of a MATMUL
equals the beat the reference model gathers (``EngineModel._gather`` of ``agen.matmul_reads``, the
zero point in padding) from the scratchpad as it is before that descriptor, in the cycle model's loop
order, under random back-pressure (no beat lost or repeated) and one beat per cycle without it."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth_sim import run_sim

from qhw.engine.agen import k_tiles, matmul_reads
from qhw.engine.compiler import compile_model
from qhw.engine.model import EngineModel, segment_ranges
from qhw.hw.engine.layouts import descriptor_const
from qhw.hw.engine.memories import Scratchpad
from qhw.hw.engine.reader import ActivationReader

from .conftest import case_program, engine_for


def matmul_inputs(program, codes):
    """(descriptor, the reference model, its scratchpad before the descriptor) for every MATMUL."""
    model = EngineModel(program)
    model.mem = np.zeros((1, model.act_words, program.rows), np.int8)
    first, end = segment_ranges(program)[0]
    t_in = next(t for t in program.tensors if t.direction == 0 and t.segment == 0)
    out = []
    for i in range(first, end):
        d = program.descriptors[i]
        if d.op == "MATMUL":
            out.append((d, model.mem[0].copy()))
        model.current = i
        getattr(model, f"_{d.op.lower()}")(d, {t_in.name: codes}, {})
    return model, out


def expected(model, d, mem):
    model.mem = mem[None]
    beats = model._gather(matmul_reads(d), d["in_zp"])[0]        # (NT, KT, M, R)
    m_total = d["oh"] * d["ow"]
    return [beats[nt, kt, m].tolist() for m0 in range(0, m_total, d["m_chunk"]) for nt in range(d["n_tiles"])
            for kt in range(k_tiles(d)) for m in range(m0, min(m_total, m0 + d["m_chunk"]))]


def run_reader(d, mem, rows, cols, *, seed: int | None):
    top = Module()
    top.submodules.reader = rd = ActivationReader(rows=rows)
    top.submodules.pad = pad = Scratchpad(rows=rows, cols=cols, words=len(mem), init=mem.tolist())
    top.d.comb += [pad.r_addr.eq(rd.r_addr), pad.r_en.eq(rd.r_en), pad.r_hold.eq(rd.r_hold), rd.r_data.eq(pad.r_data)]
    n = d["oh"] * d["ow"] * d["n_tiles"] * k_tiles(d)
    got, stamps, rng = [], [], random.Random(seed)

    async def bench(ctx):
        ctx.set(rd.desc.payload, descriptor_const(d))
        ctx.set(rd.desc.valid, 1)
        await ctx.tick()
        ctx.set(rd.desc.valid, 0)
        cycle = 1
        while len(got) < n:
            ready = seed is None or rng.random() < 0.7
            ctx.set(rd.beats.ready, ready)
            await ctx.delay(1e-8)
            if ready and ctx.get(rd.beats.valid):
                b = ctx.get(rd.beats.payload)
                got.append(list(b.data))
                stamps.append(cycle)
                assert bool(b.last) == (len(got) == n)
            await ctx.tick()
            cycle += 1

    run_sim(top, bench)
    return got, stamps, rd.latency


@pytest.mark.parametrize("case", ["pads-every-side", "dilation2", "window-c1", "depthwise", "kernel-as-input"])
def test_random_models_beats(tmp_path, case):
    program, qm, _ = case_program(tmp_path, case)
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(12).integers(-128, 128, (1, *t_in.logical_shape))     # seed 12
    model, cases = matmul_inputs(program, codes)
    for k, (d, mem) in enumerate(cases):
        got, _, _ = run_reader(d, mem, program.rows, program.cols, seed=k)
        want = expected(model, d, mem)
        bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
        assert len(got) == len(want) and not bad, f"descriptor {k}: {len(bad)} wrong beats, first {bad[:1]}"


def test_digits_cnn_beats_one_per_cycle(cnn_path, digits):
    from engine.conftest import quantize
    qm = quantize(cnn_path, digits["calib_x"])
    program = compile_model(qm, engine_for(qm.graph)).program
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(13).integers(-128, 128, (1, *t_in.logical_shape))     # seed 13
    model, cases = matmul_inputs(program, codes)
    for d, mem in cases:
        got, stamps, latency = run_reader(d, mem, program.rows, program.cols, seed=None)
        assert got == expected(model, d, mem)
        assert stamps == list(range(latency, latency + len(got)))      # first beat at latency, then every cycle
