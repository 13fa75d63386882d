"""Run a graph: the float reference, or the integer golden model (with float-kept nodes).

In integer mode a tensor lives either as integers (with the tensor's QParams) or
as float; a quantized node gets integer inputs and a float node float inputs,
converted at the boundary with QuantizeLinear / DequantizeLinear semantics. The
graph's outputs come back as float (dequantized), as ``qhw run`` writes them.

Runs free each tensor after its last consumer (unless a ``Trace`` records it), so a
run's memory is the batch times the tensors alive at once, not times the whole model.
Data is run in chunks (``chunks``); a model whose batch dimension is fixed gets chunks
of exactly that size, the last one padded with copies of its last sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .arith import dequantize, quantize_float
from .errors import ConfigError, DataError, ModelError
from .graph import Graph, Node, QParams
from .ops import FLOAT_OPS, INT_OPS

__all__ = ["Trace", "run_float", "run_int", "int_steps", "check_input", "fixed_batch", "chunks",
           "unpad", "run_batched", "run_pair", "walk_float", "resume_int", "activation_bytes",
           "default_batch_size", "DEFAULT_BATCH", "MEMORY_BUDGET"]

DEFAULT_BATCH = 256  # most samples per chunk for a model with a free batch dimension
MEMORY_BUDGET = 256 << 20  # bytes of float activations per chunk the default batch size aims at


@dataclass
class Trace:
    """Tensors recorded during a run: name -> float value (dequantized in integer mode),
    and, in integer mode, name -> integer codes for tensors that were integer."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    codes: dict[str, np.ndarray] = field(default_factory=dict)


def fixed_batch(graph: Graph) -> int | None:
    """The first input's batch size when the model fixes it (e.g. [1, 3, 224, 224]), else None."""
    shape = graph.inputs[0].shape
    d = shape[0] if shape else None
    return d if isinstance(d, int) and d > 0 else None


def check_input(graph: Graph, x: np.ndarray, source: str = "data") -> np.ndarray:
    """Validate a batch against the first graph input: shape, finiteness.

    A fixed batch dimension does not limit the number of samples: runs go in chunks of it."""
    info = graph.inputs[0]
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{source}: x must be numeric, got dtype {x.dtype}")
    shape = tuple(x.shape)
    if fixed_batch(graph) is not None and shape:
        shape = (info.shape[0], *shape[1:])
    if not info.matches(shape):
        raise DataError(f"{source}: x has shape {tuple(x.shape)}, model input {info.name!r} expects "
                        f"{info.describe()}")
    if x.shape[0] == 0:
        raise DataError(f"{source}: x is empty (0 samples)")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{source}: x contains NaN or Inf")
    return x.astype(np.float32, copy=False)


