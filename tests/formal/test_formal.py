"""Formal proofs of the accelerator's components (SymbiYosys + Yices from PyPI), each with a mutant.

Every property is proven on a small configuration (2x2, 4-bit elements, ``single`` rounding) and
must stop being proven on a deliberately broken copy of its component (``qhw.formal.mutate``):
a proof that cannot fail proves nothing. A mutant whose counterexample needs more cycles than the
base case looks at fails the induction step instead; either way it is not "proven" and a trace
(VCD) is kept and named.
"""

from __future__ import annotations

import json

import pytest
from amaranth_sim import run_sim

from qhw.cli import main
from qhw.formal.board_harness import accel_board_rules
from qhw.formal.harness import (
    BankHarness,
    CreditHarness,
    Im2colBoundHarness,
    LaneHarness,
    LivenessHarness,
    ResultCountHarness,
    StreamRules,
    lane_reference,
    lane_reference_tflite,
)
from qhw.formal.mutate import mutant
from qhw.formal.properties import LANE_M0_FREE, PROPERTIES, liveness_shapes
from qhw.formal.sby import run_proof
from qhw.hw import accel, issuer, loader, output_queue, requant
from qhw.hw.config import ArrayConfig

CONFIG = ArrayConfig(rows=2, cols=2, act_bits=4, weight_bits=4, max_k=4, acc_depth=4, rounding=("single",))


def prove(harness, tmp_path, name, depth=2):
    return run_proof(harness, name=name, ports=harness.ports, build_dir=tmp_path, depth=depth, timeout=240)


def assert_not_proven(result, tmp_path):
    assert result.status in ("failed", "unknown"), result
    assert result.trace == f"{result.name}.vcd"
    assert (tmp_path / result.trace).read_text().startswith("$")      # a VCD header


# --------------------------------------------------------------------------- stream rules


def test_accelerator_out_stream_rules_proven(tmp_path):
    r = prove(StreamRules(accel.Accelerator(config=CONFIG)), tmp_path, "stream")
    assert (r.status, r.trace) == ("proven", None)


def test_out_stream_mutant_not_waiting_for_ready_is_caught(tmp_path):
    # The top stops waiting for the consumer: rows leave the queue whether or not out.ready.
    Broken = mutant(accel.Accelerator, "wiring.connect(m, queue.o, wiring.flipped(self.out))",
                    "m.d.comb += [self.out.valid.eq(queue.o.valid), self.out.payload.eq(queue.o.payload), "
                    "queue.o.ready.eq(1)]")
    assert_not_proven(prove(StreamRules(Broken(config=CONFIG)), tmp_path, "stream_mutant"), tmp_path)


def test_queue_mutant_reading_without_ready_is_caught_from_reset(tmp_path):
    # The output queue pops on every cycle: a row waiting on `o` is replaced before it is taken.
    Broken = mutant(output_queue.OutputQueue, "read.eq((wp != rp) & (~self.o.valid | self.o.ready))",
                    "read.eq(wp != rp)")
    r = prove(StreamRules(Broken(config=CONFIG)), tmp_path, "queue_mutant", depth=6)
    assert r.status == "failed", r       # a real trace from reset, within 6 cycles
    assert_not_proven(r, tmp_path)


# --------------------------------------------------------------------------- credits


def test_credits_proven(tmp_path):
    r = prove(CreditHarness(config=CONFIG), tmp_path, "credits")
    assert (r.status, r.trace) == ("proven", None)


def test_credit_check_off_by_one_is_caught(tmp_path):
    # (The issuer's look-ahead form, which CONFIG builds: ``outstanding < fifo_depth`` when no row
    # is pushed or taken, as ``~above(outstanding, fifo_depth - 1)``.)
    Broken = mutant(issuer.Issuer, "above(outstanding, c.fifo_depth), above(outstanding, c.fifo_depth - 1))",
                    "above(outstanding, c.fifo_depth), above(outstanding, c.fifo_depth))")
    assert_not_proven(prove(CreditHarness(config=CONFIG, issuer=Broken), tmp_path, "credits_mutant"), tmp_path)


