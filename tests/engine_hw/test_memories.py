# amaranth: UnusedElaboratable=no
"""The scratchpad replays the reference write trace of a digits-CNN inference (``qhw.engine.trace``:
every write's cycle, word, lane and values), and every word reads back as written exactly
``latency`` (the contract's ``agen_latency``) cycles after its write, and not earlier."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth_sim import run_sim

from qhw.engine.trace import write_trace
from qhw.errors import ConfigError
from qhw.hw.engine.memories import Scratchpad, WeightStore

from .conftest import engine_for


def test_scratchpad_replays_digits_cnn_trace(cnn_path, digits):
    from engine.conftest import quantize

    from qhw.engine.compiler import compile_model
    qm = quantize(cnn_path, digits["calib_x"])
    cfg = engine_for(qm.graph, rows=8, cols=4)
    program = compile_model(qm, cfg).program
    t_in = next(t for t in program.tensors if t.direction == 0)
    codes = np.random.default_rng(3).integers(-128, 128, (1, *t_in.logical_shape))     # seed 3
    trace = write_trace(program, cfg, {t_in.name: codes})
    R, C = cfg.array.rows, cfg.array.cols
    dut = Scratchpad(rows=R, cols=C, words=cfg.act_words)
    assert dut.latency == cfg.agen_latency
    at = {e.cycle: e for e in trace}
    assert len(at) == len(trace)                     # one write port: one write per cycle
    mem: dict[int, list[int]] = {}
    checked = []

    async def bench(ctx):
        for cycle in range(trace[-1].cycle + dut.latency + 1):
            e = at.get(cycle)
            ctx.set(dut.w_en, e is not None)
            if e is not None:
                full = len(e.values) == R
                ctx.set(dut.w_addr, e.word)
                ctx.set(dut.w_lane, e.lane)
                ctx.set(dut.w_full, full)
                ctx.set(dut.w_data, list(e.values) + [0] * (R - len(e.values)))
            rd = at.get(cycle - 1)                  # read the word written the cycle before
            ctx.set(dut.r_en, 1)
            ctx.set(dut.r_addr, rd.word if rd is not None else 0)
            await ctx.delay(1e-8)
            seen = at.get(cycle - dut.latency)
            if seen is not None:
                word = ctx.get(dut.r_data)
                checked.append((seen, [word[i] for i in range(R)], list(mem.get(seen.word, [None] * R))))
            await ctx.tick()
            if e is not None:
                w = mem.setdefault(e.word, [None] * R)
                w[e.lane:e.lane + len(e.values)] = e.values

    run_sim(dut, bench)
    assert len(checked) == len(trace)
    for e, word, _ in checked:
        assert word[e.lane:e.lane + len(e.values)] == list(e.values), e
    # the other lanes of the word keep what earlier writes put there (lane-granular enable)
    for e, word, before in checked:
        others = [i for i in range(R) if not e.lane <= i < e.lane + len(e.values) and before[i] is not None]
        assert all(word[i] == before[i] for i in others), e


def test_scratchpad_read_is_not_transparent():
    dut = Scratchpad(rows=4, cols=2, words=16)
    got = []

    async def bench(ctx):
        ctx.set(dut.w_en, 1)
        ctx.set(dut.w_full, 1)
        ctx.set(dut.w_addr, 5)
        ctx.set(dut.w_data, [1, 2, 3, 4])
        ctx.set(dut.r_en, 1)
        ctx.set(dut.r_addr, 5)                       # read in the write's own cycle: the old word
        await ctx.tick()
        ctx.set(dut.w_en, 0)                         # and again the cycle after: the new word
        for _ in range(dut.read_latency):
            await ctx.tick()
            got.append(list(ctx.get(dut.r_data)))

    run_sim(dut, bench)
    # the first read's word arrives read_latency cycles after its address, the second's one later
    assert dut.read_latency == 2
    assert got == [[0, 0, 0, 0], [1, 2, 3, 4]]


def test_weight_store_reads_rows():
    rows = np.random.default_rng(9).integers(-128, 128, (6, 4)).tolist()     # seed 9
    dut = WeightStore(cols=4, depth=8, init=rows)
    got = []

    async def bench(ctx):
        ctx.set(dut.r_en, 1)
        for a in [3, 0, 5, 5, 1]:
            ctx.set(dut.r_addr, a)
            await ctx.tick()
            got.append(list(ctx.get(dut.r_data)))

    run_sim(dut, bench)
    assert got == [rows[a] for a in [3, 0, 5, 5, 1]]


@pytest.mark.parametrize("kw,message", [
    (dict(rows=8, cols=3, words=4), "cols must divide rows, not 8x3"),
    (dict(rows=8, cols=8, words=0), "words must be a positive integer, not 0"),
    (dict(rows=2, cols=2, words=1, init=[[1, 2], [3, 4]]), "init must be at most 1 words of 2 lanes"),
])
def test_scratchpad_parameters(kw, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        Scratchpad(**kw)