def chunks(graph: Graph, x: np.ndarray, *, batch: int = DEFAULT_BATCH, progress=None,
           label: str = "running") -> Iterator[tuple[np.ndarray, int]]:
    """``x`` in chunks the graph can run: (chunk, number of real samples in it).

    A fixed-batch model gets chunks of exactly its batch size; the last one is padded with
    copies of its last sample (``unpad`` drops them from results)."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ConfigError(f"batch size must be a positive integer, not {batch!r}")
    fixed = fixed_batch(graph)
    size = fixed or int(batch)
    starts = range(0, x.shape[0], size)
    for s in (progress(starts, label) if progress else starts):
        xb = x[s:s + size]
        real = xb.shape[0]
        if fixed and real < size:
            xb = np.concatenate([xb, np.repeat(xb[-1:], size - real, axis=0)])
        yield xb, real


def unpad(v: np.ndarray, chunk: np.ndarray, real: int) -> np.ndarray:
    """A tensor of a padded chunk without the padding samples (batch-first tensors only)."""
    if real < chunk.shape[0] and np.ndim(v) and v.shape[0] == chunk.shape[0]:
        return v[:real]
    return v


def _dead_after(graph: Graph) -> list[list[str]]:
    """Per node index: the tensors no later node reads (graph outputs are never listed)."""
    last: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            last[t] = i
        for t in node.outputs:
            last.setdefault(t, i)  # produced and never read: dead at once
    dead: list[list[str]] = [[] for _ in graph.nodes]
    keep = set(graph.outputs)
    for t, i in last.items():
        if t not in keep:
            dead[i].append(t)
    return dead


def _float_node(node: Node, env: dict[str, np.ndarray]) -> None:
    try:
        outs = FLOAT_OPS[node.op](node, [env[i] for i in node.inputs])
    except KeyError as e:
        raise ModelError(f"{node.label}: input {e.args[0]!r} is not produced by any node") from e
    for name, val in zip(node.outputs, outs):
        env[name] = val


def walk_float(graph: Graph, x: np.ndarray) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """The float reference as a generator: yields ``(i, live tensors)`` before node ``i`` runs
    (the dict is the run's own: read it, do not change it); returns the graph outputs."""
    env = {graph.inputs[0].name: np.asarray(x, dtype=np.float32)}
    dead = _dead_after(graph)
    for i, node in enumerate(graph.nodes):
        yield i, env
        _float_node(node, env)
        for t in dead[i]:
            env.pop(t, None)
    return [env[o] for o in graph.outputs]


def run_float(graph: Graph, x: np.ndarray, *, trace: Trace | None = None,
              observe: Callable[[str, np.ndarray], None] | None = None) -> list[np.ndarray]:
    """The float reference; ``observe(name, value)`` sees every tensor a node produces."""
    env = {graph.inputs[0].name: np.asarray(x, dtype=np.float32)}
    dead = _dead_after(graph)
    for i, node in enumerate(graph.nodes):
        _float_node(node, env)
        for name in node.outputs:
            if trace is not None:
                trace.values[name] = env[name]
            if observe is not None:
                observe(name, env[name])
        for t in dead[i]:
            env.pop(t, None)
    return [env[o] for o in graph.outputs]


class _IntEnv:
    """Tensor store for integer runs: converts between codes and floats on demand."""

    def __init__(self, graph: Graph, floats: dict[str, np.ndarray]):
        self.tensors = graph.tensors
        self.codes: dict[str, np.ndarray] = {}
        self.floats: dict[str, np.ndarray] = dict(floats)
        for name in list(self.floats):
            if name in self.tensors:  # a quantized tensor is rounded for every consumer (QDQ semantics)
                self.as_codes(name)
                del self.floats[name]

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

    def value(self, name: str) -> np.ndarray:
        """The tensor as float (dequantized when it is integer)."""
        return self.as_float(name) if name in self.codes else self.floats[name]

    def drop(self, name: str) -> None:
        self.codes.pop(name, None)
        self.floats.pop(name, None)


def _int_node(node: Node, env: _IntEnv) -> None:
    if node.quant is not None:
        xs = [env.as_codes(i) for i in node.inputs]
        outs = INT_OPS[node.op](node, xs, [env.qp(i) for i in node.inputs], [env.qp(o) for o in node.outputs])
        for name, val in zip(node.outputs, outs):
            env.codes[name] = val
    else:
        outs = FLOAT_OPS[node.op](node, [env.as_float(i) for i in node.inputs])
        for name, val in zip(node.outputs, outs):
            env.floats[name] = val
            if name in env.tensors:  # a quantized tensor is rounded for every consumer (QDQ semantics)
                env.as_codes(name)
                del env.floats[name]


def _int_run(graph: Graph, env: _IntEnv, start: int, *, trace: Trace | None, lower):
    dead = _dead_after(graph)
    for i in range(start, len(graph.nodes)):
        node = graph.nodes[i]
        lowered = lower(node, env) if lower is not None and node.quant is not None else None
        if lowered is not None:
            calls, assemble = lowered
            env.codes[node.outputs[0]] = assemble((yield calls))
        else:
            _int_node(node, env)
        if trace is not None:
            for name in node.outputs:
                if name in env.codes:
                    trace.codes[name] = env.codes[name]
                trace.values[name] = env.value(name)
        for t in dead[i]:
            env.drop(t)
    outputs = [env.value(o) for o in graph.outputs]
    return outputs, {o: env.codes[o] for o in graph.outputs if o in env.codes}


def int_steps(graph: Graph, x: np.ndarray, *, trace: Trace | None = None, lower=None):
    """The integer golden model as a generator, so another engine can run some layers.

    ``lower(node, env)`` may return ``(calls, assemble)`` for a quantized node: the generator
    yields ``calls``, receives their results and stores ``assemble(results)`` as the node's
    output codes (the host runtime sends GEMMs to the simulated array this way). Every other
    node runs here. Returns ``(outputs as float, output codes by name)``.
    """
    env = _IntEnv(graph, {graph.inputs[0].name: np.asarray(x, dtype=np.float32)})
    return (yield from _int_run(graph, env, 0, trace=trace, lower=lower))


def _finish(steps) -> list[np.ndarray]:
    try:
        next(steps)
    except StopIteration as done:
        return done.value[0]
    raise RuntimeError("int_steps yielded without a lowering function")


def run_int(graph: Graph, x: np.ndarray, *, trace: Trace | None = None) -> list[np.ndarray]:
    """The integer golden model: graph outputs as float (dequantized)."""
    return _finish(int_steps(graph, x, trace=trace))


def resume_int(graph: Graph, start: int, floats: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The integer golden model from node ``start`` on, given the float tensors alive before it.

    Equals ``run_int`` when no node before ``start`` is quantized or writes a quantized tensor:
    up to there the integer run is the float one (``walk_float`` gives the tensors)."""
    env = _IntEnv(graph, floats)
    return _finish(_int_run(graph, env, start, trace=None, lower=None))


def run_pair(graph: Graph, x: np.ndarray, *,
             observe: Callable[[Node, dict[str, np.ndarray], Callable[[str], np.ndarray]], None]
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Float reference and integer golden model side by side, node by node.

    After each node, ``observe(node, float tensors, int_value)`` may compare them
    (``int_value(name)`` is the integer run's tensor as float). Returns (float outputs,
    integer outputs); only the tensors still needed are kept between nodes."""
    x = np.asarray(x, dtype=np.float32)
    fenv = {graph.inputs[0].name: x}
    ienv = _IntEnv(graph, {graph.inputs[0].name: x})
    dead = _dead_after(graph)
    for i, node in enumerate(graph.nodes):
        _float_node(node, fenv)
        _int_node(node, ienv)
        observe(node, fenv, ienv.value)
        for t in dead[i]:
            fenv.pop(t, None)
            ienv.drop(t)
    return [fenv[o] for o in graph.outputs], [ienv.value(o) for o in graph.outputs]


def run_batched(graph: Graph, x: np.ndarray, *, integer: bool, batch: int = DEFAULT_BATCH, progress=None,
                label: str = "running") -> np.ndarray:
    """First graph output over ``x`` in chunks (float reference or integer golden model)."""
    run = run_int if integer else run_float
    outs = [unpad(run(graph, xb)[0], xb, real)
            for xb, real in chunks(graph, x, batch=batch, progress=progress, label=label)]
    return np.concatenate(outs, axis=0)


def activation_bytes(graph: Graph, x: np.ndarray) -> int:
    """Bytes of every tensor the float reference produces, per sample (measured on one chunk)."""
    xb, _ = next(chunks(graph, x[:1], batch=1))
    total = 0

    def add(name: str, v: np.ndarray) -> None:
        nonlocal total
        total += np.asarray(v).nbytes

    run_float(graph, xb, observe=add)
    return -(-total // xb.shape[0])


def default_batch_size(graph: Graph, x: np.ndarray) -> int:
    """The model's fixed batch, else as many samples as fit MEMORY_BUDGET (at most DEFAULT_BATCH)."""
    fixed = fixed_batch(graph)
    if fixed is not None:
        return fixed
    # an integer run keeps int64 codes next to the float tensors: about 3x the float bytes
    per_sample = 3 * activation_bytes(graph, x)
    return int(max(1, min(DEFAULT_BATCH, MEMORY_BUDGET // max(per_sample, 1))))
