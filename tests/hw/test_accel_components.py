# amaranth: UnusedElaboratable=no
"""The accelerator's blocks alone, in the Amaranth simulator: each one's measured latency equals its
``latency`` property, and the properties along the datapath add up to ``config.latency``.

Random stimuli are seeded; the seed is in the test id or the call.
"""

import random
from typing import NamedTuple

import numpy as np
import pytest
from amaranth_sim import run_sim

from qhw.arith import Requant
from qhw.hw.accumulator import Accumulator
from qhw.hw.array import SystolicArray
from qhw.hw.config import MODE_CODES, ArrayConfig
from qhw.hw.dsp_array import DspArray
from qhw.hw.issuer import Issuer
from qhw.hw.layouts import command_layout, params_layout
from qhw.hw.loader import Loader
from qhw.hw.output_queue import OutputQueue
from qhw.hw.requant_bank import RequantBank

CONFIGS = {
    "2x2": dict(rows=2, cols=2),
    "4x4-shared2": dict(rows=4, cols=4, requant_lanes=2),
    "4x8-shared1-no-onnx": dict(rows=4, cols=8, requant_lanes=1, rounding=("single", "tflite")),
    "4x4-tiles": dict(rows=4, cols=4, tile_rows=2, tile_pipeline=2),
    "3x3-ecp5": dict(rows=3, cols=3, pe="ecp5-pipelined"),
    "2x4-ice40": dict(rows=2, cols=4, pe="ice40-dual"),
    "8x8-ecp5": dict(rows=8, cols=8, pe="ecp5-pipelined"),
}


def small(**kw):
    kw = {"rows": 2, "cols": 2, "max_k": 16, "acc_depth": 8, **kw}
    return ArrayConfig(**kw)


@pytest.mark.parametrize("name", CONFIGS)
def test_datapath_latencies_add_up_to_config_latency(name):
    """Issue register + array + accumulator + requantization bank + output queue = ``config.latency``."""
    c = ArrayConfig(**CONFIGS[name])
    array = SystolicArray(config=c) if c.pe == "generic" else DspArray(config=c)
    blocks = [Issuer(config=c), array, Accumulator(config=c), RequantBank(config=c), OutputQueue(config=c)]
    assert sum(b.latency for b in blocks) == c.latency


def start(ctx, dut, config, **fields):
    """Pulse ``gemm.start`` with a command (the caller ticks)."""
    cmd = {"m": 1, "k": config.rows, "n": config.cols, "mode": 0, "zero_point": 0, "qmin": 0, "qmax": 0, **fields}
    ctx.set(dut.gemm.cmd, command_layout(config).const(cmd))
    ctx.set(dut.gemm.new, command_layout(config).const(cmd))
    ctx.set(dut.gemm.start, 1)


# --------------------------------------------------------------------------- issuer


def test_issuer_latency_release_and_credits():
    """One activation beat per cycle into the issue register (``latency`` later on ``tag``); the tile's
    last beat releases its bank; a result-producing beat needs a credit: exactly ``fifo_depth`` are
    accepted while nothing is taken, one more for each row taken."""
    c = small()
    dut = Issuer(config=c)
    m = c.fifo_depth + 3

    async def bench(ctx):
        start(ctx, dut, c, m=m)
        ctx.set(dut.banks.full, 0b01)
        await ctx.tick()
        ctx.set(dut.gemm.start, 0)
        ctx.set(dut.act.valid, 1)
        accepted, releases = [], []
        for t in range(c.fifo_depth + 10):
            ctx.set(dut.act.payload, [t % 7 + 1, -(t % 5) - 1])
            ctx.set(dut.taken, t == c.fifo_depth + 5)
            _, _, ready, release = await ctx.tick().sample(dut.act.ready, dut.banks.release.valid)
            if ready:
                accepted.append(t)
            if release:
                releases.append(t)
            if t == 0:  # the beat of cycle 0 is in the issue register ``latency`` = 1 cycle later
                assert dut.latency == 1
                assert ctx.get(dut.tag.valid) and ctx.get(dut.tag.payload.m) == 0
                assert ctx.get(dut.tag.payload.first) and ctx.get(dut.tag.payload.last)
                assert [ctx.get(dut.a_in[i]) for i in range(2)] == [1, -1]
        assert accepted == list(range(c.fifo_depth)) + [c.fifo_depth + 6]   # the credit is back a cycle later
        assert releases == []       # M beats not issued yet
        assert ctx.get(dut.idle) == 0

    run_sim(dut, bench)


# --------------------------------------------------------------------------- loader


