"""Style-alike builders of the ONNX model-zoo architectures, written with onnx.helper.

No downloads: random weights (He-normal convs, random BatchNormalization statistics) from a
stated seed. These are *style-alike* models, small by default (32x32 inputs, few channels) so
tests stay fast; ``size=224`` gives the ImageNet-size variant (a strided 7x7 stem and a max pool
first, as the originals). Each builder keeps the op pattern that matters to a quantizer:

- ``resnet``: basic and bottleneck blocks, residual ``Add`` (``Sum`` at opset < 13, as the zoo's
  ResNet-50), strided 1x1 downsample shortcut, BatchNormalization, GlobalAveragePool, Gemm;
- ``shufflenet``: group 1x1 convs, channel shuffle (Reshape / Transpose / Reshape), depthwise 3x3,
  residual ``Add`` and the strided unit's AveragePool shortcut + ``Concat``;
- ``squeezenet``: fire modules (squeeze 1x1, expand 1x1 and 3x3, ``Concat``), MaxPool, final 1x1 conv
  + GlobalAveragePool;
- ``inception``: parallel 1x1 / 1x1-3x3 / 1x1-3x3-3x3 / pool-1x1 branches, ``Concat``, AveragePool;
- ``densenet``: ``Concat`` growth, BatchNormalization written as ``Unsqueeze`` + ``Mul`` + ``Add``
  (as the zoo's DenseNet-121), transition 1x1 conv + AveragePool;
- ``mobilenetv2``: inverted residuals (1x1 expand, depthwise 3x3, 1x1 project, ``Add``), ReLU6 as
  ``Clip``, HardSwish, squeeze-excitation (GAP, 1x1, ReLU, 1x1, HardSigmoid, ``Mul``), opset 14;
- ``vgg`` and ``alexnet``: plain conv / ReLU / MaxPool stacks, Flatten, Gemm.

Lives in bench/ (not in the qhw package: it is test and benchmark scaffolding); tests import it
through tests/conftest.py, which puts bench/ on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["ARCHS", "build", "images"]


class _B:
    """Graph under construction: unique names, initializers, and the channel count of each tensor."""

    def __init__(self, seed: int, opset: int):
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.ch: dict[str, int] = {}
        self.hw: dict[str, int] = {}                         # spatial size (square maps)
        self.n = 0

    def name(self, op: str) -> str:
        self.n += 1
        return f"{op.lower()}{self.n}"

    def init(self, name: str, a: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(a, name))
        return name

    def node(self, op: str, ins: list[str], ch: int, *, hw: int | None = None, **attrs) -> str:
        name = self.name(op)
        self.nodes.append(helper.make_node(op, ins, [name], name=name, **attrs))
        self.ch[name] = ch
        self.hw[name] = self.hw.get(ins[0], 1) if hw is None else hw
        return name

    def conv(self, x: str, cout: int, k: int, *, stride: int = 1, group: int = 1, bias: bool = True) -> str:
        cin = self.ch[x]
        fan_in = cin // group * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        name = self.name("Conv")
        ins = [x, self.init(f"{name}_w", w)]
        if bias:
            ins.append(self.init(f"{name}_b", (0.05 * self.rng.standard_normal(cout)).astype(np.float32)))
        self.nodes.append(helper.make_node("Conv", ins, [name], name=name, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4, group=group))
        self.ch[name] = cout
        self.hw[name] = (self.hw[x] - 1) // stride + 1
        return name

    def _bn_params(self, c: int):
        r = self.rng
        return (r.uniform(0.5, 1.5, c).astype(np.float32), (0.1 * r.standard_normal(c)).astype(np.float32),
                (0.1 * r.standard_normal(c)).astype(np.float32), r.uniform(0.5, 2.0, c).astype(np.float32))

    def bn(self, x: str) -> str:
        c = self.ch[x]
        gamma, beta, mean, var = self._bn_params(c)
        name = self.name("BatchNormalization")
        ins = [x] + [self.init(f"{name}_{k}", v) for k, v in
                     (("scale", gamma), ("bias", beta), ("mean", mean), ("var", var))]
        self.nodes.append(helper.make_node("BatchNormalization", ins, [name], name=name, epsilon=1e-5))
        self.ch[name] = c
        self.hw[name] = self.hw[x]
        return name

    def affine_bn(self, x: str) -> str:
        """BatchNormalization as the zoo's DenseNet writes it: x * Unsqueeze(s) + Unsqueeze(t)."""
        c = self.ch[x]
        gamma, beta, mean, var = self._bn_params(c)
        s = gamma / np.sqrt(var + 1e-5)
        out = x
        for op, v in (("Mul", s), ("Add", beta - mean * s)):
            name = self.name("Unsqueeze")
            src = self.init(f"{name}_c", v.astype(np.float32))
            if self.opset >= 13:
                ins, attrs = [src, self.init(f"{name}_axes", np.array([1, 2], np.int64))], {}
            else:
                ins, attrs = [src], {"axes": [1, 2]}
            self.nodes.append(helper.make_node("Unsqueeze", ins, [name], name=name, **attrs))
            out = self.node(op, [out, name], c)
        return out

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], self.ch[x])

    def relu6(self, x: str) -> str:
        if self.opset >= 11:
            lo = self.init(self.name("min"), np.array(0, np.float32))
            hi = self.init(self.name("max"), np.array(6, np.float32))
            return self.node("Clip", [x, lo, hi], self.ch[x])
        return self.node("Clip", [x], self.ch[x], min=0.0, max=6.0)

    def cbr(self, x: str, cout: int, k: int, *, stride: int = 1, group: int = 1, relu: bool = True) -> str:
        y = self.bn(self.conv(x, cout, k, stride=stride, group=group, bias=False))
        return self.relu(y) if relu else y

    def pool(self, op: str, x: str, k: int, stride: int, pad: int = 0) -> str:
        return self.node(op, [x], self.ch[x], hw=(self.hw[x] + 2 * pad - k) // stride + 1,
                         kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def add(self, a: str, b: str) -> str:
        return self.node("Add" if self.opset >= 13 else "Sum", [a, b], self.ch[a])

    def concat(self, xs: list[str]) -> str:
        return self.node("Concat", xs, sum(self.ch[x] for x in xs), axis=1)

    def stem(self, x: str, cout: int, size: int) -> str:
        """ImageNet stem (7x7/2 conv, 3x3/2 max pool) at large sizes; a 3x3 conv at small ones."""
        if size >= 128:
            return self.pool("MaxPool", self.cbr(x, cout, 7, stride=2), 3, 2, 1)
        return self.cbr(x, cout, 3)

    def head(self, x: str, classes: int = 10) -> str:
        g = self.node("GlobalAveragePool", [x], self.ch[x], hw=1)
        f = self.node("Flatten", [g], self.ch[x], axis=1)
        return self.gemm(f, classes)

    def gemm(self, x: str, n: int) -> str:
        k = self.ch[x]
        name = self.name("Gemm")
        w = (self.rng.standard_normal((n, k)) * np.sqrt(1.0 / k)).astype(np.float32)
        b = (0.05 * self.rng.standard_normal(n)).astype(np.float32)
        self.nodes.append(helper.make_node("Gemm", [x, self.init(f"{name}_w", w), self.init(f"{name}_b", b)],
                                           [name], name=name, transB=1))
        self.ch[name] = n
        return name


# --------------------------------------------------------------------------- architectures


def _resnet(b: _B, x: str, size: int) -> str:
    t = b.stem(x, 16, size)
    for cout, stride in ((16, 1), (32, 2)):                 # basic blocks
        h = b.cbr(b.cbr(t, cout, 3, stride=stride), cout, 3, relu=False)
        short = t if stride == 1 and b.ch[t] == cout else b.cbr(t, cout, 1, stride=stride, relu=False)
        t = b.relu(b.add(h, short))
    for stride in (2, 1):                                   # bottleneck blocks 32 -> 16 -> 16 -> 64
        h = b.cbr(b.cbr(b.cbr(t, 16, 1), 16, 3, stride=stride), 64, 1, relu=False)
        short = t if stride == 1 and b.ch[t] == 64 else b.cbr(t, 64, 1, stride=stride, relu=False)
        t = b.relu(b.add(h, short))
    return b.head(t)


def _shuffle(b: _B, x: str, groups: int) -> str:
    c, hw = b.ch[x], b.hw[x]
    shp = b.init(b.name("shape"), np.array([0, groups, c // groups, hw, hw], np.int64))
    t = b.node("Transpose", [b.node("Reshape", [x, shp], c)], c, perm=[0, 2, 1, 3, 4])
    back = b.init(b.name("shape"), np.array([0, c, hw, hw], np.int64))
    return b.node("Reshape", [t, back], c)


def _shufflenet(b: _B, x: str, size: int, g: int = 2) -> str:
    t = b.stem(x, 24, size)
    for cout, stride in ((48, 2), (48, 1), (96, 2), (96, 1)):
        cin = b.ch[t]
        mid = cout // 4
        h = b.cbr(t, mid, 1, group=g if cin % g == 0 else 1)
        h = _shuffle(b, h, g)
        h = b.cbr(h, mid, 3, stride=stride, group=mid, relu=False)
        if stride == 1:
            h = b.cbr(h, cout, 1, group=g, relu=False)
            t = b.relu(b.add(h, t))
        else:
            h = b.cbr(h, cout - cin, 1, group=g, relu=False)
            t = b.relu(b.concat([b.pool("AveragePool", t, 3, 2, 1), h]))
    return b.head(t)


def _fire(b: _B, x: str, sq: int, ex: int) -> str:
    s = b.relu(b.conv(x, sq, 1))
    return b.concat([b.relu(b.conv(s, ex, 1)), b.relu(b.conv(s, ex, 3))])


def _squeezenet(b: _B, x: str, size: int) -> str:
    t = b.relu(b.conv(x, 32, 3, stride=2 if size >= 128 else 1))
    t = b.pool("MaxPool", t, 3, 2)
    t = _fire(b, _fire(b, t, 8, 16), 8, 16)
    t = b.pool("MaxPool", t, 3, 2)
    t = _fire(b, _fire(b, t, 16, 32), 16, 32)
    t = b.relu(b.conv(t, 10, 1))
    g = b.node("GlobalAveragePool", [t], 10, hw=1)
    return b.node("Flatten", [g], 10, axis=1)


def _inception_module(b: _B, x: str, c1: int, c3: int, c5: int, cp: int) -> str:
    b1 = b.cbr(x, c1, 1)
    b2 = b.cbr(b.cbr(x, c3 // 2, 1), c3, 3)
    b3 = b.cbr(b.cbr(b.cbr(x, c5 // 2, 1), c5, 3), c5, 3)
    b4 = b.cbr(b.pool("MaxPool", x, 3, 1, 1), cp, 1)
    return b.concat([b1, b2, b3, b4])


def _inception(b: _B, x: str, size: int) -> str:
    t = b.stem(x, 32, size)
    t = _inception_module(b, t, 16, 16, 8, 8)
    t = _inception_module(b, t, 16, 24, 8, 8)
    t = b.pool("AveragePool", t, 2, 2)
    t = _inception_module(b, t, 24, 32, 16, 16)
    return b.head(t)


def _densenet(b: _B, x: str, size: int, growth: int = 8) -> str:
    t = b.stem(x, 16, size)
    for block in range(2):
        for _ in range(3):
            h = b.conv(b.relu(b.affine_bn(t)), 4 * growth, 1, bias=False)
            h = b.conv(b.relu(b.affine_bn(h)), growth, 3, bias=False)
            t = b.concat([t, h])
        if block == 0:                                       # transition
            t = b.conv(b.relu(b.affine_bn(t)), b.ch[t] // 2, 1, bias=False)
            t = b.pool("AveragePool", t, 2, 2)
    return b.head(b.relu(b.affine_bn(t)))


def _se(b: _B, x: str) -> str:
    c = b.ch[x]
    s = b.node("GlobalAveragePool", [x], c, hw=1)
    s = b.node("HardSigmoid", [b.conv(b.relu(b.conv(s, max(c // 4, 4), 1)), c, 1)], c, alpha=1 / 6, beta=0.5)
    return b.node("Mul", [x, s], c)


def _mobilenetv2(b: _B, x: str, size: int) -> str:
    t = b.bn(b.conv(x, 16, 3, stride=2 if size >= 128 else 1, bias=False))
    t = b.node("HardSwish", [t], 16)
    for cout, stride, se in ((16, 1, False), (24, 2, False), (24, 1, True), (32, 2, True)):
        cin = b.ch[t]
        h = b.relu6(b.bn(b.conv(t, cin * 4, 1, bias=False)))
        h = b.relu6(b.bn(b.conv(h, cin * 4, 3, stride=stride, group=cin * 4, bias=False)))
        if se:
            h = _se(b, h)
        h = b.bn(b.conv(h, cout, 1, bias=False))
        t = b.add(h, t) if stride == 1 and cin == cout else h
    t = b.node("HardSwish", [b.bn(b.conv(t, 64, 1, bias=False))], 64)
    return b.head(t)


def _vgg(b: _B, x: str, size: int) -> str:
    t = x
    for i, c in enumerate((16, 32, 32)):
        t = b.relu(b.conv(b.relu(b.conv(t, c, 3)), c, 3))
        t = b.pool("MaxPool", t, 2, 2)
        if i == 0 and size >= 128:
            t = b.pool("MaxPool", t, 2, 2)
    t = b.node("GlobalAveragePool", [t], b.ch[t], hw=1) if size >= 128 else t
    f = b.node("Flatten", [t], b.ch[t] * b.hw[t] ** 2, axis=1)
    return b.gemm(b.relu(b.gemm(f, 64)), 10)


def _alexnet(b: _B, x: str, size: int) -> str:
    big = size >= 128
    t = b.relu(b.conv(x, 32, 11 if big else 5, stride=4 if big else 1))
    t = b.pool("MaxPool", t, 3, 2)
    t = b.pool("MaxPool", b.relu(b.conv(t, 48, 5)), 3, 2)
    t = b.relu(b.conv(b.relu(b.conv(t, 64, 3)), 48, 3))
    g = b.node("GlobalAveragePool", [t], 48, hw=1)
    f = b.node("Flatten", [g], 48, axis=1)
    return b.gemm(b.relu(b.gemm(f, 64)), 10)


# name -> (builder, default opset). The zoo's originals are opset 9-12 (``opset=9`` builds that form:
# Sum, Unsqueeze axes attribute, Clip attributes); 13 is the default because ORT's per-channel QDQ
# needs it, and HardSwish needs 14.
ARCHS: dict[str, tuple[Callable, int]] = {
    "resnet": (_resnet, 13),
    "shufflenet": (_shufflenet, 13),
    "squeezenet": (_squeezenet, 13),
    "inception": (_inception, 13),
    "densenet": (_densenet, 13),
    "mobilenetv2": (_mobilenetv2, 14),
    "vgg": (_vgg, 13),
    "alexnet": (_alexnet, 13),
}


def build(arch: str, *, size: int = 32, seed: int = 0, opset: int | None = None) -> onnx.ModelProto:
    """The ``arch`` model for ``[N, 3, size, size]`` float inputs, weights from ``seed``; checked."""
    fn, default_opset = ARCHS[arch]
    opset = default_opset if opset is None else opset
    b = _B(seed, opset)
    b.ch["x"], b.hw["x"] = 3, size
    y = fn(b, "x", size)
    b.nodes[-1].output[0] = "y"
    graph = helper.make_graph(b.nodes, arch, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                           ["N", 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", b.ch[y]])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model


def images(n: int, *, size: int = 32, seed: int = 1) -> np.ndarray:
    """Inputs: smooth random images (a low-resolution normal field upsampled), roughly unit variance."""
    rng = np.random.default_rng(seed)
    low = rng.standard_normal((n, 3, max(size // 8, 1), max(size // 8, 1))).astype(np.float32)
    x = low.repeat(8, axis=2).repeat(8, axis=3)[:, :, :size, :size]
    return (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)
