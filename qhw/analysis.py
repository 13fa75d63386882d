"""Error analysis: how far the quantized model is from the float one, per layer and at each output.

Error is ``quantized (dequantized) - float`` on the same tensor, both runs fed
the same inputs; per-layer figures therefore include the error carried in from
earlier layers. Sensitivity quantizes one linear layer at a time.

Memory is bounded by one chunk of samples, not by the data set or the model depth:
the float and integer runs go side by side node by node and each tensor is folded
into running statistics (``qhw.metrics.ErrorStats``) and let go; sensitivity walks
the float run once per chunk and starts each layer's integer run from the float
tensors alive where that layer's variant first differs, instead of from the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .executor import (
    chunks,
    default_batch_size,
    resume_int,
    run_batched,
    run_pair,
    unpad,
    walk_float,
)
from .graph import LINEAR_OPS, Graph
from .metrics import ErrorStats, accuracy, predictions, sqnr_db
from .qmodel import QModel
from .quantize import quantize_graph

__all__ = ["ErrorStats", "sqnr_db", "Comparison", "compare", "analyze", "sensitivity", "auto_keep_float",
           "requantize_variant", "default_batch_size"]

OUTPUT_KEYS = ("sqnr_db", "mean_error", "std_error", "max_abs_error", "cosine_similarity")


def requantize_variant(qm: QModel, keep_float) -> Graph:
    """The same model quantized with a different set of float-kept nodes (ranges reused).

    Float-kept nodes share their float parameters with ``qm.graph`` instead of being copied,
    so one variant per layer costs that layer's integer weights, not the whole model."""
    keep = set(keep_float)
    skeleton = replace(qm.graph, nodes=[replace(n, params={} if n.name in keep else n.params, quant=None,
                                                qparams={}) for n in qm.graph.nodes])
    g, _ = quantize_graph(skeleton, qm.ranges, qm.config, imported=qm.imported, keep_float=tuple(keep_float))
    for node, src in zip(g.nodes, qm.graph.nodes):
        if src.name in keep:
            node.params = src.params
    return g


def _limits(qgraph: Graph, name: str) -> tuple[float, float] | None:
    """The real range a quantized tensor can represent (values outside saturate)."""
    qp = qgraph.tensors.get(name)
    if qp is None:
        return None
    return (qp.qmin - qp.zero_point - 0.5) * qp.scale, (qp.qmax - qp.zero_point + 0.5) * qp.scale


def _is_float(v: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(v).dtype, np.floating)


@dataclass
class Comparison:
    """What ``compare`` accumulated over the data."""

    layers: dict[str, ErrorStats]                 # by tensor name
    outputs: dict[str, ErrorStats]                # by graph output, in graph order
    primary: str                                  # the first floating-point output (else the first)
    samples: int = 0
    agree: int = 0                                # top-1 agreement of the first output, float vs int
    correct: dict[str, int] = field(default_factory=lambda: {"float": 0, "quant": 0})  # with labels

    @property
    def output(self) -> ErrorStats:
        return self.outputs[self.primary]


def compare(qgraph: Graph, x: np.ndarray, *, labels: np.ndarray | None = None, batch: int | None = None,
            progress=None, names: list[str] | None = None) -> Comparison:
    """Run float and integer side by side; error stats per quantized linear layer and per output.
    ``batch`` None: ``default_batch_size``."""
    if batch is None:
        batch = default_batch_size(qgraph, x)
    if names is None:
        names = [n.outputs[0] for n in qgraph.nodes if n.quant is not None and n.op in LINEAR_OPS]
    wanted = set(names)
    limits = {k: _limits(qgraph, k) for k in names}
    cmp = Comparison(layers={k: ErrorStats() for k in names}, outputs={o: ErrorStats() for o in qgraph.outputs},
                     primary=qgraph.outputs[0])
    primary = None
    for xb, real in chunks(qgraph, x, batch=batch, progress=progress, label="analyzing"):

        def observe(node, fenv, int_value, xb=xb, real=real):
            for k in node.outputs:
                if k in wanted:
                    cmp.layers[k].update(unpad(fenv[k], xb, real), unpad(int_value(k), xb, real), limits[k])

        yfs, yqs = run_pair(qgraph, xb, observe=observe)
        yfs = [unpad(v, xb, real) for v in yfs]
        yqs = [unpad(v, xb, real) for v in yqs]
        if primary is None:
            primary = next((o for o, v in zip(qgraph.outputs, yfs) if _is_float(v)), qgraph.outputs[0])
            cmp.primary = primary
        for o, yf, yq in zip(qgraph.outputs, yfs, yqs):
            cmp.outputs[o].update(yf, yq)
        pf, pq = predictions(yfs[0]), predictions(yqs[0])
        cmp.samples += real
        cmp.agree += int(np.count_nonzero(pf == pq))
        if labels is not None:
            lb = labels.reshape(-1)[cmp.samples - real:cmp.samples]
            cmp.correct["float"] += int(np.count_nonzero(pf == lb))
            cmp.correct["quant"] += int(np.count_nonzero(pq == lb))
    return cmp


def _score(y: np.ndarray, labels: np.ndarray | None, y_float: np.ndarray) -> float:
    """Top-1 accuracy with labels; without, top-1 agreement with the float model."""
    return accuracy(y, labels) if labels is not None else float(np.mean(predictions(y) == predictions(y_float)))


def _divergence(g: Graph) -> int:
    """Index of the first node where ``g``'s integer run can differ from the float run: the first
    quantized node, or the producer of the first quantized tensor (0 for the graph input)."""
    producer = {t: i for i, n in enumerate(g.nodes) for t in n.outputs}
    firsts = [i for i, n in enumerate(g.nodes) if n.quant is not None]
    firsts += [producer.get(t, 0) for t in g.tensors]
    return min(firsts, default=len(g.nodes))


