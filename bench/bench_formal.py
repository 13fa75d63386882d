"""The long formal runs that are not in CI: the requantization lane at full M0 width and on int8
lanes, the im2col address bound of the engine's address generator (each geometry, and its mutant),
and the network engine's long ones (the stream rule on the whole top, the weight loader's bound, the
sequencer on the default program store, the whole engine's liveness in bounds, the padded POOL
geometries and the fused write path; each with its mutant), and the board tops' internal streams.

    python bench/bench_formal.py [--only lane|im2col|engine|liveness|board] [--timeout SECONDS]
                                  [--im2col-depth N] [--build DIR]

One line per run: property, configuration, mode, depth, status, seconds (``bench/results.md``,
"Formal proofs"). The accelerator's own property set runs through ``qhw prove`` instead.
Exit status 1 if a run that must be proven is ``failed`` or a mutant is ``proven``.
"""

from __future__ import annotations

import argparse
import sys

from qhw.engine.config import DEFAULT_PROGRAM_WORDS, EngineConfig
from qhw.engine.isa import DESCRIPTOR_WORDS
from qhw.formal.board_harness import accel_board_rules, network_board_rules
from qhw.formal.engine_harness import (
    POOL_GEOMETRIES,
    WRITEBACK_GEOMETRIES,
    EngineStreamRules,
    FetchHarness,
    FusedWriteHarness,
    PoolBoundHarness,
    WeightBoundHarness,
    WritebackBoundHarness,
)
from qhw.formal.engine_liveness import EngineLivenessHarness, liveness_program
from qhw.formal.harness import IM2COL_GEOMETRIES, Im2colBoundHarness, LaneHarness
from qhw.formal.mutate import mutant
from qhw.formal.properties import LANE_M0_FREE
from qhw.formal.sby import run_proof
from qhw.fpga import board_top, link, network_top
from qhw.fpga.payload import DEFAULT_FRAME_BYTES
from qhw.hw.config import ArrayConfig
from qhw.hw.engine import engine, fetch, im2col, input_unit, loader, output_unit, pool, pool_agen, wb_unit, writeback

# The im2col mutants (geometry, depth, edit): the first N tile's channel word one too far; the pad
# check letting row in_h through (one row past the input: reached at beat ~26 of that geometry).
IM2COL_MUTANTS = {
    "cw0": ("conv2x2_d2", None, ("base0 = dp.in_base + Mux(win, 0, dp.in_cw0)",
                                  "base0 = dp.in_base + Mux(win, 0, dp.in_cw0 + 1)")),
    "pad": ("conv3x3_s2_pad", 30, ("(y < d.in_h)", "(y <= d.in_h)")),
}


def _run(name, harness, *, mode, depth, build, timeout, must):
    r = run_proof(harness, name=name, ports=harness.ports, build_dir=build, mode=mode, depth=depth, timeout=timeout,
                  script=getattr(harness, "script", ()))
    print(f"{name:<44} {mode:<5} {depth:>5} {r.status:<8} {r.seconds:>8.1f}", flush=True)
    return r.status != "failed" if must == "proven" else r.status != "proven"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("lane", "im2col", "engine", "liveness", "board"))
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--im2col-depth", type=int, default=12)
    p.add_argument("--build", default="sim_build/formal_bench")
    args = p.parse_args()
    ok = True
    kw = dict(build=args.build, timeout=args.timeout)
    if args.only in (None, "lane"):
        small = ArrayConfig(rows=2, cols=2, act_bits=4, weight_bits=4, max_k=4, acc_depth=4, rounding=("single",))
        int8 = ArrayConfig(rows=2, cols=2, max_k=64, rounding=("single", "tflite"))
        depth = small.requant_latency + 2
        ok &= _run("lane_small_single_m0_full_width", LaneHarness(config=small), mode="prove", depth=depth,
                   must="proven", **kw)
        ok &= _run("lane_int8_single_tflite_m0_reduced", LaneHarness(config=int8, m0_free=LANE_M0_FREE),
                   mode="prove", depth=int8.requant_latency + 2, must="proven", **kw)
    if args.only in (None, "im2col"):
        for geometry in IM2COL_GEOMETRIES:
            ok &= _run(f"im2col_{geometry}", Im2colBoundHarness(geometry=geometry), mode="bmc",
                       depth=args.im2col_depth, must="proven", **kw)
        for name, (geometry, depth, edit) in IM2COL_MUTANTS.items():
            broken = mutant(im2col.Im2colAgen, *edit)
            ok &= _run(f"im2col_{geometry}_mutant_{name}", Im2colBoundHarness(geometry=geometry, agen=broken),
                       mode="bmc", depth=depth or args.im2col_depth, must="failed", **kw)
    if args.only in (None, "engine"):
        ok &= _engine(kw)
    if args.only == "liveness":           # (part of ``engine``)
        ok &= _liveness(kw)
    if args.only in (None, "board"):
        ok &= _board(kw)
    return 0 if ok else 1


