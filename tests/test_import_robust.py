"""Import robustness on zoo-style models built here with onnx.helper: constant subgraphs behind
weights, graph inputs with initializers, old opsets, unsupported attributes (float fallback and
--strict), and notes that list every float node. Each model goes through the command line:
quantize -> run -> analyze -> export-onnx, and the export passes the full ONNX checker and loads
in ONNX Runtime."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from ort_ref import ort_output

from qhw.cli import main
from qhw.executor import run_float
from qhw.onnx_import import import_model
from qhw.qmodel import load_qmodel

SEED = 13
F = np.float32


def _save(path, nodes, inits, in_shape, *, opset=13, ir=None, inputs_with_inits=False):
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)]
    if inputs_with_inits:  # IR < 4 style: every initializer is also a graph input
        ins += [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                for k, v in inits.items()]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    if ir is not None:
        m.ir_version = ir
    onnx.save(m, path)
    return path


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _through_the_cli(capsys, tmp_path, model, x, *extra):
    """quantize -> run -> analyze -> export-onnx; returns (QModel, quantize's stderr, exported path)."""
    np.savez(tmp_path / "d.npz", x=x)
    code, _, qerr = _cli(capsys, "quantize", model, "--calib", tmp_path / "d.npz", "-o", tmp_path / "m.qhw", *extra)
    assert code == 0, qerr
    code, _, err = _cli(capsys, "run", tmp_path / "m.qhw", "--data", tmp_path / "d.npz", "-o", tmp_path / "y.npz")
    assert code == 0, err
    code, out, err = _cli(capsys, "analyze", tmp_path / "m.qhw", "--data", tmp_path / "d.npz", "--json",
                          "--no-sensitivity")
    assert code == 0, err
    assert "output_sqnr_db" in json.loads(out)
    code, _, err = _cli(capsys, "export-onnx", tmp_path / "m.qhw", "-o", tmp_path / "q.onnx")
    assert code == 0, err
    exported = onnx.load(tmp_path / "q.onnx")
    onnx.checker.check_model(exported, full_check=True)
    y = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with np.load(tmp_path / "y.npz") as z:
        assert y.shape == z["y"].shape
    return load_qmodel(tmp_path / "m.qhw"), qerr, tmp_path / "q.onnx"


def _nq(qm) -> tuple[int, int]:
    return sum(n.quant is not None for n in qm.graph.nodes), len(qm.graph.nodes)


# --------------------------------------------------------------------------- constant subgraphs


def test_linear_without_bias_transposed_weight_is_quantized(capsys, tmp_path):
    """PyTorch's older Linear export: MatMul(x, Transpose(W)) with W an initializer."""
    rng = np.random.default_rng(SEED)
    inits = {"w1": rng.normal(0, 0.3, (16, 12)).astype(F), "w2": rng.normal(0, 0.3, (5, 16)).astype(F)}
    nodes = [helper.make_node("Transpose", ["w1"], ["w1t"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "w1t"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Transpose", ["w2"], ["w2t"]),  # default perm reverses
             helper.make_node("MatMul", ["r", "w2t"], ["y"], name="fc2")]
    model = _save(tmp_path / "lin.onnx", nodes, inits, ["N", 12])
    x = rng.normal(0, 1, (64, 12)).astype(F)
    graph, _ = import_model(model)
    assert [n.op for n in graph.nodes] == ["Dense", "Dense"]
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x)
    assert _nq(qm) == (2, 2), err
    assert "kept float" not in err


def _ort_unoptimized(path, x):
    """ONNX Runtime on a QDQ model with graph optimizations off: DQ -> float op -> Q, the QDQ
    graph's own definition. On CPUs without AVX-VNNI, ORT's fused int8 MatMul/Conv kernels
    (u8 x s8 with 16-bit pair sums) saturate and disagree with that definition by tens of LSB."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_ort_qdq_of_a_transposed_weight_matmul_reproduced(tmp_path, per_channel):
    """ORT's quantize_static on the Linear-without-bias export quantizes the Transpose output as
    Q -> DQ of a constant: folded, it is the layer's integer weight."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from qhw.api import quantize_model, run_batched
    from qhw.quantize import QuantConfig

    rng = np.random.default_rng(SEED)
    inits = {"w1": rng.normal(0, 0.3, (16, 12)).astype(F), "w2": rng.normal(0, 0.3, (5, 16)).astype(F)}
    nodes = [helper.make_node("Transpose", ["w1"], ["w1t"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "w1t"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Transpose", ["w2"], ["w2t"]),
             helper.make_node("MatMul", ["r", "w2t"], ["y"], name="fc2")]
    model = _save(tmp_path / "lin.onnx", nodes, inits, ["N", 12])
    x = rng.normal(0, 1, (128, 12)).astype(F)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": x}])

        def get_next(self):
            return next(self.batches, None)

    dst = tmp_path / "q.onnx"
    quantize_static(str(model), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    qm = quantize_model(dst, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
    assert [(n.op, "W_q" in n.params, n.quant is not None) for n in qm.graph.nodes] == [("Dense", True, True)] * 2
    np.testing.assert_array_equal(run_batched(qm.graph, x, integer=True), _ort_unoptimized(dst, x))


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_qdq_weight_codes_follow_a_constant_transpose(tmp_path, per_channel):
    """DQ(int8 W) -> Transpose -> MatMul: the model's own integer weights and scales are kept."""
    rng = np.random.default_rng(SEED)
    wq = rng.integers(-127, 128, (6, 10)).astype(np.int8)
    ws = (rng.uniform(0.001, 0.01, 6) if per_channel else np.array(0.004)).astype(F)
    inits = {"wq": wq, "ws": ws, "wz": np.zeros(ws.shape, np.int8), "xs": np.array(0.02, F),
             "xz": np.array(3, np.int8), "ys": np.array(0.05, F), "yz": np.array(-2, np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["xd", "wt"], ["h"], name="fc"),
             helper.make_node("QuantizeLinear", ["h", "ys", "yz"], ["hq"]),
             helper.make_node("DequantizeLinear", ["hq", "ys", "yz"], ["y"])]
    model = _save(tmp_path / "qdq.onnx", nodes, inits, ["N", 10])
    x = rng.normal(0, 1, (64, 10)).astype(F)
    from qhw.api import quantize_model, run_batched
    from qhw.quantize import QuantConfig

    qm = quantize_model(model, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
    (node,) = qm.graph.nodes
    np.testing.assert_array_equal(node.qparams["weight"], wq)
    np.testing.assert_array_equal(node.qparams["weight_scale"], np.broadcast_to(ws, (6,)))
    np.testing.assert_array_equal(run_batched(qm.graph, x, integer=True), _ort_unoptimized(model, x))


def test_weights_behind_reshape_unsqueeze_cast_constantofshape_identity(capsys, tmp_path):
    """SqueezeNet-style raw export: weights and biases computed from initializers by small
    constant subgraphs (and a Constant node in a value_floats form)."""
    rng = np.random.default_rng(SEED)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(F)
    inits = {"w1_flat": w1.reshape(-1), "w1_shape": np.array(w1.shape, np.int64),
             "b1_f64": rng.normal(0, 0.1, 8).astype(np.float64),
             "w2": rng.normal(0, 0.3, (4, 8)).astype(F), "ax": np.array([2, 3], np.int64),
             "b2_shape": np.array([4], np.int64)}
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [helper.make_node("Reshape", ["w1_flat", "w1_shape"], ["w1"]),
             helper.make_node("Cast", ["b1_f64"], ["b1"], to=TensorProto.FLOAT),
             helper.make_node("Identity", ["b1"], ["b1i"]),
             helper.make_node("Conv", ["x", "w1", "b1i"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Unsqueeze", ["w2", "ax"], ["w2u"]),  # (4, 8, 1, 1): a 1x1 conv weight
             helper.make_node("ConstantOfShape", ["b2_shape"], ["b2"], value=zero),
             helper.make_node("Constant", [], ["b2_extra"], value_floats=[0.5, -0.5, 0.25, 0.0]),
             helper.make_node("Add", ["b2", "b2_extra"], ["b2s"]),
             helper.make_node("Conv", ["r1", "w2u", "b2s"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flat")]
    model = _save(tmp_path / "sq.onnx", nodes, inits, ["N", 3, 8, 8])
    x = rng.normal(0, 1, (32, 3, 8, 8)).astype(F)
    graph, _ = import_model(model)
    assert [n.op for n in graph.nodes] == ["Conv", "Conv", "GlobalAveragePool", "Flatten"]
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x)
    assert _nq(qm) == (4, 4), err


def test_graph_input_with_initializer_is_a_constant(capsys, tmp_path):
    """Inception v1 (opset 9, IR 3): the classifier weight is Reshape(initializer, shape) with
    both listed as graph inputs."""
    rng = np.random.default_rng(SEED)
    inits = {"w": rng.normal(0, 0.3, (6 * 16,)).astype(F), "w_shape": np.array([6, 16], np.int64),
             "b": rng.normal(0, 0.1, 6).astype(F), "flat_shape": np.array([0, -1], np.int64)}
    nodes = [helper.make_node("Reshape", ["x", "flat_shape"], ["xf"], name="n140"),
             helper.make_node("Reshape", ["w", "w_shape"], ["wr"], name="n141"),
             helper.make_node("Gemm", ["xf", "wr", "b"], ["y"], name="fc", transB=1)]
    model = _save(tmp_path / "inc.onnx", nodes, inits, ["N", 1, 4, 4], opset=9, ir=3, inputs_with_inits=True)
    x = rng.normal(0, 1, (16, 1, 4, 4)).astype(F)
    graph, _ = import_model(model)
    assert [i.name for i in graph.inputs] == ["x"]
    assert [n.name for n in graph.nodes] == ["n140", "fc"]
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x)
    assert _nq(qm) == (1, 2), err  # the Reshape of the float graph input stays float
    assert "converted from opset 9 to opset 13" in err
    assert "kept float (its input is float): n140 (Reshape)" in err


# --------------------------------------------------------------------------- old opsets


def test_opset6_batchnorm_and_prelu_are_converted_with_a_note(capsys, tmp_path):
    """ONNX Runtime cannot run opset-6 BatchNormalization: the import converts the model up."""
    rng = np.random.default_rng(SEED)
    c = 4
    inits = {"w": rng.normal(0, 0.3, (c, 3, 3, 3)).astype(F), "s": rng.uniform(0.5, 1.5, c).astype(F),
             "bb": rng.normal(0, 0.1, c).astype(F), "m": rng.normal(0, 0.1, c).astype(F),
             "v": rng.uniform(0.5, 1.5, c).astype(F), "slope": rng.uniform(0, 0.3, (c, 1, 1)).astype(F)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["bn"], name="bn", is_test=1),
             helper.make_node("PRelu", ["bn", "slope"], ["y"], name="prelu")]
    model = _save(tmp_path / "old.onnx", nodes, inits, ["N", 3, 8, 8], opset=6, ir=3, inputs_with_inits=True)
    with pytest.raises(Exception, match="BatchNormalization"):  # what users hit without the conversion
        ort_output(model, np.zeros((1, 3, 8, 8), F))
    x = rng.normal(0, 1, (16, 3, 8, 8)).astype(F)
    notes: list[str] = []
    graph, _ = import_model(model, notes=notes)
    assert notes == ["old.onnx: converted from opset 6 to opset 13 (onnx.version_converter)"]
    assert [n.op for n in graph.nodes] == ["Conv", "Onnx"]  # BatchNormalization folded into the conv
    # independent reference: the float math of the three layers in NumPy, float64
    conv_only = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])
    conv = ort_output(_save(tmp_path / "conv.onnx", [conv_only], {"w": inits["w"]}, ["N", 3, 8, 8]), x)
    sh = (1, c, 1, 1)
    bn = (conv - inits["m"].reshape(sh)) / np.sqrt(inits["v"].reshape(sh) + 1e-5) * inits["s"].reshape(sh) \
        + inits["bb"].reshape(sh)
    ref = np.where(bn >= 0, bn, bn * inits["slope"][None])
    np.testing.assert_allclose(run_float(graph, x)[0], ref, rtol=1e-4, atol=1e-4)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x)
    assert "note: old.onnx: converted from opset 6 to opset 13" in err


# --------------------------------------------------------------------------- float fallback and notes


def _ceil_avgpool_model(path):
    rng = np.random.default_rng(SEED)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(F), "shape": np.array([0, -1], np.int64),
             "w2": rng.normal(0, 0.3, (3, 4 * 3 * 3)).astype(F)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("AveragePool", ["r"], ["p"], name="pool_ceil", kernel_shape=[2, 2], strides=[2, 2],
                              ceil_mode=1),
             helper.make_node("Relu", ["p"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[1, 1]),
             helper.make_node("Reshape", ["p2", "shape"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "w2"], ["y"], name="fc", transB=1)]
    return _save(path, nodes, inits, ["N", 3, 6, 6])


def test_unsupported_attribute_runs_in_float_with_a_note(capsys, tmp_path):
    model = _ceil_avgpool_model(tmp_path / "ceil.onnx")
    x = np.random.default_rng(SEED).normal(0, 1, (16, 3, 6, 6)).astype(F)
    graph, _ = import_model(model)
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x)
    floats = [n.name for n in qm.graph.nodes if n.quant is None]
    assert floats == ["pool_ceil", "relu2", "pool2", "reshape"]
    assert ("note: kept float (unsupported attribute; --strict makes this an error): pool_ceil (AveragePool: "
            "attribute ceil_mode=1 is not supported (expected 0))") in err
    # every float node is listed, the ones behind the float pool with that reason
    assert "note: kept float (its input is float): relu2 (Relu), pool2 (MaxPool), " \
           "reshape (Reshape)" in err
    assert "quantized 2 of 6 nodes" in err


def test_strict_makes_an_unsupported_attribute_a_one_line_error(capsys, tmp_path):
    model = _ceil_avgpool_model(tmp_path / "ceil.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 6, 6), F))
    code, out, err = _cli(capsys, "quantize", model, "--calib", tmp_path / "d.npz", "-o", tmp_path / "m.qhw",
                          "--strict")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"qhw: error: node 'pool_ceil' \(AveragePool\): attribute ceil_mode=1 is not supported "
                        r"\(expected 0\); use --keep-float pool_ceil to run it in float", lines[0]), lines[0]
    assert not (tmp_path / "m.qhw").exists()


def test_notes_list_every_float_node_with_its_reason(capsys, tmp_path):
    """Softmax has no integer kernel; the MaxPool, Relu and Reshape after it run in float
    because their input is float; the user keeps fc1 float."""
    rng = np.random.default_rng(SEED)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(F), "shape": np.array([0, -1], np.int64),
             "w1": rng.normal(0, 0.3, (8, 16)).astype(F), "w2": rng.normal(0, 0.3, (3, 8)).astype(F)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Softmax", ["c"], ["s"], name="soft", axis=1),
             helper.make_node("MaxPool", ["s"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["p"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "w1"], ["h"], name="fc1", transB=1),
             helper.make_node("Gemm", ["h", "w2"], ["y"], name="fc2", transB=1)]
    model = _save(tmp_path / "n.onnx", nodes, inits, ["N", 3, 6, 6])
    x = rng.normal(0, 1, (16, 3, 6, 6)).astype(F)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x, "--keep-float", "fc1")
    notes = [ln[len("note: "):] for ln in err.splitlines() if ln.startswith("note: ")]
    assert notes == ["kept float (no integer implementation): soft (Softmax)",
                     "kept float (its input is float): pool (MaxPool), relu (Relu), "
                     "reshape (Reshape)",
                     "kept float (--keep-float): fc1"]
    assert [n.name for n in qm.graph.nodes if n.quant is not None] == ["conv", "fc2"]


# --------------------------------------------------------------------------- Pad


def _pad_model(path, *, value: float, conv_pads=(0, 0, 0, 0), opset=13):
    rng = np.random.default_rng(SEED)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(F), "b": rng.normal(0, 0.1, 4).astype(F),
             "pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "v": np.array(value, F),
             "pads2": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "zero": np.array(0.0, F)}
    nodes = [helper.make_node("Pad", ["x", "pads", "v"], ["p"], name="pad"),
             helper.make_node("Conv", ["p", "w", "b"], ["c"], name="conv", pads=list(conv_pads)),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Pad", ["r", "pads2", "zero"], ["p2"], name="pad2"),
             helper.make_node("AveragePool", ["p2"], ["y"], name="avg", kernel_shape=[3, 3], strides=[2, 2])]
    return _save(path, nodes, inits, ["N", 3, 7, 7], opset=opset)


def test_zero_pad_folds_into_conv_and_average_pool(capsys, tmp_path):
    model = _pad_model(tmp_path / "pad.onnx", value=0.0, conv_pads=(1, 0, 0, 1))
    x = np.random.default_rng(SEED).normal(0, 1, (16, 3, 7, 7)).astype(F)
    graph, _ = import_model(model)
    assert [n.op for n in graph.nodes] == ["Conv", "AveragePool"]
    assert graph.nodes[0].attrs["pads"] == [2, 2, 2, 2]
    assert graph.nodes[1].attrs["pads"] == [1, 1, 1, 1] and graph.nodes[1].attrs["count_include_pad"] == 1
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x, "--rounding", "onnx")
    assert _nq(qm) == (2, 2), err


@pytest.mark.parametrize("value", [0.75, -1e9])
def test_nonzero_pad_is_an_integer_pad(capsys, tmp_path, value):
    """A pad value other than 0 stays a Pad node, integer after an integer producer: the output
    keeps the input's scale and padded elements hold Q(value) (saturated when out of range)."""
    rng = np.random.default_rng(SEED)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 1, 1)).astype(F), "pads": np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64),
             "v": np.array(value, F), "w2": rng.normal(0, 0.3, (4, 4, 3, 3)).astype(F)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Pad", ["c", "pads", "v"], ["p"], name="pad"),
             helper.make_node("Conv", ["p", "w2"], ["y"], name="conv2")]
    model = _save(tmp_path / "pad.onnx", nodes, inits, ["N", 3, 5, 5])
    x = rng.normal(0, 1, (16, 3, 5, 5)).astype(F)
    graph, _ = import_model(model)
    assert [n.op for n in graph.nodes] == ["Conv", "Pad", "Conv"]
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, out = _through_the_cli(capsys, tmp_path, model, x, "--rounding", "onnx")
    assert _nq(qm) == (3, 3), err
    from qhw.executor import Trace, run_int
    tr = Trace()
    y = run_int(qm.graph, x, trace=tr)[0]
    qp = qm.graph.tensors["c"]
    code = np.clip(np.rint(np.float64(value) / qp.scale) + qp.zero_point, qp.qmin, qp.qmax)
    padded = tr.codes["p"]
    assert padded.shape == (16, 4, 6, 7)
    assert np.all(padded[:, :, 0, :] == code) and np.all(padded[:, :, :, 5:] == code)
    np.testing.assert_array_equal(padded[:, :, 1:, :5], tr.codes["c"])
    # the exported QDQ model (QLinearConv, Pad between Q/DQ) reproduces the golden model exactly
    np.testing.assert_array_equal(ort_output(out, x), y)


