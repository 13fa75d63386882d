# amaranth: UnusedElaboratable=no
"""``NetworkEngine`` whole, in the Amaranth simulator: a compiled model loaded through the ``load``
stream (or embedded), images in, outputs out; every output bit-exact with the golden model, every
scratchpad write (debug tap) equal to ``qhw.engine.trace.write_trace`` in cycle, word, lanes and
values, each descriptor's end and the total equal to ``qhw.engine.cycles.predict``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from amaranth_sim import run_sim
from engine.conftest import golden_codes, quantize

from qhw.engine.compiler import compile_model, fit_engine
from qhw.engine.cycles import descriptor_end, predict
from qhw.engine.load import output_tensors
from qhw.engine.trace import write_trace
from qhw.errors import ConfigError
from qhw.hw.engine.engine import NetworkEngine
from qhw.runtime import config_for_model

from .conftest import case_program
from .engine_bench import Run


def cases(qm, program, x):
    """Per image: the engine's input codes (the host quantizes the segment's input) and the golden
    model's output codes."""
    from qhw.arith import quantize_float

    t_in = next(t for t in program.tensors if t.direction == 0)
    p = qm.graph.tensors[t_in.name]
    inputs, golden = [], []
    for i in range(len(x)):
        v = x[i:i + 1].reshape(1, *t_in.logical_shape)
        inputs.append({t_in.name: quantize_float(v, p.scale, p.zero_point, p.qmin, p.qmax)})
        codes = golden_codes(qm.graph, x[i:i + 1])
        golden.append({t.name: codes[t.name][0] for t in program.tensors if t.direction == 1})
    return inputs, golden


def compiled(qm, rows, cols):
    cfg = fit_engine(qm, config_for_model(qm.graph, rows=rows, cols=cols))
    return compile_model(qm, cfg).program, cfg


def check_run(run, program, cfg, inputs, golden, *, timing=True):
    """Outputs bit-exact; with ``timing``, writes and descriptor ends as predicted."""
    report = predict(program, cfg)
    ends = np.cumsum(report.per_descriptor).tolist()
    for n, codes in enumerate(inputs):
        got = output_tensors(program, [b for _, b, _ in run.outputs[n]])
        for name, want in golden[n].items():
            assert got[name].tolist() == want.tolist(), (n, name)
        if not timing:
            continue
        want = [(e.cycle, e.word, e.lane, e.values) for e in write_trace(program, cfg, codes)]
        assert run.writes[n] == want, n
        last_write = {}
        for e in write_trace(program, cfg, codes):
            last_write[e.descriptor] = e.cycle
        hw_end = 0
        for i, d in enumerate(program.descriptors):
            if d.op in ("HALT", "END"):
                continue
            hw_end = max(hw_end, descriptor_end(d.op, cfg, last_read=run.issues[n].get(i),
                                                last_write=last_write.get(i)))
            assert hw_end == ends[i], (n, i, d.op)
        assert run.outputs[n][-1][0] + 1 == report.total


@pytest.fixture(scope="module")
def digits_models(cnn_path, mlp_path, digits):
    x = digits["calib_x"]
    return {"cnn": quantize(cnn_path, x), "mlp": quantize(mlp_path, x)}


def test_digits_mlp_loaded_through_the_stream(digits_models, digits):
    """The MLP (three Dense layers, M = 1) on 8x8, loaded word by word; two images back to back."""
    qm = digits_models["mlp"]
    program, cfg = compiled(qm, 8, 8)
    inputs, golden = cases(qm, program, digits["test_x"][:2])
    run = Run(NetworkEngine(engine=cfg), program, inputs, rows=8).run()
    check_run(run, program, cfg, inputs, golden)


