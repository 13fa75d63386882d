# amaranth: UnusedElaboratable=no
"""``MatmulIssue`` alone, in the Amaranth simulator: every descriptor's accept and every beat's read
(``r_en``) in the cycle the timing contract gives (docs/engine.md, "Timing contract"), for write,
weight-load and descriptor schedules chosen to land on the gate's edges: a write (``w_inc``) or a
counter clear (``w_clear``) in the accept's own cycle or in a tile step's, a load started in the
cycle before a tile's first read, a pooled MATMUL's result order, one-beat tiles (each read gated).

The reference (``expected``) is the contract, read from the recorded inputs, not the hardware's
registers: a descriptor is taken in the cycle it is offered, or with the previous one's last read;
a tile's first read comes at least ``AGEN_LATENCY`` after its descriptor's accept and after the
tile before, in the first cycle where ``wcount`` (writes done before it) reaches the plane's count
``dep_base + (nt*cw_step + cwi)*dep_step``, a weight load started in an earlier cycle (since the last
``restart``) is not yet used by an earlier tile, and, for the descriptor's first result-producing
tile, the previous result-producing read is ``pool_latency + 1`` cycles old; then one beat a cycle.
Random schedules state their seed.
"""

from __future__ import annotations

import random

import pytest
from amaranth_sim import run_sim

from qhw.engine.agen import k_tiles
from qhw.engine.config import EngineConfig
from qhw.engine.isa import POOL_AVG, POOL_MAX, POOL_NONE, Descriptor
from qhw.hw.config import ArrayConfig
from qhw.hw.engine.im2col import AGEN_LATENCY
from qhw.hw.engine.issue import MatmulIssue
from qhw.hw.engine.layouts import descriptor_const

CONFIG = ArrayConfig(rows=2, cols=2, rounding=("single",))


def matmul(*, oh=1, ow=2, kh=1, kw=1, kcw=1, n_tiles=1, cw_step=0, m_chunk=None, pool=POOL_NONE, dep_base=0,
           dep_step=0) -> Descriptor:
    """A ``kh`` x ``kw`` convolution (1x1 by default) to an ``oh`` x ``ow`` output (``M = oh*ow``), ``kcw``
    channel words (``kcw*kh*kw`` K tiles), ``n_tiles`` N tiles, each N tile's planes ``cw_step`` words on."""
    pp = (n_tiles - 1) * cw_step + kcw
    return Descriptor("MATMUL", dict(
        in_h=oh + kh - 1, in_w=ow + kw - 1, in_pp=pp, kh=kh, kw=kw, sh=1, sw=1, dh=1, dw=1, oh=oh, ow=ow, kcw=kcw,
        cw_step=cw_step, n_tiles=n_tiles, m_chunk=m_chunk or oh * ow, pool=pool, pkh=1, pkw=1,
        dep_base=dep_base, dep_step=dep_step))


def tiles(d: Descriptor):
    """(beats, plane's write count, last K tile) of each tile, in the generator's loop order."""
    m = d["oh"] * d["ow"]
    for m0 in range(0, m, d["m_chunk"]):
        for nt in range(d["n_tiles"]):
            for kt in range(k_tiles(d)):
                cwi = kt // (d["kh"] * d["kw"])
                yield (min(m, m0 + d["m_chunk"]) - m0, d["dep_base"] + (nt * d["cw_step"] + cwi) * d["dep_step"],
                       kt == k_tiles(d) - 1)


def pool_latency(d: Descriptor) -> int:
    cfg = EngineConfig(array=CONFIG)
    return {POOL_MAX: cfg.pool_max_latency, POOL_AVG: cfg.pool_avg_latency}.get(d["pool"], 0)


