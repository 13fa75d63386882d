"""Run a graph: the float reference, or the integer golden model (with float-kept nodes).

In integer mode a tensor lives either as integers (with the tensor's QParams) or
as float; a quantized node gets integer inputs and a float node float inputs,
converted at the boundary with QuantizeLinear / DequantizeLinear semantics. The
graph's outputs come back as float (dequantized), as ``qhw run`` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arith import dequantize, quantize_float
from .errors import DataError, ModelError
from .graph import Graph, QParams
from .ops import FLOAT_OPS, INT_OPS

__all__ = ["Trace", "run_float", "run_int", "int_steps", "check_input"]


@dataclass
class Trace:
    """Tensors recorded during a run: name -> float value (dequantized in integer mode),
    and, in integer mode, name -> integer codes for tensors that were integer."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    codes: dict[str, np.ndarray] = field(default_factory=dict)


def check_input(graph: Graph, x: np.ndarray, source: str = "data") -> np.ndarray:
    """Validate a batch against the first graph input: shape, finiteness."""
    info = graph.inputs[0]
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{source}: x must be numeric, got dtype {x.dtype}")
    if not info.matches(x.shape):
        raise DataError(f"{source}: x has shape {tuple(x.shape)}, model input {info.name!r} expects "
                        f"{info.describe()}")
    if x.shape[0] == 0:
        raise DataError(f"{source}: x is empty (0 samples)")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{source}: x contains NaN or Inf")
    return x.astype(np.float32, copy=False)


def run_float(graph: Graph, x: np.ndarray, *, trace: Trace | None = None) -> list[np.ndarray]:
    env = {graph.inputs[0].name: np.asarray(x, dtype=np.float32)}
    for node in graph.nodes:
        try:
            outs = FLOAT_OPS[node.op](node, [env[i] for i in node.inputs])
        except KeyError as e:
            raise ModelError(f"{node.label}: input {e.args[0]!r} is not produced by any node") from e
        for name, val in zip(node.outputs, outs):
            env[name] = val
            if trace is not None:
                trace.values[name] = val
    return [env[o] for o in graph.outputs]


class _IntEnv:
    """Tensor store for integer runs: converts between codes and floats on demand."""

    def __init__(self, graph: Graph):
        self.tensors = graph.tensors
        self.codes: dict[str, np.ndarray] = {}
        self.floats: dict[str, np.ndarray] = {}

    def qp(self, name: str) -> QParams:
        try:
            return self.tensors[name]
        except KeyError:
            raise ModelError(f"tensor {name!r} feeds a quantized node but has no quantization "
                             f"parameters") from None

    def as_codes(self, name: str) -> np.ndarray:
        if name not in self.codes:
            p = self.qp(name)
            self.codes[name] = quantize_float(self.floats[name], p.scale, p.zero_point, p.qmin, p.qmax)
        return self.codes[name]

    def as_float(self, name: str) -> np.ndarray:
        if name not in self.floats:
            p = self.qp(name)
            self.floats[name] = dequantize(self.codes[name], p.scale, p.zero_point)
        return self.floats[name]


def int_steps(graph: Graph, x: np.ndarray, *, trace: Trace | None = None, lower=None):
    """The integer golden model as a generator, so another engine can run some layers.

    ``lower(node, env)`` may return ``(calls, assemble)`` for a quantized node: the generator
    yields ``calls``, receives their results and stores ``assemble(results)`` as the node's
    output codes (the host runtime sends GEMMs to the simulated array this way). Every other
    node runs here. Returns ``(outputs as float, output codes by name)``.
    """
    env = _IntEnv(graph)
    name = graph.inputs[0].name
    env.floats[name] = np.asarray(x, dtype=np.float32)
    if name in graph.tensors:
        env.as_codes(name)
        del env.floats[name]
    for node in graph.nodes:
        lowered = lower(node, env) if lower is not None and node.quant is not None else None
        if lowered is not None:
            calls, assemble = lowered
            env.codes[node.outputs[0]] = assemble((yield calls))
        elif node.quant is not None:
            xs = [env.as_codes(i) for i in node.inputs]
            outs = INT_OPS[node.op](node, xs, [env.qp(i) for i in node.inputs],
                                    [env.qp(o) for o in node.outputs])
            for name, val in zip(node.outputs, outs):
                env.codes[name] = val
        else:
            outs = FLOAT_OPS[node.op](node, [env.as_float(i) for i in node.inputs])
            for name, val in zip(node.outputs, outs):
                env.floats[name] = val
                if name in graph.tensors:  # a quantized tensor is rounded for every consumer (QDQ semantics)
                    env.as_codes(name)
                    del env.floats[name]
        if trace is not None:
            for name in node.outputs:
                if name in env.codes:
                    trace.codes[name] = env.codes[name]
                trace.values[name] = env.as_float(name) if name in env.codes else env.floats[name]
    outputs = [env.as_float(o) if o in env.codes else env.floats[o] for o in graph.outputs]
    return outputs, {o: env.codes[o] for o in graph.outputs if o in env.codes}


def run_int(graph: Graph, x: np.ndarray, *, trace: Trace | None = None) -> list[np.ndarray]:
    """The integer golden model: graph outputs as float (dequantized)."""
    steps = int_steps(graph, x, trace=trace)
    try:
        next(steps)
    except StopIteration as done:
        return done.value[0]
    raise RuntimeError("int_steps yielded without a lowering function")
