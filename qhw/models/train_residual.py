"""Train the built-in residual digits model and export it to ONNX (developers only; NumPy + onnx).

Run from the repository root:

    python qhw/models/train_residual.py

It writes ``digits_resnet.onnx`` next to this file and prints its test accuracy. The network is
small enough for a hand-written backward pass, so training needs no torch (PyPI's torch wheels
pull gigabytes of CUDA libraries): float64 NumPy, Adam, a seeded batch order; the convolutions are
``np.einsum`` sums (no BLAS), so the file is reproduced byte for byte (twice on the same machine).

    x (1x8x8) -> conv3x3(1->8) relu = h
              -> [depthwise 3x3 (8, groups 8) relu -> pointwise 1x1 (8->8)] + h -> relu
              -> AveragePool 2x2 -> conv3x3(8->32) relu -> GlobalAveragePool -> Flatten -> Gemm(32->10)

qhw never imports this script; data and split come from ``qhw.datasets.digits_split``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(OUT_DIR.parents[1]))  # the repository root, for qhw.datasets

SEED = 0
OPSET = 13
EPOCHS = 60
LR = 1e-2
BATCH = 32
NAME = "digits_resnet"
C3 = 32          # channels of the conv after the pool


# --------------------------------------------------------------------------- layers (NCHW, float64)


def _im2col(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, k*k, H*W) for a stride-1 'same' k x k window."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k * k, h * w))
    for ky in range(k):
        for kx in range(k):
            cols[:, :, ky * k + kx] = xp[:, :, ky:ky + h, kx:kx + w].reshape(n, c, h * w)
    return cols


def _col2im(cols: np.ndarray, shape, k: int, pad: int) -> np.ndarray:
    n, c, h, w = shape
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    for ky in range(k):
        for kx in range(k):
            xp[:, :, ky:ky + h, kx:kx + w] += cols[:, :, ky * k + kx].reshape(n, c, h, w)
    return xp[:, :, pad:pad + h, pad:pad + w]


def conv(x, w, b, k):
    """Dense conv, stride 1, 'same' padding; returns output and the cache for backward."""
    n, c, h, wd = x.shape
    cols = _im2col(x, k, k // 2).reshape(n, c * k * k, h * wd)
    y = np.einsum("ok,nkp->nop", w.reshape(w.shape[0], -1), cols) + b[None, :, None]
    return y.reshape(n, w.shape[0], h, wd), (x.shape, cols)


def conv_back(dy, w, cache, k):
    shape, cols = cache
    n, o = dy.shape[:2]
    dy = dy.reshape(n, o, -1)
    dw = np.einsum("nop,nkp->ok", dy, cols).reshape(w.shape)
    db = dy.sum(axis=(0, 2))
    dcols = np.einsum("ok,nop->nkp", w.reshape(o, -1), dy).reshape(shape[0], shape[1], k * k, -1)
    return _col2im(dcols, shape, k, k // 2), dw, db


def dwconv(x, w, b):
    """Depthwise 3x3, 'same' padding."""
    n, c, h, wd = x.shape
    cols = _im2col(x, 3, 1)                                    # (N, C, 9, HW)
    y = np.einsum("ck,nckp->ncp", w.reshape(c, 9), cols) + b[None, :, None]
    return y.reshape(n, c, h, wd), (x.shape, cols)


def dwconv_back(dy, w, cache):
    shape, cols = cache
    n, c = dy.shape[:2]
    dy = dy.reshape(n, c, -1)
    dw = np.einsum("ncp,nckp->ck", dy, cols).reshape(w.shape)
    db = dy.sum(axis=(0, 2))
    dcols = np.einsum("ck,ncp->nckp", w.reshape(c, 9), dy)
    return _col2im(dcols, shape, 3, 1), dw, db


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def he(shape, fan):
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan)

    return {"conv1_w": he((8, 1, 3, 3), 9), "conv1_b": np.zeros(8),
            "dw_w": he((8, 1, 3, 3), 9), "dw_b": np.zeros(8),
            "pw_w": he((8, 8, 1, 1), 8) * 0.5, "pw_b": np.zeros(8),
            "conv3_w": he((C3, 8, 3, 3), 72), "conv3_b": np.zeros(C3),
            "fc_w": he((10, C3), C3) * 0.5, "fc_b": np.zeros(10)}


def forward(p, x, *, grads_for=None):
    """Logits; with ``grads_for`` = labels, also the loss and every parameter's gradient."""
    h1p, c1 = conv(x, p["conv1_w"], p["conv1_b"], 3)
    h1 = np.maximum(h1p, 0)
    dp, cd = dwconv(h1, p["dw_w"], p["dw_b"])
    d = np.maximum(dp, 0)
    pw, cp = conv(d, p["pw_w"], p["pw_b"], 1)
    sp = h1 + pw
    s = np.maximum(sp, 0)
    n = x.shape[0]
    a = s.reshape(n, 8, 4, 2, 4, 2).mean(axis=(3, 5))
    h3p, c3 = conv(a, p["conv3_w"], p["conv3_b"], 3)
    h3 = np.maximum(h3p, 0)
    g = h3.mean(axis=(2, 3))
    logits = g @ p["fc_w"].T + p["fc_b"]
    if grads_for is None:
        return logits
    y = grads_for
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = float(-np.log(prob[np.arange(n), y]).mean())
    dl = prob
    dl[np.arange(n), y] -= 1
    dl /= n
    gr = {"fc_w": dl.T @ g, "fc_b": dl.sum(axis=0)}
    dg = dl @ p["fc_w"]
    dh3 = np.broadcast_to(dg[:, :, None, None] / 16.0, h3.shape) * (h3p > 0)
    da, gr["conv3_w"], gr["conv3_b"] = conv_back(dh3, p["conv3_w"], c3, 3)
    ds = np.repeat(np.repeat(da / 4, 2, axis=2), 2, axis=3) * (sp > 0)
    dd, gr["pw_w"], gr["pw_b"] = conv_back(ds, p["pw_w"], cp, 1)
    dh1, gr["dw_w"], gr["dw_b"] = dwconv_back(dd * (dp > 0), p["dw_w"], cd)
    dh1 = (dh1 + ds) * (h1p > 0)
    _, gr["conv1_w"], gr["conv1_b"] = conv_back(dh1, p["conv1_w"], c1, 3)
    return logits, loss, gr


