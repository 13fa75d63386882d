# amaranth: UnusedElaboratable=no
"""The loader's and the issuer's ``area_first`` form (iCE40: the ``If``-statement counters, the
loader's ``row_last`` register, the issuer's registered ``act.ready`` decided from each term's next
value) against their ECP5/generic form, side by side in the Amaranth simulator under the same random
stimuli: every output equal in every cycle (no cycle moves).

Random stimuli are seeded; the seed is in the test id.
"""

import random

import pytest
from amaranth.hdl import Module
from amaranth_sim import run_sim

from qhw.hw.config import ArrayConfig
from qhw.hw.issuer import Issuer
from qhw.hw.layouts import command_layout
from qhw.hw.loader import Loader


def pair(rows, cols, lanes, mul="serial"):
    """The iCE40 configuration (``area_first``) and the generic one it must equal."""
    kw = dict(rows=rows, cols=cols, max_k=4 * rows, acc_depth=16, rounding=("single",), requant_mul=mul,
              requant_lanes=lanes)
    ice, ref = ArrayConfig(pe="ice40-dual", **kw), ArrayConfig(pe="generic", **kw)
    assert ice.area_first and not ref.area_first
    return ice, ref


def commands(rng, config, count, n_tiles=3):
    return [{"m": rng.randint(1, config.acc_depth), "k": rng.randint(1, config.max_k),
             "n": rng.randint(1, n_tiles * config.cols),
             "mode": 0, "zero_point": 0, "qmin": 0, "qmax": 0} for _ in range(count)]


def tiles(config, cmd):
    return -(-cmd["k"] // config.rows) * -(-cmd["n"] // config.cols)


def set_both(ctx, duts, path, value):
    for dut in duts:
        sig = dut
        for name in path:
            sig = getattr(sig, name)
        ctx.set(sig, value)


def get(ctx, dut, path):
    sig = dut
    for name in path:
        sig = getattr(sig, name)
    return ctx.get(sig.as_value() if hasattr(sig, "as_value") else sig)


# Issuer: the loader (which fills banks in order) and the output queue (which returns credits) are
# modelled here; ``full`` is a register whose next value but for the release the iCE40 form reads as
# ``full_ahead``.
ISSUER_OUTPUTS = [("act", "ready"), ("banks", "release", "valid"), ("banks", "release", "payload"),
                  ("tag", "valid"), ("tag", "payload"), ("a_in",), ("idle",)]


@pytest.mark.parametrize("mul, lanes", [("parallel", 1), ("parallel", None), ("serial", 1)])   # 1: beats spaced
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_issuer_area_first_equals_generic(mul, lanes, seed):
    """(The serial lane's output FIFO, 118 rows, outlasts these commands: its credits are the parallel
    lanes' to exhaust.)"""
    ice_c, ref_c = pair(4, 2, lanes, mul)
    ice, ref = Issuer(config=ice_c), Issuer(config=ref_c)
    m = Module()
    m.submodules.ice, m.submodules.ref = ice, ref
    rng = random.Random(seed)
    cmds = commands(rng, ice_c, 6, n_tiles=8) if mul == "parallel" else commands(rng, ice_c, 3, n_tiles=1)
    most = 0

    async def bench(ctx):
        nonlocal most
        full, fill_bank, to_fill, outstanding, pending = 0, 0, 0, 0, list(cmds)
        for t in range(20000):
            start = 0
            if pending and ctx.get(ref.idle) and to_fill == 0 and rng.random() < 0.3:
                cmd = command_layout(ice_c).const(pending.pop(0))
                set_both(ctx, (ice, ref), ("gemm", "new"), cmd)
                set_both(ctx, (ice, ref), ("gemm", "cmd"), cmd)
                to_fill, start = tiles(ice_c, cmds[len(cmds) - len(pending) - 1]), 1
            set_both(ctx, (ice, ref), ("gemm", "start"), start)
            set_both(ctx, (ice, ref), ("banks", "full"), full)
            set_both(ctx, (ice, ref), ("act", "valid"), int(rng.random() < 0.7))
            set_both(ctx, (ice, ref), ("act", "payload"), [rng.randint(-128, 127) for _ in range(ice_c.rows)])
            taken = int(outstanding > 0 and rng.random() < 0.1)     # below the issue rate: credits run out
            set_both(ctx, (ice, ref), ("taken",), taken)
            for path in ISSUER_OUTPUTS:
                assert get(ctx, ice, path) == get(ctx, ref, path), (t, path)
            if to_fill and not (full >> fill_bank) & 1 and not start and rng.random() < 0.5:
                full |= 1 << fill_bank
                fill_bank ^= 1
                to_fill -= 1
            ctx.set(ice.banks.full_ahead, full)
            if ctx.get(ref.banks.release.valid):
                full &= ~(1 << ctx.get(ref.banks.release.payload))
            await ctx.tick()
            outstanding += int(ctx.get(ref.tag.valid) and ctx.get(ref.tag.payload.last)) - taken
            most = max(most, outstanding)
            if not pending and to_fill == 0 and ctx.get(ref.idle) and outstanding == 0:
                break
        assert not pending and outstanding == 0, "the commands did not finish"

    run_sim(m, bench)
    if mul == "parallel":
        assert most == ice_c.fifo_depth, "the credits never ran out"


LOADER_OUTPUTS = [("w_we",), ("w_bank",), ("w_data",), ("banks", "full"), ("weights", "ready"), ("params", "ready"),
                  ("busy",)]


@pytest.mark.parametrize("rows", [4, 1])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loader_area_first_equals_generic(rows, seed):
    ice_c, ref_c = pair(rows, 2, 1)
    ice, ref = Loader(config=ice_c), Loader(config=ref_c)
    m = Module()
    m.submodules.ice, m.submodules.ref = ice, ref
    rng = random.Random(seed)
    cmds = commands(rng, ice_c, 6)

    async def bench(ctx):
        issue_bank, pending, started = 0, list(cmds), 0
        for t in range(20000):
            start = 0
            if pending and not ctx.get(ref.busy) and not ctx.get(ref.banks.full) and rng.random() < 0.3:
                cmd = command_layout(ice_c).const(pending.pop(0))
                set_both(ctx, (ice, ref), ("gemm", "new"), cmd)
                set_both(ctx, (ice, ref), ("gemm", "cmd"), cmd)
                start = 1
                started += 1
            set_both(ctx, (ice, ref), ("gemm", "start"), start)
            set_both(ctx, (ice, ref), ("weights", "valid"), int(rng.random() < 0.7))
            set_both(ctx, (ice, ref), ("weights", "payload"), [rng.randint(-128, 127) for _ in range(2)])
            set_both(ctx, (ice, ref), ("params", "valid"), int(rng.random() < 0.7))
            release = int((ctx.get(ref.banks.full) >> issue_bank) & 1 and rng.random() < 0.3)
            set_both(ctx, (ice, ref), ("banks", "release", "valid"), release)
            set_both(ctx, (ice, ref), ("banks", "release", "payload"), issue_bank)
            for path in LOADER_OUTPUTS:
                assert get(ctx, ice, path) == get(ctx, ref, path), (t, path)
            full_next = ctx.get(ice.banks.full_ahead) & ~(release << issue_bank)
            issue_bank ^= release
            await ctx.tick()
            assert ctx.get(ice.banks.full) == full_next, (t, "full_ahead is not the next full but for the release")
            if not pending and not ctx.get(ref.busy) and not ctx.get(ref.banks.full):
                break
        assert not pending and not ctx.get(ref.busy), "the commands did not finish"
        assert started == len(cmds)

    run_sim(m, bench)
