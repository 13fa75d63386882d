"""Integer kernels for ONNX nodes that qhw keeps as ``Onnx`` nodes (their float form runs in ONNX
Runtime): residual Add/Sum, Mul, Concat, table activations, ReduceMean, and layout ops.

The node stays an ``Onnx`` node, so import, the float reference and the QDQ export treat it as
before; ``int_kind`` says whether it has an integer kernel here, and ``INT_OPS["Onnx"]``
dispatches on its op type. The arithmetic is in ``qhw.arith``; tables are built once, at
quantization, by ``build_table`` and stored in ``node.qparams["table"]``.
"""

from __future__ import annotations

import math

import numpy as np

from .arith import (
    Requant,
    add_rescaled,
    dequantize,
    qlinear_add_onnx,
    qlinear_mul_onnx,
    qrange,
    quantize_float,
    requantize_codes,
    saturate,
    span_scalar_input0,
)
from .errors import ModelError
from .graph import Node, QParams
from .onnx_node import CONST_PREFIX
from .op_registry import FLOAT_OPS, INT_OPS, register

__all__ = ["int_kind", "kind_class", "has_int_kernel", "build_table", "table_function", "TABLE_KINDS",
           "RESCALE_KINDS", "LAYOUT_KINDS", "MAX_ADD_INPUTS", "node_attrs", "onnx_code_offsets"]

RESCALE_KINDS = ("Add", "Sum", "Mul", "Concat")         # own output scale, inputs rescaled to it
LAYOUT_KINDS = ("Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Resize", "Upsample")
MEAN_KINDS = ("ReduceMean",)
MAX_ADD_INPUTS = 8      # TFLite ADD headroom: 8 inputs of |q - zp| * 2**20 * 0.5 stay below 2**31


def _f64(fn):
    return lambda x, a: fn(np.asarray(x, np.float64), a)


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _gelu(x, a):
    if a.get("approximate", "none") == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


# Float64 definitions of the table functions (``single``/``tflite`` tables), with ONNX defaults.
TABLE_KINDS = {
    "Sigmoid": _f64(lambda x, a: 1 / (1 + np.exp(-x))),
    "Tanh": _f64(lambda x, a: np.tanh(x)),
    "LeakyRelu": _f64(lambda x, a: np.where(x >= 0, x, a.get("alpha", 0.01) * x)),
    "PRelu": None,                                      # per channel: see _prelu_tables
    "Elu": _f64(lambda x, a: np.where(x > 0, x, a.get("alpha", 1.0) * np.expm1(x))),
    "Selu": _f64(lambda x, a: a.get("gamma", 1.0507009873554805) * np.where(
        x > 0, x, a.get("alpha", 1.6732632423543772) * np.expm1(x))),
    "Celu": _f64(lambda x, a: np.maximum(x, 0)
                 + np.minimum(0, a.get("alpha", 1.0) * np.expm1(x / a.get("alpha", 1.0)))),
    "HardSigmoid": _f64(lambda x, a: np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1)),
    "HardSwish": _f64(lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1)),
    "Gelu": _f64(_gelu),
    "Softplus": _f64(lambda x, a: np.logaddexp(0, x)),
    "Softsign": _f64(lambda x, a: x / (1 + np.abs(x))),
    "Erf": _f64(lambda x, a: _erf(x)),
}


# --------------------------------------------------------------------------- node inspection


def _proto(node: Node):
    import onnx

    p = onnx.NodeProto()
    p.ParseFromString(node.params["node_proto"].tobytes())
    return p


def node_attrs(node: Node) -> dict:
    """The ONNX attributes of an ``Onnx`` node, strings decoded."""
    from onnx import helper

    out = {}
    for a in _proto(node).attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _const(node: Node, name: str):
    return node.params.get(CONST_PREFIX + name)


def _reduce_axes(node: Node, attrs: dict, proto) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(proto.input) > 1 and proto.input[1]:
        c = _const(node, proto.input[1])
        return None if c is None else [int(a) for a in np.asarray(c).reshape(-1)]
    return None