@pytest.mark.slow
@pytest.mark.parametrize("pe,cycles", [("generic", 2724), ("ecp5-pipelined", 2784)])
def test_digits_cnn_embedded(digits_models, digits, pe, cycles):
    """The CNN on 8x8 from the embedded image (``image=``, ``loaded`` high from reset): one image,
    2,724 cycles, every write and descriptor end as predicted. Built as the ECP5 board configuration
    (docs/fpga.md): ``single`` rounding, ``pool_avg="div"`` (its GlobalAveragePool keeps its scale);
    with ``ecp5-pipelined`` PEs (the form placed on the ECP5-85F) the product stages and the weight
    write shifted down the rows (``weight_write_lag``) add 60 cycles to the whole network."""
    qm = digits_models["cnn"]
    program, cfg = compiled(qm, 8, 8)
    cfg = replace(cfg, pool_avg="div", array=replace(cfg.array, pe=pe))
    program = compile_model(qm, cfg).program    # the descriptors carry the config's latencies
    assert cfg.array.rounding == ("single",)
    inputs, golden = cases(qm, program, digits["test_x"][3:4])
    run = Run(NetworkEngine(engine=cfg, image=program.to_bytes()), program, inputs, rows=8, load=False).run()
    check_run(run, program, cfg, inputs, golden)
    assert predict(program, cfg).total == cycles


def test_pipelined_pes_dense_layers(digits_models, digits):
    """The MLP (M = 1 Dense layers: each weight tile's load is overlapped with its one beat) on 4x4 with
    ``ecp5-pipelined`` PEs, whose weight write lands row ``i`` ``i`` cycles late: bit-exact, every write
    and descriptor end as predicted (the issue counts a load as started ``weight_write_lag`` cycles
    late; without that the first beats met the previous tile's weights in rows 1-3)."""
    qm = digits_models["mlp"]
    program, cfg = compiled(qm, 4, 4)
    cfg = replace(cfg, array=replace(cfg.array, pe="ecp5-pipelined"))
    assert cfg.array.weight_write_lag == 3
    program = compile_model(qm, cfg).program
    inputs, golden = cases(qm, program, digits["test_x"][5:6])
    run = Run(NetworkEngine(engine=cfg), program, inputs, rows=4).run()
    check_run(run, program, cfg, inputs, golden)


def test_digits_mlp_gaps_and_back_pressure(digits_models, digits):
    """Random input gaps (30 %) and output back-pressure (50 %), seed 5: values still bit-exact."""
    qm = digits_models["mlp"]
    program, cfg = compiled(qm, 8, 8)
    inputs, golden = cases(qm, program, digits["test_x"][5:6])
    run = Run(NetworkEngine(engine=cfg, image=program.to_bytes()), program, inputs, rows=8, load=False,
              gaps=0.3, stall=0.5, seed=5).run()
    check_run(run, program, cfg, inputs, golden, timing=False)


@pytest.mark.parametrize("name,cols", [pytest.param("pools", 8, marks=pytest.mark.slow), ("window-c2", 8),
                                       ("window-c2", 4)])
def test_random_models(tmp_path, name, cols):
    """tests/engine's random models (seed 7 mixed with the name): "pools" (a padded 3x3/2 MaxPool and a
    padded 3x3 AveragePool and a GlobalAveragePool as POOL descriptors, a fused 2x2 AveragePool, a
    standard-layout 4-channel input), "window-c2" (a 2-channel window-layout input, stride 2, pads
    (0, 1, 2, 1)), also on 8x4 (result rows of 4 lanes written at lane offsets 0 and 4); rounding
    single, one image each, loaded through the stream."""
    _, qm, x = case_program(tmp_path, name)
    program, cfg = compiled(qm, 8, cols)
    assert name != "pools" or sum(d.op == "POOL" for d in program.descriptors) == 3
    inputs, golden = cases(qm, program, x[:1])
    run = Run(NetworkEngine(engine=cfg), program, inputs, rows=8).run()
    check_run(run, program, cfg, inputs, golden)


