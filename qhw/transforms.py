"""Float graph transforms real models need before quantization.

- BatchNormalization folded into the preceding Conv/Dense.
- Add/Sub/Mul by a per-channel or scalar constant folded into the preceding Conv/Dense.
- Relu/Clip fused into the preceding Conv/Dense (it becomes the requantization clamp).
- A per-channel affine that follows no Conv/Dense (a BatchNormalization of a 4-D tensor, or
  DenseNet's written as Mul and Add by (C, 1, 1) constants) becomes a depthwise 1x1 Conv, so
  it runs in integers;
  the Add after the Mul and a Relu then fold into it as above.
- A constant zero Pad of the spatial axes folded into the following Conv's padding (the
  conv pads with the input's zero point, the code of 0.0) or AveragePool's (counting pads).

A fold happens only when the producer's output feeds nothing else, is not a
graph output and carries no recorded quantization (a QDQ model quantizes it on
its own); otherwise the node stays as it is.
"""

from __future__ import annotations

import numpy as np

from .graph import LINEAR_OPS, Graph, Node
from .onnx_node import CONST_PREFIX

__all__ = ["simplify"]


def _single_const(node: Node) -> np.ndarray | None:
    consts = [v for k, v in node.params.items() if k.startswith(CONST_PREFIX)]
    return consts[0] if len(consts) == 1 and len(node.inputs) == 1 else None


def _channel_vector(c: np.ndarray, producer: Node) -> np.ndarray | None:
    """A constant that broadcasts as one value per output channel, as that vector."""
    m = producer.params["W"].shape[0]
    c = np.asarray(c, dtype=np.float32)
    if c.size == 1:
        return np.full(m, c.reshape(()), np.float32)
    if c.size != m:
        return None
    if producer.op == "Dense" and c.shape[-1] == m:
        return c.reshape(m)
    dims = producer.attrs.get("dims", 2) if producer.op == "Conv" else 0
    if dims == 2 and c.ndim >= 3 and c.shape[-3] == m and c.shape[-2:] == (1, 1):
        return c.reshape(m)
    if dims == 1 and c.ndim >= 2 and c.shape[-2:] == (m, 1):
        return c.reshape(m)
    if dims == 3 and c.ndim >= 4 and c.shape[-4:] == (m, 1, 1, 1):
        return c.reshape(m)
    return None


def _drop_imported(node: Node) -> None:
    for k in ("W_q", "W_scale", "W_zp", "b_q"):
        node.params.pop(k, None)


def _scale_weights(node: Node, s: np.ndarray) -> None:
    w = node.params["W"]
    node.params["W"] = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    node.params["b"] = (node.params["b"] * s).astype(np.float32)
    _drop_imported(node)


