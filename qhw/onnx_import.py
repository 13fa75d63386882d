"""ONNX file -> qhw Graph (float nodes), including QDQ-quantized models.

Ops with a qhw kernel become native nodes; any other op becomes an ``Onnx``
node that runs in float through ONNX Runtime. Nodes whose inputs are all
constants (initializers, graph inputs with an initializer, Constant nodes, other
folded nodes) are evaluated once here by ONNX Runtime, so weights written as
``Transpose``/``Reshape``/``Unsqueeze``/``Cast``… of initializers are plain
constants to everything after import. QuantizeLinear/DequantizeLinear
pairs (onnxruntime ``quantize_static`` QDQ output) are removed and their scales
and zero points recorded, so the quantizer can reproduce that exact model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ModelError
from .graph import Graph, Node, QParams, TensorInfo
from .onnx_node import CONST_PREFIX
from .transforms import simplify

__all__ = ["load_onnx", "import_model", "upgrade_opset", "MIN_OPSET"]

# Models below this ai.onnx opset are converted up at import: ONNX Runtime cannot run some older
# operator versions (opset-6 BatchNormalization, PRelu) for the float reference, and the QDQ
# export (opset >= 13) writes float-kept nodes as imported, so they must be valid at its opset.
MIN_OPSET = 13
ORT_MIN_OPSET = 7  # the oldest opset ONNX Runtime guarantees to run

_QDQ = ("QuantizeLinear", "DequantizeLinear")
# Never evaluated at import: QDQ pairs carry quantization, the rest is not a function of its inputs.
_NO_FOLD = _QDQ + ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                   "Bernoulli", "If", "Loop", "Scan")
# Ops that only move a weight's elements: a QDQ weight's integer codes move with it.
_MOVE_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten")


def load_onnx(path: str | Path):
    """Read and check an ONNX file; one-line ModelError on any problem."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such file")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelError(f"{p}: not an ONNX model ({type(e).__name__})") from e
    if not model.graph.node:
        raise ModelError(f"{p}: not an ONNX model (no graph nodes)")
    return model


def upgrade_opset(model, path: Path, notes: list[str]):
    """``model`` converted to ``MIN_OPSET`` when its ai.onnx opset is older (with a note)."""
    from onnx import version_converter

    old = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if old is None or old >= MIN_OPSET:
        return model
    try:
        new = version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # the converter's own exception types; report one line
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if old >= ORT_MIN_OPSET:  # ONNX Runtime still runs it; only the QDQ export may refuse it
            notes.append(f"{path.name}: kept at opset {old}, conversion to opset {MIN_OPSET} failed ({why})")
            return model
        raise ModelError(f"{path}: opset {old} model could not be converted to opset {MIN_OPSET} "
                         f"({why}); re-export it at opset {MIN_OPSET} or newer") from e
    notes.append(f"{path.name}: converted from opset {old} to opset {MIN_OPSET} (onnx.version_converter)")
    return new


def _as_2d(a: dict, keys=("strides", "dilations")) -> dict:
    """A 1-D conv's attributes as those of the (1, K) 2-D conv that computes it."""
    a = dict(a, _dims=1)
    for k in keys:
        if k in a:
            a[k] = [1 if k != "output_padding" else 0, *a[k]]
    if "pads" in a:
        a["pads"] = [0, a["pads"][0], 0, a["pads"][1]]
    if "kernel_shape" in a:
        a["kernel_shape"] = [1, *a["kernel_shape"]]
    return a


def _depth_as_channels(a: dict, kd: int) -> tuple[dict, dict]:
    """A 3-D conv's attributes split into its 2-D (H, W) ones and its depth geometry."""
    pads = list(a.get("pads", [0] * 6))
    depth = {"kernel": int(kd), "stride": int(a.get("strides", [1] * 3)[0]),
             "dilation": int(a.get("dilations", [1] * 3)[0]), "pads": [int(pads[0]), int(pads[3])]}
    a = dict(a)
    for k in ("strides", "dilations", "kernel_shape"):
        if k in a:
            a[k] = list(a[k])[1:]
    if "pads" in a:
        a["pads"] = [pads[1], pads[2], pads[4], pads[5]]
    return a, depth


def _attrs(proto) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in proto.attribute}