@pytest.mark.parametrize("pe,weight_ram", [("ice40-dual", "spram"), ("ecp5-pipelined", "block")])
def test_fpga_options(tmp_path, pe, weight_ram):
    """The FPGA options on 4x4 (portable models): the iCE40 UP5K's (``DualMul8``'s two products, ``Spram``'s
    behavioural single-port RAM with the write and read addresses on one port) and the ECP5's pipelined
    DSP PEs (``PipelinedMul``: 5 cycles more array latency, which the cycle model reads from the config),
    built without the optional units (``units=()``: the model has no ADD or POOL): "window-c2" loaded
    through the stream, bit-exact, every write and descriptor end as predicted."""
    from dataclasses import replace

    _, qm, x = case_program(tmp_path, "window-c2")
    program, cfg = compiled(qm, 4, 4)
    assert not {"ADD", "POOL"} & {d.op for d in program.descriptors}
    cfg = replace(cfg, array=replace(cfg.array, pe=pe), weight_ram=weight_ram, units=())
    program = compile_model(qm, cfg).program
    if weight_ram == "spram":
        with pytest.raises(ConfigError, match=r"^image: weight_ram spram cannot be embedded"):
            NetworkEngine(engine=cfg, image=program.to_bytes())
    inputs, golden = cases(qm, program, x[:1])
    dut = NetworkEngine(engine=cfg)
    run = Run(dut, program, inputs, rows=4).run()
    check_run(run, program, cfg, inputs, golden)


def test_eager_host_back_to_back_single_beat_inferences():
    """A host that offers the next image's beat on every cycle (found by the liveness proof,
    docs/verification.md): the input unit accepts no beat past its tensor, so three single-beat
    inferences (the liveness program, 4x4) follow each other, each ``busy`` for exactly the cycles the
    cycle model gives, each with its one output beat."""
    from qhw.engine.config import EngineConfig
    from qhw.formal.engine_liveness import BUSY_FALL_CYCLES, liveness_program
    from qhw.hw.config import ArrayConfig

    cfg = EngineConfig(array=ArrayConfig(rows=4, cols=4, max_k=4, acc_depth=4, rounding=("single",)),
                       weight_kib=1, act_kib=1, program_words=64)
    program = liveness_program(cfg)
    total = predict(program, cfg).total
    dut = NetworkEngine(engine=cfg, image=program.to_bytes())
    busy, beats = [], []

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 1)
        for _ in range(4 * (total + 10)):
            await ctx.tick()
            busy.append(ctx.get(dut.busy))
            beats.append(ctx.get(dut.o.valid))

    run_sim(dut, bench)
    runs, k = [], 0
    while k < len(busy):
        if busy[k]:
            start = k
            while k < len(busy) and busy[k]:
                k += 1
            runs.append((start, k - start))
        k += 1
    complete = [n for start, n in runs if start + n < len(busy)]
    assert len(complete) >= 3 and set(complete) == {complete[0]}, runs
    assert complete[0] == total + BUSY_FALL_CYCLES - 1, (complete, total)     # busy falls when the model says
    assert sum(beats) >= len(complete)


def test_absent_unit_flags_its_descriptor():
    """An engine generated without the add unit (``units=("pool",)``), given a hand-made program that has
    an ADD anyway (the compiler refuses such a model): the stand-in takes the ADD and ``error`` rises; the
    same engine reaches the ADD's predecessor without error (seed-free: constant input beats)."""
    from qhw.engine.config import EngineConfig
    from qhw.engine.isa import Descriptor
    from qhw.engine.program import Program
    from qhw.hw.config import ArrayConfig

    cfg = EngineConfig(array=ArrayConfig(rows=4, cols=4, rounding=("single",)), weight_kib=1, act_kib=1,
                       program_words=64, units=("pool",))
    inp = Descriptor("INPUT", {"out_base": 0, "h": 1, "w": 1, "c": 4, "pp": 1, "cp": 1})
    add = Descriptor("ADD", {"a_base": 0, "b_base": 0, "out_base": 1, "words": 1, "dep_base": 1})
    program = Program(rows=4, cols=4, rounding=("single",), weight_kib=1, act_kib=1, program_words=64,
                      descriptors=[inp, add, Descriptor("END")], tensors=[], image=b"", params_offset=0,
                      act_bytes_used=0, segments=1)
    dut = NetworkEngine(engine=cfg, image=program.to_bytes())
    seen = []

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 1)
        for _ in range(60):
            await ctx.tick()
            seen.append((ctx.get(dut.trace.we), ctx.get(dut.error)))

    run_sim(dut, bench)
    first_write = next(k for k, (we, _) in enumerate(seen) if we)
    assert not any(err for _, err in seen[:first_write + 1])       # INPUT ran, no error yet
    assert seen[-1][1] == 1                                          # the ADD was taken: error


