"""Engine test fixtures: the quantized digits models, and small random conv models built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qhw.api import quantize_model
from qhw.engine.config import EngineConfig
from qhw.executor import int_steps
from qhw.quantize import QuantConfig
from qhw.runtime import config_for_model


def quantize(path, x, **cfg):
    return quantize_model(path, QuantConfig(**cfg), calib_x=x, log=lambda m: None)


@pytest.fixture(scope="session")
def digits_q(cnn_path, mlp_path, digits):
    x = digits["calib_x"]
    return {"digits_cnn": quantize(cnn_path, x), "digits_mlp": quantize(mlp_path, x)}


def engine_for(graph, **kw) -> EngineConfig:
    rows, cols = kw.pop("rows", 8), kw.pop("cols", 8)
    kw.setdefault("tables", 4)          # the test models use up to two tables (the default engine has one slot)
    return EngineConfig(array=config_for_model(graph, rows=rows, cols=cols), **kw)


def golden_codes(graph, x) -> dict[str, np.ndarray]:
    gen = int_steps(graph, x)
    try:
        next(gen)
    except StopIteration as stop:
        return stop.value[1]
    raise AssertionError("int_steps yielded without a lowering function")


def own_scale_pools(tmp_path, rounding: str):
    """(quantized model, inputs): a conv, a fused 2x2 AveragePool, a padded 3x3 AveragePool and a
    GlobalAveragePool (seed 3), each pool given its own output scale and zero point (as a QDQ model
    has), so the per-count tables are used."""
    rng = np.random.default_rng(3)
    net = (Net(rng, (1, 3, 8, 8)).conv(8, 3, pads=(1, 1, 1, 1)).op("AveragePool", kernel_shape=[2, 2], strides=[2, 2])
           .op("AveragePool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 0, 1, 1]).op("GlobalAveragePool"))
    path = net.save(tmp_path / "pools.onnx")
    x = rng.uniform(-1, 1, (20, 3, 8, 8)).astype(np.float32)
    qm = quantize(path, x, rounding=rounding)
    g = qm.graph
    for k, node in enumerate(n for n in g.nodes if n.op in ("AveragePool", "GlobalAveragePool")):
        out = node.outputs[0]
        g.tensors[out] = type(g.tensors[out])(scale=g.tensors[out].scale * (0.61 + 0.3 * k),
                                              zero_point=g.tensors[out].zero_point + 3, bits=8)
    return qm, x


class Net:
    """A float ONNX model assembled node by node (NCHW, opset 13), random weights from ``rng``."""

    def __init__(self, rng: np.random.Generator, in_shape):
        self.rng, self.in_shape = rng, tuple(in_shape)
        self.nodes, self.inits, self.cur, self.c, self.n = [], {}, "x", in_shape[1], 0

    def _name(self, op):
        self.n += 1
        return f"{op.lower()}{self.n}"

    def conv(self, cout, k, *, pads=(0, 0, 0, 0), stride=1, dilation=1, group=1, relu=True):
        name = self._name("conv")
        kh, kw = (k, k) if isinstance(k, int) else k
        fan = self.c // group * kh * kw
        w = self.rng.standard_normal((cout, self.c // group, kh, kw)) / np.sqrt(fan)
        self.inits[f"{name}_w"] = w.astype(np.float32)
        self.inits[f"{name}_b"] = (0.1 * self.rng.standard_normal(cout)).astype(np.float32)
        t, l_, b, r = pads
        self.nodes.append(helper.make_node("Conv", [self.cur, f"{name}_w", f"{name}_b"], [name], name=name,
                                           pads=[t, l_, b, r], strides=[stride, stride],
                                           dilations=[dilation, dilation], group=group))
        self.cur, self.c = name, cout
        if relu:
            self.op("Relu")
        return self

    def op(self, op, **attrs):
        name = self._name(op)
        self.nodes.append(helper.make_node(op, [self.cur], [name], name=name, **attrs))
        self.cur = name
        return self

    def dense(self, n, flat_features):
        name = self._name("fc")
        w = self.rng.standard_normal((n, flat_features)) / np.sqrt(flat_features)
        self.inits[f"{name}_w"] = w.astype(np.float32)
        self.inits[f"{name}_b"] = (0.1 * self.rng.standard_normal(n)).astype(np.float32)
        self.nodes.append(helper.make_node("Gemm", [self.cur, f"{name}_w", f"{name}_b"], [name], name=name, transB=1))
        self.cur = name
        return self

    def save(self, path) -> str:
        self.nodes[-1].output[0] = "y"
        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["batch", *self.in_shape[1:]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
        return str(path)