def _batchnorm_affine(node: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) in float64 of an inference BatchNormalization with constant parameters,
    else None."""
    import onnx

    p = {k[len(CONST_PREFIX):]: v for k, v in node.params.items() if k.startswith(CONST_PREFIX)}
    proto = onnx.NodeProto()
    proto.ParseFromString(node.params["node_proto"].tobytes())
    if len(node.inputs) != 1 or len(p) != 4 or len(proto.output) != 1:
        return None
    gamma, beta, mean, var = (p[n].astype(np.float64) for n in proto.input[1:5])
    eps = next((a.f for a in proto.attribute if a.name == "epsilon"), 1e-5)
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def _fold_into(producer: Node, node: Node) -> bool:
    """Fold ``node`` into linear ``producer``; True when done."""
    if node.op in ("Relu", "Clip"):
        if producer.attrs.get("activation"):
            return False
        producer.attrs["activation"] = dict(node.attrs["activation"])
        return True
    if node.op != "Onnx" or producer.attrs.get("activation"):
        return False
    kind = node.attrs["op_type"]
    if kind == "BatchNormalization":
        aff = _batchnorm_affine(node)
        if aff is None:
            return False
        s, shift = aff
        w = producer.params["W"].astype(np.float64)
        producer.params["W"] = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        producer.params["b"] = (producer.params["b"] * s + shift).astype(np.float32)
        _drop_imported(producer)
        return True
    if kind in ("Add", "Sub", "Mul"):
        c = _single_const(node)
        import onnx
        proto = onnx.NodeProto()
        proto.ParseFromString(node.params["node_proto"].tobytes())
        if c is None or proto.input[0] != node.inputs[0]:  # only x op const, not const op x
            return False
        v = _channel_vector(c, producer)
        if v is None:
            return False
        if kind == "Mul":
            _scale_weights(producer, v)
        else:
            producer.params["b"] = (producer.params["b"] + (v if kind == "Add" else -v)).astype(np.float32)
            producer.params.pop("b_q", None)
        return True
    return False


def _fold_pad(pad: Node, node: Node) -> bool:
    """Fold a zero ``Pad`` of H and W into the Conv/AveragePool ``node`` reading it; True when done."""
    p = pad.attrs["pads"]
    if len(p) != 8 or pad.attrs["value"] != 0.0 or any(p[i] for i in (0, 1, 4, 5)):
        return False
    extra = [p[2], p[3], p[6], p[7]]  # (top, left, bottom, right)
    if node.op == "Conv" and node.attrs.get("dims", 2) == 2 and not node.attrs.get("upsample"):
        node.attrs["pads"] = [a + b for a, b in zip(node.attrs["pads"], extra)]
        return True
    if node.op == "AveragePool" and (node.attrs.get("count_include_pad") or not any(node.attrs["pads"])):
        node.attrs["pads"] = [a + b for a, b in zip(node.attrs["pads"], extra)]
        node.attrs["count_include_pad"] = 1  # padded taps are real zeros in the average
        return True
    return False


def _fold_pads(graph: Graph) -> None:
    producers, consumers = graph.producers(), graph.consumers()
    for node in list(graph.nodes):
        if not node.inputs or node.op not in ("Conv", "AveragePool"):
            continue
        src = node.inputs[0]
        pad = producers.get(src)
        if (pad is None or pad.op != "Pad" or len(consumers.get(src, [])) != 1 or src in graph.outputs
                or src in graph.tensors):
            continue
        if _fold_pad(pad, node):
            node.inputs = [pad.inputs[0]]
            graph.nodes.remove(pad)


def _channel_affine(node: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) of an ``x * c``, ``x + c`` or ``x - c`` node whose constant holds one value
    per channel of an NCHW tensor ((C, 1, 1) or (1, C, 1, 1)), else None."""
    if node.op != "Onnx" or len(node.outputs) != 1:
        return None
    if node.attrs["op_type"] == "BatchNormalization" and node.attrs.get("input_rank") == 4:
        return _batchnorm_affine(node)
    if node.attrs["op_type"] not in ("Mul", "Add", "Sub"):
        return None
    c = _single_const(node)
    if c is None or c.ndim not in (3, 4) or c.shape[-2:] != (1, 1) or (c.ndim == 4 and c.shape[0] != 1):
        return None
    import onnx
    proto = onnx.NodeProto()
    proto.ParseFromString(node.params["node_proto"].tobytes())
    kind = node.attrs["op_type"]
    if kind == "Sub" and proto.input[0] != node.inputs[0]:  # c - x
        return None
    v = np.asarray(c, dtype=np.float32).reshape(-1)
    if kind == "Mul":
        return v, np.zeros_like(v)
    return np.ones_like(v), (v if kind == "Add" else -v)


def _affines_to_convs(graph: Graph) -> bool:
    """Standalone per-channel affines as depthwise 1x1 Convs; True when any was replaced."""
    done: set[str] = set()
    producers = graph.producers()
    for i, node in enumerate(graph.nodes):
        aff = _channel_affine(node)
        if aff is None or node.inputs[0] in graph.tensors:  # a QDQ model quantizes it on its own
            continue
        prod = producers.get(node.inputs[0])
        if prod is not None and prod.name in done:  # may fold into that one: next round
            continue
        scale, shift = aff
        m = scale.size
        graph.nodes[i] = Node(node.name, "Conv", list(node.inputs), list(node.outputs),
                              attrs={"pads": [0, 0, 0, 0], "strides": [1, 1], "dilations": [1, 1], "group": m},
                              params={"W": scale.reshape(m, 1, 1, 1).astype(np.float32),
                                      "b": shift.astype(np.float32)})
        producers[node.outputs[0]] = graph.nodes[i]
        done.add(node.name)
    return bool(done)


def simplify(graph: Graph) -> None:
    """Apply the folds until none applies (in place)."""
    _fold_pads(graph)
    _fold_linear(graph)
    while _affines_to_convs(graph):
        _fold_linear(graph)


def _fold_linear(graph: Graph) -> None:
    changed = True
    while changed:
        changed = False
        producers, consumers = graph.producers(), graph.consumers()
        for node in list(graph.nodes):
            if not node.inputs or len(node.outputs) != 1:
                continue
            src = node.inputs[0]
            prod = producers.get(src)
            if (prod is None or prod.op not in LINEAR_OPS or len(consumers.get(src, [])) != 1
                    or src in graph.outputs or src in graph.tensors):
                continue
            if _fold_into(prod, node):
                prod.outputs = [node.outputs[0]]
                graph.nodes.remove(node)
                changed = True
                break