def expected(descs, rec):
    """The contract's accept cycles and read cycles (one list per descriptor) for the recorded inputs
    ``rec``: ``offered`` (each descriptor's first valid cycle), ``wcount``, ``load``, ``restart`` per
    cycle."""
    wcount, load, restart = rec["wcount"], rec["load"], rec["restart"]
    horizon = len(wcount)
    finished = []                   # cycles of tiles' last reads

    def outstanding(t):             # loads started in (last restart, t) not yet used by a tile
        r = max([c for c in range(t) if restart[c]], default=-1)
        return sum(load[r + 1:t]) - sum(1 for c in finished if r < c < t)

    accepts, reads = [], []
    last_read, last_result, last_lat = None, None, 0
    for i, d in enumerate(descs):
        a = rec["offered"][i] if last_read is None else max(rec["offered"][i], last_read)
        accepts.append(a)
        t, produced, mine = a + AGEN_LATENCY, False, []
        for n, need, last_k in tiles(d):
            while True:
                if t >= horizon:
                    return accepts, reads + [mine]
                order = (produced or not last_k or last_result is None or any(restart[last_result:t])
                         or t >= last_result + last_lat + 1)
                if wcount[t] >= need and outstanding(t) > 0 and order:
                    break
                t += 1
            mine += range(t, t + n)
            finished.append(t + n - 1)
            if last_k:
                produced, last_result, last_lat = True, t + n - 1, pool_latency(d)
            t += n
        last_read = t - 1
        reads.append(mine)
    return accepts, reads


def run_issue(descs, *, seed=0, settled=True, writes=0.3, loads=0.5, offers=None, clears=(), restarts=None,
              wcount0=0, cycles=None, unit=None):
    """Drives ``MatmulIssue`` with ``descs`` and returns (recorded inputs, accept cycles, read cycles
    per descriptor). ``writes``, ``loads``: sets of cycles, or a probability per cycle (``random.Random(
    seed)``; a load only while fewer than 2 are unused, as the engine's loader); ``offers``: each
    descriptor's earliest valid cycle (default: as soon as it may be, a cycle after its payload
    appears, the cycle after the previous accept: ``settled`` needs the payload a cycle early);
    ``clears``: cycles of ``w_clear``; ``restarts``: of ``restart`` (default ``clears``: the engine's ``done``
    is both); ``unit``: the class to build (a mutant)."""
    restarts = clears if restarts is None else restarts
    dut = (MatmulIssue if unit is None else unit)(config=CONFIG, settled=settled)
    rng = random.Random(seed)
    beats = sum(n for d in descs for n, _, _ in tiles(d))
    tile_ends = []
    for d in descs:
        for n, _, _ in tiles(d):
            tile_ends.append((tile_ends[-1] if tile_ends else 0) + n)
    cycles = cycles or 40 * beats + 200
    rec = {"wcount": [], "load": [], "restart": [], "offered": []}
    accepts, flat = [], []

    async def bench(ctx):
        wcount, nread, nloads, i = wcount0, 0, 0, 0
        shown = 0                       # cycle the pending descriptor's payload appeared
        for t in range(cycles):
            clear = t in clears
            w = rng.random() < writes if isinstance(writes, float) else t in writes
            if isinstance(loads, float):    # the loader keeps at most two loads ahead of the tiles
                ld = nloads - sum(1 for e in tile_ends if e <= nread) < 2 and rng.random() < loads
            else:
                ld = t in loads
            nloads += ld
            valid = False
            if i < len(descs):
                ctx.set(dut.desc.payload.d, descriptor_const(descs[i]))
                ctx.set(dut.desc.payload.index, i)
                earliest = offers[i] if offers is not None else 0
                valid = t >= max(earliest, shown + (1 if settled else 0))
                if valid and len(rec["offered"]) == i:
                    rec["offered"].append(t)
            ctx.set(dut.desc.valid, valid)
            ctx.set(dut.wcount, wcount)
            ctx.set(dut.w_inc, w)
            ctx.set(dut.w_clear, clear)
            ctx.set(dut.wcount_nx, 0 if clear else wcount + w)     # formed by the counter's owner
            ctx.set(dut.restart, t in restarts)
            ctx.set(dut.load_start, ld)
            rec["wcount"].append(wcount)
            rec["load"].append(int(ld))
            rec["restart"].append(int(t in restarts))
            _, _, ready, r_en = await ctx.tick().sample(dut.desc.ready, dut.r_en)
            if valid and ready:
                accepts.append(t)
                i, shown = i + 1, t + 1
            if r_en:
                flat.append(t)
                nread += 1
            wcount = 0 if clear else wcount + w
            if nread == beats:
                break
        rec["wcount"].append(wcount)            # the cycle after the last read
        rec["load"].append(0)
        rec["restart"].append(0)

    run_sim(dut, bench)
    reads, k = [], 0
    for d in descs:             # the reads of each descriptor, in order
        n = sum(n for n, _, _ in tiles(d))
        reads.append(flat[k:k + n])
        k += n
    return rec, accepts, reads


