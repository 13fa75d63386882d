"""``OutputUnit`` alone in the Amaranth simulator: a tensor's words out as dense beats while the host
stalls most cycles, so the FIFO fills and the read test (``room``) decides every read: a beat lost to a
full FIFO, or one too many, shows as a wrong stream."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module
from amaranth_sim import run_sim

from qhw.contract import SPAD_READ_LATENCY
from qhw.hw.engine.output_unit import OutputUnit

ROWS = 4


def expected_beats(words, c, pp):
    """Dense channel-last bytes of the stored words (``pp`` words a pixel, ``c`` channels), ``ROWS`` a beat."""
    raw = []
    for p in range(len(words) // pp):
        for k in range(pp):
            raw += words[p * pp + k][:min(ROWS, c - k * ROWS)]
    raw += [0] * (-len(raw) % ROWS)
    return [(sum((b & 0xFF) << (8 * j) for j, b in enumerate(raw[i:i + ROWS])), int(i + ROWS >= len(raw)))
            for i in range(0, len(raw), ROWS)]


@pytest.mark.parametrize("h,w,c,stall,seed", [(3, 5, 10, 0.8, 1), (4, 4, 4, 0.6, 2), (2, 7, 6, 0.9, 3)])
def test_output_stream_under_host_stalls(h, w, c, stall, seed):
    rng = random.Random(seed)
    pp = -(-c // ROWS)
    base = 3
    words = [[rng.randrange(-128, 128) for _ in range(ROWS)] for _ in range(h * w * pp)]
    dut = OutputUnit(rows=ROWS, addr_bits=8)
    m = Module()
    m.submodules.dut = dut
    got, want = [], expected_beats(words, c, pp)

    async def memory(ctx):           # the scratchpad: a read's word ``SPAD_READ_LATENCY`` cycles later
        pending = []
        async for _, _, en, addr in ctx.tick().sample(dut.r_en, dut.r_addr):
            pending.append(words[addr - base] if en else None)
            if len(pending) >= SPAD_READ_LATENCY:
                word = pending[-SPAD_READ_LATENCY]
                for j in range(ROWS):
                    ctx.set(dut.r_data[j], word[j] if word is not None else 0)

    async def host(ctx):
        d = dut.desc.payload
        ctx.set(d.in_base, base)
        ctx.set(d.h, h)
        ctx.set(d.w, w)
        ctx.set(d.c, c)
        ctx.set(d.pp, pp)
        ctx.set(dut.desc.valid, 1)
        await ctx.tick().until(dut.desc.ready)
        ctx.set(dut.desc.valid, 0)
        for _ in range(4000):
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            _, _, valid, data, last = await ctx.tick().sample(dut.o.valid, dut.o.payload.data, dut.o.payload.last)
            if ready and valid:
                got.append((data, last))
                if last:
                    break
        for _ in range(20):             # nothing after the last beat
            ctx.set(dut.o.ready, 1)
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid

    run_sim(m, host, background=[memory])
    assert got == want
