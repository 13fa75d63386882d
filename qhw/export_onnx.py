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

    def dq_const(self, base: str, codes: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None) -> str:
        q = self.init(f"{base}_quantized", codes)
        s = self.init(f"{base}_scale", scale)
        z = self.init(f"{base}_zero_point", zp.astype(codes.dtype))
        out = self.fresh(base)
        kw = {"axis": axis} if axis is not None and np.ndim(scale) else {}
        self.node("DequantizeLinear", [q, s, z], [out], f"{base}_DequantizeLinear", **kw)
        return out


def _weights(w: _Writer, node: Node, *, transpose: bool) -> tuple[str, str]:
    """Weight and bias inputs: DQ of integer initializers when quantized, float otherwise."""
    if node.quant is None:
        W = node.params["W"].T if transpose else node.params["W"]
        return w.init(f"{node.name}_W", W), w.init(f"{node.name}_b", node.params["b"])
    qp = node.qparams
    codes = qp["weight"]
    if codes.dtype == np.int16:
        w.opset = max(w.opset, 21)
    wname = w.dq_const(f"{node.name}_W", codes, qp["weight_scale"], qp["weight_zero_point"], 0)
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


def _emit(w: _Writer, node: Node) -> list[str]:
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
            W = node.params["W"]
            w.node("Conv", [ins[0], wn, bn], [pre], node.name, kernel_shape=list(W.shape[2:]),
                   pads=a["pads"], strides=a["strides"], dilations=a["dilations"], group=a["group"])
        _activation(w, node, pre, out)
    elif node.op in ("MaxPool", "AveragePool"):
        kw = {"count_include_pad": a.get("count_include_pad", 0)} if node.op == "AveragePool" else {}
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
            notes += _emit(w, node)
        for t in node.outputs:
            if t in g.tensors and t not in done_q:
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
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(probe).graph.value_info}
    outputs = [inferred[o] if o in inferred else helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N"])
               for o in g.outputs]
    graph = helper.make_graph(w.nodes, "qhw_qdq", inputs, outputs, initializer=w.inits)
    model = helper.make_model(graph, opset_imports=opsets, producer_name="qhw")
    model.ir_version = 8 if w.opset < 21 else 10
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"{path}: exported model does not pass the ONNX checker: {str(e).splitlines()[0]}") from e
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return notes