@pytest.mark.parametrize("k", [2, 1])   # a full tile, and one weight row plus a zero-filled one
def test_loader_fills_a_free_bank_in_latency_cycles(k):
    """The parameter beat, then K weight rows one per cycle and zero rows past K; the bank is ``full``
    ``latency`` cycles after it became free (the cycle after ``start``)."""
    c = small(rounding=("single",))
    dut = Loader(config=c)
    weights = [[3, -4], [5, 6]]
    params = {"bias": [1, -2], "multiplier": [1 << 30, 3 << 28], "shift": [-3, 2]}

    async def bench(ctx):
        start(ctx, dut, c, k=k)
        ctx.set(dut.params.valid, 1)
        ctx.set(dut.params.payload, params_layout(c).const(params))
        ctx.set(dut.weights.valid, 1)
        await ctx.tick()
        ctx.set(dut.gemm.start, 0)
        writes, row, t = [], 0, 0
        while t < 10:
            t += 1
            ctx.set(dut.weights.payload, weights[min(row, 1)])
            _, _, we, data, ready = await ctx.tick().sample(dut.w_we, dut.w_data, dut.weights.ready)
            if ready:
                row += 1
            if we:
                writes.append((we, [data[j] for j in range(2)]))
            if ctx.get(dut.banks.full) & 1:
                break
        assert t == dut.latency == 1 + c.weight_load_cycles
        # The write ports are registered: the last row is written the cycle after ``full``.
        we, data = ctx.get(dut.w_we), ctx.get(dut.w_data)
        writes.append((we, [data[j] for j in range(2)]))
        expect = [(1, weights[0]), (2, weights[1] if k == 2 else [0, 0])]
        assert writes == expect
        assert row == k
        got = ctx.get(dut.param_banks[0])
        assert [got.bias[j] for j in range(2)] == params["bias"]
        assert not ctx.get(dut.busy)      # one tile: N = cols, K <= rows

    run_sim(dut, bench)


# --------------------------------------------------------------------------- accumulator


class Idle(NamedTuple):
    """An idle cycle (``tag.valid`` 0) whose tag payload names row ``m``: an idle tag's payload is
    arbitrary (``MatmulIssue``'s holds the next beat's row while a tile waits at its first beat)."""
    m: int
    first: bool = False
    last: bool = False


def accumulate(config, beats):
    """Drive ``tag`` with ``beats`` (``None``: an idle cycle, the payload held; ``Idle``: an idle cycle
    with that payload; else ``(m, first, last, psum)``) and each psum ``array_latency`` cycles later;
    return the ``row`` outputs as ``(cycle, sums)``."""
    dut = Accumulator(config=config)
    lag = config.array_latency
    rows = []

    def is_beat(beat):
        return beat is not None and not isinstance(beat, Idle)

    async def bench(ctx):
        for t in range(len(beats) + lag + dut.latency + 2):
            beat = beats[t] if t < len(beats) else None
            ctx.set(dut.tag.valid, is_beat(beat))
            if beat is not None:
                ctx.set(dut.tag.payload.m, beat[0])
                ctx.set(dut.tag.payload.first, beat[1])
                ctx.set(dut.tag.payload.last, beat[2])
            early = beats[t - lag] if 0 <= t - lag < len(beats) else None
            ctx.set(dut.psum, early[3] if is_beat(early) else [12345] * config.cols)
            _, _, valid, payload = await ctx.tick().sample(dut.row.valid, dut.row.payload)
            if valid:
                rows.append((t, [payload.sum[j] for j in range(config.cols)]))

    run_sim(dut, bench)
    return rows


def gemm_beats(config, m, kt, rng, gap):
    """The tag/psum beats of one GEMM column block (K tiles inner, rows in order), idle with
    probability ``gap``; and the expected sums of its rows (plain integer sums)."""
    lo, hi = -(1 << (config.psum_bits - 1)), (1 << (config.psum_bits - 1)) - 1
    psums = [[[rng.randint(lo, hi) for _ in range(config.cols)] for _ in range(m)] for _ in range(kt)]
    beats = []
    for k in range(kt):
        for row in range(m):
            while rng.random() < gap:
                beats.append(None)
            beats.append((row, k == 0, k == kt - 1, psums[k][row]))
    expected = [[sum(psums[k][row][j] for k in range(kt)) for j in range(config.cols)] for row in range(m)]
    return beats, expected