# --------------------------------------------------------------------------- export validity


def test_export_of_an_opset9_model_is_valid_at_its_declared_opset(capsys, tmp_path):
    """DenseNet/Inception-v2 style: opset-9 Unsqueeze (axes attribute) and Pad (pads attribute)
    kept float used to be written as is into an opset-13 model (shape inference traceback)."""
    rng = np.random.default_rng(SEED)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(F), "w2": rng.normal(0, 0.3, (2, 4 * 6 * 6)).astype(F)}
    nodes = [helper.make_node("Pad", ["x"], ["p"], name="pad", mode="reflect", pads=[0, 0, 1, 1, 0, 0, 1, 1]),
             helper.make_node("Conv", ["p", "w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2"], ["g"], name="fc", transB=1),
             helper.make_node("Unsqueeze", ["g"], ["u"], name="unsq", axes=[2]),
             helper.make_node("Softmax", ["u"], ["y"], name="softmax", axis=1)]
    model = _save(tmp_path / "o9.onnx", nodes, inits, ["N", 3, 6, 6], opset=9)
    x = rng.normal(0, 1, (8, 3, 6, 6)).astype(F)
    qm, err, out = _through_the_cli(capsys, tmp_path, model, x)
    assert "converted from opset 9 to opset 13" in err
    # Unsqueeze and the converter's Flatten (opset-13 Softmax) move no arithmetic: integer
    assert [n.name for n in qm.graph.nodes if n.quant is not None] == ["conv", "flat", "fc", "unsq", "Flatten_7"]
    assert onnx.load(out).opset_import[0].version == 13


