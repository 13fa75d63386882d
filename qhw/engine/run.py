"""Run a quantized model with its engine segments on the reference model and the rest on the host.

The host part is the golden model itself (``qhw.executor.int_steps``): at the first node of each
segment the host sends the segment's input codes, the engine runs the segment, and the segment's
output codes come back; nodes inside a segment are not run on the host. ``segment_steps`` is that
host logic as a generator, so the simulated hardware (``qhw.sim.network``) runs the segments the
same way ``run_engine`` runs them on ``EngineModel``.
"""

from __future__ import annotations

import numpy as np

from ..executor import int_steps
from ..graph import Graph
from .compiler import engine_segments, tensor_shapes
from .model import EngineModel
from .program import Program

__all__ = ["SegmentCall", "run_engine", "segment_steps"]


class SegmentCall:
    """One engine segment to run: its index and input codes by tensor name (batch first)."""

    def __init__(self, segment: int, inputs: dict[str, np.ndarray]):
        self.segment = segment
        self.inputs = inputs


def segment_steps(program: Program, graph: Graph, x: np.ndarray):
    """``graph`` on ``x``, yielding a list of ``SegmentCall`` wherever the engine runs a segment and
    receiving, for each call, the segment's output codes by tensor name. Returns what ``int_steps``
    returns: (outputs as float, output codes by name)."""
    segs = engine_segments(graph, tensor_shapes(graph), program.rows)
    first = {seg[0].name: i for i, seg in enumerate(segs)}
    inside = {n.name for seg in segs for n in seg}
    results: dict[str, np.ndarray] = {}

    def lower(node, env):
        if node.name not in inside:
            return None
        if node.name in first:
            s = first[node.name]
            ins = {t.name: env.as_codes(t.name) for t in program.tensors if t.direction == 0 and t.segment == s}

            def assemble(outs, node=node):
                results.update(outs[0])
                return results.get(node.outputs[0])
            return [SegmentCall(s, ins)], assemble
        out = results.get(node.outputs[0])
        return [], lambda _: out

    return (yield from int_steps(graph, x, lower=lower))


def run_engine(program: Program, graph: Graph, x: np.ndarray) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """``graph`` on ``x`` with its engine segments executed by ``EngineModel``: (outputs as float,
    output codes by name), as ``int_steps`` returns them."""
    model = EngineModel(program)
    gen = segment_steps(program, graph, x)
    try:
        calls = next(gen)
        while True:
            calls = gen.send([model.run_segment(c.segment, c.inputs) for c in calls])
    except StopIteration as stop:
        return stop.value