def int_kind(node: Node) -> str | None:
    """The op type of an ``Onnx`` node this module runs in integers, or None."""
    if node.op != "Onnx" or node.attrs.get("domain", ""):
        return None
    kind = node.attrs["op_type"]
    proto = _proto(node)
    ins = [i for i in proto.input if i]
    consts = [i for i in ins if CONST_PREFIX + i in node.params]
    if len(proto.output) < 1 or not node.inputs:
        return None
    if kind in ("Add", "Mul"):
        return kind if len(ins) == 2 and not consts else None
    if kind in ("Sum", "Concat"):
        limit = MAX_ADD_INPUTS if kind == "Sum" else 1 << 16
        return kind if 1 <= len(ins) <= limit and not consts else None
    if kind == "PRelu":
        slope = _const(node, ins[1]) if len(ins) == 2 else None
        ok = slope is not None and (slope.size == 1 or max(slope.shape) == slope.size)
        return kind if ok and ins[0] not in consts else None
    if kind in TABLE_KINDS:
        return kind if len(ins) == 1 and not consts else None
    if kind in MEAN_KINDS:
        attrs = node_attrs(node)
        axes = _reduce_axes(node, attrs, proto)
        return kind if axes is not None and sorted(a % 4 for a in axes) == [2, 3] else None
    if kind in LAYOUT_KINDS:
        if ins[0] in consts or any(i not in consts for i in ins[1:]):
            return None
        if kind in ("Resize", "Upsample") and node_attrs(node).get("mode", "nearest") != "nearest":
            return None
        return kind
    return None


def kind_class(kind: str) -> str:
    """'rescale' (own output scale: Add, Sum, Mul, Concat), 'table', 'mean' or 'layout'."""
    if kind in RESCALE_KINDS:
        return "rescale"
    if kind in TABLE_KINDS:
        return "table"
    return "mean" if kind in MEAN_KINDS else "layout"


def has_int_kernel(node: Node) -> bool:
    return node.op in INT_OPS and (node.op != "Onnx" or int_kind(node) is not None)


def _proto_values(node: Node, xs: list, qps: list) -> list[tuple[np.ndarray, QParams]]:
    """(codes, qparams) of the node's inputs in the ONNX input order (an input may repeat)."""
    by_name = {n: (np.asarray(x, dtype=np.int64), q) for n, x, q in zip(node.inputs, xs, qps)}
    return [by_name[i] for i in _proto(node).input if i]


# --------------------------------------------------------------------------- tables


def _table_codes(qp: QParams) -> np.ndarray:
    lo, hi = qrange(qp.bits)
    return np.arange(lo, hi + 1, dtype=np.int64)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _quantize_tflite(y: np.ndarray, qp: QParams) -> np.ndarray:
    """TFLite's LUTPopulate: round_half_away(f32(y * f32(1 / s_out))) + zp, clamped."""
    inv = np.float32(np.float32(1) / np.float32(qp.scale))
    r = _round_half_away((np.asarray(y, np.float32) * inv).astype(np.float32)).astype(np.int64)
    return saturate(r + qp.zero_point, qp.qmin, qp.qmax)


def table_function(node: Node, x: np.ndarray, mode: str) -> np.ndarray:
    """The node's function on float32 inputs ``x``: ONNX Runtime's own float kernel in ``onnx``
    mode (what ORT's DQ -> op -> Q and its QLinearSigmoid / QLinearLeakyRelu tables compute),
    the float64 definition rounded to float32 otherwise."""
    x = np.asarray(x, np.float32)
    if mode == "onnx":
        from .onnx_node import run_onnx_node

        return np.asarray(run_onnx_node(node, [x])[0], np.float32)
    with np.errstate(over="ignore", invalid="ignore"):   # exp of large inputs on the unused side of a where
        return TABLE_KINDS[node.attrs["op_type"]](x, node_attrs(node)).astype(np.float32)


def _prelu_slopes(node: Node) -> np.ndarray:
    return np.asarray(_const(node, _proto(node).input[1]), np.float32)