def test_credit_return_removed_is_caught(tmp_path):
    # The queue never reports a row taken: credits leak and the counter no longer matches the rows.
    Broken = mutant(output_queue.OutputQueue, "self.taken.eq(self.o.valid & self.o.ready)", "self.taken.eq(0)")
    assert_not_proven(prove(CreditHarness(config=CONFIG, queue=Broken), tmp_path, "taken_mutant"), tmp_path)


# --------------------------------------------------------------------------- double buffering


def test_double_buffering_proven(tmp_path):
    r = prove(BankHarness(config=CONFIG), tmp_path, "banks", depth=3)
    assert (r.status, r.trace) == ("proven", None)


def test_loader_ignoring_the_drain_is_caught_from_reset(tmp_path):
    # The loader refills a released bank at once, while its last wavefront is still in the array.
    Broken = mutant(loader.Loader, "bank_free = run & ~full.bit_select(bank, 1) & drained.bit_select(bank, 1)",
                    "bank_free = run & ~full.bit_select(bank, 1)")
    harness = BankHarness(config=CONFIG, loader=Broken)
    r = run_proof(harness, name="banks_mutant", ports=harness.ports, build_dir=tmp_path, mode="bmc", depth=12)
    assert r.status == "failed", r      # reached from reset: load both banks, run a tile, refill
    assert_not_proven(r, tmp_path)


# --------------------------------------------------------------------------- result count (bounded)


def count_proof(tmp_path, name, issuer_cls=issuer.Issuer):
    harness = ResultCountHarness(config=CONFIG, issuer=issuer_cls)
    depth = next(p for p in PROPERTIES if p.name == "result_count").min_depth(CONFIG)
    return run_proof(harness, name=name, ports=harness.ports, build_dir=tmp_path, mode="bmc", depth=depth)


def test_result_count_holds(tmp_path):
    r = count_proof(tmp_path, "count")
    assert (r.status, r.trace) == ("proven", None)


@pytest.mark.parametrize(("old", "new"), [
    ("(last_row, rows_left == 1)", "(last_row, rows_left == 0)"),     # M + 1 beats: a row repeated
    ("end = end_k & last_n", "end = end_k"),                          # stops after one N tile: rows dropped
], ids=["row-repeated", "tile-dropped"])
def test_result_count_mutants_are_caught_from_reset(tmp_path, old, new):
    r = count_proof(tmp_path, "count_mutant", mutant(issuer.Issuer, old, new))
    assert r.status == "failed", r
    assert_not_proven(r, tmp_path)


# --------------------------------------------------------------------------- requantization lane


def lane_depth():
    return CONFIG.requant_latency + 2


def test_requant_lane_equals_contract(tmp_path):
    # 18-40 s on a lightly loaded machine, 150-260 s at load average 16-30: a timeout ("unknown")
    # must not stand for a slow machine, so this one gets a generous limit.
    harness = LaneHarness(config=CONFIG, m0_free=LANE_M0_FREE)
    r = run_proof(harness, name="lane", ports=harness.ports, build_dir=tmp_path, depth=lane_depth(), timeout=900)
    assert (r.status, r.trace) == ("proven", None)