def sensitivity(qm: QModel, x: np.ndarray, labels: np.ndarray | None, *, y_float: np.ndarray | None = None,
                progress=None, batch: int | None = None) -> list[dict]:
    """Quantize one linear layer at a time (everything else float); ranked, most sensitive first.

    Per chunk the float model runs once; each layer's variant continues from the float tensors
    alive before its first integer node. ``y_float`` is accepted for compatibility and unused;
    ``batch`` None: ``default_batch_size``."""
    if batch is None:
        batch = default_batch_size(qm.graph, x)
    linear = [n.name for n in qm.graph.nodes if n.op in LINEAR_OPS and n.name not in qm.config.keep_float]
    variants = {name: requantize_variant(qm, [k for k in linear if k != name] + list(qm.config.keep_float))
                for name in linear}
    by_start: dict[int, list[str]] = {}
    for name, g in variants.items():
        by_start.setdefault(_divergence(g), []).append(name)
    stats = {name: ErrorStats(keep_errors=0) for name in linear}
    hits = dict.fromkeys(linear, 0)
    primary, seen = None, 0
    for xb, real in chunks(qm.graph, x, batch=batch, progress=progress, label="sensitivity"):
        ys: dict[str, list[np.ndarray]] = {}
        walk = walk_float(qm.graph, xb)
        try:
            while True:
                i, env = next(walk)
                for name in by_start.get(i, ()):
                    ys[name] = resume_int(variants[name], i, env)
        except StopIteration as done:
            yfs = [unpad(v, xb, real) for v in done.value]
        if primary is None:
            primary = next((k for k, v in enumerate(yfs) if _is_float(v)), 0)
        pf = predictions(yfs[0])
        ref = pf if labels is None else labels.reshape(-1)[seen:seen + real]
        seen += real
        for name in linear:  # a layer that stayed float (no ranges) leaves the float outputs
            yqs = [unpad(v, xb, real) for v in ys[name]] if name in ys else yfs
            stats[name].update(yfs[primary], yqs[primary])
            hits[name] += int(np.count_nonzero(predictions(yqs[0]) == ref))
        del ys
    rows = []
    for name in linear:
        s = stats[name].summary()
        rows.append({"name": name, "output_sqnr_db": s["sqnr_db"], "output_max_abs_error": s["max_abs_error"],
                     "score": hits[name] / seen if seen else 0.0})
    rows.sort(key=lambda r: (r["output_sqnr_db"] if r["output_sqnr_db"] is not None else math.inf))
    return rows


def auto_keep_float(qm: QModel, x: np.ndarray, labels: np.ndarray | None, budget: float,
                    *, progress=None, log=print, batch: int | None = None) -> list[str]:
    """Keep the most sensitive linear layers float until the top-1 loss is within ``budget``
    percentage points (accuracy with labels, agreement with the float model without)."""
    if batch is None:
        batch = default_batch_size(qm.graph, x)
    y_float = run_batched(qm.graph, x, integer=False, batch=batch)
    base = _score(y_float, labels, y_float)
    ranking = sensitivity(qm, x, labels, progress=progress, batch=batch)
    keep = list(qm.config.keep_float)
    for row in [None] + ranking:
        if row is not None:
            keep.append(row["name"])
        g = requantize_variant(qm, keep)
        loss = 100.0 * (base - _score(run_batched(g, x, integer=True, batch=batch), labels, y_float))
        if loss <= budget:
            log(f"auto-keep-float: loss {loss:.2f} points within budget {budget:g} with "
                f"{len(keep) - len(qm.config.keep_float)} layer(s) kept float")
            return keep
    return keep


def _output_row(name: str, s: ErrorStats) -> dict:
    summary = s.summary()
    return {"name": name, **{k: summary[k] for k in OUTPUT_KEYS}}


def analyze(qm: QModel, x: np.ndarray, labels: np.ndarray | None, *, with_sensitivity: bool = True,
            progress=None, batch_size: int | None = None) -> dict:
    """The whole report as a JSON-ready dict. ``batch_size`` None: ``default_batch_size``."""
    batch = default_batch_size(qm.graph, x) if batch_size is None else batch_size
    cmp = compare(qm.graph, x, labels=labels, batch=batch, progress=progress)
    out = cmp.output.summary()
    layers = []
    for node in qm.graph.nodes:
        k = node.outputs[0]
        if k in cmp.layers:
            layers.append({"name": node.name, "op": node.op, "tensor": k, **cmp.layers[k].summary()})
    report = {
        "model": qm.source,
        "samples": int(x.shape[0]),
        "config": qm.config.to_json(),
        "float_nodes": [n.name for n in qm.graph.nodes if n.quant is None],
        "notes": qm.notes,
        "output_sqnr_db": out["sqnr_db"],
        "output": out,
        "outputs": [_output_row(o, s) for o, s in cmp.outputs.items()],
        "top1_agreement": cmp.agree / cmp.samples,
        "layers": layers,
    }
    if labels is not None:
        report["accuracy_float"] = cmp.correct["float"] / cmp.samples
        report["accuracy_quant"] = cmp.correct["quant"] / cmp.samples
    if with_sensitivity:
        report["sensitivity"] = sensitivity(qm, x, labels, progress=progress, batch=batch)
    # error samples for the histograms; not part of the JSON
    extra = [] if cmp.primary in cmp.layers else [("output", cmp.output)]
    report["_errors"] = {k: np.concatenate(v.errors) for k, v in [*extra, *cmp.layers.items()] if v.errors}
    return report