def _engine(kw) -> bool:
    """The network engine's long runs: 4x4 array, 1 KiB weight store (256 rows, 16 parameter blocks),
    1 KiB scratchpad, 5 program entries (``tests/formal/test_engine_formal.py``'s sizes where they apply)."""
    array = ArrayConfig(rows=4, cols=4, max_k=4, acc_depth=4, rounding=("single",))
    cfg = EngineConfig(array=array, weight_kib=1, act_kib=1, program_words=5 * DESCRIPTOR_WORDS)
    ok = _run("engine_stream_rules_4x4", EngineStreamRules(config=cfg), mode="prove", depth=2, must="proven", **kw)
    # the output unit pops its FIFO whether or not the host is ready, inside the whole top
    broken_out = mutant(output_unit.OutputUnit, "fifo.r_en.eq(self.o.ready)", "fifo.r_en.eq(1)")
    broken_top = mutant(engine.NetworkEngine, "m.submodules.output = out = OutputUnit(",
                        "m.submodules.output = out = BrokenOutput(", names={"BrokenOutput": broken_out})
    ok &= _run("engine_stream_rules_4x4_mutant_pop", EngineStreamRules(config=cfg, engine=broken_top), mode="prove",
               depth=2, must="failed", **kw)
    rows = 24      # weight-store rows: not a power of two, so one row past the end is representable
    wl = WeightBoundHarness(config=array, rows_in_store=rows)
    ok &= _run("weight_bounds_4x4_24_rows", wl, mode="bmc", depth=wl.depth, must="proven", **kw)
    broken_wl = mutant(loader.WeightLoader, "m.d.comb += [self.r_addr.eq(cur + row), self.r_en.eq(1)]",
                       "m.d.comb += [self.r_addr.eq(cur + row + 1), self.r_en.eq(1)]")
    ok &= _run("weight_bounds_4x4_24_rows_mutant_row", WeightBoundHarness(config=array, rows_in_store=rows,
                                                                          unit=broken_wl),
               mode="bmc", depth=wl.depth, must="failed", **kw)
    entries = DEFAULT_PROGRAM_WORDS // DESCRIPTOR_WORDS
    ok &= _run(f"sequencer_{entries}_entries", FetchHarness(entries=entries), mode="prove", depth=2,
               must="proven", **kw)
    broken_fetch = mutant(fetch.DescriptorFetch, "m.d.comb += self.r_addr.eq(ptr)",
                          "m.d.comb += self.r_addr.eq(ptr + 1)")
    ok &= _run("sequencer_5_entries_mutant_addr", FetchHarness(entries=5, fetch=broken_fetch), mode="prove", depth=2,
               must="failed", **kw)
    for geometry in WRITEBACK_GEOMETRIES:
        wb = WritebackBoundHarness(rows=4, cols=4, geometry=geometry, words=48)
        ok &= _run(f"writeback_{geometry}_48_words", wb, mode="bmc", depth=wb.depth, must="proven", **kw)
    # the output tensor's first word one too far: the last pixel's last channel word leaves the tensor
    broken_wb = mutant(writeback.WritebackAgen, "base = dp.out_base + dp.out_cw0",
                       "base = dp.out_base + dp.out_cw0 + 1")
    wb = WritebackBoundHarness(rows=4, cols=4, geometry="plain", words=48, agen=broken_wb)
    ok &= _run("writeback_plain_48_words_mutant_base", wb, mode="bmc", depth=wb.depth, must="failed", **kw)
    for geometry in POOL_GEOMETRIES:
        pb = PoolBoundHarness(geometry=geometry, words=48)
        ok &= _run(f"pool_{geometry}_48_words", pb, mode="bmc", depth=pb.depth, must="proven", **kw)
    # a window's taps one word apart too far along a kernel row
    broken_pool = mutant(pool_agen.PoolAgen, "m.d.sync += [kx.eq(kx + 1), tb.eq(tb + d.in_pp)]",
                         "m.d.sync += [kx.eq(kx + 1), tb.eq(tb + d.in_pp + 1)]")
    pb = PoolBoundHarness(geometry="k2s2", words=48, agen=broken_pool)
    ok &= _run("pool_k2s2_48_words_mutant_tap", pb, mode="bmc", depth=pb.depth, must="failed", **kw)
    # the bottom (or right) padding taken for input: a tap one pixel row (column) past the tensor
    for geometry, edit in (("k3s1_pad_all", ("(y < d.in_h)", "(y <= d.in_h)")),
                           ("k3s1_pad_all", ("(x < d.in_w)", "(x <= d.in_w)"))):
        pb = PoolBoundHarness(geometry=geometry, words=48, agen=mutant(pool_agen.PoolAgen, *edit))
        side = "row" if "y" in edit[0] else "column"
        ok &= _run(f"pool_{geometry}_48_words_mutant_pad_{side}", pb, mode="bmc", depth=pb.depth, must="failed", **kw)
    # the fused write path (the write-back unit, its address generator cut) and its mutant: the average's
    # address taken from the row arriving now, not the window's register
    fw = FusedWriteHarness(config=array, words=48)
    ok &= _run("fused_write_4x4_48_words", fw, mode="prove", depth=2, must="proven", **kw)
    broken_fp = mutant(pool.FusedPool, 'a_addr = delayed(m, addr, c.requant_latency, name="avg_addr")',
                       'a_addr = delayed(m, self.addr, c.requant_latency, name="avg_addr")')
    broken_wbu = mutant(wb_unit.WritebackUnit, "m.submodules.pool = fp = FusedPool(",
                        "m.submodules.pool = fp = BrokenPool(", names={"BrokenPool": broken_fp})
    fw = FusedWriteHarness(config=array, words=48, unit=broken_wbu)
    ok &= _run("fused_write_4x4_48_words_mutant_avg_addr", fw, mode="bmc", depth=array.requant_latency + 9,
               must="failed", **kw)
    ok &= _liveness(kw)
    return ok