def train(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Adam on cross-entropy, mini-batches of ``BATCH`` in a seeded order, cosine learning rate."""
    rng = np.random.default_rng(SEED)
    p = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    step, b1, b2 = 0, 0.9, 0.999
    for epoch in range(EPOCHS):
        lr = LR * 0.5 * (1 + np.cos(np.pi * epoch / EPOCHS))
        order = rng.permutation(len(x))
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            _, _, gr = forward(p, x[idx], grads_for=y[idx])
            step += 1
            for k in p:
                m[k] = b1 * m[k] + (1 - b1) * gr[k]
                v[k] = b2 * v[k] + (1 - b2) * gr[k] ** 2
                p[k] -= lr * (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + 1e-8)
    return p


# --------------------------------------------------------------------------- export


def export(p: dict[str, np.ndarray], path: Path) -> None:
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "conv1_w", "conv1_b"], ["conv1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("Relu", ["conv1"], ["relu1"], name="relu1"),
        n("Conv", ["relu1", "dw_w", "dw_b"], ["dw"], name="dw", pads=[1, 1, 1, 1], kernel_shape=[3, 3], group=8),
        n("Relu", ["dw"], ["relu_dw"], name="relu_dw"),
        n("Conv", ["relu_dw", "pw_w", "pw_b"], ["pw"], name="pw", kernel_shape=[1, 1]),
        n("Add", ["relu1", "pw"], ["add"], name="add"),
        n("Relu", ["add"], ["relu_add"], name="relu_add"),
        n("AveragePool", ["relu_add"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["pool", "conv3_w", "conv3_b"], ["conv3"], name="conv3", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("Relu", ["conv3"], ["relu3"], name="relu3"),
        n("GlobalAveragePool", ["relu3"], ["gap"], name="gap"),
        n("Flatten", ["gap"], ["flat"], name="flatten"),
        n("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array(p[k].astype(np.float32), k) for k in
             ("conv1_w", "conv1_b", "dw_w", "dw_b", "pw_w", "pw_b", "conv3_w", "conv3_b", "fc_w", "fc_b")]
    graph = helper.make_graph(
        nodes, NAME, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="qhw/models/train_residual.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def main() -> None:
    import onnxruntime as ort

    from qhw.datasets import digits_split

    split = digits_split()
    x_tr, y_tr = split["train"]
    x_te, y_te = split["test"]
    p = train(x_tr.astype(np.float64), y_tr)
    path = OUT_DIR / f"{NAME}.onnx"
    export(p, path)
    p32 = {k: v.astype(np.float32).astype(np.float64) for k, v in p.items()}
    ref = forward(p32, x_te.astype(np.float64))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"x": x_te})[0]
    err = float(np.abs(got - ref).max())
    if err > 1e-3:
        raise SystemExit(f"{path.name}: onnxruntime differs from the NumPy model by {err}")
    acc = 100 * float((got.argmax(axis=1) == y_te).mean())
    print(f"{NAME}: test accuracy {acc:.2f}% ({path.stat().st_size} bytes) "
          f"ops: {' '.join(nd.op_type for nd in onnx.load(str(path)).graph.node)}")


if __name__ == "__main__":
    main()
