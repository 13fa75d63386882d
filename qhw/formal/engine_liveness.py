"""Liveness in bounds of the whole ``NetworkEngine``: an embedded program finishes within the cycle model.

``liveness_program`` is the smallest program with a MATMUL the compiler emits (a 1x1 convolution of
one pixel of ``rows`` channels to ``cols`` channels: INPUT, MATMUL, OUTPUT, END, the fields the
compiler writes for that model); ``EngineLivenessHarness`` runs the unchanged engine with it embedded,
the host offering a beat on every cycle and taking every output beat, and asserts that ``busy``
falls exactly ``BUSY_FALL_CYCLES`` after the cycle model's total (``qhw.engine.cycles.predict``).

Only the control is in the proof: the harness observes ``busy``, ``error`` and the handshakes, never
a data value; the data the control never looks at are cut (``CUT_POINTS``: free values, an
over-approximation, so what holds with the cuts holds without), and Yosys then removes every cell no
assertion depends on (the array, the lanes' multipliers, the tables, the scratchpad and weight store
contents) before the solver sees the model (docs/verification.md, "Liveness of the whole engine").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from amaranth.hdl import Assert, ClockDomain, Elaboratable, Module, Mux, Signal

from ..contract import MODE_CODES
from ..engine.config import EngineConfig
from ..engine.cycles import predict
from ..engine.isa import DESCRIPTOR_WORDS, Descriptor
from ..engine.load import input_beats
from ..engine.program import Program, TensorEntry
from ..errors import ConfigError

__all__ = ["BUSY_FALL_CYCLES", "CUT_POINTS", "EngineLivenessHarness", "liveness_program", "prime_cycles"]

# ``busy`` is the engine's ``running`` register: it rises the cycle after the first input beat (cycle 0
# of the model) and falls two cycles after ``done`` (every unit drained, the issue fetch at END; the end
# of an inference is registered before ``restart``), which is the cycle after the last output beat: so it
# is low from cycle ``total + BUSY_FALL_CYCLES`` on.
BUSY_FALL_CYCLES = 2
HOSTS = ("eager", "exact", "pausing")
PAUSE_SLACK = 8         # the pausing host's longest pause before an inference's first beat (cycles)


def prime_cycles(program: Program) -> int:
    """Reset to the first input beat (not in the cycle model, which starts at that beat): each fetch
    walks to its first descriptor, 2 cycles per entry (read, look), and holds the one at entry ``k``
    from cycle ``2k + 2``; the engine registers that the four read-side fetches hold one (or are at
    END) a cycle later (``primed``), and the beat is taken the cycle after: ``2k + 4`` for the
    farthest of them (6 for INPUT, MATMUL, ...)."""
    ops = [d.op for d in program.descriptors]
    firsts = [next((i for i, op in enumerate(ops) if op in group or op == "END"), len(ops))
              for group in (("MATMUL", "POOL", "OUTPUT", "ADD"), ("MATMUL",))]
    return 2 * max(firsts) + 4


# The data the control of the engine never looks at, cut (Yosys ``cutpoint``: the signal's driver replaced
# by a value free on every cycle, ``$anyseq``): every behaviour of the engine is one of the abstracted
# design's, so a property proven with the cuts holds without them. Names are the harness's hierarchy.
CUT_POINTS = (
    "top.dut.scratch",                      # the scratchpad (its only output: read data)
    "top.dut.weights",                      # the weight store (read data)
    "top.dut.array",                        # the systolic array (its only output: the psum row)
    "top.dut.accumulator/w:total",          # the sums; the tag, valid, bank and forwarding path stay
    "top.dut.requant.requant_*/w:o",        # the lanes' results; their valid delay lines stay
    "top.dut/r:MEMID=\\pnarrow",             # the narrow parameter store's read data (pool tables)
)


def liveness_program(config: EngineConfig) -> Program:
    """INPUT (1x1 pixel, ``rows`` channels), MATMUL (1x1 kernel, one K tile, one N tile of ``cols``
    channels), OUTPUT, END: the program ``qhw compile`` writes for a 1x1 Conv on a 1x``rows``x1x1 input,
    with zero weights and unit parameters (the data do not matter to the proof)."""
    if not isinstance(config, EngineConfig):
        raise ConfigError(f"config must be an EngineConfig, not {config!r}")
    a = config.array
    R, C = a.rows, a.cols
    pp = -(-C // R)                                   # output words per pixel
    mode = a.rounding[0]
    weights = bytes(R * C)                           # one R x C weight tile
    params = np.zeros((4, C), np.int32)              # bias, M0, shift, scale per output channel
    params[1] = 1 << 30
    image = weights + params.astype("<i4").tobytes()
    descs = [
        Descriptor("INPUT", dict(tensor=0, kind=0, out_base=0, h=1, w=1, c=R, pp=1)),
        Descriptor("MATMUL", dict(in_base=0, in_h=1, in_w=1, in_pp=1, kh=1, kw=1, sh=1, sw=1, dh=1, dw=1, oh=1,
                                  ow=1, kcw=1, n_tiles=1, m_chunk=1, w_base=0, p_base=len(weights),
                                  mode=MODE_CODES[mode], qmin=-128, qmax=127, out_base=1, out_h=1, out_w=1,
                                  out_pp=pp, dep_base=1, dep_step=1)),
        Descriptor("OUTPUT", dict(tensor=1, in_base=1, h=1, w=1, c=C, pp=pp, dep_base=2)),
        Descriptor("END"),
    ]
    need = {"program_words": len(descs) * DESCRIPTOR_WORDS, "act_words": 1 + pp, "weight_bytes": len(image)}
    have = {"program_words": config.program_words, "act_words": config.act_words,
            "weight_bytes": config.weight_bytes}
    short = [f"{k} {have[k]} < {v}" for k, v in need.items() if have[k] < v]
    if short:
        raise ConfigError(f"liveness: the engine's memories do not hold the liveness program ({', '.join(short)})")
    return Program(rows=R, cols=C, rounding=(mode,), weight_kib=config.weight_kib, act_kib=config.act_kib,
                   program_words=config.program_words, descriptors=descs,
                   tensors=[TensorEntry("x", 0, 0, False, R, 1, 1), TensorEntry("y", 1, 0, False, C, 1, 1)],
                   image=image, params_offset=len(weights), act_bytes_used=(1 + pp) * config.word_bytes)


class EngineLivenessHarness(Elaboratable):
    """``NetworkEngine`` with ``program`` (default ``liveness_program(config)``) embedded, from reset: no
    model load (``load.valid`` low), an input beat offered on every cycle (free payload), ``o.ready``
    high (``host`` ``"eager"``; ``"exact"`` offers each inference's beats, then the next inference's once
    ``busy`` has fallen; ``"pausing"`` as ``"exact"``, but each inference's first beat only after a pause
    of free length (up to ``PAUSE_SLACK`` cycles, a constant per inference) from reset or from ``busy``'s
    fall, so the engine idles before it); ``inferences`` inferences one after the other. ``bound`` =
    ``predict(program, config).total`` (the cycle model: an inference's first input beat, taken while
    ``busy`` is low, is its cycle 0, its last output beat cycle ``bound - 1``). Asserted for each
    inference (``mode bmc``, ``depth``):

    * its first input beat is taken by cycle ``prime_cycles(program)`` after reset or after ``busy``
      fell (for the pausing host: ``prime_cycles`` cycles with the beat offered), so each run starts
      (without it, an engine that never took a beat would pass the rest);
    * ``busy`` is high on every cycle from the one after the first beat to ``bound + BUSY_FALL_CYCLES - 1``
      (not earlier than the model: it is exact) and low on cycle ``bound + BUSY_FALL_CYCLES`` (not later);
    * one output beat marked ``last`` per OUTPUT descriptor by then, the final one on cycle ``bound - 1``;
    * ``error`` stays low (no two units write the scratchpad in the same cycle).

    ``engine`` is the class to build (a mutant in the tests)."""

    def __init__(self, *, config: EngineConfig, program: Program | None = None, inferences: int = 1,
                 host: str = "eager", engine=None):
        from ..hw.engine.engine import NetworkEngine

        self._MustUse__silence = True
        if not isinstance(config, EngineConfig):
            raise ConfigError(f"config must be an EngineConfig, not {config!r}")
        if not isinstance(inferences, int) or isinstance(inferences, bool) or inferences < 1:
            raise ConfigError(f"inferences must be a positive integer, not {inferences!r}")
        if host not in HOSTS:
            raise ConfigError(f"host must be one of {', '.join(HOSTS)}, not {host!r}")
        self.inferences, self.host = inferences, host
        # an SPRAM weight store cannot hold an embedded image; the store is cut (``CUT_POINTS``: its read
        # data is its only output, with the same timing), so the block-RAM store proves the same control
        config = replace(config, weight_ram="block")
        self.config = config
        self.program = liveness_program(config) if program is None else program
        if self.program.segments != 1:
            raise ConfigError(f"liveness: the program has {self.program.segments} segments; the harness runs "
                              f"one-segment programs (the host's part between segments is not modelled)")
        self.outputs = sum(d.op == "OUTPUT" for d in self.program.descriptors)
        self.bound = predict(self.program, config).total
        self.prime = prime_cycles(self.program)
        self.beats = len(input_beats(self.program, {t.name: np.zeros((t.c, t.h, t.w), np.int8)
                                                    for t in self.program.tensors if t.direction == 0}))
        self.dut = (NetworkEngine if engine is None else engine)(engine=config, image=self.program.to_bytes())
        self.beat = Signal(8 * config.array.rows, name="i_payload")
        # no reset: the run starts from the registers' initial values, which are their reset values (a
        # reset later would only start the same run again); the clock is a port of the harness
        self.domain = ClockDomain("sync", reset_less=True)
        self._MustUse__silence = False

    @staticmethod
    def depth_for(config: EngineConfig, program: Program | None = None, inferences: int = 1,
                  host: str = "eager") -> int:
        """BMC steps to the last inference's cycle ``busy`` must be low, from the latest first beats, and
        one more; for the pausing host, ``PAUSE_SLACK`` more cycles per inference (its longest pauses)."""
        program = liveness_program(config) if program is None else program
        pause = PAUSE_SLACK if host == "pausing" else 0
        return inferences * (prime_cycles(program) + predict(program, config).total + BUSY_FALL_CYCLES + pause) + 2

    @property
    def depth(self) -> int:
        return self.depth_for(self.config, self.program, self.inferences, self.host)

    @property
    def ports(self) -> list:
        return [self.domain.clk, self.beat, self.dut.busy]

    @property
    def script(self) -> tuple[str, ...]:
        """The Yosys commands ``run_proof`` runs after ``prep``: each cut point (``CUT_POINTS``, each
        checked to select something, so a renamed unit fails loudly), then ``flatten`` so that the
        cells behind the cuts, which nothing observes any more, are removed."""
        cmds = []
        for sel in CUT_POINTS:
            cmds += [f"select -assert-min 1 {sel}", f"cutpoint {sel}"]
        return (*cmds, "select -clear", "flatten", "opt_clean")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.domain
        m.submodules.dut = d = self.dut
        n, fall, prime = self.inferences, self.bound + BUSY_FALL_CYCLES, self.prime
        # the host: "eager" offers a beat on every cycle; "exact" offers an inference's beats, then the next
        # inference's once busy has fallen (as qhw's runtime and testbenches do)
        sent = Signal(range(self.beats + 1), name="beats_sent")
        runs = Signal(range(n + 1), name="inferences_started")
        offer = 1 if self.host == "eager" else sent < self.beats
        if self.host == "pausing":
            # each inference's first beat after a pause of free length (a constant per inference, up to
            # ``PAUSE_SLACK`` cycles) from reset or from busy's fall; offered, it stays until taken
            from amaranth.asserts import AnyConst

            pauses = [AnyConst(range(PAUSE_SLACK + 1)) for _ in range(n)]
            paused = Signal(range(PAUSE_SLACK + 1), name="host_paused")
            length = pauses[0]
            for k in range(1, n):
                length = Mux(runs == k, pauses[k], length)
            with m.If(sent != 0):
                m.d.sync += paused.eq(0)
            with m.Elif(paused < length):
                m.d.sync += paused.eq(paused + 1)
            offer = offer & ((sent != 0) | (paused >= length))
        m.d.comb += [d.load.valid.eq(0), d.i.valid.eq(offer), d.i.payload.eq(self.beat), d.o.ready.eq(1)]
        first = d.i.valid & d.i.ready & ~d.busy           # an inference's cycle 0 in the model
        t = Signal(range(fall + 2), name="model_cycle")             # cycles since the latest first beat
        idle = Signal(range(prime + 2), name="idle_cycles")         # since reset or busy's fall, no beat yet
        lasts = Signal(range(self.outputs + 2), name="last_beats")      # tensors' last beats this inference
        last_at = Signal(range(fall + 2), name="last_beat_cycle")
        waiting, active = (runs == 0) | (t >= fall), runs != 0
        with m.If(first & (runs < n)):
            m.d.sync += [runs.eq(runs + 1), t.eq(1), idle.eq(0), lasts.eq(0), sent.eq(1)]
        with m.Else():
            with m.If(active & (t <= fall)):
                m.d.sync += t.eq(t + 1)
            with m.If(active & (t == fall)):
                m.d.sync += sent.eq(0)
            with m.Elif(d.i.valid & d.i.ready & (sent < self.beats)):
                m.d.sync += sent.eq(sent + 1)
            counting = d.i.valid if self.host == "pausing" else 1      # (the pausing host: while it offers)
            with m.If(waiting & counting & (idle <= prime)):
                m.d.sync += idle.eq(idle + 1)
            with m.If(active & d.o.valid & d.o.ready & d.o.payload.last & (lasts <= self.outputs)):
                m.d.sync += [lasts.eq(lasts + 1), last_at.eq(t)]
        m.d.comb += [
            Assert(~waiting | (runs == n) | first | (idle < prime)),           # the next inference starts
            Assert(~(active & (t >= 1) & (t < fall)) | d.busy),                  # not earlier than the model
            Assert(~(active & (t == fall)) | ~d.busy),                          # not later
            Assert(~(active & (t == fall)) | ((lasts == self.outputs) & (last_at == self.bound - 1))),
            Assert(~d.error),                  # no two writes on the scratchpad's one port in a cycle
        ]
        return m