def _liveness(kw) -> bool:
    """The whole engine's liveness in bounds (``EngineLivenessHarness``) on 4x4 and 8x8, and its two
    mutants on 4x4: an input unit that makes a word a cycle after the beat it needs (busy falls a cycle
    late), and an engine whose end ignores the output unit (busy falls before the last output beat)."""
    ok = True
    for n in (4, 8):
        array = ArrayConfig(rows=n, cols=n, max_k=4, acc_depth=4, rounding=("single",))
        cfg = EngineConfig(array=array, weight_kib=1, act_kib=1, program_words=4 * DESCRIPTOR_WORDS)
        h = EngineLivenessHarness(config=cfg)
        ok &= _run(f"engine_liveness_{n}x{n}_bound_{h.bound}", h, mode="bmc", depth=h.depth, must="proven", **kw)
    array = ArrayConfig(rows=4, cols=4, max_k=4, acc_depth=4, rounding=("single",))
    cfg = EngineConfig(array=array, weight_kib=1, act_kib=1, program_words=4 * DESCRIPTOR_WORDS)
    late_input = mutant(input_unit.InputUnit, "m.d.comb += produce.eq(need_eq)", "m.d.comb += produce.eq(0)")
    late = mutant(engine.NetworkEngine, "m.submodules.input = inp = InputUnit(",
                  "m.submodules.input = inp = LateInput(", names={"LateInput": late_input})
    early = mutant(engine.NetworkEngine, "& out.idle & ~wb.busy", "& ~wb.busy")
    for name, top in (("late_input_word", late), ("done_ignores_output", early)):
        h = EngineLivenessHarness(config=cfg, engine=top)
        ok &= _run(f"engine_liveness_4x4_mutant_{name}", h, mode="bmc", depth=h.depth, must="failed", **kw)
    # two inferences in a row: a host that sends the next image once busy has fallen, and an eager host (a
    # beat offered on every cycle), both meet the model both times; the mutant is the input unit before
    # its beat cap (it took the next image's beat during the first inference and hung the second: found
    # by this proof, docs/verification.md)
    for host in ("exact", "eager"):
        h = EngineLivenessHarness(config=cfg, inferences=2, host=host)
        ok &= _run(f"engine_liveness_4x4_two_inferences_{host}_host", h, mode="bmc", depth=h.depth, must="proven",
                   **kw)
    uncapped_input = mutant(input_unit.InputUnit, "m.d.comb += self.i.ready.eq(setup & more & (~ib_valid | take))",
                            "m.d.comb += self.i.ready.eq(setup & (~ib_valid | take))")
    uncapped = mutant(engine.NetworkEngine, "m.submodules.input = inp = InputUnit(",
                      "m.submodules.input = inp = UncappedInput(", names={"UncappedInput": uncapped_input})
    h = EngineLivenessHarness(config=cfg, inferences=2, host="eager", engine=uncapped)
    ok &= _run("engine_liveness_4x4_two_inferences_eager_host_mutant_uncapped_input", h, mode="bmc",
               depth=h.depth, must="failed", **kw)
    # a host that pauses up to PAUSE_SLACK cycles before the first beat (one inference: two take over 30 min,
    # bench/results.md); its mutant, an engine whose first beat never starts an inference
    h = EngineLivenessHarness(config=cfg, host="pausing")
    ok &= _run("engine_liveness_4x4_pausing_host", h, mode="bmc", depth=h.depth, must="proven", **kw)
    never = mutant(engine.NetworkEngine, "first_beat = self.i.valid & primed & inp.idle_ready & ~running",
                   "first_beat = self.i.valid & primed & inp.idle_ready & ~running & 0")
    h = EngineLivenessHarness(config=cfg, host="pausing", engine=never)
    ok &= _run("engine_liveness_4x4_pausing_host_mutant_never_starts", h, mode="bmc", depth=h.depth, must="failed",
               **kw)
    # larger programs, compiled from ONNX models (tests/engine's builder): a 1x1 conv on 2x2 pixels, two
    # dependent 1x1 convs, a padded 3x3 conv (9 K tiles)
    big = ArrayConfig(rows=4, cols=4, max_k=64, acc_depth=16, rounding=("single",))
    cfg = EngineConfig(array=big, weight_kib=1, act_kib=1, program_words=8 * DESCRIPTOR_WORDS)
    for name, program in _compiled_programs(cfg):
        h = EngineLivenessHarness(config=cfg, program=program)
        ok &= _run(f"engine_liveness_4x4_{name}_bound_{h.bound}", h, mode="bmc", depth=h.depth, must="proven", **kw)
    return ok