@pytest.mark.parametrize("pe", ["generic", "ice40-dual"])       # ice40-dual: the area_first variant
@pytest.mark.parametrize("m", [1, 2, 3])
def test_accumulator_forwarding_back_to_back(m, pe):
    """K tiles back to back with no gap: M = 1 and M = 2 read a row whose sum is still in the adder's
    output registers (forwarding), M = 3 the row written in the cycle of its read (forwarded too); each
    result row ``latency`` cycles after its psum."""
    c = small(acc_depth=4, pe=pe)
    rng = random.Random(m)
    beats, expected = gemm_beats(c, m, 4, rng, gap=0.0)
    rows = accumulate(c, beats)
    assert [r for _, r in rows] == expected
    last_beats = [t for t, b in enumerate(beats) if b is not None and b[2]]
    assert [t for t, _ in rows] == [t + c.array_latency + Accumulator(config=c).latency for t in last_beats]


@pytest.mark.parametrize("seed, pe", [(1, "generic"), (2, "generic"), (3, "ice40-dual"), (4, "ice40-dual")])
def test_accumulator_random_gaps(seed, pe):
    """Random M, K tiles and idle cycles, extreme psums: every row is the exact sum of its tiles
    (ice40-dual: the ``area_first`` variant)."""
    c = small(rows=2, cols=3, acc_depth=5, pe=pe)
    rng = random.Random(seed)
    beats, expected = [], []
    for _ in range(3):
        b, e = gemm_beats(c, rng.randint(1, 5), rng.randint(1, 4), rng, gap=0.3)
        beats += b
        expected += e
    assert [r for _, r in accumulate(c, beats)] == expected


# The accumulator's three forms (``Accumulator.elaborate``): the plain one (``array_latency`` < 3), the
# one deciding its matches a cycle ahead (``array_latency`` >= 3: every ECP5-pipelined array, and generic
# ones from 2x2), and ``area_first`` (iCE40): (rows, cols, pe) of a small config of each.
ACC_FORMS = {"plain": (1, 2, "generic"), "early": (2, 2, "generic"), "early-ecp5": (2, 2, "ecp5-pipelined"),
             "area-first": (2, 2, "ice40-dual")}


@pytest.mark.parametrize("gap", [1, 2, 3, 4])
@pytest.mark.parametrize("form", ACC_FORMS)
def test_accumulator_idle_cycles_are_not_writes(form, gap):
    """A K tile, ``gap`` idle cycles whose tag payload names a row of the tile (the row read next, or the
    row of the beat before), then the next K tile (M = 1 and 2, 3 K tiles): an idle cycle writes
    nothing, so none of the forwards may take its sum, whatever its payload. ``gap`` = 3 puts an idle
    cycle three beats before the read of the row it names (M = 1, or the row read next): exactly the
    write in the read's own cycle that ``forward3`` (``forward3_early``) stands in for, which its
    ``wrote``/``w_en`` term must refuse; ``gap`` 1 and 2 do the same for ``forward1`` and ``forward2``.
    Seeded psums (seed ``gap``)."""
    rows, cols, pe = ACC_FORMS[form]
    c = small(rows=rows, cols=cols, acc_depth=4, pe=pe)
    assert (c.area_first, not c.area_first and c.array_latency >= 3) == (form == "area-first", "early" in form)
    rng = random.Random(gap)
    for m in (1, 2):
        for named in ("next", "previous"):
            beats, expected = gemm_beats(c, m, 3, rng, gap=0.0)
            k_tiles = [beats[i:i + m] for i in range(0, len(beats), m)]
            beats = k_tiles[0]
            for tile in k_tiles[1:]:
                row = tile[0][0] if named == "next" else beats[-1][0]
                beats = beats + [Idle(row)] * gap + tile
            rows_out = accumulate(c, beats)
            assert [r for _, r in rows_out] == expected, (m, named)
            last_beats = [t for t, b in enumerate(beats) if not isinstance(b, Idle) and b[2]]
            assert [t for t, _ in rows_out] == [t + c.array_latency + Accumulator(config=c).latency
                                                for t in last_beats], (m, named)


# --------------------------------------------------------------------------- requantization bank


