"""Table activations in the golden model: every elementwise function of one 8-bit (16-bit) input is a
256-entry (65536-entry) table of output codes, built at quantization (qhw.ops_elementwise.build_table)
and applied by lookup. ``single``/``tflite`` tables follow TFLite's LUTPopulate (float32 dequantize,
float64 function, round half away from zero); ``onnx`` tables use ONNX Runtime's own float kernel and
QuantizeLinear (checked against ORT in tests/test_ort_crosscheck.py)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from qhw.graph import Node, QParams
from qhw.onnx_node import CONST_PREFIX
from qhw.ops import INT_OPS
from qhw.ops_elementwise import TABLE_KINDS, build_table, int_kind

MODES = ("single", "tflite", "onnx")


def table_node(op: str, mode: str, qy: QParams, consts: dict | None = None, **attrs) -> Node:
    inputs = ["x"] + list(consts or {})
    proto = helper.make_node(op, inputs, ["y"], **attrs)
    params = {"node_proto": np.frombuffer(proto.SerializeToString(), np.uint8).copy()}
    params.update({CONST_PREFIX + k: v for k, v in (consts or {}).items()})
    return Node(op.lower(), "Onnx", ["x"], ["y"], attrs={"op_type": op, "domain": "", "opset": {"": 21}},
                params=params, quant={"rounding": mode, "qmin": qy.qmin, "qmax": qy.qmax})


def apply(node, x, qx, qy, mode):
    node.qparams = {"table": build_table(node, qx, qy, mode)}
    return INT_OPS["Onnx"](node, [x], [qx], [qy])[0]


@pytest.mark.parametrize("mode, expected", [
    ("single", [-2, -1, 0, 3]), ("tflite", [-2, -1, 0, 3]), ("onnx", [-2, 0, 0, 3])])
def test_leaky_relu_ties(mode, expected):
    """alpha 0.5, unit scales: -3 -> -1.5 and -1 -> -0.5 are ties; TFLite's table rounds them away
    from zero, QuantizeLinear (onnx) to even."""
    q = QParams(1.0, 0)
    node = table_node("LeakyRelu", mode, q, alpha=0.5)
    assert int_kind(node) == "LeakyRelu"
    np.testing.assert_array_equal(apply(node, np.array([-3, -1, 0, 3]), q, q, mode), expected)


@pytest.mark.parametrize("mode", MODES)
def test_sigmoid_table_monotonic_and_saturating(mode):
    qx, qy = QParams(0.08, 127), QParams(1 / 256, -128)            # input zero point at the top
    node = table_node("Sigmoid", mode, qy)
    x = np.arange(-128, 128)
    y = apply(node, x, qx, qy, mode)
    assert node.qparams["table"].shape == (256,) and node.qparams["table"].dtype == np.int8
    assert np.all(np.diff(y) >= 0)
    assert y[0] == -128 and y[-1] == 0                               # sigmoid(-20.3) ~ 0, sigmoid(0) = 0.5
    exact = 1 / (1 + np.exp(-(x - 127) * 0.08)) * 256 - 128
    assert np.max(np.abs(y - np.clip(exact, -128, 127))) <= 0.5 + 1e-9


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", sorted(set(TABLE_KINDS) - {"PRelu"}))
def test_every_table_kind_within_half_lsb(op, mode):
    qx, qy = QParams(0.05, -10), QParams(0.03, 20)
    node = table_node(op, mode, qy)
    x = np.arange(-128, 128)
    y = apply(node, x, qx, qy, mode)
    real = TABLE_KINDS[op](((x + 10) * np.float32(0.05)).astype(np.float32), {})
    exact = np.clip(real / 0.03 + 20, -128, 127)
    assert np.max(np.abs(y - exact)) <= 0.5 + 1e-3                    # ORT's float kernels are ulps off


@pytest.mark.parametrize("mode", MODES)
def test_prelu_one_table_per_channel(mode):
    slope = np.array([0.5, -1.0, 0.0], np.float32).reshape(3, 1, 1)
    q = QParams(1.0, 0)
    node = table_node("PRelu", mode, q, consts={"slope": slope})
    assert int_kind(node) == "PRelu"
    x = np.tile(np.array([-4, -2, 0, 5]).reshape(1, 1, 1, 4), (2, 3, 2, 1))
    y = apply(node, x, q, q, mode)
    assert node.qparams["table"].shape == (3, 256)
    np.testing.assert_array_equal(y[0, :, 0], [[-2, -1, 0, 5], [4, 2, 0, 5], [0, 0, 0, 5]])


def test_sixteen_bit_table():
    qx, qy = QParams(0.001, 0, bits=16), QParams(1 / 32768, 0, bits=16)
    node = table_node("Tanh", "single", qy)
    x = np.array([-32768, -1000, 0, 1000, 32767])
    y = apply(node, x, qx, qy, "single")
    assert node.qparams["table"].shape == (65536,) and node.qparams["table"].dtype == np.int16
    np.testing.assert_array_equal(y, np.clip(np.round(np.tanh(x * 0.001) * 32768), -32768, 32767))


def test_prelu_with_full_slope_tensor_stays_float():
    q = QParams(1.0, 0)
    node = table_node("PRelu", "single", q, consts={"slope": np.ones((3, 4, 4), np.float32)})
    assert int_kind(node) is None