def _board(kw) -> bool:
    """The board tops' internal streams (``BoardStreamRules``): the GEMM board top on the CI 2x2 and the
    network board top on 4x4 with the frame size boards build (``DEFAULT_FRAME_BYTES``) and the CI's 16;
    each with a mutant that fails from reset (its harness without a reset input: the solver crawls with a free
    reset on the whole engine): the link dropping an offered frame before it is taken
    (GEMM top: a command, which the command register takes on its second offered cycle), the frame
    unpacker stepping to its next unit without a handshake (network top, with the liveness program
    embedded so that the engine stalls the second beat of an input frame)."""
    small = ArrayConfig(rows=2, cols=2, act_bits=4, weight_bits=4, max_k=4, acc_depth=4, rounding=("single",))
    ok = _run("board_stream_rules_accel_2x2", accel_board_rules(small), mode="prove", depth=2, must="proven", **kw)
    drop_link = mutant(link.HostLink, "with m.If(self.data.valid & self.data.ready):", "with m.If(self.data.valid):")
    drop_top = mutant(board_top.BoardTop, "self.link = HostLink(", "self.link = BrokenLink(",
                      names={"BrokenLink": drop_link})
    ok &= _run("board_stream_rules_accel_2x2_mutant_link_drops_frame",
               accel_board_rules(small, top_class=drop_top, reset=False), mode="bmc", depth=30, must="failed", **kw)
    array = ArrayConfig(rows=4, cols=4, max_k=4, acc_depth=4, rounding=("single",))
    cfg = EngineConfig(array=array, weight_kib=1, act_kib=1, program_words=5 * DESCRIPTOR_WORDS)
    for frame in (16, DEFAULT_FRAME_BYTES):
        ok &= _run(f"board_stream_rules_network_4x4_frame_{frame}", network_board_rules(cfg, frame_bytes=frame),
                   mode="prove", depth=2, must="proven", **kw)
    skip = mutant(network_top.NetworkBoardTop, "        with m.If(step):\n",
                  "        with m.If(self.load.valid | self.i.valid):\n")
    cfg = EngineConfig(array=array, weight_kib=1, act_kib=1, program_words=4 * DESCRIPTOR_WORDS)
    h = network_board_rules(cfg, image=liveness_program(cfg).to_bytes(), top_class=skip, reset=False)
    ok &= _run("board_stream_rules_network_4x4_frame_16_mutant_unpacker_skips", h, mode="bmc",
               depth=NETWORK_MUTANT_DEPTH, must="failed", **kw)
    return ok


# the unpacker mutant's counterexample: a 16-byte input frame (2 beats) one byte a cycle, the first beat taken,
# the second stalled and dropped at step 21 before the link copied a frame's payload a byte a cycle (session 13:
# up to 17 cycles more per frame)
NETWORK_MUTANT_DEPTH = 44


def _compiled_programs(cfg):
    import tempfile
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from engine.conftest import Net, quantize

    from qhw.engine.compiler import compile_model

    models = (("conv1x1_2x2", (1, 4, 2, 2), lambda n: n.conv(4, 1, relu=False)),
              ("two_conv1x1_2x2", (1, 4, 2, 2), lambda n: n.conv(4, 1).conv(4, 1, relu=False)),
              ("conv3x3_pad1_3x3", (1, 4, 3, 3), lambda n: n.conv(4, 3, pads=(1, 1, 1, 1))))
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape, build in models:
            rng = np.random.default_rng(0)
            path = build(Net(rng, shape)).save(Path(tmp) / f"{name}.onnx")
            qm = quantize(path, rng.uniform(-1, 1, (8, *shape[1:])).astype(np.float32))
            yield name, compile_model(qm, cfg).program


if __name__ == "__main__":
    sys.exit(main())