@pytest.mark.parametrize("lanes", [2, 1, None])
def test_requant_bank_latency_and_golden(lanes):
    """Rows back to back (``requant_passes`` apart), each with the parameters of its bank: bit-exact with
    ``qhw.arith.Requant`` and ``latency`` cycles from ``row`` to ``out``."""
    c = small(cols=4, rounding=("single", "tflite"), requant_lanes=lanes)
    dut = RequantBank(config=c)
    rng = np.random.default_rng(7)
    n = 6
    sums = rng.integers(-(1 << 14), 1 << 14, (n, c.cols))
    banks = rng.integers(0, 2, n)
    params = [{"bias": rng.integers(-1000, 1000, c.cols).tolist(),
               "multiplier": rng.integers(1 << 30, 1 << 31, c.cols).tolist(),
               "shift": rng.integers(-14, -8, c.cols).tolist()} for _ in range(2)]
    zp, qmin, qmax = 3, -100, 120
    got = []

    async def bench(ctx):
        start(ctx, dut, c, mode=MODE_CODES["tflite"], zero_point=zp, qmin=qmin, qmax=qmax)
        for b in range(2):
            ctx.set(dut.param_banks[b], params_layout(c).const(params[b]))
        ctx.set(dut.next_bank, int(banks[0]))
        await ctx.tick()    # the lanes register zero_point, qmin and qmax a cycle ahead
        p = c.requant_passes
        for t in range(n * p + dut.latency + 2):
            i, phase = divmod(t, p)
            ctx.set(dut.row.valid, i < n and phase == 0)
            if i < n:
                ctx.set(dut.row.payload.sum, sums[i].tolist())
                ctx.set(dut.row.payload.bank, int(banks[i]))
            # the bank of the row coming next cycle (the lanes select their parameters a cycle early)
            nxt = (t + 1) // p
            ctx.set(dut.next_bank, int(banks[nxt]) if nxt < n and (t + 1) % p == 0 else 0)
            _, _, valid, out = await ctx.tick().sample(dut.out.valid, dut.out.payload)
            if valid:
                got.append((t, [out[j] for j in range(c.cols)]))

    run_sim(dut, bench)
    expected = []
    for i in range(n):
        pr = params[int(banks[i])]
        m0, shift = np.array(pr["multiplier"]), np.array(pr["shift"])
        rq = Requant(mode="tflite", multiplier=m0, shift=shift, scale=(m0 * 2.0 ** (shift - 31)).astype(np.float32),
                     zero_point=zp, qmin=qmin, qmax=qmax)
        expected.append(rq.apply(sums[i] + np.array(pr["bias"])).tolist())
    assert [r for _, r in got] == expected
    assert [t for t, _ in got] == [i * c.requant_passes + dut.latency for i in range(n)]


# --------------------------------------------------------------------------- output queue


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_output_queue_in_order_under_back_pressure(seed):
    """A writer that keeps the issuer's credit rule (at most ``depth`` rows written and not yet taken)
    and a consumer that stalls at random: every row comes out once, in order; a row written into an
    empty queue with ``o.ready`` high is taken ``latency`` cycles later."""
    c = small(cols=2)
    dut = OutputQueue(config=c)
    rng = random.Random(seed)
    total = 3 * dut.depth
    rows = [[(i * 7) % 100 - 50, i % 128] for i in range(total)]
    got = []    # rows taken, and the cycle of the first

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, rows[0])
        _, _, taken = await ctx.tick().sample(dut.taken)
        ctx.set(dut.i.valid, 0)
        t = 0
        while not taken:
            _, _, taken, payload = await ctx.tick().sample(dut.taken, dut.o.payload)
            t += 1
        assert t == dut.latency
        got.append([payload[0], payload[1]])
        # Fill the queue with the consumer blocked, then random stalls on both sides.
        written, outstanding, t = 1, 0, 0
        while len(got) < total:
            write = written < total and outstanding < dut.depth and (t < dut.depth + 2 or rng.random() < 0.7)
            ctx.set(dut.i.valid, write)
            if write:
                ctx.set(dut.i.payload, rows[written])
            ctx.set(dut.o.ready, t > dut.depth + 5 and rng.random() < 0.5)
            _, _, taken, payload = await ctx.tick().sample(dut.taken, dut.o.payload)
            if taken:
                got.append([payload[0], payload[1]])
            written += write
            outstanding += write - taken
            t += 1
            assert t < 20 * total
        for _ in range(4):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid

    run_sim(dut, bench)
    assert got == rows


def test_const_compare_above_is_greater_than():
    """``above`` (a constant compare as logic) against ``>``: every value of 1-, 3- and 5-bit
    signals, bounds from below 0 to past the largest value."""
    from amaranth.hdl import Module, Signal

    from qhw.hw.const_compare import above

    m = Module()
    cases = []
    for width in (1, 3, 5):
        v = Signal(width, name=f"v{width}")
        for bound in range(-2, (1 << width) + 2):
            o = Signal(name=f"o{width}_{bound + 2}")
            m.d.comb += o.eq(above(v, bound))
            cases.append((v, bound, o))

    async def bench(ctx):
        for width in (1, 3, 5):
            for x in range(1 << width):
                for v, bound, o in cases:
                    if len(v) == width:
                        ctx.set(v, x)
                        assert ctx.get(o) == int(x > bound), (width, x, bound)

    run_sim(m, bench, clock=False)
