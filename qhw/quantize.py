"""The quantizer: float graph + calibration ranges -> graph with integer annotations.

Decides which nodes run in integers (partial quantization), quantizes weights
and biases, derives the per-channel requantization (``qhw.arith.Requant``) and
the fused activation clamp, and optionally corrects biases. A QDQ model's own
scales, zero points and integer weights are kept as they are.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np

from .arith import ROUNDING_MODES, Requant, qrange
from .calibrate import CALIB_METHODS, TensorStats, choose_range, qparams_from_range
from .errors import ConfigError, UnsupportedOpError
from .graph import LINEAR_OPS, Graph, Node, QParams
from .ops import (
    INT_OPS,
    PASS_THROUGH_OPS,
    accumulate,
    activation_bounds,
    channel_axis,
    float_preactivation,
    int_activation_clamp,
)
from .ops_elementwise import build_table, has_int_kernel, int_kind, kind_class, onnx_code_offsets

__all__ = ["QuantConfig", "quantize_weights", "quantize_graph", "candidate_tensors", "plan", "float_notes",
           "correct_biases"]

WEIGHT_BITS = (4, 8, 16)
ACT_BITS = (8, 16)
GRANULARITIES = ("per-channel", "per-tensor")


@dataclass(frozen=True)
class QuantConfig:
    weight_bits: int = 8
    act_bits: int = 8
    granularity: str = "per-channel"
    weight_symmetric: bool = True
    act_symmetric: bool = False
    calib_method: str = "minmax"
    percentile: float = 99.99
    rounding: str = "single"
    bias_correction: bool = False
    keep_float: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.weight_bits not in WEIGHT_BITS:
            raise ConfigError(f"--weight-bits must be one of 4, 8, 16, not {self.weight_bits!r}")
        if self.act_bits not in ACT_BITS:
            raise ConfigError(f"--act-bits must be 8 or 16, not {self.act_bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"--granularity must be per-channel or per-tensor, not {self.granularity!r}")
        if self.calib_method not in CALIB_METHODS:
            raise ConfigError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, "
                              f"not {self.calib_method!r}")
        if self.rounding not in ROUNDING_MODES:
            raise ConfigError(f"--rounding must be one of {', '.join(ROUNDING_MODES)}, not {self.rounding!r}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["keep_float"] = list(self.keep_float)
        return d

    @classmethod
    def from_json(cls, d: dict) -> QuantConfig:
        d = dict(d)
        d["keep_float"] = tuple(d.get("keep_float", ()))
        return cls(**d)


# --------------------------------------------------------------------------- pure math


def quantize_weights(w: np.ndarray, *, bits: int, symmetric: bool, per_channel: bool):
    """Weights (out-channel first) -> (codes int64, scale float32 (M,), zero point int64 (M,)).

    Symmetric: narrow range [-(2**(b-1)-1), 2**(b-1)-1], zero point 0 (TFLite int8 spec).
    Asymmetric: full range with a per-channel zero point; both ranges include 0.
    """
    m = w.shape[0]
    flat = w.reshape(m, -1).astype(np.float64)
    if not per_channel:
        flat_stats = flat.reshape(1, -1)
    else:
        flat_stats = flat
    lo = np.minimum(flat_stats.min(axis=1), 0.0)
    hi = np.maximum(flat_stats.max(axis=1), 0.0)
    if symmetric:
        qmin, qmax = qrange(bits, narrow=True)
        scale = np.maximum(-lo, hi) / qmax
        zp = np.zeros_like(scale, dtype=np.int64)
    else:
        qmin, qmax = qrange(bits)
        scale = (hi - lo) / (qmax - qmin)
        zp = np.zeros_like(scale, dtype=np.int64)
        ok = scale > 0
        zp[ok] = np.clip(np.round(qmin - lo[ok] / scale[ok]), qmin, qmax).astype(np.int64)
    scale = scale.astype(np.float32)
    scale[~(scale > np.finfo(np.float32).tiny)] = 1.0
    scale = np.broadcast_to(scale, (m,)).copy()
    zp = np.broadcast_to(zp, (m,)).copy()
    codes = np.rint(flat / scale[:, None].astype(np.float64)) + zp[:, None]
    codes = np.clip(codes, qmin, qmax).astype(np.int64).reshape(w.shape)
    return codes, scale, zp


def _quantize_bias(b: np.ndarray, bias_scale: np.ndarray, act_bits: int) -> np.ndarray:
    lo, hi = qrange(32 if act_bits == 8 else 48)
    return np.clip(np.rint(b.astype(np.float64) / bias_scale.astype(np.float64)), lo, hi).astype(np.int64)


# --------------------------------------------------------------------------- planning


def candidate_tensors(graph: Graph) -> list[str]:
    """Tensors whose ranges calibration must record: inputs and outputs of integer-capable nodes."""
    names: list[str] = []
    for n in graph.nodes:
        if has_int_kernel(n):
            for t in n.inputs + n.outputs:
                if t not in names:
                    names.append(t)
    return names


def plan(graph: Graph, keep_float: tuple[str, ...] | set[str],
         imported: dict[str, QParams] | None = None, *, strict: bool = False) -> tuple[list[str], list[str]]:
    """Names of nodes to quantize, and one-line notes on nodes that stay float and why.

    A pass-through op (pooling, reshaping, clamps) runs in integers when its producer does,
    or when a QDQ model quantizes both its input and its output. A node with an attribute
    the integer kernels cannot execute runs in float, or is an error with ``strict``."""
    imported = imported or {}
    known = {n.name for n in graph.nodes}
    missing = [k for k in keep_float if k not in known]
    if missing:
        raise ConfigError(f"--keep-float {missing[0]}: no node of that name "
                          f"(nodes: {', '.join(n.name for n in graph.nodes)})")
    quantized: set[str] = set()
    producers = graph.producers()
    for n in graph.nodes:
        if n.name in keep_float:
            continue
        if "unsupported" in n.attrs:
            if strict:
                raise UnsupportedOpError(f"{n.label}: {n.attrs['unsupported']}; "
                                         f"use --keep-float {n.name} to run it in float")
            continue
        kind = int_kind(n)
        if kind is not None:
            if _int_ready(n, kind, quantized, producers, imported):
                quantized.add(n.name)
            continue
        if n.op in LINEAR_OPS:
            quantized.add(n.name)
        elif n.op in PASS_THROUGH_OPS:
            p = producers.get(n.inputs[0])
            if (p is not None and p.name in quantized) or (n.inputs[0] in imported and n.outputs[0] in imported):
                quantized.add(n.name)
    return ([n.name for n in graph.nodes if n.name in quantized],
            float_notes(graph, quantized, keep_float))


def float_notes(graph: Graph, quantized, keep_float, lacking=()) -> list[str]:
    """One note per reason, listing every node outside ``quantized`` (each runs in float)."""
    groups: dict[str, list[str]] = {}
    for n in graph.nodes:
        if n.name in quantized:
            continue
        kind = n.attrs.get("op_type", n.op)
        if n.name in keep_float:
            reason, what = "--keep-float", n.name
        elif "unsupported" in n.attrs:
            reason, what = "unsupported attribute; --strict makes this an error", \
                f"{n.name} ({kind}: {n.attrs['unsupported']})"
        elif (int_kind(n) is None) if n.op == "Onnx" else n.op not in INT_OPS:
            reason, what = "no integer implementation", f"{n.name} ({kind})"
        elif n.name in lacking:
            reason, what = "no quantization parameters in the model", n.name
        else:
            reason, what = "its input is float", f"{n.name} ({kind})"
        groups.setdefault(reason, []).append(what)
    return [f"kept float ({reason}): " + ", ".join(names) for reason, names in groups.items()]


def _int_ready(n: Node, kind: str, quantized: set, producers: dict, imported: dict) -> bool:
    """An ``Onnx`` node with an integer kernel runs in integers when every input is integer
    (its producer is, or a QDQ model quantizes it) and, in a QDQ model, its outputs are
    quantized too (ORT runs it in integers only then)."""
    def integer(t):
        p = producers.get(t)
        return (p is not None and p.name in quantized) or t in imported
    if not all(integer(t) for t in n.inputs):
        return False
    if kind_class(kind) in ("rescale", "table"):
        return not imported or all(o in imported for o in n.outputs)
    return True


# --------------------------------------------------------------------------- quantization


def _tensor_qparams(name: str, ranges: dict[str, tuple[float, float]], imported: dict[str, QParams],
                    cfg: QuantConfig) -> QParams | None:
    if name in imported:
        return imported[name]
    if name not in ranges:
        return None
    lo, hi = ranges[name]
    return qparams_from_range(lo, hi, bits=cfg.act_bits, symmetric=cfg.act_symmetric)


def _quantize_linear(node: Node, in_qp: QParams, out_qp: QParams, cfg: QuantConfig) -> None:
    p = node.params
    if "W_q" in p:  # a QDQ model's own integer weights
        wq, ws, wz = p["W_q"], p["W_scale"], p["W_zp"]
        wbits = 16 if np.max(np.abs(wq)) > 127 else 8
    else:
        wq, ws, wz = quantize_weights(p["W"], bits=cfg.weight_bits, symmetric=cfg.weight_symmetric,
                                      per_channel=cfg.granularity == "per-channel")
        wbits = cfg.weight_bits
    bias_scale = (np.float32(in_qp.scale) * ws).astype(np.float32)
    bias = p["b_q"] if "b_q" in p else _quantize_bias(p["b"], bias_scale, in_qp.bits)
    lo, hi = activation_bounds(node)
    qmin, qmax = int_activation_clamp(lo, hi, out_qp)
    rq = Requant.from_scales(mode=cfg.rounding, s_in=in_qp.scale, s_w=ws, s_out=out_qp.scale,
                             zero_point=out_qp.zero_point, qmin=qmin, qmax=qmax)
    node.quant = {"rounding": cfg.rounding, "weight_bits": int(wbits), "act_bits": int(in_qp.bits),
                  "out_zero_point": int(out_qp.zero_point), "qmin": int(qmin), "qmax": int(qmax)}
    node.qparams = {"weight": wq.astype(np.int16 if wbits > 8 else np.int8),
                    "weight_scale": ws.astype(np.float32),
                    "weight_zero_point": wz.astype(np.int64),
                    "bias": bias.astype(np.int64), "bias_scale": bias_scale,
                    "multiplier": rq.multiplier.astype(np.int64), "shift": rq.shift.astype(np.int64),
                    "scale": rq.scale.astype(np.float32)}


def _share_concat_ranges(g: Graph, chosen: set, ranges: dict, imported: dict, *, relu_ranges: bool) -> dict:
    """Ranges with each integer Concat's output range given to those of its inputs whose only use
    is the Concat and whose producer picks its own output scale (a linear, Add/Mul or table node):
    they are then quantized straight to the output's scale, and the Concat only copies them.
    Nothing is lost: the Concat's output cannot be finer than its scale, and requantizing a finer
    input to it rounds twice. Other inputs keep their own scale and are requantized."""
    producers, consumers = g.producers(), g.consumers()
    out = dict(ranges)
    for node in g.nodes:
        # an integer Add/Sum whose only consumer is a Relu/Clip takes the clamp's output range (as
        # ORT's quantizer removes such activations): its codes then clamp at the real 0, and the
        # finer scale is not spent on values the Relu discards. Not in onnx mode: ORT drops a Relu between
        # equal Q/DQ pairs and regroups the exported model's QDQ units, which the golden model then misses.
        t = node.outputs[0] if node.outputs and relu_ranges else None
        users = consumers.get(t, [])
        if (node.name in chosen and int_kind(node) in ("Add", "Sum") and len(users) == 1
                and users[0].op in ("Relu", "Clip") and users[0].name in chosen and t not in imported
                and t not in g.outputs and users[0].outputs[0] in ranges):
            out[t] = ranges[users[0].outputs[0]]
    for node in g.nodes:
        if node.name not in chosen or int_kind(node) != "Concat" or node.outputs[0] not in ranges:
            continue
        for t in node.inputs:
            p = producers.get(t)
            own_scale = p is not None and p.name in chosen and (
                p.op in LINEAR_OPS or (p.op == "Onnx" and kind_class(int_kind(p) or "") in ("rescale", "table")))
            if (own_scale and t not in imported and t not in g.outputs and t in ranges
                    and [c.name for c in consumers.get(t, [])] == [node.name]):
                out[t] = ranges[node.outputs[0]]
    return out


def quantize_graph(float_graph: Graph, ranges: dict[str, tuple[float, float]], cfg: QuantConfig,
                   *, imported: dict[str, QParams] | None = None,
                   keep_float: tuple[str, ...] | None = None, strict: bool = False) -> tuple[Graph, list[str]]:
    """A copy of ``float_graph`` with integer annotations, and the notes of what stayed float."""
    imported = dict(imported or {})
    g = copy.deepcopy(float_graph)
    g.tensors = {}
    for node in g.nodes:
        node.quant, node.qparams = None, {}
    keep_float = cfg.keep_float if keep_float is None else keep_float
    names, _ = plan(g, keep_float, imported, strict=strict)
    chosen = set(names)
    ranges = _share_concat_ranges(g, chosen, ranges, imported, relu_ranges=cfg.rounding != "onnx")
    lacking = []
    for node in g.nodes:
        if node.name not in chosen:
            continue
        if node.op in LINEAR_OPS:
            in_qp = g.tensors.get(node.inputs[0]) or _tensor_qparams(node.inputs[0], ranges, imported, cfg)
            out_qp = _tensor_qparams(node.outputs[0], ranges, imported, cfg)
            if in_qp is None or out_qp is None:
                lacking.append(node.name)
                continue
            g.tensors[node.inputs[0]] = in_qp
            g.tensors[node.outputs[0]] = out_qp
            _quantize_linear(node, in_qp, out_qp, cfg)
        elif node.op == "Onnx" and kind_class(int_kind(node)) in ("rescale", "table"):
            in_qps = [g.tensors.get(i) or _tensor_qparams(i, ranges, imported, cfg) for i in node.inputs]
            out_qp = _tensor_qparams(node.outputs[0], ranges, imported, cfg)
            if out_qp is None or any(q is None for q in in_qps):
                lacking.append(node.name)
                continue
            g.tensors.update(zip(node.inputs, in_qps))
            g.tensors[node.outputs[0]] = out_qp
            node.quant = {"rounding": cfg.rounding, "qmin": int(out_qp.qmin), "qmax": int(out_qp.qmax)}
            if kind_class(int_kind(node)) == "table":
                node.qparams = {"table": build_table(node, in_qps[0], out_qp, cfg.rounding)}
        else:
            in_qp = g.tensors.get(node.inputs[0]) or imported.get(node.inputs[0])
            if in_qp is None:  # producer stayed float after all
                continue
            out_qp = imported.get(node.outputs[0], in_qp)
            # max, reshape and clamps cannot rescale; their output keeps the input's (the Onnx layout ops and
            # ReduceMean requantize to an imported output scale, as ORT's DQ -> op -> Q does)
            if out_qp != in_qp and node.op not in ("AveragePool", "GlobalAveragePool", "Onnx"):
                out_qp = in_qp
            g.tensors[node.inputs[0]] = in_qp
            for o in node.outputs:
                g.tensors[o] = imported.get(o, in_qp) if node.op == "Onnx" else out_qp
            lo, hi = activation_bounds(node)
            qmin, qmax = int_activation_clamp(lo, hi, out_qp)
            node.quant = {"rounding": cfg.rounding, "qmin": int(qmin), "qmax": int(qmax)}
    # a QuantizeLinear/DequantizeLinear pair of the source model between two float nodes still rounds
    # the tensor (QDQ semantics: ORT runs DQ(Q(t)) there too)
    for node in g.nodes:
        for o in node.outputs if node.quant is None else ():
            if o in imported and o not in g.tensors:
                g.tensors[o] = imported[o]
    if cfg.rounding == "onnx":
        for node in g.nodes:
            if node.quant is not None and (int_kind(node) in ("Add", "Mul", "ReduceMean")
                                           or node.op in ("GlobalAveragePool", "AveragePool", "Conv")):
                node.quant["onnx_offsets"] = onnx_code_offsets(g, node)
    return g, float_notes(g, {n.name for n in g.nodes if n.quant is not None}, keep_float, lacking)


def ranges_from_stats(stats: dict[str, TensorStats], cfg: QuantConfig) -> dict[str, tuple[float, float]]:
    return {k: choose_range(s, cfg.calib_method, bits=cfg.act_bits, symmetric=cfg.act_symmetric,
                            percentile=cfg.percentile) for k, s in stats.items()}


def correct_biases(qgraph: Graph, x: np.ndarray) -> int:
    """Empirical bias correction: shift each quantized layer's bias by the mean per-channel
    error of its accumulator against the float pre-activation, layer by layer in order.
    Returns the number of layers corrected."""
    from .executor import Trace, run_float, run_int

    done = 0
    ftrace = Trace()
    run_float(qgraph, x, trace=ftrace)
    ftrace.values[qgraph.inputs[0].name] = x
    for node in qgraph.nodes:
        if node.quant is None or node.op not in LINEAR_OPS:
            continue
        itrace = Trace()
        run_int(qgraph, x, trace=itrace)
        itrace.values.setdefault(qgraph.inputs[0].name, x)
        src = node.inputs[0]
        in_qp = qgraph.tensors[src]
        from .arith import quantize_float
        xq = itrace.codes.get(src)
        if xq is None:
            xq = quantize_float(itrace.values[src], in_qp.scale, in_qp.zero_point, in_qp.qmin, in_qp.qmax)
        acc = accumulate(node, xq, in_qp.zero_point)
        axis = channel_axis(node) % acc.ndim
        bscale = node.qparams["bias_scale"].astype(np.float64)
        shape = [1] * acc.ndim
        shape[axis] = -1
        err = acc * bscale.reshape(shape) - float_preactivation(node, ftrace.values[src])
        mean = err.mean(axis=tuple(i for i in range(acc.ndim) if i != axis))
        node.qparams["bias"] = node.qparams["bias"] - np.rint(mean / bscale).astype(np.int64)
        done += 1
    return done