def check(descs, **kw):
    rec, accepts, reads = run_issue(descs, **kw)
    want_accepts, want_reads = expected(descs, rec)
    assert (accepts, reads) == (want_accepts, want_reads)
    return accepts, reads


@pytest.mark.parametrize("settled", [True, False])
@pytest.mark.parametrize("write_at", [(-2,), (-1,), (0,), (1,), (2,), (-1, 0), (0, 1), (0, 2)],
                         ids=lambda w: ",".join(map(str, w)))
def test_first_read_follows_writes_around_the_accept(settled, write_at):
    """The writes a MATMUL's first tile waits for (``dep_base`` = 4 + their number, ``wcount`` 4 before
    them) land ``write_at`` cycles from the accept (cycle 6, weights loaded at 2): the first read is in
    the cycle after the last of them, and at the generator's first beat (``AGEN_LATENCY``) when that
    is in the accept cycle or before. The accept's dependence test counts the write of its own cycle
    (``base_ge1``: (0,), (-1, 0)), and no write that is not there ((1,), (0, 1), (0, 2): ``base_ge0``, and
    ``base_ge1`` one write short)."""
    accept = 6
    d = matmul(dep_base=4 + len(write_at))
    accepts, reads = check([d], writes={accept + w for w in write_at}, loads={2}, offers=[accept], wcount0=4,
                           settled=settled)
    assert accepts == [accept]
    assert reads[0][0] == max(accept + AGEN_LATENCY, accept + max(write_at) + 1)


@pytest.mark.parametrize("settled", [True, False])
@pytest.mark.parametrize("dep_base", [0, 1])
def test_counter_cleared_in_the_accept_cycle(settled, dep_base):
    """``w_clear`` with ``restart`` (the engine's ``done``) in the accept's cycle: the count is 0 next
    cycle, so a descriptor with ``dep_base`` 0 may read once a weight load starts after the restart,
    one with ``dep_base`` 1 waits for the next write, whatever the count was before (12)."""
    accept = 4
    d = matmul(dep_base=dep_base)
    accepts, reads = check([d], writes={9}, loads={1, accept + 1}, offers=[accept], clears={accept}, wcount0=12,
                           settled=settled)
    assert reads[0][0] == (accept + 2 if dep_base == 0 else 10)


@pytest.mark.parametrize("settled", [True, False])
@pytest.mark.parametrize("dep_base", [0, 1])
@pytest.mark.parametrize("at", ["accept", "step"])
def test_counter_cleared_alone(settled, dep_base, at):
    """``w_clear`` without ``restart`` (the unit's ports allow it; the engine pairs them, and the restart's
    cleared load count then holds the first tile back whatever the dependence test says), in the accept's
    cycle or in the first tile's last read (the step): the dependence counts from 0 (``base_zero``, and
    ``dep_next``'s clear case), so a plane at count 0 goes on and one at 1 waits for the next write (12)."""
    d = matmul(ow=2, kcw=2, dep_base=dep_base, dep_step=0)
    clear = 4 if at == "accept" else 6
    accepts, reads = check([d], writes={11}, loads={1, 2}, offers=[4], clears={clear}, restarts=(), wcount0=9,
                           settled=settled)
    first = [5, 6] if at == "accept" and dep_base == 0 else [12, 13] if at == "accept" else [5, 6]
    assert reads[0][:2] == first
    assert reads[0][2] == (first[1] + 1 if dep_base == 0 else max(first[1] + 1, 12))


@pytest.mark.parametrize("settled", [True, False])
def test_step_counts_a_write_in_its_cycle(settled):
    """Two K tiles on planes 3 writes apart (``dep_step``): the second tile waits for write 3 + 3
    after the first tile's handshake; with that write in the cycle of the first tile's last read
    (the step), the second tile's first read is the next cycle."""
    d = matmul(ow=2, kcw=2, dep_base=3, dep_step=3)
    # wcount 3 from the start: the first tile reads at 2 and 3; writes at 1, 2, 3 make it 6 at cycle 4
    accepts, reads = check([d], writes={1, 2, 3}, loads={0, 1}, offers=[1], wcount0=3, settled=settled)
    assert reads == [[2, 3, 4, 5]]


