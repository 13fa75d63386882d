# amaranth: UnusedElaboratable=no
"""``WritebackAgen`` in the Amaranth simulator: each result row's word and lane equal
``qhw.engine.agen.matmul_writes`` in the cycle model's order (M chunk, N tile, pixel), and the rows it
marks written (kept, and a fused pool's window-last rows) are exactly the (word, lane) writes the
cycle model (``qhw.engine.cycles.predict``) records for that descriptor, each at the cycle the model
gives the write of that very row (its tile's first beat + its place in the tile + the latencies)."""

from __future__ import annotations

import random

import pytest
from amaranth_sim import run_sim

from qhw.engine.agen import PAD, matmul_writes
from qhw.engine.cycles import predict
from qhw.engine.isa import POOL_AVG, POOL_MAX, POOL_NONE
from qhw.hw.engine.layouts import descriptor_const
from qhw.hw.engine.writeback import WritebackAgen

from .conftest import CASES, case_program, engine_for


def expected_rows(d, R, C):
    waddr, lane0 = matmul_writes(d, R, C)
    m_total = d["oh"] * d["ow"]
    return [(int(waddr[nt, m]), int(lane0[nt]))
            for m0 in range(0, m_total, d["m_chunk"]) for nt in range(d["n_tiles"])
            for m in range(m0, min(m_total, m0 + d["m_chunk"]))]


def check_program(program, config, *, seed: int) -> None:
    R, C = config.array.rows, config.array.cols
    writes: dict = {}
    report = predict(program, config, writes=writes)
    first = {(t.descriptor, t.mc, t.nt): t.first for t in report.tiles}     # last K tile wins: it writes
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
    written, row = {}, {}
    pool_lat = {POOL_MAX: config.pool_max_latency, POOL_AVG: config.pool_avg_latency, POOL_NONE: 0}
    for (i, (addr, lane)), g in zip(want, got):
        assert (g.addr if g.keep else PAD) == addr and g.lane == lane, (i, addr, lane, g)
        d = program.descriptors[i]
        k = row.setdefault(i, [0, 0, None])          # rows seen, M chunk, N tile
        m_total = d["oh"] * d["ow"]
        mc, rest = divmod(k[0], d["n_tiles"] * d["m_chunk"]) if d["m_chunk"] < m_total else (0, k[0])
        chunk = min(d["m_chunk"], m_total - mc * d["m_chunk"])
        nt, m_rel = divmod(rest, chunk)
        k[0] += 1
        if g.keep and (g.win_last or d["pool"] == POOL_NONE):
            written.setdefault(i, set()).add((g.addr, g.lane))
            cycle = first[(i, mc, nt)] + m_rel + config.writeback_latency + pool_lat[d["pool"]]
            assert writes[(i, g.addr, g.lane)] == cycle, (i, mc, nt, m_rel)
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


@pytest.mark.parametrize("acc_depth", [7, 53])
def test_short_accumulator_chunks(tmp_path, acc_depth):
    """M chunks (the accumulator shorter than M): 64 = 9*7 + 1 and 54 = 53 + 1 pixels end in a one-pixel
    chunk (of one and of two N tiles), where the chunk's terminal flags start true."""
    import dataclasses

    from qhw.engine.compiler import compile_model
    program, qm, _ = case_program(tmp_path, "pads-every-side")
    cfg = engine_for(qm.graph)
    cfg = dataclasses.replace(cfg, array=dataclasses.replace(cfg.array, acc_depth=acc_depth))
    program = compile_model(qm, cfg).program
    assert any(d["oh"] * d["ow"] % d["m_chunk"] == 1 for d in program.descriptors if d.op == "MATMUL")
    check_program(program, cfg, seed=5)
