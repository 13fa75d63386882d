"""Residual networks on the engine: the integer Add (ADD descriptor), table activations, Concat as
placement, and the built-in residual digits model, each against the golden model (zero mismatches)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from qhw.datasets import builtin_model_path
from qhw.engine.compiler import compile_model
from qhw.engine.cycles import predict
from qhw.engine.program import Program
from qhw.engine.trace import write_trace

from .conftest import Net, engine_for, quantize
from .test_model import assert_bit_exact
from .test_trace import qm_codes


@pytest.fixture(scope="module")
def resnet_q(digits):
    return {r: quantize(builtin_model_path("digits_resnet"), digits["calib_x"], rounding=r)
            for r in ("single", "tflite")}


@pytest.mark.parametrize("rounding", ["single", "tflite"])
def test_digits_resnet_one_segment_bit_exact(resnet_q, digits, rounding):
    """The residual model compiles to one segment (depthwise conv, Add, AveragePool all on the engine)
    and equals the golden model on every digits test image (450)."""
    qm = resnet_q[rounding]
    compiled = assert_bit_exact(qm, digits["test_x"])
    prog = compiled.program
    assert prog.segments == 1 and compiled.host_nodes == []
    ops = [d.op for d in prog.descriptors]
    assert ops == ["INPUT", "MATMUL", "MATMUL", "MATMUL", "ADD", "POOL", "MATMUL", "MATMUL", "OUTPUT", "END"]
    add = prog.descriptors[4]
    assert add["mode"] == {"single": 0, "tflite": 1}[rounding] and add["words"] == 64 and not add["table_only"]
    # the Relu after the Add is folded into the ADD's clamp: its lower bound is the output zero point
    assert add["qmin"] == qm.graph.tensors["add"].zero_point
    dw = prog.descriptors[2]
    assert (dw["kcw"], dw["cw_step"], dw["kh"], dw["kw"]) == (1, 0, 3, 3)      # depthwise: 1 channel word
    assert Program.from_bytes(prog.to_bytes()).to_bytes() == prog.to_bytes()


def test_add_rounding_the_engine_lacks_is_refused(resnet_q):
    """The AddUnit builds only the engine's rounding modes: an Add whose rounding the engine was not
    generated with is refused in one line naming the node and the --rounding to regenerate with."""
    import dataclasses

    from qhw.errors import ConfigError

    qm = resnet_q["single"]
    cfg = engine_for(qm.graph)
    assert cfg.array.rounding == ("single",)
    add = next(n for n in qm.graph.nodes if n.attrs.get("op_type") == "Add")
    add.quant = dict(add.quant, rounding="tflite")
    try:
        with pytest.raises(ConfigError, match=rf"node '{add.name}': Add uses rounding 'tflite' but the engine "
                                              r"has single; regenerate with --rounding single,tflite"):
            compile_model(qm, cfg)
        both = dataclasses.replace(cfg, array=dataclasses.replace(cfg.array, rounding=("single", "tflite")))
        assert compile_model(qm, both).program.descriptors[4]["mode"] == 1
    finally:
        add.quant = dict(add.quant, rounding="single")


def prog_dep(program, i: int) -> int:
    return program.descriptors[i]["dep_base"]


def test_digits_resnet_cycles_and_trace(resnet_q, digits):
    """Cycles predicted per layer (shares sum to the total), the ADD at two reads per word, and the
    write trace holds the ADD's writes, one per 2 cycles, ``add_latency`` after each b read."""
    qm = resnet_q["single"]
    cfg = engine_for(qm.graph)
    compiled = compile_model(qm, cfg)
    report = predict(compiled.program, cfg, compiled.total_macs)
    assert sum(report.per_descriptor) == report.total > 0
    trace = write_trace(compiled.program, cfg, {"x": qm_codes(qm, digits["test_x"][:1])})
    cycles = [e.cycle for e in trace]
    assert len(set(cycles)) == len(cycles)          # one write port
    adds = [e for e in trace if e.descriptor == 4]
    assert [e.word for e in adds] == list(range(adds[0].word, adds[0].word + 64))
    assert np.diff([e.cycle for e in adds]).tolist() == [2] * 63
    # the first b read is one cycle after the first a read, which waits for the last pw write + 2 (the
    # write counted the cycle after it, the ADD taken then, its first read the next cycle)
    pw_last = max(e.cycle for e in trace if e.descriptor == 3)
    assert adds[0].cycle == pw_last + 2 + 1 + cfg.add_latency
    # its share: from pw's last beat (written writeback_latency later) to its own last write + 1
    assert report.per_descriptor[4] == cfg.writeback_latency + 2 + 2 * 64 - 1 + cfg.add_latency
    assert prog_dep(compiled.program, 4) == sum(1 for e in trace if e.descriptor < 4)   # after every earlier write


