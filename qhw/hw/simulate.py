"""Run GEMMs on the accelerator in Amaranth's Python simulator, with optional random stream gaps.

Producers and the consumer run side by side as async testbenches; each counts
clock edges itself so cycle numbers are exact whatever order the simulator wakes
them in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from amaranth.sim import Simulator

from ..errors import QhwError
from .accel import Accelerator
from .driver import GemmProgram, stream_beats, unpack_result

__all__ = ["SimResult", "simulate"]


@dataclass
class SimResult:
    rows: list = field(default_factory=list)          # result beats, each ``cols`` ints
    out_cycles: list = field(default_factory=list)    # clock edge of each result handshake
    act_cycles: list = field(default_factory=list)    # clock edge of each activation handshake
    cmd_cycles: list = field(default_factory=list)    # clock edge of each command handshake
    outputs: list = field(default_factory=list)       # decoded M x N result of each program

    @property
    def cycles(self) -> int:
        """First command handshake to last result handshake, in cycles."""
        return self.out_cycles[-1] - self.cmd_cycles[0]


def simulate(programs, *, seed: int = 0, in_gap: float = 0.0, out_stall: float = 0.0, out_start: int = 0,
             act_start: int = 0, max_cycles: int | None = None) -> SimResult:
    """Simulate one GEMM program, or several back to back (a sequence of them, same config).

    ``in_gap``/``out_stall``: per-cycle probability that a producer idles / the
    consumer is not ready, drawn from generators seeded by ``seed``; ``out_start``:
    cycles the consumer holds ``ready`` low before it starts; ``act_start``: cycles the
    activation producer waits before its first beat (the loader fills both weight banks meanwhile).
    """
    if isinstance(programs, GemmProgram):
        programs = [programs]
    programs = list(programs)
    c = programs[0].config
    if any(p.config != c for p in programs):
        raise QhwError("all programs of one simulation must use the same ArrayConfig")
    dut = Accelerator(config=c)
    rng = random.Random(seed)
    res = SimResult()
    total_out = sum(p.out_beats for p in programs)
    if max_cycles is None:
        max_cycles = 50 * sum(len(p.act) + len(p.weights) + c.latency + 100 for p in programs)
    beats = stream_beats(programs)

    def producer(name):
        port = getattr(dut, name)
        prng = random.Random(rng.random())
        gap = in_gap if name != "cmd" else 0.0

        async def bench(ctx):
            t = 0
            if name == "act":
                for _ in range(act_start):
                    await ctx.tick()
                    t += 1
            for beat in beats[name]:
                while gap and prng.random() < gap:
                    await ctx.tick()
                    t += 1
                ctx.set(port.valid, 1)
                ctx.set(port.payload.as_value(), beat)
                while True:
                    _, _, ready = await ctx.tick().sample(port.ready)
                    t += 1
                    if ready:
                        break
                if name == "act":
                    res.act_cycles.append(t)
                elif name == "cmd":
                    res.cmd_cycles.append(t)
                ctx.set(port.valid, 0)
        return bench

    crng = random.Random(rng.random())

    async def consumer(ctx):
        t = 0
        while len(res.rows) < total_out:
            ready = t >= out_start and not (out_stall and crng.random() < out_stall)
            ctx.set(dut.out.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload.as_value())
            t += 1
            if valid and ready:
                res.rows.append(unpack_result(c, payload))
                res.out_cycles.append(t)
            if t > max_cycles:
                raise QhwError(f"simulation timed out after {t} cycles with {len(res.rows)} of "
                               f"{total_out} results")
        ctx.set(dut.out.ready, 0)
        # A few idle cycles: nothing more may come out, and busy must drop.
        for _ in range(c.latency + 4):
            _, _, valid = await ctx.tick().sample(dut.out.valid)
            if valid:
                raise QhwError("the accelerator produced more results than the GEMM has")
        if ctx.get(dut.busy):
            raise QhwError("the accelerator is still busy after its last result")
        if ctx.get(dut.error):
            raise QhwError("the accelerator flagged a command as invalid")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for name in ("cmd", "params", "weights", "act"):
        sim.add_testbench(producer(name), background=True)
    sim.add_testbench(consumer)
    sim.run()
    start = 0
    for p in programs:
        res.outputs.append(p.decode(res.rows[start:start + p.out_beats]))
        start += p.out_beats
    return res