def build_table(node: Node, in_qp: QParams, out_qp: QParams, mode: str) -> np.ndarray:
    """The lookup table of a table node: out[..., q - qmin_in] for every input code q.

    Shape (2**bits,), or (C, 2**bits) for PRelu with C slopes. Entries are the output codes:
    ``onnx``: QuantizeLinear(f(DequantizeLinear(q))) with ORT's f; ``single``/``tflite``:
    TFLite's LUTPopulate rounding (half away from zero) of the float64 f.
    """
    q = _table_codes(in_qp)
    x = dequantize(q, in_qp.scale, in_qp.zero_point)
    if node.attrs["op_type"] == "PRelu":
        slopes = _prelu_slopes(node).reshape(-1, 1)
        if mode == "onnx":      # ORT's PRelu: x > 0 ? x : x * slope, in float32 (exact in NumPy too)
            y = np.where(x > 0, x, (x * slopes).astype(np.float32))
        else:
            y = np.where(x > 0, x.astype(np.float64), x.astype(np.float64) * slopes.astype(np.float64))
    else:
        y = table_function(node, x, mode)
    if mode == "onnx":
        t = quantize_float(y, out_qp.scale, out_qp.zero_point, out_qp.qmin, out_qp.qmax)
    else:
        t = _quantize_tflite(y, out_qp)
    return t.astype(np.int16 if out_qp.bits > 8 else np.int8)


def _lookup(node: Node, x: np.ndarray, in_qp: QParams) -> np.ndarray:
    table = np.asarray(node.qparams["table"], dtype=np.int64)
    idx = np.asarray(x, dtype=np.int64) - in_qp.qmin
    if table.ndim == 1:
        return table[idx]
    slope_shape = _prelu_slopes(node).shape
    ch = np.arange(table.shape[0]).reshape(slope_shape)      # broadcasts like ONNX PRelu's slope
    return table[ch, idx]


# --------------------------------------------------------------------------- kernels


def onnx_code_offsets(graph, node: Node) -> list[int]:
    """What ONNX Runtime's fused kernels add to qhw's codes of each input and output of ``node``:
    128 where ORT holds the tensor as uint8, 0 where as int8.

    A uint8 tensor stays uint8. An int8 one becomes uint8 (zero point + 128) on x86-64 when its
    QuantizeLinear feeds only its DequantizeLinear, which ORT's QDQS8ToU8Transformer rewrites; ORT
    first gives every consumer its own DequantizeLinear, so that is a tensor with one consumer
    (a graph output counts as one). ORT fuses a group only when all its types agree.
    """
    consumers = graph.consumers()
    out = []
    ins = [i for i in _proto(node).input if i and CONST_PREFIX + i not in node.params] if node.op == "Onnx" \
        else node.inputs
    for t in ins + node.outputs[:1]:
        qp = graph.tensors[t]
        uses = len(consumers.get(t, [])) + (t in graph.outputs)
        out.append(1 << (qp.bits - 1) if qp.unsigned or (qp.bits == 8 and uses == 1) else 0)
    return out


def _raw(v: np.ndarray, qp: QParams, offset: int) -> tuple[np.ndarray, int]:
    """Codes and zero point as ORT's fused kernels see them."""
    return v + offset, qp.zero_point + offset


def _float_path(kind: str, vals, o: QParams) -> np.ndarray:
    """DequantizeLinear, the float32 op (inputs in order), QuantizeLinear: ORT's unfused QDQ group."""
    acc = None
    for v, q in vals:
        d = dequantize(v, q.scale, q.zero_point)
        acc = d if acc is None else ((acc * d) if kind == "Mul" else (acc + d)).astype(np.float32)
    return quantize_float(acc, o.scale, o.zero_point, o.qmin, o.qmax)