def test_load_unit_refuses_a_bad_stream_then_loads():
    """``LoadUnit``: a wrong magic sets ``error`` and is skipped; sizes past the memories (descriptors,
    table slots) set ``error`` without writing; a good stream writes every word where ``load_words``
    means it (the tables' tags and entries by slot) and raises ``loaded``."""
    from qhw.engine.load import LOAD_MAGIC
    from qhw.hw.engine.load_unit import LoadUnit

    dut = LoadUnit(cols=4, programs=2, weight_rows=4, param_words=32, param_entries=2, tables=2)
    prog = list(range(100, 116))                        # one descriptor
    weights = [0x01020304, 0x05060708]                  # two 4-byte rows
    params = [7, 8, 9]
    tables = [77] + [(5 * k) & 0xFF for k in range(256)] + [99] + [(3 + k) & 0xFF for k in range(256)]
    streams = [[0xDEAD], [LOAD_MAGIC, 48, 0, 0, 0] + [0] * 48,          # 3 descriptors > 2: refused
               [LOAD_MAGIC, 0, 0, 0, 3 * 257] + [0] * (3 * 257),       # 3 tables > 2: refused
               [LOAD_MAGIC, 16, 2, 3, 2 * 257] + prog + weights + params + tables]
    seen, flags = {"prog": {}, "wt": {}, "pn": {}, "pw": {}, "tag": {}, "tab": {}}, []

    def sample(ctx):
        for name in seen:
            port = getattr(dut, name)
            if ctx.get(port.en):
                key = (ctx.get(port.slot), ctx.get(port.index)) if name == "tab" else \
                    ctx.get(port.slot) if name == "tag" else ctx.get(port.addr)
                seen[name][key] = ctx.get(port.data)

    async def bench(ctx):
        for words in streams:
            for w in words:
                ctx.set(dut.load.payload, w)
                ctx.set(dut.load.valid, 1)
                await ctx.delay(1e-8)
                while not ctx.get(dut.load.ready):
                    sample(ctx)                         # every cycle: the wide words are written a cycle late
                    await ctx.tick()
                    await ctx.delay(1e-8)
                sample(ctx)
                await ctx.tick()
            ctx.set(dut.load.valid, 0)
            for _ in range(7):                          # the empty sections' phases, then the end
                await ctx.delay(1e-8)
                sample(ctx)
                await ctx.tick()
            flags.append((ctx.get(dut.loaded), ctx.get(dut.error)))

    run_sim(dut, bench)
    assert flags == [(0, 1), (0, 1), (0, 1), (1, 0)]
    assert seen["prog"] == {0: sum(w << (32 * i) for i, w in enumerate(prog))}
    assert seen["wt"] == {0: weights[0], 1: weights[1]} and seen["pn"] == {0: 7, 1: 8, 2: 9}
    assert seen["pw"] == {0: 7 | 8 << 32 | 9 << 64}
    assert seen["tag"] == {0: 77, 1: 99}
    assert seen["tab"] == {**{(0, k): (5 * k) & 0xFF for k in range(256)},
                           **{(1, k): (3 + k) & 0xFF for k in range(256)}}


