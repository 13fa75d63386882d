"""Write a QModel as a QDQ ONNX model (QuantizeLinear/DequantizeLinear around float ops).

Every integer tensor gets a Q -> DQ pair after its producer; quantized weights
and int32 biases are stored as integer initializers behind DequantizeLinear.
ONNX Runtime fuses these patterns into QLinearConv / QLinearMatMul-style
kernels; Netron shows the scales and zero points. Float-kept nodes are written
as they were imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .arith import quantize_float
from .errors import ModelError
from .fileio import atomic_path
from .graph import Node
from .onnx_node import CONST_PREFIX
from .ops_elementwise import int_kind
from .qmodel import QModel

__all__ = ["export_qdq"]


class _Writer:
    def __init__(self):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits, self.names = [], [], set()
        self.rename: dict[str, str] = {}
        self.quantized: dict[str, tuple[str, str, str]] = {}  # tensor -> (codes, scale, zero point)
        self.opset = 13

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits.append(self.nh.from_array(np.array(value, order="C"), name))  # keeps 0-d scalars 0-d
        return name

    def node(self, op: str, inputs, outputs, name: str, **attrs):
        self.nodes.append(self.h.make_node(op, list(inputs), list(outputs), name=self.fresh(name), **attrs))

    def src(self, t: str) -> str:
        return self.rename.get(t, t)

    def qdq(self, tensor: str, qp) -> None:
        """Insert QuantizeLinear -> DequantizeLinear after ``tensor``; consumers read the DQ output."""
        dtype = np.int8 if qp.bits == 8 else np.int16
        if qp.bits > 8:
            self.opset = max(self.opset, 21)
        s = self.init(f"{tensor}_scale", np.array(qp.scale, np.float32))
        z = self.init(f"{tensor}_zero_point", np.array(qp.zero_point, dtype))
        q, dq = self.fresh(f"{tensor}_quantized"), self.fresh(f"{tensor}_dequantized")
        self.node("QuantizeLinear", [tensor, s, z], [q], f"{tensor}_QuantizeLinear")
        self.node("DequantizeLinear", [q, s, z], [dq], f"{tensor}_DequantizeLinear")
        self.rename[tensor] = dq
        self.quantized[tensor] = (q, s, z)

    def dq_const(self, base: str, codes: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None) -> str:
        q = self.init(f"{base}_quantized", codes)
        s = self.init(f"{base}_scale", scale)
        z = self.init(f"{base}_zero_point", zp.astype(codes.dtype))
        out = self.fresh(base)
        kw = {"axis": axis} if axis is not None and np.ndim(scale) else {}
        self.node("DequantizeLinear", [q, s, z], [out], f"{base}_DequantizeLinear", **kw)
        return out


def _onnx_weight(node: Node, W: np.ndarray) -> np.ndarray:
    """A Conv node's (M, C, KH, KW) kernel in the layout of the ONNX node it is written as: a
    transposed conv's (C, M, KH, KW) unflipped kernel, a 1-D conv's (M, C, K)."""
    if node.op == "Conv" and "transpose" in node.attrs:
        W = W.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    if node.op == "Conv" and node.attrs.get("dims", 2) == 1:
        W = W[:, :, 0, :]
    if node.op == "Conv" and node.attrs.get("dims", 2) == 3:
        W = W.reshape(W.shape[0], -1, node.attrs["depth"]["kernel"], *W.shape[2:])
    return np.ascontiguousarray(W)


def _weights(w: _Writer, node: Node, *, transpose: bool) -> tuple[str, str]:
    """Weight and bias inputs: DQ of integer initializers when quantized, float otherwise."""
    if node.quant is None:
        W = node.params["W"].T if transpose else _onnx_weight(node, node.params["W"])
        return w.init(f"{node.name}_W", W), w.init(f"{node.name}_b", node.params["b"])
    qp = node.qparams
    codes = _onnx_weight(node, qp["weight"])
    if codes.dtype == np.int16:
        w.opset = max(w.opset, 21)
    axis = 1 if "transpose" in node.attrs else 0  # the output channel
    wname = w.dq_const(f"{node.name}_W", codes, qp["weight_scale"], qp["weight_zero_point"], axis)
    bias = qp["bias"]
    if np.any(np.abs(bias) >= 1 << 31):
        raise ModelError(f"{node.label}: bias exceeds int32; QDQ ONNX cannot hold it")
    bname = w.dq_const(f"{node.name}_b", bias.astype(np.int32), qp["bias_scale"],
                       np.zeros_like(bias, dtype=np.int32), 0)
    return wname, bname


def _activation(w: _Writer, node: Node, pre: str, out: str) -> None:
    act = node.attrs.get("activation")
    if not act:
        return
    if act["kind"] == "relu":
        w.node("Relu", [pre], [out], f"{node.name}_Relu")
    else:
        lo = w.init(f"{node.name}_min", np.array(act["min"], np.float32))
        hi = w.init(f"{node.name}_max", np.array(act["max"], np.float32))
        w.node("Clip", [pre, lo, hi], [out], f"{node.name}_Clip")


def _conv(w: _Writer, node: Node, inputs: list[str], out: str) -> None:
    """Conv (2-D or 1-D) or ConvTranspose, with the attributes of the imported node."""
    a = node.attrs
    kernel = list(node.params["W"].shape[2:])
    geo = dict(a["transpose"]) if "transpose" in a else \
        {"pads": a["pads"], "strides": a["strides"], "dilations": a["dilations"]}
    if a.get("dims", 2) == 1:  # back from the (1, K) 2-D form
        kernel = kernel[1:]
        geo = {k: (v[1::2] if k == "pads" else v[1:]) for k, v in geo.items()}
    elif a.get("dims", 2) == 3:  # back from depth taps as channels
        d, p = a["depth"], geo["pads"]
        kernel = [d["kernel"], *kernel]
        geo = {"pads": [d["pads"][0], p[0], p[1], d["pads"][1], p[2], p[3]],
               "strides": [d["stride"], *geo["strides"]], "dilations": [d["dilation"], *geo["dilations"]]}
    op = "ConvTranspose" if "transpose" in a else "Conv"
    w.node(op, inputs, [out], node.name, kernel_shape=kernel, group=a["group"], **geo)


def _emit(w: _Writer, node: Node, qp_of: dict) -> list[str]:
    """Write one node; returns notes."""
    import onnx

    ins = [w.src(i) for i in node.inputs]
    out = node.outputs[0]
    a = node.attrs
    if node.op in ("Dense", "Conv"):
        wn, bn = _weights(w, node, transpose=False)
        pre = w.fresh(f"{out}_preact") if a.get("activation") else out
        if node.op == "Dense":
            w.node("Gemm", [ins[0], wn, bn], [pre], node.name, transB=1)
        else:
            _conv(w, node, [ins[0], wn, bn], pre)
        _activation(w, node, pre, out)
    elif node.op in ("MaxPool", "AveragePool"):
        kw = {"count_include_pad": a.get("count_include_pad", 0)} if node.op == "AveragePool" else \
            {k: a[k] for k in ("dilations", "ceil_mode") if k in a}
        w.node(node.op, ins, [out], node.name, kernel_shape=a["kernel"], pads=a["pads"], strides=a["strides"],
               **kw)
    elif node.op == "GlobalAveragePool":
        w.node(node.op, ins, [out], node.name)
    elif node.op == "Flatten":
        w.node(node.op, ins, [out], node.name, axis=a["axis"])
    elif node.op == "Reshape":
        shape = w.init(f"{node.name}_shape", np.array(a["shape"], np.int64))
        w.node(node.op, [ins[0], shape], [out], node.name)
    elif node.op in ("Relu", "Clip"):
        _activation(w, node, ins[0], out)
    elif node.op == "Pad":  # opset >= 11 form: pads and value are inputs
        pads = w.init(f"{node.name}_pads", np.array(a["pads"], np.int64))
        src = w.quantized.get(node.inputs[0])
        if node.quant is not None and src is not None and node.outputs[0] in qp_of:
            # Pad the codes (value: its code), as the golden model does: ONNX Runtime's QDQ rewrite
            # of DQ -> Pad -> Q loses a non-zero pad value when it converts int8 to uint8.
            qp = qp_of[node.outputs[0]]
            code = quantize_float(np.float32(a["value"]), qp.scale, qp.zero_point, qp.qmin, qp.qmax)
            q, sc, zp = src
            value = w.init(f"{node.name}_value", np.array(code, np.int8 if qp.bits == 8 else np.int16))
            pq, dq = w.fresh(f"{out}_quantized"), w.fresh(f"{out}_dequantized")
            w.node("Pad", [q, pads, value], [pq], node.name)
            w.node("DequantizeLinear", [pq, sc, zp], [dq], f"{out}_DequantizeLinear")
            w.rename[out], w.quantized[out] = dq, (pq, sc, zp)
        else:
            value = w.init(f"{node.name}_value", np.array(a["value"], np.float32))
            w.node("Pad", [ins[0], pads, value], [out], node.name)
    elif node.op == "Onnx":
        proto = onnx.NodeProto()
        proto.ParseFromString(node.params["node_proto"].tobytes())
        for k, v in sorted(node.params.items()):
            if k.startswith(CONST_PREFIX):
                cname = k[len(CONST_PREFIX):]
                if cname not in w.names:
                    w.names.add(cname)
                    w.inits.append(w.nh.from_array(np.asarray(v), cname))
        new_inputs = [w.src(i) if i else "" for i in proto.input]
        proto.ClearField("input")
        proto.input.extend(new_inputs)
        w.nodes.append(proto)
        w.names.update(proto.output)
        w.opset = max(w.opset, int(a["opset"].get("", 13)))
        return []
    else:
        raise ModelError(f"{node.label}: cannot export op {node.op}")
    w.names.update(node.outputs)
    return []


def _outputs_from_a_run(qm: QModel, inferred: dict, outputs: list) -> list:
    """Graph output types from a float run on one zero sample (the checker needs a shape field);
    dimensions that depend on the batch stay symbolic."""
    from onnx import TensorProto, helper

    from .executor import run_float

    g = qm.graph
    inp = g.inputs[0]
    x = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)
    ys = run_float(g, x)
    out = []
    for o, known, y in zip(g.outputs, outputs, ys):
        if known is not None:
            out.append(known)
            continue
        elem = (inferred[o].type.tensor_type.elem_type if o in inferred
                else helper.np_dtype_to_tensor_dtype(np.asarray(y).dtype) or TensorProto.FLOAT)
        out.append(helper.make_tensor_value_info(o, elem, [None] * np.ndim(y)))
    return out


def _first_line(e: Exception) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:300]


def _emit_mean(w: _Writer, node: Node, qp) -> None:
    """An integer spatial ReduceMean as GlobalAveragePool (+ Flatten for keepdims=0), each output
    quantized: ORT then runs QLinearGlobalAveragePool, the rule qhw's golden model uses, where a
    DQ -> ReduceMean -> Q group would run in float."""
    from .ops_elementwise import node_attrs

    out = node.outputs[0]
    w.opset = max(w.opset, int(node.attrs["opset"].get("", 13)))
    if node_attrs(node).get("keepdims", 1):
        w.node("GlobalAveragePool", [w.src(node.inputs[0])], [out], node.name)
    else:
        pooled = w.fresh(f"{out}_pooled")
        w.node("GlobalAveragePool", [w.src(node.inputs[0])], [pooled], node.name)
        w.qdq(pooled, qp)
        w.node("Flatten", [w.src(pooled)], [out], f"{node.name}_Flatten", axis=1)
    w.names.update(node.outputs)


def export_qdq(qm: QModel, path: str | Path) -> list[str]:
    import onnx
    from onnx import TensorProto, helper

    g = qm.graph
    w = _Writer()
    notes: list[str] = []
    inp = g.inputs[0]
    w.names.add(inp.name)
    if inp.name in g.tensors:
        w.qdq(inp.name, g.tensors[inp.name])
    done_q = {inp.name}
    for node in g.nodes:
        # a ReduceMean group ORT would not fuse anyway (mixed types) stays ReduceMean, as the golden model has it
        if (node.quant is not None and int_kind(node) == "ReduceMean"
                and len(set(node.quant.get("onnx_offsets") or [0])) == 1):
            _emit_mean(w, node, g.tensors[node.outputs[0]])
        else:
            notes += _emit(w, node, g.tensors)
        for t in node.outputs:
            if t in g.tensors and t not in done_q and t not in w.quantized:
                w.qdq(t, g.tensors[t])
                done_q.add(t)
    dims = [d if isinstance(d, int) else str(d) for d in inp.shape]
    inputs = [helper.make_tensor_value_info(inp.name, TensorProto.FLOAT, dims)]
    for o in g.outputs:
        src = w.src(o)
        if src != o:  # the graph output is quantized: its float value is renamed, the DQ output takes the name
            pre = w.fresh(f"{o}_float")
            for n in w.nodes:
                for field in (n.input, n.output):
                    for i, t in enumerate(field):
                        if t == o:
                            field[i] = pre
            w.node("Identity", [src], [o], f"{o}_output")
    opsets = [helper.make_opsetid("", w.opset)]
    # output element types (a float-kept ArgMax gives int64): infer them on the graph without outputs
    probe = helper.make_model(helper.make_graph(w.nodes, "probe", inputs, [], initializer=w.inits),
                              opset_imports=opsets)
    try:
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(probe, strict_mode=True).graph.value_info}
    except Exception as e:  # onnx's InferenceError and friends: a node invalid at the declared opset
        raise ModelError(f"{path}: cannot export: {_first_line(e)}") from e
    outputs = [inferred[o] if o in inferred and inferred[o].type.tensor_type.HasField("shape") else None
               for o in g.outputs]
    if None in outputs:  # shape inference could not tell the rank: take it from one float run
        outputs = _outputs_from_a_run(qm, inferred, outputs)
    graph = helper.make_graph(w.nodes, "qhw_qdq", inputs, outputs, initializer=w.inits)
    model = helper.make_model(graph, opset_imports=opsets, producer_name="qhw")
    model.ir_version = 8 if w.opset < 21 else 10
    try:  # full_check: also shape inference, which is what rejects a node invalid at the declared opset
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # ValidationError, InferenceError
        raise ModelError(f"{path}: exported model does not pass the ONNX checker: {_first_line(e)}") from e
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return notes
