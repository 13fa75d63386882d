"""Float execution of ONNX nodes qhw has no kernel for, through a one-node ONNX Runtime session.

This is what keeps partial quantization running end to end: Softmax, Sigmoid,
ArgMax, Cast, Concat and anything else ONNX Runtime knows stays float. The node
is stored as its serialized NodeProto (protobuf bytes, not pickle) plus its
constant inputs.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .errors import ModelError
from .graph import Node

__all__ = ["run_onnx_node", "CONST_PREFIX"]

CONST_PREFIX = "const:"
_SESSIONS: dict[tuple, object] = {}


def _key(node: Node, dtypes: tuple) -> tuple:
    """What the session depends on, by content: copies of a node (the per-layer variants of
    sensitivity analysis are deep copies) share one session instead of each building its own."""
    consts = tuple((k, str(v.dtype), v.shape, hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest())
                   for k, v in sorted(node.params.items()) if k.startswith(CONST_PREFIX))
    return (node.params["node_proto"].tobytes(), tuple(sorted(node.attrs["opset"].items())), consts, dtypes)


# ORT moves these to its NCHWc layout only when their input already is (made by an NCHWc conv or
# pool); qhw's inputs are dequantized codes or other float nodes' outputs, so never.
_NCHWC_FED_ONLY = ("GlobalAveragePool", "GlobalMaxPool")


def _shape(dims: tuple | None):
    """An input's declared shape: batch symbolic, the rest as fed. ONNX Runtime picks kernels by
    what it knows of the shapes (4-D MaxPool/AveragePool run in its NCHWc layout, which rounds
    differently, when the channel count is known and a multiple of its block size), so the
    session is built as the whole model's would be."""
    return None if dims is None else ["N", *dims]


def _session(node: Node, dtypes: tuple, shapes: tuple | None = None):
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    shapes = shapes or (None,) * len(dtypes)
    key = _key(node, dtypes) + (shapes,)
    if key in _SESSIONS:
        return _SESSIONS[key]
    proto = onnx.NodeProto()
    proto.ParseFromString(node.params["node_proto"].tobytes())
    dyn = list(node.inputs)
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), _shape(d))
              for n, t, d in zip(dyn, dtypes, shapes)]
    inits = [numpy_helper.from_array(v, k[len(CONST_PREFIX):])
             for k, v in sorted(node.params.items()) if k.startswith(CONST_PREFIX)]
    outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in proto.output if o]
    graph = helper.make_graph([proto], f"qhw_{node.name}", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(node.attrs["opset"].items())]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, 10)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types; report the node, not a traceback
        raise ModelError(f"{node.label}: ONNX Runtime cannot run this node in float: "
                         f"{str(e).splitlines()[0][:200]}") from e
    _SESSIONS[key] = sess
    return sess


def run_onnx_node(node: Node, xs: list[np.ndarray]) -> list[np.ndarray]:
    xs = [np.asarray(x) for x in xs]
    known = node.attrs.get("op_type") not in _NCHWC_FED_ONLY
    shapes = tuple(x.shape[1:] if x.ndim >= 3 and known else None for x in xs)
    sess = _session(node, tuple(str(x.dtype) for x in xs), shapes)
    feeds = {n: np.asarray(x) for n, x in zip(node.inputs, xs)}
    outs = sess.run(None, feeds)
    return list(outs)