# --------------------------------------------------------------------------- Conv1d, ConvTranspose

CONV_VARIANTS = {
    # name: (node attrs, weight shape, input shape)
    "conv1d": (dict(op="Conv", pads=[1, 2], strides=[2], dilations=[2]), (5, 3, 3), ["N", 3, 11]),
    "conv1d_plain": (dict(op="Conv"), (5, 3, 3), ["N", 3, 11]),
    "conv3d": (dict(op="Conv", pads=[1, 0, 1, 0, 1, 1], strides=[2, 1, 2], dilations=[1, 2, 1]), (4, 3, 3, 2, 3),
               ["N", 3, 6, 7, 8]),
    "conv3d_grouped": (dict(op="Conv", group=3, strides=[1, 2, 1]), (6, 1, 2, 2, 2), ["N", 3, 4, 5, 4]),
    "convtranspose2d": (dict(op="ConvTranspose", pads=[1, 0, 0, 1], strides=[2, 3], output_padding=[1, 0]),
                        (3, 5, 3, 2), ["N", 3, 5, 4]),
    "convtranspose1d": (dict(op="ConvTranspose", pads=[1, 1], strides=[2], dilations=[2]), (3, 4, 3),
                        ["N", 3, 7]),
}


def _conv_variant(path, name, seed=SEED):
    attrs, wshape, shape = CONV_VARIANTS[name]
    attrs = dict(attrs)
    op = attrs.pop("op")
    rng = np.random.default_rng(seed)
    m = wshape[1] if op == "ConvTranspose" else wshape[0]
    inits = {"w": rng.normal(0, 0.4, wshape).astype(F), "b": rng.normal(0, 0.1, m).astype(F)}
    nodes = [helper.make_node(op, ["x", "w", "b"], ["c"], name="conv", **attrs),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    x = rng.normal(0, 1, [64] + shape[1:]).astype(F)
    return _save(path, nodes, inits, shape), x


@pytest.mark.parametrize("name", list(CONV_VARIANTS))
def test_conv1d_and_convtranspose_are_integer_convs(capsys, tmp_path, name):
    """Float reference equals ONNX Runtime; quantized end to end; the array runtime's GEMM
    lowering equals the golden model; the export writes the original op back."""
    from qhw.executor import run_int
    from qhw.runtime import GoldenBackend, Runtime

    model, x = _conv_variant(tmp_path / f"{name}.onnx", name)
    graph, _ = import_model(model)
    assert [n.op for n in graph.nodes] == ["Conv"]
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, out = _through_the_cli(capsys, tmp_path, model, x, "--rounding", "onnx")
    assert _nq(qm) == (1, 1), err
    y = run_int(qm.graph, x)[0]
    np.testing.assert_array_equal(Runtime(qm.graph).run(x, GoldenBackend()), [y])
    kinds = [n.op_type for n in onnx.load(out).graph.node if n.op_type.startswith("Conv")]
    assert kinds == [CONV_VARIANTS[name][0]["op"]]
    # ORT's unoptimized run of the export: DQ -> float32 conv -> Q, so float rounding may move a
    # value across a rounding boundary (see the ORT test below for its integer kernels)
    _assert_within_float_rounding(y, _ort_unoptimized(out, x), qm)


def _assert_within_float_rounding(ours, theirs, qm):
    """At most 1 LSB apart, on at most 1 output in 1000."""
    lsb = np.abs(ours - theirs) / qm.graph.tensors[qm.graph.outputs[0]].scale
    assert lsb.max() < 1.01 and np.count_nonzero(lsb > 0.5) <= ours.size // 1000, np.count_nonzero(lsb > 0.5)


@pytest.mark.parametrize("act", ["s8", "u8"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("name", list(CONV_VARIANTS))
def test_ort_qdq_conv1d_and_convtranspose_reproduced(tmp_path, name, per_channel, act):
    """ORT quantize_static's QDQ model imported with --rounding onnx, against ONNX Runtime.

    Conv1d: ORT runs it as an NHWC QLinearConv; exact per tensor. Per channel, ORT's optimized
    kernel disagrees with ORT's own unoptimized run of the same QDQ graph on a few outputs (by
    tens of LSB: on this AVX2 CPU without VNNI its u8 x s8 kernels saturate 16-bit pair sums, see
    ``_ort_unoptimized``), and qhw equals the unoptimized run exactly.
    ConvTranspose: ORT has no integer kernel and runs DQ -> float32 ConvTranspose -> Q, so it
    rounds float sums; qhw's exact integer sum differs from it by at most 1 LSB, rarely.
    Conv3d: exact against ORT's QLinearConv per tensor; per channel its optimized kernel
    saturates like the 1-D one, and against the unoptimized run (float32 conv) the same <= 1 LSB
    bound holds."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from qhw.api import quantize_model, run_batched
    from qhw.quantize import QuantConfig

    model, x = _conv_variant(tmp_path / "f.onnx", name, seed=7)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": x[:32]}, {"x": x[32:]}])

        def get_next(self):
            return next(self.batches, None)

    dst = tmp_path / "q.onnx"
    quantize_static(str(model), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8 if act == "s8" else QuantType.QUInt8)
    qm = quantize_model(dst, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
    assert _nq(qm) == (1, 1)
    xt = np.random.default_rng(8).normal(0, 1, x.shape).astype(F)
    ours = run_batched(qm.graph, xt, integer=True)
    if CONV_VARIANTS[name][0]["op"] == "Conv" and not per_channel:  # ORT's integer QLinearConv
        np.testing.assert_array_equal(ours, ort_output(dst, xt))
    elif name.startswith("conv1d"):
        np.testing.assert_array_equal(ours, _ort_unoptimized(dst, xt))
    else:
        _assert_within_float_rounding(ours, _ort_unoptimized(dst, xt), qm)


# --------------------------------------------------------------------------- DenseNet affine


def test_densenet_unsqueeze_mul_add_affine_becomes_an_integer_depthwise_conv(capsys, tmp_path):
    """DenseNet-121 (zoo, opset 9) writes each pre-activation BatchNormalization as
    Mul(x, Unsqueeze(s)) + Unsqueeze(b) after a Concat: it becomes one depthwise 1x1 Conv with
    the Relu fused, quantized like any conv."""
    rng = np.random.default_rng(SEED)
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(F), "s": rng.uniform(0.5, 2, 7).astype(F),
             "b": rng.normal(0, 0.3, 7).astype(F), "w2": rng.normal(0, 0.3, (5, 7, 1, 1)).astype(F)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["x", "c"], ["cat"], name="concat", axis=1),
             helper.make_node("Unsqueeze", ["s"], ["su"], axes=[1, 2]),
             helper.make_node("Unsqueeze", ["b"], ["bu"], axes=[1, 2]),
             helper.make_node("Mul", ["cat", "su"], ["m"], name="bn_mul"),
             helper.make_node("Add", ["m", "bu"], ["a"], name="bn_add"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2")]
    model = _save(tmp_path / "dense.onnx", nodes, inits, ["N", 3, 6, 6], opset=9)
    x = rng.normal(0, 1, (32, 3, 6, 6)).astype(F)
    graph, _ = import_model(model)
    assert [n.name for n in graph.nodes] == ["conv", "concat", "bn_mul", "conv2"]
    dw = graph.node("bn_mul")
    assert dw.op == "Conv" and dw.attrs["group"] == 7 and dw.attrs["activation"] == {"kind": "relu"}
    np.testing.assert_allclose(dw.params["W"].reshape(-1), inits["s"])
    np.testing.assert_allclose(dw.params["b"], inits["b"])
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x)
    assert [n.name for n in qm.graph.nodes if n.quant is None] == ["concat"], err


# --------------------------------------------------------------------------- nothing on the array


def test_generate_and_simulate_refuse_a_model_with_nothing_on_the_array(capsys, tmp_path, monkeypatch):
    from qhw.hw.config import ArrayConfig
    from qhw.hw.generate import write

    model = _conv_model_for_array(tmp_path / "c.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(SEED).normal(0, 1, (8, 3, 6, 6)).astype(F))
    code, _, err = _cli(capsys, "quantize", model, "--calib", tmp_path / "d.npz", "-o", tmp_path / "m.qhw",
                        "--keep-float", "conv")
    assert code == 0, err
    want = (f"qhw: error: {tmp_path / 'm.qhw'}: nothing in this model runs on the array (no quantized Conv or "
            f"Dense layer; 0 of 2 nodes quantized); see the notes of qhw quantize for why its layers stayed float")
    code, out, err = _cli(capsys, "generate", "--for", tmp_path / "m.qhw", "--name", "a", "-o", tmp_path / "rtl")
    assert (code, err.strip().splitlines()) == (2, [want])
    assert not (tmp_path / "rtl").exists()
    monkeypatch.setenv("QHW_SIM_BUILD", str(tmp_path / "sim_build"))
    _, manifest = write(ArrayConfig(rows=2, cols=2, max_k=16), name="small", out_dir=tmp_path / "rtl2")
    code, out, err = _cli(capsys, "simulate", tmp_path / "m.qhw", "--rtl", manifest, "--data", tmp_path / "d.npz")
    assert (code, err.strip().splitlines()) == (2, [want])
    assert not (tmp_path / "sim_build").exists()


def _conv_model_for_array(path):
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[2, 2])]
    return _save(path, nodes, {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(F)}, ["N", 3, 6, 6])


# --------------------------------------------------------------------------- a zoo-style network


def test_squeezenet_style_opset9_network_end_to_end(capsys, tmp_path):
    """Fire modules (squeeze 1x1, expand 1x1 + 3x3, Concat), Dropout, global average pool and
    Softmax in an opset-9, IR-3 model whose initializers are graph inputs and whose classifier
    weight comes from a Constant node through a Reshape: every conv is quantized, the rest is
    listed in the notes, and export/ORT agree with the golden model in onnx mode."""
    rng = np.random.default_rng(SEED)
    inits, nodes = {}, []

    def conv(name, x, cin, cout, k, **kw):
        inits[f"{name}_w"] = rng.normal(0, (2 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(F)
        inits[f"{name}_b"] = rng.normal(0, 0.05, cout).astype(F)
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name,
                                      kernel_shape=[k, k], **kw))
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    h = conv("conv1", "x", 3, 8, 3, strides=[2, 2])
    nodes.append(helper.make_node("MaxPool", [h], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]))
    s = conv("fire_squeeze", "pool1", 8, 4, 1)
    e1 = conv("fire_e1", s, 4, 6, 1)
    e3 = conv("fire_e3", s, 4, 6, 3, pads=[1, 1, 1, 1])
    nodes.append(helper.make_node("Concat", [e1, e3], ["cat"], name="fire_concat", axis=1))
    nodes.append(helper.make_node("Dropout", ["cat"], ["drop"], name="drop", ratio=0.5))
    wc = rng.normal(0, 0.3, (5 * 12,)).astype(F)
    nodes.append(helper.make_node("Constant", [], ["wc_flat"], value=numpy_helper.from_array(wc)))
    inits["wc_shape"] = np.array([5, 12, 1, 1], np.int64)
    nodes.append(helper.make_node("Reshape", ["wc_flat", "wc_shape"], ["wc"]))
    nodes.append(helper.make_node("Conv", ["drop", "wc"], ["cls"], name="classifier"))
    nodes.append(helper.make_node("GlobalAveragePool", ["cls"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    nodes.append(helper.make_node("Softmax", ["flat"], ["y"], name="softmax"))
    model = _save(tmp_path / "sq.onnx", nodes, inits, [1, 3, 17, 17], opset=9, ir=3, inputs_with_inits=True)
    x = rng.normal(0, 1, (1, 3, 17, 17)).astype(F)
    graph, _ = import_model(model)
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-6)
    qm, err, out = _through_the_cli(capsys, tmp_path, model, x, "--rounding", "onnx")
    convs = [n.name for n in qm.graph.nodes if n.op == "Conv"]
    assert convs == ["conv1", "fire_squeeze", "fire_e1", "fire_e3", "classifier"]
    assert all(qm.graph.node(c).quant is not None for c in convs), err
    floats = [n.name for n in qm.graph.nodes if n.quant is None]
    listed = " ".join(ln for ln in err.splitlines() if ln.startswith("note: kept float"))
    assert floats and all(f"{name} (" in listed for name in floats), (floats, listed)


def test_standalone_batchnorm_of_a_4d_tensor_becomes_a_depthwise_conv(capsys, tmp_path):
    """Pre-activation BatchNormalization after a Concat (rank 4 by shape inference) runs in
    integers as a depthwise 1x1 conv; one on a 2-D tensor stays float (no conv of that rank)."""
    rng = np.random.default_rng(SEED)
    c = 7
    inits = {"w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(F), "s": rng.uniform(0.5, 2, c).astype(F),
             "b": rng.normal(0, 0.3, c).astype(F), "m": rng.normal(0, 0.3, c).astype(F),
             "v": rng.uniform(0.5, 2, c).astype(F), "w2": rng.normal(0, 0.3, (5, c, 1, 1)).astype(F),
             "s2": rng.uniform(0.5, 2, 5).astype(F), "b2": rng.normal(0, 0.3, 5).astype(F),
             "m2": rng.normal(0, 0.3, 5).astype(F), "v2": rng.uniform(0.5, 2, 5).astype(F)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["x", "c"], ["cat"], name="concat", axis=1),
             helper.make_node("BatchNormalization", ["cat", "s", "b", "m", "v"], ["bn"], name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Relu", ["f"], ["fr"], name="relu2"),
             helper.make_node("BatchNormalization", ["fr", "s2", "b2", "m2", "v2"], ["y"], name="bn1d")]
    model = _save(tmp_path / "bn.onnx", nodes, inits, ["N", 3, 6, 6])
    x = rng.normal(0, 1, (32, 3, 6, 6)).astype(F)
    graph, _ = import_model(model)
    assert [(n.name, n.op) for n in graph.nodes] == [
        ("conv", "Conv"), ("concat", "Onnx"), ("bn", "Conv"), ("conv2", "Conv"), ("gap", "GlobalAveragePool"),
        ("flat", "Flatten"), ("relu2", "Relu"), ("bn1d", "Onnx")]
    assert graph.node("bn").attrs["group"] == c and graph.node("bn").attrs["activation"] == {"kind": "relu"}
    np.testing.assert_allclose(run_float(graph, x)[0], ort_output(model, x), rtol=1e-5, atol=1e-5)
    qm, err, _ = _through_the_cli(capsys, tmp_path, model, x)
    assert [n.name for n in qm.graph.nodes if n.quant is None] == ["concat", "bn1d"], err


@pytest.mark.parametrize("attrs", [dict(dilations=[2, 2]), dict(ceil_mode=1, strides=[2, 2]),
                                   dict(ceil_mode=1, strides=[3, 2], pads=[1, 0, 1, 1], dilations=[1, 2])])
def test_maxpool_dilations_and_ceil_mode_are_integer(capsys, tmp_path, attrs):
    """torchvision's SqueezeNet pools with ceil_mode=True; dilated max pooling is a strided view."""
    rng = np.random.default_rng(SEED)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[3, 2], **attrs)]
    model = _save(tmp_path / "mp.onnx", nodes, {"w": rng.normal(0, 0.3, (4, 3, 1, 1)).astype(F)}, ["N", 3, 10, 9])
    x = rng.normal(0, 1, (16, 3, 10, 9)).astype(F)
    graph, _ = import_model(model)
    ref = ort_output(model, x)
    assert run_float(graph, x)[0].shape == ref.shape
    np.testing.assert_allclose(run_float(graph, x)[0], ref, rtol=1e-6, atol=1e-6)
    qm, err, out = _through_the_cli(capsys, tmp_path, model, x, "--rounding", "onnx")
    assert _nq(qm) == (2, 2), err
    from qhw.executor import run_int
    _assert_within_float_rounding(run_int(qm.graph, x)[0], _ort_unoptimized(out, x), qm)


def test_a_constant_graph_output_is_a_one_line_error(capsys, tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Transpose", ["c"], ["y"], name="t")]
    model = _save(tmp_path / "k.onnx", nodes, {"c": np.ones((2, 3), F)}, ["N", 4])
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 4), F))
    code, out, err = _cli(capsys, "quantize", model, "--calib", tmp_path / "d.npz", "-o", tmp_path / "m.qhw")
    assert code == 2
    assert err.strip().splitlines() == [f"qhw: error: {model}: graph output 'y' is a constant (it does not depend "
                                        f"on the input); qhw runs models whose outputs are computed from the input"]
