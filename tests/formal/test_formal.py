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

from qhw.cli import main
from qhw.formal.harness import BankHarness, CreditHarness, LaneHarness, ResultCountHarness, StreamRules
from qhw.formal.mutate import mutant
from qhw.formal.properties import LANE_M0_BITS, PROPERTIES
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
    Broken = mutant(issuer.Issuer, "may_produce.eq(outstanding < c.fifo_depth)",
                    "may_produce.eq(outstanding <= c.fifo_depth)")
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
    Broken = mutant(loader.Loader, "bank_free = run & ~full.bit_select(bank, 1) & (drain[bank] == 0)",
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
    ("last_row.eq(rows_left == 1)", "last_row.eq(rows_left == 0)"),   # M + 1 beats per tile: a row repeated
    ("with m.If(last_n):", "with m.If(1):"),                          # stops after one N tile: rows dropped
], ids=["row-repeated", "tile-dropped"])
def test_result_count_mutants_are_caught_from_reset(tmp_path, old, new):
    r = count_proof(tmp_path, "count_mutant", mutant(issuer.Issuer, old, new))
    assert r.status == "failed", r
    assert_not_proven(r, tmp_path)


# --------------------------------------------------------------------------- requantization lane


def lane_depth():
    return CONFIG.requant_latency + 2


def test_requant_lane_equals_contract(tmp_path):
    r = prove(LaneHarness(config=CONFIG, m0_bits=LANE_M0_BITS), tmp_path, "lane", depth=lane_depth())
    assert (r.status, r.trace) == ("proven", None)


def test_lane_rounding_constant_mutant_is_caught(tmp_path):
    # single's rounding constant 2**(31 - shift) instead of 2**(30 - shift): rounds at the wrong bit.
    Broken = mutant(requant.RequantLane, "addend = Const(1, 62) << (30 - shift3)",
                    "addend = Const(1, 62) << (31 - shift3)")
    r = prove(LaneHarness(config=CONFIG, lane=Broken, m0_bits=LANE_M0_BITS), tmp_path, "lane_mutant",
              depth=lane_depth())
    assert r.status == "failed", r
    assert_not_proven(r, tmp_path)


def test_mutant_edit_must_match_once():
    from qhw.errors import ConfigError

    with pytest.raises(ConfigError, match="occurs 0 times"):
        mutant(issuer.Issuer, "no such text", "x")


# --------------------------------------------------------------------------- qhw prove


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