@pytest.mark.parametrize(("old", "new"), [
    # single's rounding constant 2**(31 - shift) instead of 2**(30 - shift): rounds at the wrong bit.
    ("(30 - shift).as_unsigned()[:6], 3", "(31 - shift).as_unsigned()[:6], 3"),
    # 2**(30 - shift) - 1: ties round down instead of up (round-half-down).
    ("(Const(1, 62) << round_at)[:64]", "((Const(1, 62) << round_at) - 1)[:64]"),
    # the clamp lets qmax + 1 through (off by one; single alone decides the compare beside ``r``).
    ("gt.eq(low > d_max)", "gt.eq(low > d_max + 1)"),
], ids=["rounding-bit", "round-half-down", "clamp-off-by-one"])
def test_lane_mutants_are_caught_from_reset(tmp_path, old, new):
    Broken = mutant(requant.RequantLane, old, new)
    harness = LaneHarness(config=CONFIG, lane=Broken, m0_free=LANE_M0_FREE)
    r = run_proof(harness, name="lane_mutant", ports=harness.ports, build_dir=tmp_path, mode="bmc",
                  depth=lane_depth(), timeout=240)
    assert r.status == "failed", r
    assert_not_proven(r, tmp_path)


def test_lane_references_equal_the_contract():
    # The proof's references are Amaranth expressions; evaluated here on random and corner values
    # (seed 12) they must give qhw.arith's results, or the proof would check the lane against the wrong rule.
    import numpy as np
    from amaranth.hdl import Module, Signal, signed, unsigned

    from qhw.arith import Requant

    rng = np.random.default_rng(12)
    n = 600
    acc = rng.integers(-(1 << 17), 1 << 17, n)
    bias = np.where(np.arange(n) % 3 == 0, rng.integers(-1000, 1000, n), rng.integers(-(1 << 31), 1 << 31, n))
    m0 = np.where(np.arange(n) % 5 == 0, rng.integers(0, 4, n), rng.integers(0, 1 << 31, n))
    m0[1::7] = 1 << 30
    shift = np.where(np.arange(n) % 3 == 0, rng.integers(-12, 1, n), rng.integers(-31, 31, n))
    sigs = dict(acc=Signal(signed(18)), bias=Signal(signed(32)), m0=Signal(unsigned(31)), shift=Signal(signed(6)))
    zp, qmin, qmax = 3, -128, 127
    outs = {"single": Signal(signed(10)), "tflite": Signal(signed(10))}
    m = Module()
    args = (sigs["acc"], sigs["bias"], sigs["m0"], sigs["shift"], zp, qmin, qmax)
    m.d.comb += [outs["single"].eq(lane_reference(*args)), outs["tflite"].eq(lane_reference_tflite(*args))]
    got = {mode: [] for mode in outs}

    async def bench(ctx):
        for i in range(n):
            for key, values in (("acc", acc), ("bias", bias), ("m0", m0), ("shift", shift)):
                ctx.set(sigs[key], int(values[i]))
            for mode in outs:
                got[mode].append(ctx.get(outs[mode]))

    run_sim(m, bench, clock=False)
    for mode in outs:
        want = [int(Requant(mode=mode, multiplier=np.array([m0[i]]), shift=np.array([shift[i]]),
                            scale=np.array([1.0], np.float32), zero_point=zp, qmin=qmin, qmax=qmax)
                    .apply(np.array([acc[i] + bias[i]]))[0]) for i in range(n)]
        assert got[mode] == want, mode
    assert got["single"] != got["tflite"]       # the two rules differ on these values: both are exercised


# --------------------------------------------------------------------------- liveness in bounds (bounded)


def liveness(tmp_path, name, accelerator=None):
    m, k, n = liveness_shapes(CONFIG)["tile"]
    harness = LivenessHarness(config=CONFIG, m=m, k=k, n=n, accelerator=accelerator)
    return run_proof(harness, name=name, ports=harness.ports, build_dir=tmp_path, mode="bmc", depth=harness.depth,
                     timeout=240)


def test_liveness_one_tile_within_cycle_model(tmp_path):
    r = liveness(tmp_path, "liveness")
    assert (r.status, r.trace) == ("proven", None)


