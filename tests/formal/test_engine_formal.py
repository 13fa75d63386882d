"""Formal proofs of the network engine's sequencer and address units (``qhw.formal.engine_harness``),
each with a mutant that must not be proven (``qhw.formal.mutate``), and ``qhw prove`` on a
``--top network`` manifest. Small memories: 5 program entries, 48 scratchpad words, 6 parameter
blocks (none a power of two, so an address one past the end is representable on the port).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from engine.conftest import Net, quantize

from qhw.cli import main
from qhw.engine.compiler import compile_model
from qhw.engine.config import EngineConfig
from qhw.engine.cycles import predict
from qhw.errors import ConfigError
from qhw.formal.engine_harness import (
    AddBoundHarness,
    EngineStreamRules,
    FetchHarness,
    FusedWriteHarness,
    InputBoundHarness,
    OutputBoundHarness,
    ParamBoundHarness,
    PoolBoundHarness,
    WeightBoundHarness,
)
from qhw.formal.engine_liveness import EngineLivenessHarness, liveness_program
from qhw.formal.mutate import mutant
from qhw.formal.sby import run_proof
from qhw.hw.config import ArrayConfig
from qhw.hw.engine import add_unit, fetch, input_unit, loader, output_unit, pool, pool_agen, wb_unit

ARRAY = ArrayConfig(rows=4, cols=4, max_k=4, acc_depth=4, rounding=("single",))
ENTRIES, WORDS, PARAM_BLOCKS = 5, 48, 6
WEIGHT_ROWS = 13             # weight-store rows (the weight mutants' store)


def prove(harness, tmp_path, name, mode="prove", depth=2):
    return run_proof(harness, name=name, ports=harness.ports, build_dir=tmp_path, mode=mode, depth=depth,
                     timeout=300)


def assert_caught(result, tmp_path):
    assert result.status == "failed", result        # a counterexample from reset
    assert result.trace == f"{result.name}.vcd"
    assert (tmp_path / result.trace).read_text().startswith("$")


# --------------------------------------------------------------------------- the sequencer


def test_sequencer_stays_in_the_program_and_terminates(tmp_path):
    r = prove(FetchHarness(entries=ENTRIES), tmp_path, "fetch")
    assert (r.status, r.trace) == ("proven", None)


def test_fetch_that_never_reaches_end_is_caught(tmp_path):
    # END is skipped like any other opcode: the pointer walks past the program into no memory.
    Broken = mutant(fetch.DescriptorFetch, 'with m.Elif(op == OPCODES["END"]):', "with m.Elif(0):")
    assert_caught(prove(FetchHarness(entries=ENTRIES, fetch=Broken), tmp_path, "fetch_no_end", "bmc", 14), tmp_path)


def test_fetch_next_bits_a_cycle_late_is_caught(tmp_path):
    # ``bits_nx`` the payload of this cycle: the engine's OUTPUT/ADD dependence flags would test the
    # previous descriptor in a new one's first offered cycle
    Broken = mutant(fetch.DescriptorFetch, "Mux(state == 1, self.r_data, self.desc.payload.bits)",
                    "self.desc.payload.bits")
    assert_caught(prove(FetchHarness(entries=ENTRIES, fetch=Broken), tmp_path, "fetch_nx_late", "bmc", 6), tmp_path)


# --------------------------------------------------------------------------- INPUT: writes


def test_input_writes_stay_in_the_scratchpad(tmp_path):
    r = prove(InputBoundHarness(words=WORDS), tmp_path, "input")
    assert (r.status, r.trace) == ("proven", None)


def test_input_word_past_the_tensor_is_caught(tmp_path):
    # The last word is not recognized: the unit writes one word past the tensor.
    Broken = mutant(input_unit.InputUnit, "last_word.eq(i_word + 2 == n_words)",
                    "last_word.eq(i_word + 1 == n_words)")
    assert_caught(prove(InputBoundHarness(words=WORDS, unit=Broken), tmp_path, "input_mutant", "bmc", 10), tmp_path)


def test_input_tensor_product_a_cycle_late_is_caught(tmp_path):
    # ``h*w`` at the accept from the registered descriptor (the previous one's) instead of the offered one:
    # the tensor's bytes ``h*w*c``, its beat and word counts are the previous tensor's.
    Broken = mutant(input_unit.InputUnit, "hw.eq(logic_mul(dp.h, dp.w))", "hw.eq(logic_mul(d.h, d.w))")
    assert_caught(prove(InputBoundHarness(words=WORDS, unit=Broken), tmp_path, "input_hw_late", "bmc", 6), tmp_path)


# --------------------------------------------------------------------------- OUTPUT: addresses, the o stream


def test_output_reads_stay_in_the_scratchpad_and_o_follows_the_stream_rule(tmp_path):
    r = prove(OutputBoundHarness(words=WORDS), tmp_path, "output")
    assert (r.status, r.trace) == ("proven", None)


def test_output_word_count_off_by_one_is_caught(tmp_path):
    Broken = mutant(output_unit.OutputUnit, "n_words_m1.eq(logic_mul(hw, d.pp) - 1)",
                    "n_words_m1.eq(logic_mul(hw, d.pp))")
    assert_caught(prove(OutputBoundHarness(words=WORDS, unit=Broken), tmp_path, "output_mutant", "bmc", 8), tmp_path)


def test_output_stream_dropped_valid_hold_is_caught(tmp_path):
    # The FIFO pops whether or not the host is ready: a waiting beat is replaced before it is taken.
    Broken = mutant(output_unit.OutputUnit, "fifo.r_en.eq(self.o.ready)", "fifo.r_en.eq(1)")
    assert_caught(prove(OutputBoundHarness(words=WORDS, unit=Broken), tmp_path, "o_stream_mutant", "bmc", 8), tmp_path)


def test_whole_engine_keeps_the_stream_rule_on_o(tmp_path):
    # The whole NetworkEngine (4x4, memories not powers of two): given load and i keep theirs, o keeps valid
    # and its payload until ready, from every reachable state (k-induction). The unit-level proof above and
    # its mutant cover the output unit; this one the top's wiring (its mutant, the same FIFO pop inside the
    # top, is in bench/bench_formal.py --only engine).
    cfg = EngineConfig(array=ARRAY, weight_kib=1, act_kib=1, program_words=5 * 16)
    assert (prove(EngineStreamRules(config=cfg), tmp_path, "engine_stream_rules").status) == "proven"


# --------------------------------------------------------------------------- ADD: reads and write addresses


def test_add_reads_and_writes_stay_in_the_scratchpad(tmp_path):
    r = prove(AddBoundHarness(words=WORDS), tmp_path, "add")
    assert (r.status, r.trace) == ("proven", None)


def test_add_word_past_the_tensors_is_caught(tmp_path):
    # The last word is not recognized: the unit reads a and b one word past their tensors.
    Broken = mutant(add_unit.AddUnit, "words_m1.eq(self.desc.payload.words - 1)",
                    "words_m1.eq(self.desc.payload.words)")
    assert_caught(prove(AddBoundHarness(words=WORDS, unit=Broken), tmp_path, "add_mutant", "bmc", 10), tmp_path)


# --------------------------------------------------------------------------- POOL with padding; the fused write path


def test_padded_pool_reads_stay_in_the_scratchpad(tmp_path):
    # A 2x2/1 window over a 1x1 input padded below and right, 2 channel words (the other padded geometries,
    # above/left and every side, are in bench/bench_formal.py --only engine).
    h = PoolBoundHarness(geometry="k2s1_pad_br", words=WORDS)
    r = prove(h, tmp_path, "pool_pad", "bmc", h.depth)
    assert (r.status, r.trace) == ("proven", None)


def test_pool_padding_row_read_as_input_is_caught(tmp_path):
    # The bottom padding row is taken for an input row: its taps read one pixel row past the tensor.
    Broken = mutant(pool_agen.PoolAgen, "(y < d.in_h)", "(y <= d.in_h)")
    h = PoolBoundHarness(geometry="k2s1_pad_br", words=WORDS, agen=Broken)
    assert_caught(prove(h, tmp_path, "pool_pad_mutant", "bmc", h.depth), tmp_path)


def fused(unit=None):
    return FusedWriteHarness(config=ARRAY, words=WORDS, unit=unit)


def test_fused_write_path_stays_in_the_scratchpad(tmp_path):
    # The write-back unit with its address generator cut (its proven bound assumed): every plain and fused
    # pool write, by k-induction.
    h = fused()
    r = run_proof(h, name="fused_write", ports=h.ports, build_dir=tmp_path, depth=2, timeout=300, script=h.script)
    assert (r.status, r.trace) == ("proven", None)


def test_fused_average_written_at_the_current_rows_address_is_caught(tmp_path):
    # The average's address delay line starts from the row arriving now instead of the window's register:
    # when no kept row is there, the address is anything.
    broken_pool = mutant(pool.FusedPool, 'a_addr = delayed(m, addr, c.requant_latency, name="avg_addr")',
                         'a_addr = delayed(m, self.addr, c.requant_latency, name="avg_addr")')
    broken = mutant(wb_unit.WritebackUnit, "m.submodules.pool = fp = FusedPool(",
                    "m.submodules.pool = fp = BrokenPool(", names={"BrokenPool": broken_pool})
    h = fused(broken)
    depth = ARRAY.requant_latency + 9           # a window's last row through the stages and the lanes
    r = run_proof(h, name="fused_write_mutant", ports=h.ports, build_dir=tmp_path, mode="bmc", depth=depth,
                  timeout=300, script=h.script)
    assert_caught(r, tmp_path)


# --------------------------------------------------------------------------- parameters


def test_parameter_reads_stay_in_the_store(tmp_path):
    r = prove(ParamBoundHarness(config=ARRAY, entries=PARAM_BLOCKS), tmp_path, "params")
    assert (r.status, r.trace) == ("proven", None)


def test_parameter_tile_counter_off_by_one_is_caught(tmp_path):
    # One N tile too many: the block after the descriptor's last is read.
    Broken = mutant(loader.ParamFetch, "n_more.eq(nt + 2 < n_tiles)", "n_more.eq(nt + 1 < n_tiles)")
    harness = ParamBoundHarness(config=ARRAY, entries=PARAM_BLOCKS, unit=Broken)
    assert_caught(prove(harness, tmp_path, "params_mutant", "bmc", 8), tmp_path)


# --------------------------------------------------------------------------- the whole engine: liveness in bounds


def test_liveness_program_is_what_the_compiler_writes(tmp_path):
    # A 1x1 Conv of one 4-channel pixel to 4 channels, compiled (seed 0): the same descriptors as
    # liveness_program but for the zero points and the parameter image (data), so the same cycle count.
    rng = np.random.default_rng(0)
    path = Net(rng, (1, 4, 1, 1)).conv(4, 1, relu=False).save(tmp_path / "conv1x1.onnx")
    qm = quantize(path, rng.uniform(-1, 1, (8, 4, 1, 1)).astype(np.float32))
    cfg = EngineConfig(array=ARRAY, weight_kib=1, act_kib=1, program_words=4 * 16)
    compiled, ours = compile_model(qm, cfg).program, liveness_program(cfg)
    data = {"zp", "in_zp"}
    assert [(d.op, {k: v for k, v in d.fields.items() if k not in data}) for d in compiled.descriptors] == \
        [(d.op, {k: v for k, v in d.fields.items() if k not in data}) for d in ours.descriptors]
    assert predict(compiled, cfg).total == predict(ours, cfg).total == 39


def test_liveness_refuses_memories_that_do_not_hold_its_program():
    with pytest.raises(ConfigError, match="program_words 48 < 64"):
        liveness_program(EngineConfig(array=ARRAY, weight_kib=1, act_kib=1, program_words=3 * 16))


def test_engine_liveness_busy_falls_exactly_when_the_cycle_model_says(tmp_path):
    # The whole NetworkEngine (4x4) from reset with the smallest MATMUL program embedded: the first input
    # beat by cycle 6, busy high until and low from predict(...).total + 1 cycles after it, whatever the
    # data (the datapath cut, docs/verification.md). Its mutants (an input unit a cycle late, an engine that
    # drops busy before its output left) are in bench/bench_formal.py --only engine (~45 s each).
    cfg = EngineConfig(array=ARRAY, weight_kib=1, act_kib=1, program_words=4 * 16)
    h = EngineLivenessHarness(config=cfg)
    assert h.bound == predict(h.program, cfg).total == 39
    r = run_proof(h, name="liveness", ports=h.ports, build_dir=tmp_path, mode="bmc", depth=h.depth, timeout=600,
                  script=h.script)
    assert (r.status, r.trace) == ("proven", None)


def test_engine_liveness_catches_an_engine_that_never_starts(tmp_path):
    # The cheapest of the liveness mutants (the others, ~45-85 s each, are in bench/bench_formal.py --only
    # liveness): an engine that never takes its first beat as the start of an inference (busy never
    # rises) fails the first-beat bound a few cycles after reset.
    from qhw.hw.engine import engine

    cfg = EngineConfig(array=ARRAY, weight_kib=1, act_kib=1, program_words=4 * 16)
    never = mutant(engine.NetworkEngine, "first_beat = self.i.valid & primed & inp.idle_ready & ~running",
                   "first_beat = self.i.valid & primed & inp.idle_ready & ~running & 0")
    h = EngineLivenessHarness(config=cfg, engine=never)
    r = run_proof(h, name="liveness_never_starts", ports=h.ports, build_dir=tmp_path, mode="bmc", depth=h.depth,
                  timeout=600, script=h.script)
    assert_caught(r, tmp_path)


# --------------------------------------------------------------------------- qhw prove on a network manifest


def test_qhw_prove_network_manifest(tmp_path, capsys):
    # The manifest qhw generate --top network writes (its Verilog is not needed to prove).
    cfg = EngineConfig(array=ARRAY, weight_kib=1, act_kib=1, program_words=5 * 16)
    doc = {**cfg.to_manifest(), "name": "net", "top": "network"}
    (tmp_path / "net.json").write_text(json.dumps(doc))
    code = main(["prove", "--rtl", str(tmp_path / "net.json"), "--property", "param_bounds", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["all_proven"] is True
    assert [(p["name"], p["component"], p["status"], p["mode"], p["depth"]) for p in out["properties"]] == [
        ("param_bounds", "ParamFetch", "proven", "prove", 2)]


def test_qhw_prove_refuses_an_accelerator_property_on_a_network_manifest(tmp_path, capsys):
    cfg = EngineConfig(array=ARRAY, weight_kib=1, act_kib=1, program_words=5 * 16)
    (tmp_path / "net.json").write_text(json.dumps({**cfg.to_manifest(), "name": "net", "top": "network"}))
    assert main(["prove", "--rtl", str(tmp_path / "net.json"), "--property", "credits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "credits" in err[0] and "sequencer" in err[0]


# --------------------------------------------------------------------------- weights: the tile walk's flags


def test_weight_reads_stay_in_the_store(tmp_path):
    h = WeightBoundHarness(config=ARRAY, rows_in_store=WEIGHT_ROWS)
    r = prove(h, tmp_path, "weights", "bmc", h.depth)
    assert (r.status, r.trace) == ("proven", None)


@pytest.mark.parametrize("old,new", [
    # the N-tile flag not taken from the descriptor at its accept: stale at a start in the next cycle
    ("n_more.eq(Mux(accept, dp.n_tiles > 1, nt + 1 < n_tiles))", "n_more.eq(nt + 1 < n_tiles)"),
    # the first K tile asks the K-tile flag (its count is not formed yet) instead of ``multi_k``
    ("with m.If(Mux(kt_zero, multi_k, k_more)):", "with m.If(k_more):")])
def test_weight_tile_flag_mutants_are_caught(tmp_path, old, new):
    Broken = mutant(loader.WeightLoader, old, new)
    h = WeightBoundHarness(config=ARRAY, rows_in_store=WEIGHT_ROWS, unit=Broken)
    assert_caught(prove(h, tmp_path, "weight_mutant", "bmc", h.depth), tmp_path)
