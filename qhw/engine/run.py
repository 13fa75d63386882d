"""Run a quantized model with its engine segments on the reference model and the rest on the host.

The host part is the golden model itself (``qhw.executor.int_steps``): at the first node of each
segment the host sends the segment's input codes, the engine model runs the segment, and the
segment's output codes come back; nodes inside a segment are not run on the host.
"""

from __future__ import annotations

import numpy as np

from ..executor import int_steps
from ..graph import Graph
from .compiler import engine_segments, tensor_shapes
from .model import EngineModel
from .program import Program

__all__ = ["run_engine"]


def run_engine(program: Program, graph: Graph, x: np.ndarray) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """``graph`` on ``x`` with its engine segments executed by ``EngineModel``: (outputs as float,
    output codes by name), as ``int_steps`` returns them."""
    segs = engine_segments(graph, tensor_shapes(graph), program.rows)
    first = {seg[0].name: i for i, seg in enumerate(segs)}
    inside = {n.name for seg in segs for n in seg}
    model = EngineModel(program)
    results: dict[str, np.ndarray] = {}

    def lower(node, env):
        if node.name not in inside:
            return None
        if node.name in first:
            s = first[node.name]
            ins = {t.name: env.as_codes(t.name) for t in program.tensors if t.direction == 0 and t.segment == s}
            results.update(model.run_segment(s, ins))
        out = results.get(node.outputs[0])
        return [], lambda _: out

    gen = int_steps(graph, x, lower=lower)
    try:
        next(gen)
        while True:
            gen.send([])
    except StopIteration as stop:
        return stop.value