def test_liveness_mutant_issuer_one_cycle_late_is_caught(tmp_path):
    # The issuer sees a filled bank one cycle late: every tile starts a cycle after the model says.
    late = mutant(issuer.Issuer, "m.d.comb += self.act.ready.eq(gate & full.bit_select(bank, 1)",
                  "full_late = Signal.like(full)\n            m.d.sync += full_late.eq(full)\n"
                  "            m.d.comb += self.act.ready.eq(gate & (full & full_late).bit_select(bank, 1)")
    Broken = mutant(accel.Accelerator, "m.submodules.issuer = issuer = Issuer(config=c)",
                    "m.submodules.issuer = issuer = LateIssuer(config=c)", {"LateIssuer": late})
    r = liveness(tmp_path, "liveness_mutant", Broken)
    assert r.status == "failed", r
    assert_not_proven(r, tmp_path)


def test_liveness_refuses_shapes_the_model_does_not_time():
    from qhw.errors import ConfigError

    with pytest.raises(ConfigError, match="min_m_for_full_rate"):
        LivenessHarness(config=CONFIG, m=1, k=CONFIG.rows, n=2 * CONFIG.cols)


# --------------------------------------------------------------------------- engine: im2col address bound


def im2col_bound(tmp_path, name, agen=None):
    # A dilated 2x2 kernel whose last tap is the input's last pixel: with the input at the end of the
    # scratchpad, a word past the tensor is past the scratchpad within the first few beats.
    harness = Im2colBoundHarness(geometry="conv2x2_d2", agen=agen)
    return run_proof(harness, name=name, ports=harness.ports, build_dir=tmp_path, mode="bmc", depth=IM2COL_DEPTH,
                     timeout=240)


IM2COL_DEPTH = 10


def test_im2col_words_stay_in_the_scratchpad(tmp_path):
    r = im2col_bound(tmp_path, "im2col")
    assert (r.status, r.trace) == ("proven", None)


def test_im2col_mutant_first_channel_word_off_by_one_is_caught(tmp_path):
    from qhw.hw.engine import im2col

    Broken = mutant(im2col.Im2colAgen, "base0 = dp.in_base + Mux(win, 0, dp.in_cw0)",
                    "base0 = dp.in_base + Mux(win, 0, dp.in_cw0 + 1)")
    r = im2col_bound(tmp_path, "im2col_mutant", Broken)
    assert r.status == "failed", r
    assert_not_proven(r, tmp_path)


def test_mutant_edit_must_match_once():
    from qhw.errors import ConfigError

    with pytest.raises(ConfigError, match="occurs 0 times"):
        mutant(issuer.Issuer, "no such text", "x")


# --------------------------------------------------------------------------- qhw prove


def test_board_top_internal_streams_follow_the_rule(tmp_path):
    # The GEMM board top (link + accelerator, 2x2): the link's frames and the four streams it routes into the
    # accelerator, and out, keep valid and payload until ready, by k-induction. Its mutant (the link dropping
    # a frame before it is taken) fails from reset in bench/bench_formal.py --only board.
    h = accel_board_rules(CONFIG)
    r = run_proof(h, name="board", ports=h.ports, build_dir=tmp_path, depth=2, timeout=300, script=h.script)
    assert (r.status, r.trace) == ("proven", None)


def test_qhw_prove_json(tmp_path, capsys):
    assert main(["generate", "--rows", "2", "--cols", "2", "--act-bits", "4", "--weight-bits", "4", "--max-k", "4",
                 "--acc-depth", "4", "--rounding", "single", "--name", "small", "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    code = main(["prove", "--rtl", str(tmp_path / "small.json"), "--property", "credits",
                 "--property", "stream_rules", "--jobs", "2", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["all_proven"] is True
    assert [(p["name"], p["component"], p["status"], p["mode"], p["depth"]) for p in doc["properties"]] == [
        ("stream_rules", "Accelerator", "proven", "prove", 2), ("credits", "Issuer+OutputQueue", "proven", "prove", 2)]
    assert all(p["seconds"] > 0 for p in doc["properties"])


def test_qhw_prove_missing_manifest_is_one_line(tmp_path, capsys):
    assert main(["prove", "--rtl", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json" in err[0]
