# amaranth: UnusedElaboratable=no
"""``WritebackAgen`` in the Amaranth simulator: each result row's word and lane equal
``qhw.engine.agen.matmul_writes`` in the cycle model's order (M chunk, N tile, pixel), and the rows it
marks written (kept, and a fused pool's window-last rows) are exactly the (word, lane) writes the
cycle model (``qhw.engine.cycles.predict``) records for that descriptor."""

from __future__ import annotations

import random

import pytest

from qhw.engine.agen import PAD, matmul_writes
from qhw.engine.cycles import predict
from qhw.engine.isa import POOL_NONE
from qhw.hw.engine.layouts import descriptor_const
from qhw.hw.engine.writeback import WritebackAgen

from .conftest import CASES, case_program, engine_for, run_sim


def expected_rows(d, R, C):
    waddr, lane0 = matmul_writes(d, R, C)
    m_total = d["oh"] * d["ow"]
    return [(int(waddr[nt, m]), int(lane0[nt]))
            for m0 in range(0, m_total, d["m_chunk"]) for nt in range(d["n_tiles"])
            for m in range(m0, min(m_total, m0 + d["m_chunk"]))]


def check_program(program, config, *, seed: int) -> None:
    R, C = config.array.rows, config.array.cols
    writes: dict = {}
    predict(program, config, writes=writes)
    idx = [i for i, d in enumerate(program.descriptors) if d.op == "MATMUL"]
    dut = WritebackAgen(rows=R, cols=C)
    rng, got = random.Random(seed), []
    want = [(i, row) for i in idx for row in expected_rows(program.descriptors[i], R, C)]

    async def producer(ctx):
        for i in idx:
            ctx.set(dut.desc.payload, descriptor_const(program.descriptors[i]))
            ctx.set(dut.desc.valid, 1)
            await ctx.tick().until(dut.desc.ready)
            ctx.set(dut.desc.valid, 0)

    async def consumer(ctx):
        while len(got) < len(want):
            ready = rng.random() < 0.8
            ctx.set(dut.dest.ready, ready)
            await ctx.delay(1e-8)
            if ready and ctx.get(dut.dest.valid):
                got.append(ctx.get(dut.dest.payload))
            await ctx.tick()

    run_sim(dut, producer, consumer)
    written = {}
    for (i, (addr, lane)), g in zip(want, got):
        assert (g.addr if g.keep else PAD) == addr and g.lane == lane, (i, addr, lane, g)
        pool = program.descriptors[i]["pool"] != POOL_NONE
        if g.keep and (g.win_last or not pool):
            written.setdefault(i, set()).add((g.addr, g.lane))
    assert [g.last for g in got].count(1) == len(idx)
    for i in idx:
        assert written.get(i, set()) == {(w, lane) for (di, w, lane) in writes if di == i}, i


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_random_models_writes(tmp_path, case):
    program, qm, _ = case_program(tmp_path, case)
    check_program(program, engine_for(qm.graph), seed=sum(map(ord, case)))


@pytest.mark.parametrize("rows,cols", [(8, 8), (8, 4)])
def test_digits_cnn_writes(cnn_path, digits, rows, cols):
    from engine.conftest import quantize

    from qhw.engine.compiler import compile_model
    qm = quantize(cnn_path, digits["calib_x"])
    cfg = engine_for(qm.graph, rows=rows, cols=cols)
    check_program(compile_model(qm, cfg).program, cfg, seed=rows + cols)