def _branch(net: Net, build) -> str:
    """Run ``build`` on ``net`` from its current tensor; return the branch's output, restore the cursor."""
    start, c = net.cur, net.c
    build(net)
    out = net.cur
    net.cur, net.c = start, c
    return out


def _join(net: Net, op: str, inputs: list[str], c: int, **attrs) -> Net:
    name = net._name(op)
    net.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
    net.cur, net.c = name, c
    return net


# Small residual / concat models built with onnx.helper: (id, input shape, builder).
def _res_add(n):     # conv, then [conv + skip], Relu, pool, dense
    n.conv(8, 3, pads=(1, 1, 1, 1))
    b = _branch(n, lambda n: n.conv(8, 3, pads=(1, 1, 1, 1)).conv(8, 1, relu=False))
    _join(n, "Add", [n.cur, b], 8).op("Relu").op("AveragePool", kernel_shape=[2, 2], strides=[2, 2])
    return n.op("Flatten").dense(5, 8 * 3 * 3)


def _add_16ch(n):    # two words per pixel, an Add followed by a table (fused into the ADD)
    n.conv(16, 3, pads=(1, 1, 1, 1))
    b = _branch(n, lambda n: n.conv(16, 1, relu=False))
    return _join(n, "Add", [b, n.cur], 16).op("Sigmoid").conv(4, 3)


def _concat(n):      # two convs of one input placed into one 16-channel buffer, then a conv over both
    n.conv(8, 3, pads=(1, 1, 1, 1))
    a = _branch(n, lambda n: n.conv(8, 3, pads=(1, 1, 1, 1)))
    b = _branch(n, lambda n: n.conv(5, 1))
    return _join(n, "Concat", [a, b], 13, axis=1).conv(6, 3).op("Flatten").dense(3, 6 * 4 * 5)


def _dense_add(n):   # a residual block of Dense layers (rank-1 tensors: one pixel of 16 channels, 2 words)
    n.conv(4, 3, pads=(1, 1, 1, 1)).op("Flatten").dense(16, 4 * 4 * 4).op("Relu")
    b = _branch(n, lambda n: n.dense(16, 16).op("Relu").dense(16, 16))
    return _join(n, "Add", [n.cur, b], 16).dense(3, 16)


CASES = [("residual-add", (1, 3, 6, 6), _res_add), ("add-16ch-sigmoid", (1, 2, 5, 5), _add_16ch),
         ("concat", (1, 4, 6, 7), _concat), ("dense-add", (1, 2, 4, 4), _dense_add)]
SEED = 7


def _random_model(tmp_path, case, rounding):
    name, shape, build = case
    rng = np.random.default_rng([SEED, sum(map(ord, name))])         # seed 7 mixed with the case name
    path = build(Net(rng, shape)).save(tmp_path / f"{name}.onnx")
    x = rng.uniform(-1, 1, (24, *shape[1:])).astype(np.float32)
    return quantize(path, x[:16], rounding=rounding), x


