"""Error analysis: how far the quantized model is from the float one, per layer and at the output.

Error is ``quantized (dequantized) - float`` on the same tensor, both runs fed
the same inputs; per-layer figures therefore include the error carried in from
earlier layers. Sensitivity quantizes one linear layer at a time. Metrics are
accumulated batch by batch, so memory does not grow with the data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .api import accuracy, predictions, requantize_variant
from .executor import Trace, run_float, run_int
from .graph import LINEAR_OPS, Graph
from .qmodel import QModel

__all__ = ["ErrorStats", "sqnr_db", "compare", "analyze", "sensitivity", "auto_keep_float"]

HIST_SAMPLES = 20000  # errors kept per layer for histograms


def sqnr_db(signal_power: float, noise_power: float) -> float | None:
    """10·log10(signal/noise); None when the noise is exactly zero (bit-identical)."""
    if noise_power == 0.0:
        return None
    if signal_power == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


@dataclass
class ErrorStats:
    """Running error statistics of one tensor: quantized vs float."""

    n: int = 0
    sum_err: float = 0.0
    sum_err2: float = 0.0
    max_abs: float = 0.0
    sum_f2: float = 0.0
    sum_q2: float = 0.0
    sum_fq: float = 0.0
    saturated: int = 0
    coded: int = 0
    errors: list = field(default_factory=list)

    def update(self, f: np.ndarray, q: np.ndarray, limits: tuple[float, float] | None = None) -> None:
        """Add a batch; ``limits`` is the real range the quantized tensor can represent."""
        f = np.asarray(f, dtype=np.float64).ravel()
        q = np.asarray(q, dtype=np.float64).ravel()
        e = q - f
        self.n += e.size
        self.sum_err += float(e.sum())
        self.sum_err2 += float(e @ e)
        self.max_abs = max(self.max_abs, float(np.abs(e).max()) if e.size else 0.0)
        self.sum_f2 += float(f @ f)
        self.sum_q2 += float(q @ q)
        self.sum_fq += float(f @ q)
        if limits is not None:  # float values the integer type had to clip
            self.saturated += int(np.count_nonzero((f < limits[0]) | (f > limits[1])))
            self.coded += f.size
        if sum(len(x) for x in self.errors) < HIST_SAMPLES:
            self.errors.append(e[: HIST_SAMPLES].astype(np.float32))

    def summary(self) -> dict:
        mean = self.sum_err / self.n if self.n else 0.0
        var = max(self.sum_err2 / self.n - mean * mean, 0.0) if self.n else 0.0
        denom = math.sqrt(self.sum_f2 * self.sum_q2)
        return {
            "sqnr_db": sqnr_db(self.sum_f2, self.sum_err2),
            "mean_error": mean,
            "std_error": math.sqrt(var),
            "max_abs_error": self.max_abs,
            "cosine_similarity": (self.sum_fq / denom) if denom else 1.0,
            "saturation_rate": (self.saturated / self.coded) if self.coded else 0.0,
        }


def compare(qgraph: Graph, x: np.ndarray, *, batch: int = 256, progress=None,
            names: list[str] | None = None) -> tuple[dict[str, ErrorStats], np.ndarray, np.ndarray]:
    """Run float and integer side by side; error stats per quantized node output and at the output.

    Returns (stats by tensor name with key "__output__" for the first graph output,
    float outputs, quantized outputs).
    """
    if names is None:
        names = [n.outputs[0] for n in qgraph.nodes if n.quant is not None and n.op in LINEAR_OPS]
    stats = {k: ErrorStats() for k in names + ["__output__"]}
    yfs, yqs = [], []
    starts = range(0, x.shape[0], batch)
    for s in (progress(starts, "analyzing") if progress else starts):
        xb = x[s:s + batch]
        ft, it = Trace(), Trace()
        yf = run_float(qgraph, xb, trace=ft)[0]
        yq = run_int(qgraph, xb, trace=it)[0]
        for k in names:
            qp = qgraph.tensors.get(k)
            lim = None if qp is None else ((qp.qmin - qp.zero_point - 0.5) * qp.scale,
                                           (qp.qmax - qp.zero_point + 0.5) * qp.scale)
            stats[k].update(ft.values[k], it.values[k], lim)
        stats["__output__"].update(yf, yq)
        yfs.append(yf)
        yqs.append(yq)
    return stats, np.concatenate(yfs), np.concatenate(yqs)


def _score(y: np.ndarray, labels: np.ndarray | None, y_float: np.ndarray) -> float:
    """Top-1 accuracy with labels; without, top-1 agreement with the float model."""
    return accuracy(y, labels) if labels is not None else float(np.mean(predictions(y) == predictions(y_float)))


def sensitivity(qm: QModel, x: np.ndarray, labels: np.ndarray | None, *, y_float: np.ndarray | None = None,
                progress=None) -> list[dict]:
    """Quantize one linear layer at a time (everything else float); ranked, most sensitive first."""
    from .api import run_batched

    linear = [n.name for n in qm.graph.nodes if n.op in LINEAR_OPS and n.name not in qm.config.keep_float]
    if y_float is None:
        y_float = run_batched(qm.graph, x, integer=False)
    rows = []
    for name in (progress(linear, "sensitivity") if progress else linear):
        g = requantize_variant(qm, [k for k in linear if k != name] + list(qm.config.keep_float))
        yq = run_batched(g, x, integer=True)
        e = ErrorStats()
        e.update(y_float, yq)
        s = e.summary()
        rows.append({"name": name, "output_sqnr_db": s["sqnr_db"], "output_max_abs_error": s["max_abs_error"],
                     "score": _score(yq, labels, y_float)})
    rows.sort(key=lambda r: (r["output_sqnr_db"] if r["output_sqnr_db"] is not None else math.inf))
    return rows


def auto_keep_float(qm: QModel, x: np.ndarray, labels: np.ndarray | None, budget: float,
                    *, progress=None, log=print) -> list[str]:
    """Keep the most sensitive linear layers float until the top-1 loss is within ``budget``
    percentage points (accuracy with labels, agreement with the float model without)."""
    from .api import run_batched

    y_float = run_batched(qm.graph, x, integer=False)
    base = _score(y_float, labels, y_float)
    ranking = sensitivity(qm, x, labels, y_float=y_float, progress=progress)
    keep = list(qm.config.keep_float)
    for row in [None] + ranking:
        if row is not None:
            keep.append(row["name"])
        g = requantize_variant(qm, keep)
        loss = 100.0 * (base - _score(run_batched(g, x, integer=True), labels, y_float))
        if loss <= budget:
            log(f"auto-keep-float: loss {loss:.2f} points within budget {budget:g} with "
                f"{len(keep) - len(qm.config.keep_float)} layer(s) kept float")
            return keep
    return keep


def analyze(qm: QModel, x: np.ndarray, labels: np.ndarray | None, *, with_sensitivity: bool = True,
            progress=None) -> dict:
    """The whole report as a JSON-ready dict."""
    stats, yf, yq = compare(qm.graph, x, progress=progress)
    out_stats = stats.pop("__output__")
    out = out_stats.summary()
    layers = []
    for node in qm.graph.nodes:
        k = node.outputs[0]
        if k in stats:
            layers.append({"name": node.name, "op": node.op, "tensor": k, **stats[k].summary()})
    report = {
        "model": qm.source,
        "samples": int(x.shape[0]),
        "config": qm.config.to_json(),
        "float_nodes": [n.name for n in qm.graph.nodes if n.quant is None],
        "notes": qm.notes,
        "output_sqnr_db": out["sqnr_db"],
        "output": out,
        "top1_agreement": float(np.mean(predictions(yf) == predictions(yq))),
        "layers": layers,
    }
    if labels is not None:
        report["accuracy_float"] = accuracy(yf, labels)
        report["accuracy_quant"] = accuracy(yq, labels)
    if with_sensitivity:
        report["sensitivity"] = sensitivity(qm, x, labels, y_float=yf, progress=progress)
    # error samples for the histograms; not part of the JSON
    extra = [] if qm.graph.outputs[0] in stats else [("output", out_stats)]
    report["_errors"] = {k: np.concatenate(v.errors) for k, v in [*extra, *stats.items()] if v.errors}
    return report