def _add_or_mul(node: Node, kind: str, vals, o: QParams) -> np.ndarray:
    mode = node.quant["rounding"]
    qmin, qmax = node.quant["qmin"], node.quant["qmax"]
    eight_bit = all(q.bits == 8 for _, q in vals) and o.bits == 8
    if mode == "onnx":
        offsets = node.quant.get("onnx_offsets") or [q.code_offset for _, q in vals] + [o.code_offset]
        if kind in ("Add", "Mul") and eight_bit and len(set(offsets)) == 1:
            # ORT fuses DQ -> Add/Mul -> Q into QLinearAdd/QLinearMul when all types agree
            (a, qa), (b, qb) = vals
            off = offsets[0]
            (ra, za), (rb, zb) = _raw(a, qa, off), _raw(b, qb, off)
            lo, hi = qmin + off, qmax + off
            if kind == "Add":
                y = qlinear_add_onnx(ra, rb, qa.scale, za, qb.scale, zb, o.scale, o.zero_point + off, lo, hi,
                                     input0_scalar=span_scalar_input0(a.shape, b.shape))
            else:
                ra, rb = np.broadcast_arrays(ra, rb)
                y = qlinear_mul_onnx(ra, rb, qa.scale, za, qb.scale, zb, o.scale, o.zero_point + off, lo, hi)
            return np.broadcast_to(y, np.broadcast_shapes(a.shape, b.shape)) - off
        return saturate(_float_path(kind, vals, o), qmin, qmax)
    if kind == "Mul":
        (a, qa), (b, qb) = vals
        rq = Requant.from_scales(mode=mode, s_in=qa.scale, s_w=qb.scale, s_out=o.scale, zero_point=o.zero_point,
                                 qmin=qmin, qmax=qmax)
        return rq.apply((a - qa.zero_point) * (b - qb.zero_point))
    diffs = np.broadcast_arrays(*[v - q.zero_point for v, q in vals])
    r = add_rescaled(diffs, [q.scale for _, q in vals], o.scale, bits=max(q.bits for _, q in vals), mode=mode)
    return saturate(r + o.zero_point, qmin, qmax)


def _concat(node: Node, vals, o: QParams) -> np.ndarray:
    axis = int(node_attrs(node).get("axis", 0))
    mode = node.quant["rounding"]
    parts = [requantize_codes(v, q.scale, q.zero_point, o.scale, o.zero_point, o.qmin, o.qmax, mode=mode)
             for v, q in vals]
    return np.concatenate(parts, axis=axis)


def _layout(node: Node, xs, in_qp, out_qp) -> list[np.ndarray]:
    """Data movement only: the float op on the codes (exact: |codes| < 2**24), then a requantization
    where an imported model gives the output its own scale (ORT's DQ -> op -> Q)."""
    outs = FLOAT_OPS["Onnx"](node, [np.asarray(x, np.float32) for x in xs])
    res = []
    i = in_qp[0]
    for y, o in zip(outs, out_qp):
        y = np.rint(np.asarray(y, np.float64)).astype(np.int64)
        res.append(requantize_codes(y, i.scale, i.zero_point, o.scale, o.zero_point, o.qmin, o.qmax,
                                    mode=node.quant["rounding"]))
    return res


def _mean(node: Node, xs, in_qp, out_qp) -> list[np.ndarray]:
    unfused = onnx_float_pool(node, xs, in_qp, out_qp)
    if unfused is not None:
        return unfused
    x = np.asarray(xs[0])
    if x.ndim != 4:
        raise ModelError(f"{node.label}: integer ReduceMean needs a 4-D NCHW input, got shape {x.shape}")
    y = INT_OPS["GlobalAveragePool"](node, xs, in_qp, out_qp)[0]
    return [y if node_attrs(node).get("keepdims", 1) else y.reshape(y.shape[:2])]


@register(INT_OPS, "Onnx")
def _onnx_i(node, xs, in_qp, out_qp):
    kind = int_kind(node)
    if kind is None:
        raise ModelError(f"{node.label}: no integer kernel for this node")
    cls = kind_class(kind)
    if cls == "layout":
        return _layout(node, xs, in_qp, out_qp)
    if cls == "mean":
        return _mean(node, xs, in_qp, out_qp)
    if cls == "table":
        return [_lookup(node, xs[0], in_qp[0])]
    vals = _proto_values(node, xs, in_qp)
    if kind == "Concat":
        return [_concat(node, vals, out_qp[0])]
    return [_add_or_mul(node, kind, vals, out_qp[0])]


# --------------------------------------------------------------------------- ORT's unfused pools

_POOL_NODES: dict[tuple, Node] = {}