@pytest.mark.parametrize("pool", [POOL_NONE, POOL_MAX, POOL_AVG])
def test_results_stay_in_order_after_a_pooled_matmul(pool):
    """A MATMUL with a fused pool, then one whose first tile produces results (one K tile), taken with
    the first's last read: its first read waits ``pool_latency + 1`` cycles after the previous result
    read; a one-beat, single-K-tile first descriptor makes every one of its reads a gated tile start."""
    first = matmul(ow=1, n_tiles=3, pool=pool)
    nxt = matmul(ow=2)
    accepts, reads = check([first, nxt], writes=0.0, loads=1.0)
    assert reads[1][0] == reads[0][-1] + pool_latency(first) + 1


SCHEDULES = [  # (seed, descriptors, write probability, load probability)
    (1, [matmul(ow=1, kcw=2, n_tiles=2, dep_base=2, dep_step=1), matmul(ow=1, pool=POOL_MAX, dep_base=6)], 0.3, 0.5),
    (2, [matmul(ow=3, kcw=2, n_tiles=2, cw_step=2, dep_base=1, dep_step=2, pool=POOL_AVG),
         matmul(ow=1, n_tiles=2, dep_base=9), matmul(ow=2, kcw=3, dep_base=12, dep_step=1)], 0.4, 0.7),
    (3, [matmul(oh=2, ow=2, m_chunk=3, kcw=2, n_tiles=2, dep_base=4, dep_step=2, pool=POOL_MAX),
         matmul(ow=1, kcw=1, n_tiles=4, cw_step=1, dep_base=8, dep_step=1), matmul(ow=1, dep_base=3)], 0.5, 0.4),
    (4, [matmul(ow=1, n_tiles=2, pool=POOL_AVG), matmul(ow=1, kcw=2, dep_base=1, dep_step=1),
         matmul(ow=1, n_tiles=3, pool=POOL_MAX, dep_base=2), matmul(ow=1)], 0.6, 0.9),
]


@pytest.mark.parametrize("settled", [True, False])
@pytest.mark.parametrize("seed,descs,p_write,p_load", SCHEDULES, ids=[f"seed{s[0]}" for s in SCHEDULES])
def test_random_schedules(seed, descs, p_write, p_load, settled):
    """Random writes and loads (``random.Random(seed)``), descriptors offered as soon as they may be:
    every accept and read where the contract puts it."""
    check(descs, seed=seed, writes=p_write, loads=p_load, settled=settled)


# one-beat tiles over kernel taps and channel words: every tile's first (only) read is gated, and a step
# past a tile is followed by the next tile's step in the next cycle when its plane is written
TAP_DESCS = [matmul(ow=1, kh=2, kw=2, kcw=3, n_tiles=2, cw_step=3, dep_base=1, dep_step=1),
             matmul(ow=1, kh=1, kw=3, kcw=2, dep_base=8, dep_step=2), matmul(ow=1, kcw=4, n_tiles=2, cw_step=4,
                                                                             dep_base=10, dep_step=1),
             matmul(ow=1, kh=2, kw=1, dep_base=12)]


@pytest.mark.parametrize("settled", [True, False])
@pytest.mark.parametrize("seed,p_write", [(5, 0.3), (6, 0.7)])
def test_one_beat_tiles_over_taps_and_channel_words(seed, p_write, settled):
    """Each K tile's plane is its channel word's (``dep_base + (nt*cw_step + cwi)*dep_step``), so the
    tap and channel-word loops decide which count a tile waits for; random writes
    (``random.Random(seed)``), loads as soon as allowed."""
    check(TAP_DESCS, seed=seed, writes=p_write, loads=1.0, settled=settled)


@pytest.mark.parametrize("old,new", [("tap_more.eq(tap_more_nx)", "tap_more.eq(tap + 1 < taps_k)"),
                                     ("cwi_more.eq(cwi_more_nx)", "cwi_more.eq(cwi + 1 < kcw_k)")],
                         ids=["tap_more", "cwi_more"])
def test_loop_flag_a_cycle_late_is_caught(old, new):
    """The tap or channel-word loop's flag registered from this cycle's values (its test a cycle late,
    as the loader's ``k_more`` may be): a one-beat tile after a tile step reads the old test, walks to
    the wrong plane, and waits for the wrong write count."""
    from qhw.formal.mutate import mutant
    from qhw.hw.engine import issue

    broken = mutant(issue.MatmulIssue, old, new)
    with pytest.raises(AssertionError):
        for seed, p_write in ((5, 0.3), (6, 0.7)):
            check(TAP_DESCS, seed=seed, writes=p_write, loads=1.0, unit=broken)