@pytest.fixture(scope="module")
def resnets(digits):
    from qhw.datasets import builtin_model_path

    path = builtin_model_path("digits_resnet")
    return {r: quantize(path, digits["calib_x"], rounding=r) for r in ("single", "tflite")}


@pytest.mark.parametrize("rounding,rows,cols,images", [
    ("single", 4, 4, (0,)), pytest.param("single", 8, 8, (1,), marks=pytest.mark.slow),
    pytest.param("tflite", 4, 4, (3,), marks=pytest.mark.slow)])
def test_digits_resnet(resnets, digits, rounding, rows, cols, images):
    """The residual model (depthwise-separable block, residual Add on ``AddUnit``, average pool),
    loaded through the stream: logits bit-exact, every write (the ADD's among them) and every
    descriptor end as predicted, the total equal to ``predict`` (4,757 cycles on 4x4, 1,938 on 8x8)."""
    qm = resnets[rounding]
    program, cfg = compiled(qm, rows, cols)
    assert [d.op for d in program.descriptors].count("ADD") == 1
    inputs, golden = cases(qm, program, digits["test_x"][list(images)])
    run = Run(NetworkEngine(engine=cfg), program, inputs, rows=rows).run()
    check_run(run, program, cfg, inputs, golden)
    assert predict(program, cfg).total == {4: 4757, 8: 1938}[rows]


def _table_model(tmp_path, name):
    """tests/engine/test_residual's table models: "sigmoid-conv" (a Sigmoid on the first MATMUL's
    write-back, a second one after a fused max pool as a ``table_only`` ADD pass: two table slots, seed
    5 mixed with the op name) and "add-16ch-sigmoid" (an ADD with its table, seed 7 mixed with the name)."""
    from engine.test_residual import CASES, _random_model

    if name == "add-16ch-sigmoid":
        return _random_model(tmp_path, next(c for c in CASES if c[0] == name), "single")
    from engine.conftest import Net

    rng = np.random.default_rng([5, sum(map(ord, "Sigmoid"))])
    net = (Net(rng, (1, 3, 8, 8)).conv(8, 3, pads=(1, 1, 1, 1), relu=False).op("Sigmoid")
           .conv(8, 3, relu=False).op("MaxPool", kernel_shape=[2, 2], strides=[2, 2]).op("Sigmoid")
           .op("Flatten").dense(4, 8 * 3 * 3))
    path = net.save(tmp_path / "sigmoid.onnx")
    x = rng.uniform(-2, 2, (24, 3, 8, 8)).astype(np.float32)
    return quantize(path, x[:16]), x


@pytest.mark.parametrize("name", ["sigmoid-conv", "add-16ch-sigmoid"])
def test_table_activations(tmp_path, name):
    """Table activations on a 4x4 engine: on the MATMUL write-back (``WritebackUnit``'s ``TableUnit``,
    same ``writeback_latency``), on an ADD and as a ``table_only`` pass (``AddUnit``'s); the two-slot
    model from the embedded image (tables and tags as initial contents), the other loaded through the
    stream (``LoadUnit``'s two-slot load is its own test); one image bit-exact, writes and ends as
    predicted."""
    from qhw.engine.load import program_tables

    qm, x = _table_model(tmp_path, name)
    program, cfg = compiled(qm, 4, 4)
    tables = program_tables(program)
    users = [d for d in program.descriptors if "table" in d.fields and d["table"]]
    assert len(tables) == cfg.tables == (2 if name == "sigmoid-conv" else 1)
    assert {d.op for d in users} == ({"MATMUL", "ADD"} if name == "sigmoid-conv" else {"ADD"})
    inputs, golden = cases(qm, program, x[:1])
    embed = name == "sigmoid-conv"
    dut = NetworkEngine(engine=cfg, image=program.to_bytes() if embed else None)
    run = Run(dut, program, inputs, rows=4, load=not embed).run()
    check_run(run, program, cfg, inputs, golden)
