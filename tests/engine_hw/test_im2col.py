# amaranth: UnusedElaboratable=no
"""``Im2colAgen`` in the Amaranth simulator: the address (or padding) of every beat equals the word
``qhw.engine.agen.matmul_reads`` gives the reference model, in the cycle model's loop order
(M chunk, N tile, K tile, pixel), with every descriptor of a program run back to back."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from amaranth_sim import run_sim

from qhw.engine.agen import PAD, k_tiles, matmul_reads
from qhw.engine.compiler import compile_model
from qhw.hw.engine.im2col import Im2colAgen
from qhw.hw.engine.layouts import descriptor_const

from .conftest import CASES, case_program, engine_for


def expected_beats(d) -> list[tuple[int, int, int, bool]]:
    """(word or PAD, nt, kt, last_k) per beat: the reference's (NT, KT, M) reads in loop order."""
    reads = matmul_reads(d)
    m_total, kts = d["oh"] * d["ow"], k_tiles(d)
    out = []
    for m0 in range(0, m_total, d["m_chunk"]):
        for nt in range(d["n_tiles"]):
            for kt in range(kts):
                out += [(int(reads[nt, kt, m]), nt, kt, kt == kts - 1)
                        for m in range(m0, min(m_total, m0 + d["m_chunk"]))]
    return out


def check_program(program, *, seed: int, gaps: bool = True, settled: bool = False, offer_early: bool = False) -> int:
    """``settled``: the generator the engine builds (products a cycle ahead); ``offer_early``: each
    descriptor's fields are presented a cycle before it is offered (as the engine's fetch guarantees)."""
    descs = [d for d in program.descriptors if d.op == "MATMUL"]
    want = [b for d in descs for b in expected_beats(d)]
    got, rng, stamps = [], random.Random(seed), []
    dut = Im2colAgen(settled=settled)

    async def producer(ctx):
        for d in descs:
            ctx.set(dut.desc.payload, descriptor_const(d))
            if offer_early:
                await ctx.tick()
            ctx.set(dut.desc.valid, 1)
            await ctx.tick().until(dut.desc.ready)
            ctx.set(dut.desc.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(got) < len(want):
            ready = not gaps or rng.random() < 0.7
            ctx.set(dut.beats.ready, ready)
            await ctx.delay(1e-8)       # settle after setting ready
            if ready and ctx.get(dut.beats.valid):
                b = ctx.get(dut.beats.payload)
                got.append((PAD if b.pad else b.addr, b.nt, b.last_k, b.last))
                stamps.append(cycle)
            await ctx.tick()
            cycle += 1

    # a deadline (1 us a cycle) well past the beats' cycles: a generator with wrong loop bounds can run on
    run_sim(dut, producer, consumer, deadline=(4 * len(want) + 1000) * 1e-6)
    assert len(got) == len(want), f"{len(got)} beats, want {len(want)}"
    mismatches = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if (g[0], g[1], g[2]) != (w[0], w[1], w[3])]
    assert not mismatches, f"{len(mismatches)} wrong beats, first (beat, got, want): {mismatches[0]}"
    lasts = [i for i, g in enumerate(got) if g[3]]
    ends = list(np.cumsum([len(expected_beats(d)) for d in descs]) - 1)
    assert lasts == ends
    if not gaps:   # one beat per cycle, descriptors back to back: no bubble after the first
        assert stamps == list(range(stamps[0], stamps[0] + len(stamps)))
    return len(got)


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_random_models_addresses(tmp_path, case):
    program, _, _ = case_program(tmp_path, case)
    assert check_program(program, seed=sum(map(ord, case))) > 0


def test_digits_cnn_addresses_back_to_back(digits_cnn_program):
    assert check_program(digits_cnn_program, seed=1, gaps=False) == sum(
        len(expected_beats(d)) for d in digits_cnn_program.descriptors if d.op == "MATMUL")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")   # the stopped producer
def test_settled_generator_needs_its_descriptor_a_cycle_early(tmp_path):
    """The engine's generator (``settled``: the accept reads products registered from the offered fields a
    cycle before) is exact when each descriptor's fields are there a cycle before it is taken, and wrong
    (wrong beats, or their count) when taken in the cycle they appear: its products come from the cycle
    before."""
    program, _, _ = case_program(tmp_path, "pads-every-side")
    assert check_program(program, seed=4, settled=True, offer_early=True) > 0
    with pytest.raises(AssertionError, match="wrong beats|beats, want"):
        check_program(program, seed=4, settled=True)


@pytest.mark.parametrize("acc_depth", [8, 7, 53])
def test_short_accumulator_chunks(tmp_path, acc_depth):
    """M chunks (the accumulator shorter than M): the chunk loop restarts every tile at its chunk; with 7 and
    53, 64 = 9*7 + 1 and 54 = 53 + 1 pixels end in a one-pixel chunk (the chunk's terminal flags start true)."""
    program, qm, _ = case_program(tmp_path, "pads-every-side")
    cfg = engine_for(qm.graph)
    cfg = dataclasses.replace(cfg, array=dataclasses.replace(cfg.array, acc_depth=acc_depth))
    program = compile_model(qm, cfg).program
    assert any(d["m_chunk"] < d["oh"] * d["ow"] for d in program.descriptors if d.op == "MATMUL")
    check_program(program, seed=3)