@pytest.mark.parametrize("rounding", ["single", "tflite"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_random_residual_models_bit_exact(tmp_path, case, rounding):
    qm, x = _random_model(tmp_path, case, rounding)
    compiled = assert_bit_exact(qm, x)
    prog = compiled.program
    assert prog.segments == 1 and compiled.host_nodes == [], compiled.host_nodes
    ops = [d.op for d in prog.descriptors]
    if case[0] == "concat":
        # no descriptor of its own: the two producers write one 2-word buffer at channel words 0 and 1
        assert "ADD" not in ops
        a, b = (d for d in prog.descriptors if d["out_pp"] == 2)
        assert (a.op, a["out_cw0"], b.op, b["out_cw0"], a["out_base"]) == ("MATMUL", 0, "MATMUL", 1, b["out_base"])
    else:
        assert ops.count("ADD") == 1
    if case[0] == "add-16ch-sigmoid":
        add = next(d for d in prog.descriptors if d.op == "ADD")
        assert add["table"] and not add["table_only"]


@pytest.mark.parametrize("rows,cols", [(8, 4), (16, 8)])
def test_random_residual_models_other_arrays(tmp_path, rows, cols):
    """The same models on 8x4 (an N tile fills half a word: lane offsets) and 16x8 (16-lane words, where
    the Concat's 8-channel first input is half a word: not placement, the Concat on the host)."""
    for case in CASES:
        qm, x = _random_model(tmp_path, case, "single")
        compiled = assert_bit_exact(qm, x, rows=rows, cols=cols)
        placed = case[0] != "concat" or rows == 8
        assert compiled.program.segments == (1 if placed else 2), case[0]


def test_two_input_sum_is_an_add(tmp_path):
    """A two-input Sum is the golden model's same TFLite ADD: an ADD descriptor (seed 23)."""
    rng = np.random.default_rng(23)
    n = Net(rng, (1, 3, 5, 5)).conv(8, 3, pads=(1, 1, 1, 1))
    b = _branch(n, lambda n: n.conv(8, 1, relu=False))
    path = _join(n, "Sum", [n.cur, b], 8).conv(4, 3).save(tmp_path / "sum.onnx")
    x = rng.uniform(-1, 1, (16, 3, 5, 5)).astype(np.float32)
    compiled = assert_bit_exact(quantize(path, x, rounding="tflite"), x)
    assert compiled.program.segments == 1 and [d.op for d in compiled.program.descriptors].count("ADD") == 1


def test_concat_not_placeable_goes_to_the_host(tmp_path):
    """A Concat whose first input does not fill whole words (5 channels on 8-lane words) cannot be
    placement: it runs on the host, splitting the segments, still bit-exact."""
    rng = np.random.default_rng(21)
    n = Net(rng, (1, 3, 5, 5)).conv(8, 3, pads=(1, 1, 1, 1))
    a = _branch(n, lambda n: n.conv(5, 1))
    b = _branch(n, lambda n: n.conv(6, 1))
    path = _join(n, "Concat", [a, b], 11, axis=1).conv(4, 3).save(tmp_path / "concat5.onnx")
    x = rng.uniform(-1, 1, (16, 3, 5, 5)).astype(np.float32)
    qm = quantize(path, x)
    compiled = assert_bit_exact(qm, x)
    assert compiled.program.segments == 2 and [h for h in compiled.host_nodes if "concat" in h.lower()]


def test_concat_of_an_add_goes_to_the_host(tmp_path):
    """An Add's words are contiguous (the ADD descriptor has no ``out_pp``): a Concat of an Add and a
    conv is not placement, so the Concat runs on the host (seed 22)."""
    rng = np.random.default_rng(22)
    n = Net(rng, (1, 3, 5, 5)).conv(8, 3, pads=(1, 1, 1, 1))
    c = _branch(n, lambda n: n.conv(8, 1))
    b = _branch(n, lambda n: n.conv(8, 1, relu=False))
    _join(n, "Add", [n.cur, b], 8)
    path = _join(n, "Concat", [n.cur, c], 16, axis=1).conv(4, 3).save(tmp_path / "concat_add.onnx")
    x = rng.uniform(-1, 1, (16, 3, 5, 5)).astype(np.float32)
    qm = quantize(path, x)
    compiled = assert_bit_exact(qm, x)
    assert [h for h in compiled.host_nodes if "concat" in h.lower()]
    assert any(d.op == "ADD" for d in compiled.program.descriptors)


@pytest.mark.parametrize("act", ["Sigmoid", "Tanh", "Elu"])
def test_table_activation_on_matmul_write_back(tmp_path, act):
    """A table op right after a Conv is the MATMUL's ``table`` (no descriptor of its own); one after a
    fused pool cannot be (the table acts before the pool), so it is a ``table_only`` ADD pass."""
    rng = np.random.default_rng([5, sum(map(ord, act))])              # seed 5 mixed with the op name
    net = (Net(rng, (1, 3, 8, 8)).conv(8, 3, pads=(1, 1, 1, 1), relu=False).op(act)
           .conv(8, 3, relu=False).op("MaxPool", kernel_shape=[2, 2], strides=[2, 2]).op(act)
           .op("Flatten").dense(4, 8 * 3 * 3))
    path = net.save(tmp_path / f"{act}.onnx")
    x = rng.uniform(-2, 2, (24, 3, 8, 8)).astype(np.float32)
    qm = quantize(path, x[:16])
    compiled = assert_bit_exact(qm, x)
    prog = compiled.program
    assert prog.segments == 1 and compiled.host_nodes == []
    mm = [d for d in prog.descriptors if d.op == "MATMUL"]
    passes = [d for d in prog.descriptors if d.op == "ADD"]
    assert mm[0]["table"] and not mm[1]["table"] and len(passes) == 1 and passes[0]["table_only"]
    # the table in the store is the golden model's own
    node = next(nd for nd in qm.graph.nodes if nd.op == "Onnx")
    stored = np.frombuffer(prog.image, np.int8)[mm[0]["table"] - 1:mm[0]["table"] - 1 + 256]
    assert stored.tolist() == np.asarray(node.qparams["table"]).tolist()
    cfg = engine_for(qm.graph)
    trace = write_trace(prog, cfg, {"x": qm_codes(qm, x[:1])})
    assert len({e.cycle for e in trace}) == len(trace)
    words = [e for e in trace if prog.descriptors[e.descriptor] is passes[0]]
    assert np.diff([e.cycle for e in words]).tolist() == [1] * (len(words) - 1)      # one read per word


def test_too_many_tables_refused(tmp_path):
    """Two distinct tables (a MATMUL's and a ``table_only`` pass's) on an engine with one table slot:
    refused in one line naming the memory and the size that fits; ``fit_engine`` sizes two slots."""
    from qhw.engine.compiler import fit_engine
    from qhw.engine.config import EngineConfig
    from qhw.errors import ConfigError

    rng = np.random.default_rng([5, sum(map(ord, "Tanh"))])
    net = (Net(rng, (1, 3, 8, 8)).conv(8, 3, pads=(1, 1, 1, 1), relu=False).op("Tanh")
           .conv(8, 3, relu=False).op("MaxPool", kernel_shape=[2, 2], strides=[2, 2]).op("Tanh")
           .op("Flatten").dense(4, 8 * 3 * 3))
    x = rng.uniform(-2, 2, (16, 3, 8, 8)).astype(np.float32)
    qm = quantize(net.save(tmp_path / "tanh.onnx"), x)
    array = engine_for(qm.graph).array
    with pytest.raises(ConfigError, match=r"^m: does not fit the engine: table memories need 2 tables but have 1; "
                                          r"smallest that fits: --tables 2 "):
        compile_model(qm, EngineConfig(array=array), source="m")
    assert fit_engine(qm, array).tables == 2


def test_onnx_rounding_add_on_the_host_bit_exact(digits):
    """``onnx`` rounding's Add is ONNX Runtime's float QLinearAdd, which the ADD descriptor does not
    carry: the Add runs on the host between two engine segments, bit-exact on every test image. The
    standalone AveragePool's ``onnx_float`` rule uses the code offset ORT gives its output
    (``onnx_offsets``: uint8 here, not the tensor's own), as the golden model does."""
    qm = quantize(builtin_model_path("digits_resnet"), digits["calib_x"], rounding="onnx")
    pool = next(n for n in qm.graph.nodes if n.op == "AveragePool")
    assert pool.quant["onnx_offsets"][-1] != qm.graph.tensors[pool.outputs[0]].code_offset   # the case that matters
    compiled = assert_bit_exact(qm, digits["test_x"])
    assert compiled.host_nodes == ["add"] and compiled.program.segments == 2


@pytest.mark.parametrize("act", ["s8", "u8"])
def test_onnxruntime_qdq_resnet_in_onnx_rounding(tmp_path, digits, act):
    """The residual model quantized by ONNX Runtime's quantize_static (QDQ, per channel, int8 and uint8
    activations), imported in ``--rounding onnx``: the Add (QLinearAdd) on the host, the rest on the
    engine in two segments, bit-exact on all 450 test images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"x": digits["calib_x"][i:i + 100]} for i in range(0, 300, 100))

        def get_next(self):
            return next(self.batches, None)

    dst = tmp_path / f"resnet_qdq_{act}.onnx"
    quantize_static(str(builtin_model_path("digits_resnet")), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8 if act == "s8" else QuantType.QUInt8)
    qm = quantize(dst, None, rounding="onnx")
    assert qm.is_qdq
    compiled = assert_bit_exact(qm, digits["test_x"])
    assert compiled.host_nodes == ["add"] and compiled.program.segments == 2
