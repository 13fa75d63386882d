"""Drives ``NetworkEngine`` in the Amaranth simulator: load words, input beats, output beats, and the
debug tap recorded every cycle (cycle 0 = the first input beat's handshake of each inference)."""

from __future__ import annotations

import random

import numpy as np
from amaranth_sim import run_sim

from qhw.engine.load import input_beats, load_words, output_beat_count


class Run:
    """One simulation: ``load`` the program (unless embedded), then each inference's inputs."""

    def __init__(self, dut, program, inputs: list[dict], *, rows: int, load: bool = True,
                 gaps: float = 0.0, stall: float = 0.0, seed: int = 0, max_cycles: int = 200_000):
        self.dut, self.program, self.inputs, self.rows = dut, program, inputs, rows
        self.load, self.gaps, self.stall, self.rng = load, gaps, stall, random.Random(seed)
        self.max_cycles = max_cycles
        self.writes: list[list] = [[] for _ in inputs]     # (cycle, word, lane, values)
        self.issues: list[dict] = [{} for _ in inputs]     # descriptor -> last read-port cycle
        self.outputs: list[list] = [[] for _ in inputs]    # (cycle, data, last)
        self.reads: list[list] = [[] for _ in inputs]      # (cycle, descriptor) of every read
        self.loaded_after = None

    def run(self):
        run_sim(self.dut, self._bench)
        return self

    async def _bench(self, ctx):
        dut, R = self.dut, self.rows
        if self.load:
            for w in load_words(self.program):
                ctx.set(dut.load.payload, w)
                ctx.set(dut.load.valid, 1)
                await ctx.tick().until(dut.load.ready)
            ctx.set(dut.load.valid, 0)
            for _ in range(3):
                await ctx.tick()
        self.loaded_after = ctx.get(dut.loaded)
        assert self.loaded_after == 1 and ctx.get(dut.error) == 0
        for n, codes in enumerate(self.inputs):
            beats = input_beats(self.program, codes)
            n_out = output_beat_count(self.program)
            cycle, start, k = 0, None, 0
            while len(self.outputs[n]) < n_out:
                offer = k < len(beats) and self.rng.random() >= self.gaps
                ctx.set(dut.i.valid, offer)
                if offer:
                    ctx.set(dut.i.payload, beats[k])
                take_o = self.rng.random() >= self.stall
                ctx.set(dut.o.ready, take_o)
                await ctx.delay(1e-8)
                if offer and ctx.get(dut.i.ready):
                    if start is None:
                        start = cycle
                    k += 1
                rel = None if start is None else cycle - start
                t = ctx.get(dut.trace)
                if t.we:
                    lanes = [j for j in range(R) if (t.mask >> j) & 1]
                    vals = tuple(int(np.int8(np.uint8((t.data >> (8 * j)) & 0xFF))) for j in lanes)
                    self.writes[n].append((rel, t.addr, lanes[0], vals))
                if t.issue:
                    self.issues[n][t.desc] = rel
                    self.reads[n].append((rel, t.desc))
                if take_o and ctx.get(dut.o.valid):
                    p = ctx.get(dut.o.payload)
                    self.outputs[n].append((rel, p.data, p.last))
                await ctx.tick()
                cycle += 1
                assert cycle < self.max_cycles, f"inference {n}: no output after {cycle} cycles"
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 0)
            for _ in range(4):         # the engine closes the inference (END) before the next one
                await ctx.tick()
            assert ctx.get(dut.busy) == 0 and ctx.get(dut.error) == 0