class _Importer:
    def __init__(self, model, path: Path):
        from onnx import numpy_helper

        self.model = model
        self.path = path
        g = model.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.opset = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
        self.tensor_qparams: dict[str, QParams] = {}
        self.weight_q: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
        self.rename: dict[str, str] = {}
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self._ranks: dict[str, int] | None = None

    # ------------------------------------------------------------------ helpers
    def fail(self, proto, what: str):
        raise ModelError(f"{self.path}: node {proto.name or '?'!r} ({proto.op_type}): {what}")

    def const(self, name: str):
        return self.consts.get(self.rename.get(name, name))

    def src(self, name: str) -> str:
        while name in self.rename:
            name = self.rename[name]
        return name

    def unique(self, proto, idx: int) -> str:
        base = proto.name or f"{proto.op_type}_{idx}"
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    # ------------------------------------------------------------------ QDQ
    def _qdq(self, proto) -> None:
        from .arith import dequantize

        a = _attrs(proto)
        ins = [self.src(i) for i in proto.input]
        scale = self.consts.get(ins[1])
        zp = self.consts.get(ins[2]) if len(ins) > 2 and ins[2] else None
        if scale is None:
            self.fail(proto, "scale must be a constant initializer")
        if zp is None:
            zp = np.zeros((), dtype=np.uint8 if proto.op_type == "QuantizeLinear" else
                          (self.consts[ins[0]].dtype if ins[0] in self.consts else np.int8))
        bits, signed = np.iinfo(zp.dtype).bits, np.issubdtype(zp.dtype, np.signedinteger)
        shift = 0 if signed else 1 << (bits - 1)  # unsigned codes -> signed codes, same real values
        zp_s = zp.astype(np.int64) - shift
        axis = int(a.get("axis", 1))
        out = proto.output[0]
        x = self.consts.get(ins[0])
        if proto.op_type == "DequantizeLinear":
            if x is not None:  # a quantized weight or bias
                q = x.astype(np.int64) - shift
                shape = [1] * q.ndim
                if scale.ndim:
                    shape[axis % q.ndim] = -1
                self.consts[out] = dequantize(q, scale.reshape(shape), zp_s.reshape(shape) if zp_s.ndim else zp_s)
                self.weight_q[out] = (q, scale.astype(np.float32), zp_s, axis % max(q.ndim, 1))
            else:  # activation: DQ(Q(t)) is t with recorded quantization
                self.rename[out] = ins[0]
            return
        # QuantizeLinear
        if scale.ndim or zp_s.ndim:
            self.fail(proto, "per-axis activation quantization is not supported (expected scalar scale)")
        if x is not None:
            from .arith import qrange, quantize_float
            lo, hi = qrange(bits)
            self.consts[out] = (quantize_float(x, scale, zp_s, lo, hi) + shift).astype(zp.dtype)
            return
        self.tensor_qparams[ins[0]] = QParams(scale=float(scale), zero_point=int(zp_s), bits=bits,
                                              unsigned=not signed)
        self.rename[out] = ins[0]

    # ------------------------------------------------------------------ constant folding
    def _foldable(self, proto) -> bool:
        return (proto.domain in ("", "ai.onnx") and proto.op_type not in _NO_FOLD
                and all(not i or self.src(i) in self.consts for i in proto.input))

    def _evaluate(self, proto, values: dict[str, np.ndarray]) -> list[np.ndarray] | None:
        """Outputs of one node on constant inputs (ONNX Runtime, the float reference), or None."""
        import onnx
        import onnxruntime as ort
        from onnx import helper, numpy_helper

        p = onnx.NodeProto()
        p.CopyFrom(proto)
        p.ClearField("input")
        p.input.extend(self.src(i) if i else "" for i in proto.input)
        inits = [numpy_helper.from_array(np.asarray(values[i]), i) for i in dict.fromkeys(p.input) if i]
        outs = [helper.make_value_info(o, onnx.TypeProto()) for o in p.output if o]
        opsets = [helper.make_opsetid("" if d == "ai.onnx" else d, v) for d, v in self.opset.items()]
        model = helper.make_model(helper.make_graph([p], "fold", [], outs, initializer=inits),
                                  opset_imports=opsets)
        model.ir_version = min(model.ir_version, 10)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            return sess.run(None, {})
        except Exception:  # not evaluable here: the node stays in the graph and reports its own problem
            return None

    def _fold(self, proto) -> bool:
        """Evaluate a node whose inputs are all constants; True when its outputs became constants."""
        vals = self._evaluate(proto, {self.src(i): self.consts[self.src(i)] for i in proto.input if i})
        if vals is None:
            return False
        outs = [o for o in proto.output if o]
        for o, v in zip(outs, vals):
            self.consts[o] = np.asarray(v)
        w = self.src(proto.input[0]) if proto.input else ""
        if proto.op_type in _MOVE_OPS and w in self.weight_q:
            self._move_weight_q(proto, w, outs[0])
        return True

    def _move_weight_q(self, proto, src: str, out: str) -> None:
        """A QDQ weight's codes through a constant Transpose/Reshape/...: same move on the codes."""
        q, s, zp, axis = self.weight_q[src]
        if proto.op_type == "Transpose":
            perm = list(_attrs(proto).get("perm", range(q.ndim)[::-1]))
            axis = perm.index(axis) if q.ndim else 0
        elif s.ndim:  # per-axis scales cannot follow a reshape: the float weight is quantized anew
            return
        vals = self._evaluate(proto, {self.src(i): (q if self.src(i) == src else self.consts[self.src(i)])
                                      for i in proto.input if i})
        if vals is not None:
            self.weight_q[out] = (np.asarray(vals[0], dtype=np.int64), s, zp, axis)

    # ------------------------------------------------------------------ native ops
    def _native(self, proto, name: str) -> Node | None:
        op, a = proto.op_type, _attrs(proto)
        ins = [self.src(i) for i in proto.input]
        outs = list(proto.output)
        if op in ("Identity", "Dropout"):
            self.rename[outs[0]] = ins[0]
            return None
        if op == "Gemm":
            return self._gemm(proto, name, a, ins, outs)
        if op == "MatMul":
            w = self.const(ins[1])
            if w is None or w.ndim != 2 or self.const(ins[0]) is not None:
                return self._generic(proto, name)
            node = Node(name, "Dense", [ins[0]], outs,
                        params={"W": np.ascontiguousarray(w.T, dtype=np.float32),
                                "b": np.zeros(w.shape[1], np.float32)})
            self._attach_weight_q(node, ins[1], transpose=True)
            return node
        if op == "Conv":
            return self._conv(proto, name, a, ins, outs)
        if op == "ConvTranspose":
            return self._conv_transpose(proto, name, a, ins, outs)
        if op in ("MaxPool", "AveragePool"):
            return self._pool(proto, name, a, ins, outs)
        if op == "GlobalAveragePool":
            return Node(name, op, [ins[0]], outs)
        if op == "Flatten":
            return Node(name, op, [ins[0]], outs, attrs={"axis": int(a.get("axis", 1))})
        if op == "Reshape":
            shape = self.const(ins[1])
            if shape is None or a.get("allowzero", 0):
                return self._generic(proto, name)
            return Node(name, op, [ins[0]], outs, attrs={"shape": [int(d) for d in shape]})
        if op == "Pad":
            return self._pad(proto, name, a, ins, outs)
        if op == "Relu":
            return Node(name, op, [ins[0]], outs, attrs={"activation": {"kind": "relu"}})
        if op == "Clip":
            lo = self.const(ins[1]) if len(ins) > 1 and ins[1] else a.get("min", -np.inf)
            hi = self.const(ins[2]) if len(ins) > 2 and ins[2] else a.get("max", np.inf)
            if lo is None or hi is None:
                return self._generic(proto, name)
            return Node(name, op, [ins[0]], outs,
                        attrs={"activation": {"kind": "clip", "min": float(lo), "max": float(hi)}})
        return self._generic(proto, name)

    def _attach_weight_q(self, node: Node, wname: str, *, transpose: bool, bname: str | None = None):
        """Carry a QDQ model's integer weights (and bias) onto a Dense/Conv node."""
        if wname in self.weight_q:
            q, s, zp, axis = self.weight_q[wname]
            if transpose:
                q, axis = q.T, 1 - axis
            if s.ndim and axis != 0:
                raise ModelError(f"{self.path}: node {node.name!r}: per-channel weight scales must be "
                                 f"along the output channel, found axis {axis}")
            node.params["W_q"] = np.ascontiguousarray(q)
            node.params["W_scale"] = np.broadcast_to(s, (q.shape[0],)).astype(np.float32).copy()
            node.params["W_zp"] = np.broadcast_to(zp, (q.shape[0],)).astype(np.int64).copy()
        if bname and bname in self.weight_q:
            q, s, zp, _ = self.weight_q[bname]
            node.params["b_q"] = np.broadcast_to(q, node.params["b"].shape).astype(np.int64).copy()

    def _gemm(self, proto, name, a, ins, outs):
        w = self.const(ins[1])
        if w is None or a.get("transA", 0) or self.const(ins[0]) is not None:
            return self._generic(proto, name)
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        W = (w if a.get("transB", 0) else w.T).astype(np.float32) * np.float32(alpha)
        c = self.const(ins[2]) if len(ins) > 2 and ins[2] else np.zeros(W.shape[0], np.float32)
        if c is None:
            return self._generic(proto, name)
        b = np.broadcast_to(c.astype(np.float32) * np.float32(beta), (W.shape[0],)).copy()
        node = Node(name, "Dense", [ins[0]], outs, params={"W": np.ascontiguousarray(W), "b": b})
        if alpha == 1.0 and beta == 1.0:
            self._attach_weight_q(node, ins[1], transpose=not a.get("transB", 0),
                                  bname=ins[2] if len(ins) > 2 else None)
        return node

    def _pad(self, proto, name, a, ins, outs):
        """Constant-mode Pad with constant, non-negative pads (negative pads crop: float)."""
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = self.const(ins[1]) if len(ins) > 1 and ins[1] else a.get("pads")
        value = self.const(ins[2]) if len(ins) > 2 and ins[2] else np.float32(a.get("value", 0.0))
        if (mode != "constant" or pads is None or value is None or (len(ins) > 3 and ins[3])
                or np.any(np.asarray(pads) < 0)):
            return self._generic(proto, name)
        return Node(name, "Pad", [ins[0]], outs,
                    attrs={"pads": [int(p) for p in np.asarray(pads).reshape(-1)],
                           "value": float(np.asarray(value).reshape(()))})

    def _geometry(self, proto, a, kernel) -> dict | str:
        """Validated 2-D pads/strides/dilations, or the reason they are not supported."""
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID"):
            return f"attribute auto_pad={auto_pad} is not supported (expected NOTSET or VALID)"
        if a.get("ceil_mode", 0):
            return "attribute ceil_mode=1 is not supported (expected 0)"
        if a.get("storage_order", 0):
            return "attribute storage_order=1 is not supported (expected 0)"
        pads = list(a.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else [0, 0, 0, 0]
        return {"kernel": [int(k) for k in kernel], "pads": [int(p) for p in pads],
                "strides": [int(s) for s in a.get("strides", [1, 1])],
                "dilations": [int(d) for d in a.get("dilations", [1, 1])]}

    def _conv(self, proto, name, a, ins, outs):
        w = self.const(ins[1])
        if w is None or w.ndim not in (3, 4, 5):
            return self._generic(proto, name)
        depth = None
        if w.ndim == 3:  # Conv1d: (N, C, L) runs as (N, C, 1, L) with a (M, C, 1, K) kernel
            a = _as_2d(a)
            w = w[:, :, None, :]
        elif w.ndim == 5:  # Conv3d: depth taps stacked as channels, (M, C·KD, KH, KW) kernel
            a, depth = _depth_as_channels(a, w.shape[2])
            w = w.reshape(w.shape[0], -1, *w.shape[3:])
        geo = self._geometry(proto, a, w.shape[2:])
        if isinstance(geo, str):
            return self._generic(proto, name, unsupported=geo)
        b = self.const(ins[2]) if len(ins) > 2 and ins[2] else np.zeros(w.shape[0], np.float32)
        if b is None:
            return self._generic(proto, name)
        attrs = {"pads": geo["pads"], "strides": geo["strides"], "dilations": geo["dilations"],
                 "group": int(a.get("group", 1))}
        if a.get("_dims") == 1:
            attrs["dims"] = 1
        if depth is not None:
            attrs["dims"], attrs["depth"] = 3, depth
        node = Node(name, "Conv", [ins[0]], outs, attrs=attrs,
                    params={"W": w.astype(np.float32), "b": b.astype(np.float32)})
        self._attach_weight_q(node, ins[1], transpose=False, bname=ins[2] if len(ins) > 2 else None)
        if "W_q" in node.params:
            node.params["W_q"] = node.params["W_q"].reshape(w.shape)
        return node

    def _conv_transpose(self, proto, name, a, ins, outs):
        """ConvTranspose as a stride-1 Conv over the input with stride-1 zeros inserted between
        elements, the kernel flipped and its in/out channels swapped (group 1)."""
        w = self.const(ins[1])
        if w is None or w.ndim not in (3, 4):
            return self._generic(proto, name)
        dims = w.ndim - 2
        if dims == 1:
            a = _as_2d(a, ("strides", "dilations", "output_padding"))
            w = w[:, :, None, :]
        kh, kw = w.shape[2:]
        strides = [int(v) for v in a.get("strides", [1, 1])]
        dil = [int(v) for v in a.get("dilations", [1, 1])]
        pads = [int(v) for v in a.get("pads", [0, 0, 0, 0])]
        outpad = [int(v) for v in a.get("output_padding", [0, 0])]
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        full = [dil[0] * (kh - 1), dil[1] * (kw - 1)]
        cpads = [full[0] - pads[0], full[1] - pads[1], full[0] - pads[2] + outpad[0], full[1] - pads[3] + outpad[1]]
        why = ("attribute auto_pad is not supported (expected NOTSET)" if auto_pad != "NOTSET" else
               "attribute output_shape is not supported" if "output_shape" in a else
               "attribute group > 1 is not supported (expected 1)" if int(a.get("group", 1)) != 1 else
               "pads larger than the dilated kernel are not supported" if min(cpads) < 0 else None)
        if why:
            return self._generic(proto, name, unsupported=why)
        b = self.const(ins[2]) if len(ins) > 2 and ins[2] else np.zeros(w.shape[1], np.float32)
        if b is None:
            return self._generic(proto, name)
        wc = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        attrs = {"pads": cpads, "strides": [1, 1], "dilations": dil, "group": 1, "upsample": strides,
                 "transpose": {"strides": strides, "pads": pads, "dilations": dil, "output_padding": outpad}}
        if dims == 1:
            attrs["dims"] = 1
        node = Node(name, "Conv", [ins[0]], outs, attrs=attrs,
                    params={"W": wc.astype(np.float32), "b": b.astype(np.float32)})
        wname = ins[1]
        if wname in self.weight_q:  # QDQ: per-channel scales are along axis 1, the output channel
            q, s, zp, axis = self.weight_q[wname]
            if s.ndim and axis != 1:
                return self._generic(proto, name, unsupported=f"per-channel weight scales along axis {axis} "
                                                              f"(expected 1)")
            q = q[:, :, None, :] if dims == 1 else q
            self.weight_q[name + "/W"] = (np.ascontiguousarray(q.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]),
                                          s, zp, 0)
            wname = name + "/W"
        self._attach_weight_q(node, wname, transpose=False, bname=ins[2] if len(ins) > 2 else None)
        return node

    def _pool(self, proto, name, a, ins, outs):
        if len(a.get("kernel_shape", [])) != 2 or len(proto.output) > 1:
            return self._generic(proto, name)
        ceil = int(a.get("ceil_mode", 0))
        is_max = proto.op_type == "MaxPool"
        geo = self._geometry(proto, dict(a, ceil_mode=0) if is_max else a, a["kernel_shape"])
        if isinstance(geo, str):
            return self._generic(proto, name, unsupported=geo)
        dilations = geo.pop("dilations")
        if is_max:  # MaxPool: any dilation, and ceil_mode as extra end padding at run time
            if dilations != [1, 1]:
                geo["dilations"] = dilations
            if ceil:
                geo["ceil_mode"] = 1
        elif dilations != [1, 1]:
            return self._generic(proto, name, unsupported="attribute dilations is not supported "
                                                          "(expected [1, 1])")
        geo["strides"] = [int(s) for s in a.get("strides", [1, 1])]
        if proto.op_type == "AveragePool":
            geo["count_include_pad"] = int(a.get("count_include_pad", 0))
        return Node(name, proto.op_type, [ins[0]], outs, attrs=geo)

    def _generic(self, proto, name, unsupported: str | None = None) -> Node:
        import onnx

        p = onnx.NodeProto()
        p.CopyFrom(proto)
        p.ClearField("input")
        ins = [self.src(i) if i else "" for i in proto.input]
        p.input.extend(ins)
        params = {"node_proto": np.frombuffer(p.SerializeToString(), dtype=np.uint8).copy()}
        dyn = []
        for i in ins:
            if i and i in self.consts:
                params[CONST_PREFIX + i] = np.asarray(self.consts[i])
            elif i and i not in dyn:
                dyn.append(i)
        attrs = {"op_type": proto.op_type, "domain": proto.domain or "",
                 "opset": {("" if d == "ai.onnx" else d): v for d, v in self.opset.items()}}
        if unsupported:
            attrs["unsupported"] = unsupported
        if proto.op_type == "BatchNormalization" and self.ranks().get(proto.input[0]) == 4:
            attrs["input_rank"] = 4  # a standalone one can become a depthwise conv (transforms)
        return Node(name, "Onnx", dyn, list(proto.output), attrs=attrs, params=params)

    def ranks(self) -> dict[str, int]:
        """Tensor ranks from ONNX shape inference (computed once; empty where it fails)."""
        if self._ranks is None:
            import onnx

            self._ranks = {}
            try:
                g = onnx.shape_inference.infer_shapes(self.model).graph
            except Exception:  # inference is a hint here; without it nothing is converted
                return self._ranks
            for v in [*g.input, *g.value_info, *g.output]:
                t = v.type.tensor_type
                if t.HasField("shape"):
                    self._ranks[v.name] = len(t.shape.dim)
        return self._ranks

    # ------------------------------------------------------------------ driver
    def run(self) -> Graph:
        from onnx import numpy_helper

        g = self.model.graph
        for idx, proto in enumerate(g.node):
            if proto.op_type == "Constant":
                val = _attrs(proto).get("value")
                if val is not None:
                    self.consts[proto.output[0]] = numpy_helper.to_array(val)
                elif not self._fold(proto):  # value_float(s)/value_int(s)/...: ONNX Runtime builds it
                    self.fail(proto, "cannot evaluate this Constant node")
                continue
            if self._foldable(proto) and self._fold(proto):
                continue
            if proto.op_type in _QDQ and (proto.domain in ("", "ai.onnx", "com.microsoft")):
                self._qdq(proto)
                continue
            if proto.domain not in ("", "ai.onnx"):
                node = self._generic(proto, self.unique(proto, idx))
            else:
                node = self._native(proto, self.unique(proto, idx))
            if node is not None:
                self.nodes.append(node)
        inits = set(self.consts)
        inputs = []
        for vi in g.input:
            if vi.name in inits:
                continue
            t = vi.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                          for d in t.shape.dim)
            from onnx import helper
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
            inputs.append(TensorInfo(vi.name, shape, dtype))
        outputs = [self.src(o.name) for o in g.output]
        produced = {t for n in self.nodes for t in n.outputs} | {i.name for i in inputs}
        const_out = next((o for o in outputs if o not in produced and o in self.consts), None)
        if const_out is not None:
            raise ModelError(f"{self.path}: graph output {const_out!r} is a constant (it does not depend on "
                             f"the input); qhw runs models whose outputs are computed from the input")
        graph = Graph(nodes=self.nodes, inputs=inputs, outputs=outputs,
                      opset=int(self.opset.get("ai.onnx", 13)), tensors=dict(self.tensor_qparams))
        return graph


def import_model(path: str | Path, *, notes: list[str] | None = None) -> tuple[Graph, bool]:
    """Import an ONNX file as a simplified float graph; returns (graph, is_qdq).

    For a QDQ model, ``graph.tensors`` holds the imported activation quantization
    and linear nodes carry ``W_q``/``W_scale``/``W_zp`` (and ``b_q``) params.
    What the import changed on its own (an opset conversion) is appended to ``notes``.
    """
    path = Path(path)
    model = upgrade_opset(load_onnx(path), path, notes if notes is not None else [])
    imp = _Importer(model, path)
    graph = imp.run()
    is_qdq = bool(imp.tensor_qparams or imp.weight_q)
    if not graph.inputs:
        raise ModelError(f"{path}: the model has no graph input")
    simplify(graph)
    return graph, is_qdq
