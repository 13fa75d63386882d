"""The reference model against the golden model (``qhw run``): zero mismatching codes."""

from __future__ import annotations

import numpy as np
import pytest

from qhw.engine.compiler import compile_model
from qhw.engine.program import Program
from qhw.engine.run import run_engine

from .conftest import Net, engine_for, golden_codes, own_scale_pools, quantize


def assert_bit_exact(qm, x, **engine):
    compiled = compile_model(qm, engine_for(qm.graph, **engine))
    program = Program.from_bytes(compiled.program.to_bytes())      # run what the file holds
    _, codes = run_engine(program, qm.graph, x)
    want = golden_codes(qm.graph, x)
    assert want and set(codes) == set(want)
    for name, w in want.items():
        assert codes[name].shape == w.shape
        assert int(np.count_nonzero(codes[name] != w)) == 0, name
    return compiled


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_digits_whole_test_split_bit_exact(digits_q, digits, name):
    compiled = assert_bit_exact(digits_q[name], digits["test_x"])    # all 450 test images
    assert not compiled.host_nodes or name == "digits_mlp"            # the MLP's float Flatten stays on the host


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 4), (16, 16)])
def test_digits_cnn_other_arrays(digits_q, digits, rows, cols):
    assert_bit_exact(digits_q["digits_cnn"], digits["test_x"][:64], rows=rows, cols=cols)


