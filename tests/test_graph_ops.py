"""Hand-built ONNX graphs for the ops and folds the demo models do not exercise:
depthwise and strided/dilated Conv, AveragePool with padding, Reshape, constant
Add/Sub/Mul folds, and a Sigmoid that stays float. Random weights, stated seeds."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from ort_ref import SATURATION_FREE_WEIGHT_BITS

from qhw.api import quantize_model, run_batched
from qhw.executor import Trace, run_float, run_int
from qhw.export_onnx import export_qdq
from qhw.onnx_import import import_model
from qhw.quantize import QuantConfig

SEED = 20261126


def _save(tmp_path, nodes, inits, in_shape, name="m.onnx"):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / name
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.fixture
def conv_zoo(tmp_path):
    """Conv(3x3, stride 2, pad 1) -> Relu -> depthwise Conv(dilation 2) -> AveragePool(3, pad 1)
    -> Reshape -> Gemm -> Sigmoid."""
    rng = np.random.default_rng(SEED)
    f = np.float32
    inits = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(f), "b1": rng.normal(0, 0.1, 8).astype(f),
             "w2": rng.normal(0, 0.3, (8, 1, 3, 3)).astype(f), "b2": rng.normal(0, 0.1, 8).astype(f),
             "shape": np.array([0, -1], np.int64),
             "w3": rng.normal(0, 0.3, (5, 8 * 3 * 3)).astype(f), "b3": rng.normal(0, 0.1, 5).astype(f)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", group=8, dilations=[2, 2],
                         pads=[2, 2, 2, 2]),
        helper.make_node("AveragePool", ["c2"], ["p"], name="avg", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["p", "shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["g"], name="fc", transB=1),
        helper.make_node("Sigmoid", ["g"], ["y"], name="sigmoid"),
    ]
    path = _save(tmp_path, nodes, inits, ["N", 3, 12, 12])
    x = rng.normal(0, 1, (64, 3, 12, 12)).astype(f)
    return path, x


def test_conv_zoo_float_reference_equals_onnxruntime(conv_zoo):
    path, x = conv_zoo
    graph, _ = import_model(path)
    assert [n.op for n in graph.nodes] == ["Conv", "Conv", "AveragePool", "Reshape", "Dense", "Onnx"]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_float(graph, x)[0], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rounding", ["single", "tflite", "onnx"])
def test_conv_zoo_quantizes_with_sigmoid_table(conv_zoo, rounding):
    path, x = conv_zoo
    qm = quantize_model(path, QuantConfig(rounding=rounding), calib_x=x, log=lambda m: None)
    assert [n.name for n in qm.graph.nodes if n.quant is None] == []      # the sigmoid is a table
    assert qm.graph.node("sigmoid").qparams["table"].shape == (256,)
    yf = run_batched(qm.graph, x, integer=False)
    yq = run_batched(qm.graph, x, integer=True)
    assert np.abs(yq - yf).max() < 0.05  # sigmoid outputs in (0, 1)


def _ort_codes(path, x) -> dict[str, np.ndarray]:
    """Run a QDQ model in ONNX Runtime and return the integer codes of every QuantizeLinear."""
    m = onnx.load(path)
    names = {}
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear":
            names[n.output[0]] = n.input[0]
            m.graph.output.append(helper.make_tensor_value_info(n.output[0], TensorProto.INT8, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))
    return {t: outs[q].astype(np.int64) for q, t in names.items()}


def test_conv_zoo_export_matches_onnxruntime_layers(conv_zoo, tmp_path):
    """Exported QDQ model vs golden model in onnx mode, tensor by tensor: QLinearConv and
    QLinearAveragePool (which sums dequantized floats tap by tap) agree exactly, and so does
    the float Sigmoid output."""
    path, x = conv_zoo
    cfg = QuantConfig(rounding="onnx", weight_bits=SATURATION_FREE_WEIGHT_BITS)     # see tests/ort_ref.py
    qm = quantize_model(path, cfg, calib_x=x, log=lambda m: None)
    out = tmp_path / "q.onnx"
    export_qdq(qm, out)
    theirs = _ort_codes(out, x)
    tr = Trace()
    run_int(qm.graph, x, trace=tr)
    for t in ("r1", "c2", "p", "g"):
        np.testing.assert_array_equal(tr.codes[t], theirs[t], err_msg=t)
    ref = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(run_int(qm.graph, x)[0], ref)


def test_constant_affine_ops_fold_into_the_linear_layer(tmp_path):
    """skl2onnx-style MatMul + Add, then Mul and Sub by per-channel constants, fold into one Dense;
    a Mul on the model input has no producer to fold into and stays float."""
    rng = np.random.default_rng(SEED + 1)
    f = np.float32
    inits = {"s0": np.array(0.5, f), "w": rng.normal(size=(6, 4)).astype(f), "b": rng.normal(size=4).astype(f),
             "m": rng.uniform(0.5, 2, 4).astype(f), "c": rng.normal(size=(1, 4)).astype(f)}
    nodes = [helper.make_node("Mul", ["x", "s0"], ["xs"], name="prescale"),
             helper.make_node("MatMul", ["xs", "w"], ["mm"], name="matmul"),
             helper.make_node("Add", ["mm", "b"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "m"], ["mu"], name="mul"),
             helper.make_node("Sub", ["mu", "c"], ["y"], name="sub")]
    path = _save(tmp_path, nodes, inits, ["N", 6])
    graph, _ = import_model(path)
    assert [(n.name, n.op) for n in graph.nodes] == [("prescale", "Onnx"), ("matmul", "Dense")]
    x = rng.normal(size=(32, 6)).astype(f)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_float(graph, x)[0], ref, rtol=1e-5, atol=1e-5)