def onnx_float_pool(node: Node, xs, in_qp, out_qp) -> list[np.ndarray] | None:
    """A pooling node's output where ORT runs its QDQ group in float (``onnx`` mode), else None.

    ORT fuses DQ -> (Global)AveragePool/ReduceMean -> Q only when input and output have the same
    integer type (``onnx_code_offsets``); otherwise it dequantizes, pools with its float kernel and
    quantizes, which qhw reproduces with that same kernel (a one-node ORT session)."""
    offsets = (node.quant or {}).get("onnx_offsets")
    if node.quant is None or node.quant["rounding"] != "onnx" or not offsets or len(set(offsets)) == 1:
        return None
    from onnx import helper

    from .onnx_node import run_onnx_node

    key = (node.name, node.op, repr(sorted(node.attrs.items())))      # same name in another model: another key
    if node.op == "Onnx":
        pool = node
    else:
        if key not in _POOL_NODES:
            a = node.attrs
            kw = {} if node.op == "GlobalAveragePool" else dict(
                kernel_shape=list(a["kernel"]), strides=list(a["strides"]), pads=list(a["pads"]),
                count_include_pad=int(a.get("count_include_pad", 0)))
            proto = helper.make_node(node.op, [node.inputs[0]], [node.outputs[0]], **kw)
            _POOL_NODES[key] = Node(node.name, "Onnx", [node.inputs[0]], [node.outputs[0]],
                                    attrs={"op_type": node.op, "domain": "", "opset": {"": 17}},
                                    params={"node_proto": np.frombuffer(proto.SerializeToString(), np.uint8).copy()})
        pool = _POOL_NODES[key]
    i, o = in_qp[0], out_qp[0]
    y = run_onnx_node(pool, [dequantize(xs[0], i.scale, i.zero_point)])[0]
    return [quantize_float(y, o.scale, o.zero_point, o.qmin, o.qmax)]


def _mixed_types(node: Node) -> bool:
    offsets = (node.quant or {}).get("onnx_offsets")
    return node.quant is not None and node.quant["rounding"] == "onnx" and bool(offsets) and len(set(offsets)) > 1


def onnx_float_conv(node: Node, xs, in_qp, out_qp) -> list[np.ndarray] | None:
    """A 2-D Conv's output where ORT runs its QDQ group in float (``onnx`` mode), else None.

    ORT fuses DQ -> Conv -> Q into QLinearConv only when input and output have the same integer
    type (``onnx_code_offsets``); otherwise it convolves the dequantized input with the
    dequantized weight and bias in float32 and quantizes. qhw runs that same float kernel (a
    one-node ORT session with the input's shape, as ORT lays out the whole model's), since float
    accumulation order decides the rounding of outputs near a half code."""
    if node.op != "Conv" or not _mixed_types(node) or node.attrs.get("dims", 2) != 2 or node.attrs.get("upsample"):
        return None
    from onnx import helper

    from .onnx_node import run_onnx_node

    p = node.qparams
    m = p["weight"].shape[0]
    wshape = (-1,) + (1,) * (p["weight"].ndim - 1)
    w = dequantize(p["weight"], np.asarray(p["weight_scale"], np.float32).reshape(wshape),
                   np.asarray(p["weight_zero_point"]).reshape(wshape))
    b = (np.asarray(p["bias"], np.float32) * np.broadcast_to(np.asarray(p["bias_scale"], np.float32), (m,)))
    a = node.attrs
    # weight and bias are fed, not initializers: in the QDQ model they come out of DequantizeLinear
    # nodes, so ORT does not move this Conv to its NCHWc layout (which would sum in another order)
    names = [node.inputs[0], f"{node.name}_W", f"{node.name}_B"]
    proto = helper.make_node("Conv", names, [node.outputs[0]], pads=list(a["pads"]),
                             strides=list(a["strides"]), dilations=list(a["dilations"]), group=int(a["group"]),
                             kernel_shape=list(w.shape[2:]))
    conv = Node(node.name, "Onnx", names, [node.outputs[0]], attrs={"op_type": "Conv", "domain": "", "opset": {"": 13}},
                params={"node_proto": np.frombuffer(proto.SerializeToString(), np.uint8).copy()})
    i, o = in_qp[0], out_qp[0]
    y = run_onnx_node(conv, [dequantize(xs[0], i.scale, i.zero_point), w.astype(np.float32), b.astype(np.float32)])[0]
    q = quantize_float(y, o.scale, o.zero_point, o.qmin, o.qmax)
    return [saturate(q, node.quant["qmin"], node.quant["qmax"])]