# Small random conv models: (id, input shape, builder). Every geometry the address generator handles.
CASES = [
    ("pads-every-side", (1, 3, 7, 6), lambda n: n.conv(12, 3, pads=(1, 2, 0, 3)).conv(8, (2, 3), pads=(2, 0, 1, 1))),
    ("stride2", (1, 5, 9, 9), lambda n: n.conv(16, 3, pads=(1, 1, 1, 1), stride=2).conv(9, 3, stride=2)),
    ("dilation2", (1, 8, 10, 10), lambda n: n.conv(8, 3, pads=(2, 2, 2, 2), dilation=2).conv(4, 3, dilation=2)),
    ("1x1", (1, 20, 5, 5), lambda n: n.conv(17, 1).conv(24, 1, stride=2)),
    ("kernel-as-input", (1, 6, 5, 5), lambda n: n.conv(10, 5).op("Flatten").dense(7, 10)),
    ("depthwise", (1, 16, 6, 6), lambda n: n.conv(16, 3, pads=(1, 1, 1, 1), group=16).conv(16, 3, group=16, stride=2)),
    ("grouped", (1, 12, 6, 6), lambda n: n.conv(12, 3, pads=(1, 1, 1, 1), group=3).conv(8, 1, group=2)),
    ("window-c1", (1, 1, 9, 11), lambda n: n.conv(8, 3, pads=(1, 1, 1, 1), stride=2, dilation=2).conv(8, 3)),
    ("window-c2", (1, 2, 8, 8), lambda n: n.conv(6, 3, pads=(0, 1, 2, 1), stride=2)),
    ("pools", (1, 4, 12, 12), lambda n: n.conv(10, 3, pads=(1, 1, 1, 1)).op("MaxPool", kernel_shape=[3, 3],
                                                                              strides=[2, 2], pads=[1, 1, 1, 1])
     .conv(8, 1).op("AveragePool", kernel_shape=[2, 2], strides=[2, 2])
     .op("AveragePool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
     .op("GlobalAveragePool").op("Flatten").dense(5, 8)),
    ("flatten-spatial", (1, 3, 4, 4), lambda n: n.conv(9, 3, pads=(1, 1, 1, 1)).op("Flatten").dense(11, 144)
     .op("Relu").dense(3, 11)),
]
SEED = 7


@pytest.mark.parametrize("rounding", ["single", "tflite", "onnx"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_random_conv_models_bit_exact(tmp_path, case, rounding):
    name, shape, build = case
    rng = np.random.default_rng([SEED, sum(map(ord, name))])         # seed 7 mixed with the case name
    path = build(Net(rng, shape)).save(tmp_path / f"{name}.onnx")
    x = rng.uniform(-1, 1, (24, *shape[1:])).astype(np.float32)
    qm = quantize(path, x[:16], rounding=rounding)
    compiled = assert_bit_exact(qm, x)
    assert not [n for n in compiled.host_nodes if n.startswith(("conv", "fc"))]


def test_host_node_splits_segments(tmp_path):
    rng = np.random.default_rng(11)
    net = Net(rng, (1, 4, 6, 6)).conv(8, 3, pads=(1, 1, 1, 1)).op("Sigmoid").conv(8, 3).op("Flatten").dense(4, 128)
    path = net.save(tmp_path / "split.onnx")
    x = rng.uniform(-1, 1, (16, 4, 6, 6)).astype(np.float32)
    qm = quantize(path, x, keep_float=("sigmoid3",))
    compiled = assert_bit_exact(qm, x)
    assert compiled.program.segments == 2 and compiled.host_nodes == ["sigmoid3"]


@pytest.mark.parametrize("rounding", ["single", "tflite", "onnx"])
def test_pool_with_its_own_output_scale(tmp_path, rounding):
    """A pool whose output scale differs from its input's (a QDQ model's): the per-count multiplier
    tables (single/tflite) and scales (onnx), fused and standalone."""
    qm, x = own_scale_pools(tmp_path, rounding)
    compiled = assert_bit_exact(qm, x)
    rules = {d["rule"] for d in compiled.program.descriptors if d.op in ("MATMUL", "POOL") and d["pool"]}
    assert len(rules) >= 1 and 1 not in rules          # never the same-scale divide


def test_m_chunks_when_the_accumulator_is_short(digits_q, digits):
    """acc_depth 16: conv1/conv2 (64 rows, several K tiles) run in 4 M chunks each, and conv2's pool
    cannot be fused (its rows would interleave over N tiles), so it becomes a POOL descriptor."""
    from dataclasses import replace

    qm = digits_q["digits_cnn"]
    base = engine_for(qm.graph)
    cfg = replace(base, array=replace(base.array, acc_depth=16))
    compiled = compile_model(qm, cfg)
    _, codes = run_engine(Program.from_bytes(compiled.program.to_bytes()), qm.graph, digits["test_x"][:100])
    want = golden_codes(qm.graph, digits["test_x"][:100])
    assert all(int(np.count_nonzero(codes[k] != want[k])) == 0 for k in want)
    ops = [layer.op for layer in compiled.layers]
    assert "MaxPool" in ops and [x.tiles for x in compiled.layers if x.op == "Conv"][:2] == ["3x1x4", "9x2x4"]


def test_fit_engine_is_the_smallest(digits_q):
    from qhw.engine.compiler import fit_engine

    qm = digits_q["digits_cnn"]
    cfg = fit_engine(qm, engine_for(qm.graph).array)
    assert (cfg.weight_kib, cfg.act_kib, cfg.program_words) == (8, 1, 112)
    compile_model(qm, cfg)


@pytest.mark.parametrize("act", ["s8", "u8"])
def test_onnxruntime_qdq_cnn_in_onnx_rounding(tmp_path, cnn_path, digits, act):
    """The digits CNN quantized by ONNX Runtime's quantize_static (QDQ, per channel), imported in
    ``--rounding onnx``: its pools carry their own scales, so the onnx average rules run."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from qhw.api import quantize_model
    from qhw.quantize import QuantConfig

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"x": digits["calib_x"][i:i + 100]} for i in range(0, 300, 100))

        def get_next(self):
            return next(self.batches, None)

    dst = tmp_path / f"cnn_qdq_{act}.onnx"
    quantize_static(str(cnn_path), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8 if act == "s8" else QuantType.QUInt8)
    qm = quantize_model(dst, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
    assert qm.is_qdq
    compiled = assert_bit_exact(qm, digits["test_x"])
    # ORT keeps each BatchNormalization as its own float node between Q/DQ pairs: host segments
    assert all("BatchNormalization" in n for n in compiled.host_nodes) and compiled.program.segments == 4


def test_reshape_that_merges_the_batch_stays_on_the_host(tmp_path):
    """Reshape (B, C, H, W) -> (B*C, H*W) is not a flatten: the host runs it and the Dense after it."""
    from onnx import helper

    rng = np.random.default_rng(12)
    net = Net(rng, (1, 4, 3, 3)).conv(4, 3, pads=(1, 1, 1, 1))
    net.inits["shape"] = np.array([-1, 9], np.int64)
    name = net._name("Reshape")
    net.nodes.append(helper.make_node("Reshape", [net.cur, "shape"], [name], name=name))
    net.cur = name
    net.dense(5, 9)
    path = net.save(tmp_path / "merge.onnx")
    x = rng.uniform(-1, 1, (8, 4, 3, 3)).astype(np.float32)
    qm = quantize(path, x)
    compiled = assert_bit_exact(qm, x)
    assert name in compiled.host_nodes


def test_standalone_relu_and_clip(digits_q, digits, tmp_path):
    """Integer Relu/Clip nodes: folded into the producing MATMUL's clamp, or (after a pool) a 1x1 POOL.
    Built from the digits CNN by moving conv1's and conv2's fused ReLU into nodes of their own, and a
    Clip after the MaxPool (bounds from the golden model's own tensors)."""
    import copy

    from qhw.graph import Node

    qm = copy.deepcopy(digits_q["digits_cnn"])
    g = qm.graph
    nodes = []
    for n in g.nodes:
        nodes.append(n)
        if n.name in ("/conv1/Conv", "/conv2/Conv", "/pool/MaxPool"):
            out, new = n.outputs[0], n.outputs[0] + "_pre"
            n.outputs = [new]
            g.tensors[new] = g.tensors[out]
            lo, hi = {"/conv1/Conv": (-60, 127), "/conv2/Conv": (-128, 70), "/pool/MaxPool": (-100, 90)}[n.name]
            if n.op == "Conv":
                n.quant = dict(n.quant, qmin=-128)          # the conv no longer clamps at the zero point
            op = "Clip" if n.op == "MaxPool" else "Relu"
            nodes.append(Node(name=f"{n.name}_{op}", op=op, inputs=[new], outputs=[out],
                              attrs={"activation": {"kind": "relu"}},
                              quant={"rounding": "single", "qmin": lo, "qmax": hi}))
    g.nodes = nodes
    compiled = assert_bit_exact(qm, digits["test_x"])
    ops = [x.op for x in compiled.layers]
    assert ops.count("Clip") == 1 and "Relu" not in ops     # both Relus folded, the Clip a POOL pass
    clamps = [(d["qmin"], d["qmax"]) for d in compiled.program.descriptors if d.op == "MATMUL"]
    assert clamps[:2] == [(-60, 127), (-128, 70)]
