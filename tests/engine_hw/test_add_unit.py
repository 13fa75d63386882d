# amaranth: UnusedElaboratable=no
"""``AddUnit`` (TFLite ADD lanes, table stage) and ``TableUnit`` in the Amaranth simulator against the
reference model (``qhw.engine.model``, which runs the golden model's ``add_with_multipliers``): every
word written equals the reference model's, at the cycle the timing contract gives (word ``i`` written
``2i + 1 + add_latency`` after the first read; ``i + add_latency`` for a table pass). The testbench
plays the sequencer's table load only; it does no Add math."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Const, Module, Signal, signed
from amaranth_sim import run_sim

from qhw.arith import add_left_shift, add_multipliers, mul_shift_single, mul_shift_tflite
from qhw.contract import MODE_CODES, TABLE_READ_LATENCY
from qhw.engine.isa import Descriptor
from qhw.engine.model import EngineModel
from qhw.engine.program import Program
from qhw.hw.engine.add_unit import AddUnit, TableUnit, mul_shift
from qhw.hw.engine.layouts import descriptor_const
from qhw.hw.engine.memories import Scratchpad

R = 8


def _program(descs, table: np.ndarray | None, rows: int = R) -> Program:
    image = b"" if table is None else np.asarray(table, np.int8).tobytes()
    return Program(rows=rows, cols=rows, rounding=("single", "tflite"), weight_kib=1, act_kib=1, program_words=1024,
                   descriptors=list(descs) + [Descriptor("END")], tensors=[], image=image, params_offset=0,
                   act_bytes_used=0, segments=1)


def reference(d: Descriptor, mem: np.ndarray, table) -> np.ndarray:
    model = EngineModel(_program([d], table, mem.shape[1]), act_words=len(mem))
    model.mem = mem[None].copy()
    model._add(d, {}, {})
    return model.mem[0]


def run_add(d: Descriptor, mem: np.ndarray, table, modes=("single", "tflite")):
    """``d`` on an ``AddUnit`` (built with ``modes``) reading a ``Scratchpad`` holding ``mem`` (the table
    loaded first, one entry a cycle). Returns {word: values} and each write's cycle counted from the
    first read request."""
    rows = mem.shape[1]
    top = Module()
    top.submodules.unit = unit = AddUnit(rows=rows, modes=modes)
    top.submodules.pad = pad = Scratchpad(rows=rows, cols=rows, words=len(mem), init=mem.tolist())
    top.d.comb += [pad.r_addr.eq(unit.r_addr), pad.r_en.eq(unit.r_en), unit.r_data.eq(pad.r_data)]
    words, cycles = {}, []

    async def bench(ctx):
        if table is not None:
            for k, v in enumerate(np.asarray(table, np.int8).tolist()):
                ctx.set(unit.load_en, 1)
                ctx.set(unit.load_index, k)
                ctx.set(unit.load_data, v)
                await ctx.tick()
            ctx.set(unit.load_en, 0)
        ctx.set(unit.desc.payload, descriptor_const(d))
        ctx.set(unit.desc.valid, 1)
        assert ctx.get(unit.desc.ready)
        await ctx.tick()
        ctx.set(unit.desc.valid, 0)
        cycle, start, quiet = 0, None, 0
        while quiet < unit.latency + 3:
            await ctx.delay(1e-8)
            if start is None and ctx.get(unit.r_en):
                start = cycle
            if ctx.get(unit.w_en):
                words[ctx.get(unit.w_addr)] = list(ctx.get(unit.w_data))
                cycles.append(cycle - start)
                quiet = 0
            elif start is not None:
                quiet += 1
            await ctx.tick()
            cycle += 1
        assert ctx.get(unit.desc.ready)

    run_sim(top, bench)
    return words, cycles


def add_descriptor(rng, mode: str, scales, zps, out_zp: int, words: int, qmin=-128, qmax=127, table=0) -> Descriptor:
    left = add_left_shift(8)
    (m0, sh), (mo, so) = add_multipliers(list(scales), scales[2], left)
    return Descriptor("ADD", {"a_base": 0, "b_base": words, "out_base": 2 * words + 3, "words": words,
                              "a_zp": zps[0], "b_zp": zps[1], "left_shift": left, "a_mul": m0[0], "a_shift": sh[0],
                              "b_mul": m0[1], "b_shift": sh[1], "out_mul": mo, "out_shift": so, "zp": out_zp,
                              "qmin": qmin, "qmax": qmax, "mode": MODE_CODES[mode], "table": table})


@pytest.mark.parametrize("built", ["one", "both"])
@pytest.mark.parametrize("pre", [False, True], ids=["wide", "pre_shift"])
@pytest.mark.parametrize("mode", ["single", "tflite"])
def test_mul_shift_matches_arith(mode, pre, built):
    """The lanes' multiply-and-shift against ``qhw.arith.mul_shift_single``/``mul_shift_tflite`` (seed 35):
    ``wide`` (the output rescale) on random operands of both signs over the whole shift range, plus exact
    ties of tflite's rounding divide (``x = 2q`` with ``M0 = 2**30`` makes the high multiply exact, ``q``
    an odd multiple of ``2**(right - 1)``); ``pre_shift`` (the input rescales: ``(q - zp) << 20``, shifts
    <= 0) on random differences, with ties from odd ``q - zp``, ``M0 = 2**30``, shift -20. One operand a
    cycle, ``ADD_MUL_STAGES`` cycles later. ``built``: the rule alone (a ``Const``; the wide single rule
    then saturates at ``+-2**16`` as the lanes' output rescale does) or both rules with a select."""
    from qhw.contract import ADD_MUL_STAGES

    rng = np.random.default_rng([35, len(mode), pre])
    n = 300
    m0 = rng.integers(1 << 30, 1 << 31, n)
    if pre:
        d = rng.integers(-2047, 2048, n)
        shift = rng.integers(-31, 1, n)
        d[:60] = 2 * rng.integers(-500, 500, 60) + 1
        m0[:60], shift[:60] = 1 << 30, -20
        x = d << 20
    else:
        d = x = rng.integers(-(1 << 29), 1 << 29, n)
        shift = rng.integers(-31, 31, n)
        right = rng.integers(1, 12, 60)
        q = (2 * rng.integers(-50, 50, 60) + 1) << (right - 1)          # odd multiples of 2**(right - 1)
        x[:60], m0[:60], shift[:60] = 2 * q, 1 << 30, -right
    want = (mul_shift_single if mode == "single" else mul_shift_tflite)(x, m0, shift)
    sat = 16 if built == "one" and not pre else 31
    if mode == "single" and not pre:
        assert (np.abs(want) >= 1 << sat).sum() > 10            # the saturation is exercised
        want = np.clip(want, -(1 << sat), 1 << sat)
    top = Module()
    xs, ms, ss = Signal(signed(17 if pre else 34)), Signal(31), Signal(signed(6))
    rule = Const(int(mode == "tflite"), 1) if built == "one" else int(mode == "tflite")
    r = mul_shift(top, xs, ms, ss, rule, name="t", pre_shift=20 if pre else None, sat=sat)
    got = []

    async def bench(ctx):
        for k in range(len(x) + ADD_MUL_STAGES):
            if k < len(x):
                ctx.set(xs, int(d[k]))
                ctx.set(ms, int(m0[k]))
                ctx.set(ss, int(shift[k]))
            await ctx.tick()
            await ctx.delay(1e-8)
            if k >= ADD_MUL_STAGES - 1 and len(got) < len(x):
                got.append(ctx.get(r))

    run_sim(top, bench)
    bad = np.flatnonzero(np.array(got) != want)
    assert not bad.size, f"{bad.size} wrong, first x={x[bad[0]]} m0={m0[bad[0]]} shift={shift[bad[0]]}: " \
                         f"{got[bad[0]]} != {want[bad[0]]}"


# (id, scales a/b/out, zero points a/b, output zero point, clamp): saturation on both sides, a tiny output
# scale (large output multiplier, positive shift), equal scales, a ReLU-like clamp.
ADD_CASES = [
    ("resnet-like", (0.028, 0.20, 0.117), (-128, 0), -128, (-128, 127)),
    ("saturating", (0.5, 0.4, 0.01), (3, -7), 5, (-128, 127)),
    ("tiny-out", (0.9, 0.002, 0.0004), (0, 12), -3, (-128, 127)),
    ("equal", (0.1, 0.1, 0.1), (-20, 20), 0, (-128, 127)),
    ("relu-clamp", (0.05, 0.07, 0.09), (10, -10), -40, (-40, 100)),
]


@pytest.mark.parametrize("mode", ["single", "tflite"])
@pytest.mark.parametrize("case", ADD_CASES, ids=[c[0] for c in ADD_CASES])
def test_add_unit_matches_reference(case, mode):
    """Every case in both rules on an AddUnit with both rules built (the descriptor's ``mode`` picks one)."""
    check_add_case(case, mode, ("single", "tflite"))


@pytest.mark.parametrize("mode", ["single", "tflite"])
@pytest.mark.parametrize("case", [c for c in ADD_CASES if c[0] in ("saturating", "tiny-out")], ids=lambda c: c[0])
def test_add_unit_one_rule_built(case, mode):
    """An AddUnit built with one rule (``modes``: the engine's rounding; the other rule's logic is folded
    away in synthesis) computes that rule's words at the same cycles."""
    check_add_case(case, mode, (mode,))


def test_add_unit_odd_rows():
    """Three lanes: a pair sharing its output rescale and a lane alone, every word at the pair's cycle."""
    check_add_case(ADD_CASES[1], "single", ("single",), rows=3)


def check_add_case(case, mode: str, modes, rows: int = R) -> None:
    name, scales, zps, out_zp, (lo, hi) = case
    rng = np.random.default_rng([31, sum(map(ord, name))])          # seed 31 mixed with the case name
    words = 12
    mem = rng.integers(-128, 128, (3 * words + 3, rows)).astype(np.int8)
    mem[0, :] = 127                       # extremes of both inputs in the first words
    mem[words, :] = 127
    mem[1, :] = -128
    mem[words + 1, :] = -128
    d = add_descriptor(rng, mode, scales, zps, out_zp, words, lo, hi)
    want = reference(d, mem, None)
    got, cycles = run_add(d, mem, None, modes)
    dst = list(range(2 * words + 3, 3 * words + 3))
    assert sorted(got) == dst
    assert cycles == [2 * i + 1 + AddUnit(rows=R).latency for i in range(words)]
    bad = [a for a in dst if got[a] != want[a].tolist()]
    assert not bad, f"{len(bad)} wrong words, first {bad[0]}: {got[bad[0]]} != {want[bad[0]].tolist()}"
    if name == "saturating":              # the case really saturates both ways
        vals = np.array([got[a] for a in dst])
        assert (vals == 127).any() and (vals == -128).any()


@pytest.mark.parametrize("table_only", [0, 1])
def test_add_unit_table(table_only):
    """The table stage: ADD then table, and a table pass alone (one read per word)."""
    rng = np.random.default_rng(33)                                   # seed 33
    table = rng.integers(-128, 128, 256).astype(np.int8)
    words = 10
    mem = rng.integers(-128, 128, (3 * words + 3, R)).astype(np.int8)
    d = add_descriptor(rng, "tflite", (0.03, 0.05, 0.06), (-5, 9), 2, words, table=1)
    d = Descriptor("ADD", dict(d.fields, table_only=table_only))
    want = reference(d, mem, table)
    got, cycles = run_add(d, mem, table)
    step = 1 if table_only else 2
    assert cycles == [step * i + step - 1 + AddUnit(rows=R).latency for i in range(words)]
    dst = range(2 * words + 3, 3 * words + 3)
    assert all(got[a] == want[a].tolist() for a in dst)
    if table_only:
        assert all(got[a] == table[mem[a - 2 * words - 3].astype(int) + 128].tolist() for a in dst)


def test_resnet_add_descriptor_on_add_unit(digits):
    """The digits_resnet's own ADD (compiled, single rounding) on the scratchpad the reference model holds
    before it (a test image), every word equal to the reference model's after it."""
    from qhw.arith import quantize_float
    from qhw.datasets import builtin_model_path
    from qhw.engine.compiler import compile_model

    from .conftest import engine_for, quantize

    qm = quantize(builtin_model_path("digits_resnet"), digits["calib_x"])
    prog = compile_model(qm, engine_for(qm.graph)).program
    p = qm.graph.tensors["x"]
    x = quantize_float(digits["test_x"][:1], p.scale, p.zero_point, p.qmin, p.qmax)
    model = EngineModel(prog, act_words=256)
    model.mem = np.zeros((1, 256, R), np.int8)
    k = next(i for i, d in enumerate(prog.descriptors) if d.op == "ADD")
    for i in range(k):
        model.current = i
        getattr(model, f"_{prog.descriptors[i].op.lower()}")(prog.descriptors[i], {"x": x}, {})
    before = model.mem[0].copy()
    d = prog.descriptors[k]
    model._add(d, {}, {})
    got, _ = run_add(d, before, None)
    dst = range(d["out_base"], d["out_base"] + d["words"])
    assert sorted(got) == list(dst)
    assert all(got[a] == model.mem[0][a].tolist() for a in dst)


def test_table_unit_lookup_and_bypass():
    """``TableUnit``: every code of a random table (seed 34) in every lane, exactly ``latency``
    (``TABLE_READ_LATENCY``) cycles after it goes in, with ``o_valid``; bypass (``enable`` low) passes
    the codes through with the same latency."""
    lanes = 4
    rng = np.random.default_rng(34)
    table = rng.integers(-128, 128, 256)
    codes = rng.permutation(np.arange(-128, 128)).reshape(-1, lanes)
    dut = TableUnit(lanes=lanes)
    assert dut.latency == TABLE_READ_LATENCY
    sent, seen = {}, {}          # cycle -> (enable, row) put in / o taken out

    async def bench(ctx):
        for k, v in enumerate(table.tolist()):
            ctx.set(dut.load_en, 1)
            ctx.set(dut.load_index, k)
            ctx.set(dut.load_data, v)
            await ctx.tick()
        ctx.set(dut.load_en, 0)
        # rows with gaps (None), looked up and bypassed, then all 256 codes back to back
        plan = [(e, r) for e in (1, 0) for r in codes[:8].tolist() + [None]]
        plan += [(1, r) for r in codes.tolist()] + [(1, None)] * (dut.latency + 1)
        for cycle, (enable, row) in enumerate(plan):
            ctx.set(dut.i_valid, row is not None)
            ctx.set(dut.enable, enable)
            if row is not None:
                ctx.set(dut.i, row)
                sent[cycle] = (enable, row)
            if ctx.get(dut.o_valid):
                seen[cycle] = list(ctx.get(dut.o))
            await ctx.tick()

    run_sim(dut, bench)
    want = {c + dut.latency: (table[np.array(r) + 128].tolist() if e else r) for c, (e, r) in sent.items()}
    assert seen == want
