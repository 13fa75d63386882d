"""Op registries: one float implementation and (where it exists) one integer one per op.

Float ops take ``(node, inputs)`` and return a list of outputs. Integer ops take
``(node, inputs, in_qparams, out_qparams)`` on integer arrays. The math lives in
``qhw.kernels`` and ``qhw.arith``; this module only binds nodes to it.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .arith import (
    Requant,
    average_onnx_scale,
    dequantize,
    divide_round_half_away,
    mul_scale_onnx,
    mul_shift_single,
    mul_shift_tflite,
    quantize_float,
    quantize_multiplier,
    quantize_onnx_pool,
    saturate,
)
from .errors import ModelError
from .graph import Node, QParams
from .op_registry import FLOAT_OPS, INT_OPS, register
from .ops_elementwise import onnx_float_conv, onnx_float_pool

__all__ = ["FLOAT_OPS", "INT_OPS", "PASS_THROUGH_OPS", "register", "activation_bounds", "requant_of",
           "int_activation_clamp", "accumulate", "float_preactivation", "channel_axis", "conv_input",
           "conv_output"]

# Integer ops whose output keeps the input's scale and zero point.
PASS_THROUGH_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Relu", "Clip", "Pad")



# --------------------------------------------------------------------------- helpers


def activation_bounds(node: Node) -> tuple[float, float]:
    """The real-valued clamp of a fused activation (ReLU, Clip), (-inf, inf) for none."""
    act = node.attrs.get("activation") or {"kind": "none"}
    if act["kind"] == "relu":
        return 0.0, float("inf")
    if act["kind"] == "clip":
        return float(act["min"]), float(act["max"])
    return float("-inf"), float("inf")


def _apply_float_activation(node: Node, y: np.ndarray) -> np.ndarray:
    lo, hi = activation_bounds(node)
    if lo == float("-inf") and hi == float("inf"):
        return y
    return np.clip(y, np.float32(lo), np.float32(hi)).astype(np.float32)


def int_activation_clamp(lo: float, hi: float, qp: QParams) -> tuple[int, int]:
    """[qmin, qmax] of the output type narrowed by a real clamp [lo, hi]."""
    qmin, qmax = qp.qmin, qp.qmax
    if lo != float("-inf"):
        qmin = max(qmin, int(quantize_float(np.float32(lo), qp.scale, qp.zero_point, qp.qmin, qp.qmax)))
    if hi != float("inf"):
        qmax = min(qmax, int(quantize_float(np.float32(hi), qp.scale, qp.zero_point, qp.qmin, qp.qmax)))
    return qmin, qmax


def requant_of(node: Node) -> Requant:
    q = node.quant
    return Requant(mode=q["rounding"], multiplier=node.qparams["multiplier"], shift=node.qparams["shift"],
                   scale=node.qparams["scale"], zero_point=q["out_zero_point"], qmin=q["qmin"], qmax=q["qmax"])


def conv_input(node: Node, x: np.ndarray, zero) -> np.ndarray:
    """A Conv node's input as the 2-D stride-1-equivalent NCHW array its kernel runs on: a 1-D
    conv's (N, C, L) as (N, C, 1, L); a 3-D conv's (N, C, D, H, W) as (N·OD, C·KD, H, W), each
    output depth's KD input slices stacked as channels (c-major, like the (M, C·KD, KH, KW)
    kernel); a transposed conv's input with ``zero`` (the real zero: 0.0, or the zero point's
    code) inserted between elements (``attrs["upsample"]``)."""
    dims = node.attrs.get("dims", 2)
    if dims == 1:
        x = x[:, :, None, :]
    elif dims == 3:
        dp = node.attrs["depth"]
        k, s, d = dp["kernel"], dp["stride"], dp["dilation"]
        x = np.pad(x, ((0, 0), (0, 0), tuple(dp["pads"]), (0, 0), (0, 0)), constant_values=zero)
        n, c, depth, h, w = x.shape
        od = (depth - d * (k - 1) - 1) // s + 1
        idx = np.arange(od)[:, None] * s + np.arange(k)[None, :] * d          # (OD, KD)
        x = x[:, :, idx]                                                     # (N, C, OD, KD, H, W)
        x = np.ascontiguousarray(x.transpose(0, 2, 1, 3, 4, 5)).reshape(n * od, c * k, h, w)
    up = node.attrs.get("upsample")
    return kernels.zero_insert(x, tuple(up), zero) if up else x


def conv_output(node: Node, y: np.ndarray, batch: int) -> np.ndarray:
    """The 2-D kernel's NCHW output in the node's own rank (``batch``: the input's N)."""
    dims = node.attrs.get("dims", 2)
    if dims == 1:
        return y[:, :, 0, :]
    if dims == 3:
        nd, m, oh, ow = y.shape
        return np.ascontiguousarray(y.reshape(batch, nd // batch, m, oh, ow).transpose(0, 2, 1, 3, 4))
    return y


def _conv_geometry(node: Node) -> dict:
    a = node.attrs
    return dict(pads=tuple(a["pads"]), strides=tuple(a["strides"]), dilations=tuple(a["dilations"]),
                group=int(a["group"]))


# --------------------------------------------------------------------------- float ops


@register(FLOAT_OPS, "Dense", "Conv")
def _linear_f(node, xs):
    return [_apply_float_activation(node, float_preactivation(node, xs[0]).astype(np.float32))]


def _pool_geometry(node: Node) -> dict:
    a = node.attrs
    return dict(kernel=tuple(a["kernel"]), strides=tuple(a["strides"]), pads=tuple(a["pads"]))


def _maxpool_geometry(node: Node, shape_hw) -> dict:
    """MaxPool geometry for an input of spatial size ``shape_hw``: ``ceil_mode`` becomes extra end
    padding so the last, partial window exists, except a window that would start in the end
    padding (ONNX Runtime's and PyTorch's rule)."""
    geo = _pool_geometry(node)
    dil = tuple(node.attrs.get("dilations", (1, 1)))
    geo["dilations"] = dil
    if not node.attrs.get("ceil_mode"):
        return geo
    pads = list(geo["pads"])
    for i in range(2):
        eff = (geo["kernel"][i] - 1) * dil[i] + 1
        total = shape_hw[i] + pads[i] + pads[i + 2]
        out = -(-(total - eff) // geo["strides"][i]) + 1
        if (out - 1) * geo["strides"][i] >= shape_hw[i] + pads[i]:
            out -= 1
        pads[i + 2] += max(0, (out - 1) * geo["strides"][i] + eff - total)
    geo["pads"] = tuple(pads)
    return geo


@register(FLOAT_OPS, "MaxPool")
def _maxpool_f(node, xs):
    geo = _maxpool_geometry(node, xs[0].shape[2:])
    return [kernels.maxpool2d(xs[0], pad_value=-np.inf, **geo).astype(np.float32)]


@register(FLOAT_OPS, "AveragePool")
def _avgpool_f(node, xs):
    return [kernels.avgpool2d_float(xs[0], count_include_pad=bool(node.attrs.get("count_include_pad", 0)),
                                    **_pool_geometry(node))]


@register(FLOAT_OPS, "GlobalAveragePool")
def _gap_f(node, xs):
    return [xs[0].mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)]


def _flatten(node, x):
    axis = node.attrs["axis"] % max(x.ndim, 1) if x.ndim else 0
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(lead, -1)


def _reshape(node, x):
    shape = list(node.attrs["shape"])
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    try:
        return x.reshape(shape)
    except ValueError as e:
        raise ModelError(f"{node.label}: cannot reshape {x.shape} to {tuple(node.attrs['shape'])}") from e


@register(FLOAT_OPS, "Flatten")
def _flatten_f(node, xs):
    return [_flatten(node, xs[0])]


@register(FLOAT_OPS, "Reshape")
def _reshape_f(node, xs):
    return [_reshape(node, xs[0])]


@register(FLOAT_OPS, "Relu", "Clip")
def _clip_f(node, xs):
    return [_apply_float_activation(node, xs[0])]


def _pad(node: Node, x: np.ndarray, value) -> np.ndarray:
    p = node.attrs["pads"]
    if len(p) != 2 * x.ndim:
        raise ModelError(f"{node.label}: {len(p)} pads for a rank-{x.ndim} input (expected {2 * x.ndim})")
    return np.pad(x, list(zip(p[:x.ndim], p[x.ndim:])), constant_values=value)


@register(FLOAT_OPS, "Pad")
def _pad_f(node, xs):
    return [_pad(node, xs[0], np.float32(node.attrs["value"]))]


@register(FLOAT_OPS, "Onnx")
def _onnx_f(node, xs):
    from .onnx_node import run_onnx_node  # onnxruntime loads only when a float-kept node runs

    return run_onnx_node(node, xs)


# --------------------------------------------------------------------------- integer ops


def channel_axis(node: Node) -> int:
    """Axis of the output channels of a linear node's output."""
    return 1 if node.op == "Conv" else -1


def accumulate(node: Node, xq: np.ndarray, x_zero: int) -> np.ndarray:
    """Integer accumulator of a quantized Dense/Conv: sum((x - zx)(w - zw)) + bias, int64."""
    w_zero = node.qparams["weight_zero_point"].astype(np.int64)
    bias = node.qparams["bias"]
    if node.op == "Conv":
        acc = kernels.conv2d_int(conv_input(node, np.asarray(xq), x_zero), node.qparams["weight"],
                                 x_zero=x_zero, w_zero=w_zero, **_conv_geometry(node))
        return conv_output(node, acc + bias.reshape(1, -1, 1, 1), len(xq))
    x = np.asarray(xq, dtype=np.int64) - x_zero
    w = node.qparams["weight"].astype(np.int64) - w_zero[:, None]
    return kernels.matmul_exact(x, w.T) + bias


def float_preactivation(node: Node, x: np.ndarray) -> np.ndarray:
    """Float output of a Dense/Conv before its fused activation."""
    if node.op == "Conv":
        y = kernels.conv2d_float(conv_input(node, np.asarray(x, dtype=np.float32), np.float32(0)),
                                 node.params["W"], **_conv_geometry(node))
        return conv_output(node, y + node.params["b"].reshape(1, -1, 1, 1), len(x))
    return np.matmul(np.asarray(x, dtype=np.float32), node.params["W"].T) + node.params["b"]


@register(INT_OPS, "Dense", "Conv")
def _linear_i(node, xs, in_qp, out_qp):

    if (unfused := onnx_float_conv(node, xs, in_qp, out_qp)) is not None:
        return unfused
    acc = accumulate(node, xs[0], in_qp[0].zero_point)
    return [requant_of(node).apply(acc, axis=channel_axis(node))]


@register(INT_OPS, "MaxPool")
def _maxpool_i(node, xs, in_qp, out_qp):
    return [kernels.maxpool2d(np.asarray(xs[0], dtype=np.int64), pad_value=in_qp[0].qmin,
                              **_maxpool_geometry(node, xs[0].shape[2:]))]


def _average_i(node, total, count, in_qp, out_qp):
    """Integer average of window sums (docs/arithmetic.md). ``onnx`` follows ORT's
    QLinear(Global)AveragePool; the others round half away from zero, or requantize by
    s_in / (s_out * count) when the output has its own scale (a QDQ model's)."""
    mode = node.quant["rounding"]
    zp, qmin, qmax = out_qp.zero_point, out_qp.qmin, out_qp.qmax
    if mode == "onnx":
        scale = average_onnx_scale(in_qp.scale, out_qp.scale, count)
        return mul_scale_onnx(total, scale, qmin - zp, qmax - zp) + zp
    if in_qp.scale == out_qp.scale:
        return saturate(divide_round_half_away(total, count) + zp, qmin, qmax)
    m0, shift = quantize_multiplier(np.float64(in_qp.scale) / (np.float64(out_qp.scale) * count))
    mul = mul_shift_single if mode == "single" else mul_shift_tflite
    return saturate(mul(total, m0, shift) + zp, qmin, qmax)


def _unfused_pool(node, xs, in_qp, out_qp):

    return onnx_float_pool(node, xs, in_qp, out_qp)


@register(INT_OPS, "AveragePool")
def _avgpool_i(node, xs, in_qp, out_qp):
    if (unfused := _unfused_pool(node, xs, in_qp, out_qp)) is not None:
        return unfused
    geo = dict(count_include_pad=bool(node.attrs.get("count_include_pad", 0)), **_pool_geometry(node))
    if node.quant["rounding"] == "onnx":  # ORT's QLinearAveragePool works on dequantized floats
        i, o = in_qp[0], out_qp[0]
        v = kernels.avgpool2d_sequential(dequantize(xs[0], i.scale, i.zero_point), **geo)
        offset = (node.quant.get("onnx_offsets") or [o.code_offset])[-1]  # uint8 in ORT: zp + 128
        return [quantize_onnx_pool(v, o.scale, o.zero_point, o.qmin, o.qmax, offset)]
    total, count = kernels.avgpool2d_sums(xs[0], zero_point=in_qp[0].zero_point, **geo)
    return [_average_i(node, total, count, in_qp[0], out_qp[0])]


@register(INT_OPS, "GlobalAveragePool")
def _gap_i(node, xs, in_qp, out_qp):
    if (unfused := _unfused_pool(node, xs, in_qp, out_qp)) is not None:
        return unfused
    h, w = xs[0].shape[2:]
    total, count = kernels.avgpool2d_sums(xs[0], kernel=(h, w), strides=(1, 1), pads=(0, 0, 0, 0),
                                          zero_point=in_qp[0].zero_point)
    return [_average_i(node, total, count, in_qp[0], out_qp[0])]


@register(INT_OPS, "Flatten")
def _flatten_i(node, xs, in_qp, out_qp):
    return [_flatten(node, xs[0])]


@register(INT_OPS, "Reshape")
def _reshape_i(node, xs, in_qp, out_qp):
    return [_reshape(node, xs[0])]


@register(INT_OPS, "Relu", "Clip")
def _clip_i(node, xs, in_qp, out_qp):
    return [saturate(xs[0], node.quant["qmin"], node.quant["qmax"])]


@register(INT_OPS, "Pad")
def _pad_i(node, xs, in_qp, out_qp):
    """Pad with the pad value's code: exactly Q(Pad(DQ(x), value)) as the output keeps x's scale."""
    q = out_qp[0]
    code = quantize_float(np.float32(node.attrs["value"]), q.scale, q.zero_point, q.qmin, q.qmax)
    return [_pad(node, np.asarray(xs[0]), int(code))]

