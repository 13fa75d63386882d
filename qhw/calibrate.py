"""Calibration: activation statistics over a calibration set and the range each method picks.

``collect`` runs the float graph and keeps, per tensor, the exact min/max and a
seeded random subsample of values; the methods below turn that into a real
range [rmin, rmax]; ``qparams_from_range`` turns a range into scale and zero
point (ONNX Runtime's ``compute_scale_zp`` rule). The range math knows nothing
of graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arith import qrange
from .errors import ConfigError, ModelError
from .graph import QParams

__all__ = ["CALIB_METHODS", "TensorStats", "collect", "choose_range", "qparams_from_range",
           "kl_threshold", "mse_range"]

CALIB_METHODS = ("minmax", "percentile", "mse", "entropy")
MAX_SAMPLES = 1 << 20  # values kept per tensor for percentile / mse / entropy


@dataclass
class TensorStats:
    min: float
    max: float
    sample: np.ndarray  # float32 subsample of the observed values


def collect(graph, x: np.ndarray, names: list[str], *, batch: int = 256, seed: int = 0,
            progress=None) -> dict[str, TensorStats]:
    """Run the float graph over ``x`` in chunks, recording stats of ``names``.

    Each tensor is summarized as the run produces it and then let go, so memory is one
    chunk's live tensors plus the subsamples. Tensors are visited in ``names`` order
    (the random subsamples depend on it); one that comes early waits for its turn."""
    from .executor import chunks, run_float, unpad

    rng = np.random.default_rng(seed)
    n = x.shape[0]
    wanted = set(names)
    mins = {k: np.inf for k in names}
    maxs = {k: -np.inf for k in names}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for xb, real in chunks(graph, x, batch=batch, progress=progress, label="calibrating"):
        pending: dict[str, np.ndarray] = {}
        turn = 0

        def take(name: str, value: np.ndarray, xb=xb, real=real, pending=pending) -> None:
            nonlocal turn
            if name in wanted:
                pending[name] = unpad(value, xb, real)
            while turn < len(names) and names[turn] in pending:
                k = names[turn]
                v = np.asarray(pending.pop(k), dtype=np.float32).ravel()
                mins[k] = min(mins[k], float(v.min()))
                maxs[k] = max(maxs[k], float(v.max()))
                keep = max(1, MAX_SAMPLES * real // n)
                parts[k].append(v if v.size <= keep else rng.choice(v, keep, replace=False))
                turn += 1

        take(graph.inputs[0].name, xb)
        run_float(graph, xb, observe=take)
        if turn < len(names):
            raise ModelError(f"calibration: tensor {names[turn]!r} is not produced by any node")
    return {k: TensorStats(mins[k], maxs[k], np.concatenate(parts[k])) for k in names}


def qparams_from_range(rmin: float, rmax: float, *, bits: int, symmetric: bool) -> QParams:
    """Scale and zero point covering [rmin, rmax] (always including 0), scale as float32."""
    qmin, qmax = qrange(bits)
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    if symmetric:
        absmax = max(-rmin, rmax)
        scale = float(np.float32(absmax / qmax))
        zp = 0
    else:
        scale = float(np.float32((rmax - rmin) / (qmax - qmin)))
        zp = 0 if scale == 0 else int(np.clip(np.round(qmin - rmin / scale), qmin, qmax))
    if not scale > np.finfo(np.float32).tiny:
        return QParams(scale=1.0, zero_point=0, bits=bits)
    return QParams(scale=scale, zero_point=zp, bits=bits)


def _qdq_mse(v: np.ndarray, rmin: float, rmax: float, bits: int, symmetric: bool) -> float:
    p = qparams_from_range(rmin, rmax, bits=bits, symmetric=symmetric)
    q = np.clip(np.rint(v / p.scale) + p.zero_point, p.qmin, p.qmax)
    return float(np.mean(((q - p.zero_point) * p.scale - v) ** 2))


def mse_range(stats: TensorStats, *, bits: int, symmetric: bool, steps: int = 100) -> tuple[float, float]:
    """The clipping range minimizing quantize-dequantize MSE on the sample.

    Each end is shrunk towards 0 on a grid of ``steps`` factors; asymmetric ranges search
    the upper end first, then the lower one (an outlier on one side must not drag the other).
    """
    v = stats.sample.astype(np.float64)
    if v.size > (1 << 16):
        v = np.random.default_rng(0).choice(v, 1 << 16, replace=False)
    factors = np.linspace(1.0, 0.01, steps)
    if symmetric:
        t = max(-stats.min, stats.max)
        errs = [_qdq_mse(v, -t * a, t * a, bits, True) for a in factors]
        a = factors[int(np.argmin(errs))]
        return -t * a, t * a
    lo, hi = stats.min, stats.max
    hi = hi * factors[int(np.argmin([_qdq_mse(v, lo, hi * a, bits, False) for a in factors]))]
    lo = lo * factors[int(np.argmin([_qdq_mse(v, lo * a, hi, bits, False) for a in factors]))]
    return lo, hi


def kl_threshold(values: np.ndarray, *, levels: int, bins: int = 2048) -> float:
    """|x| threshold minimizing KL(P || Q) with Q the ``levels``-level quantization of P
    (the TensorRT entropy calibration)."""
    a = np.abs(values.astype(np.float64))
    amax = float(a.max()) if a.size else 0.0
    if amax == 0.0:
        return 0.0
    levels = min(levels, bins // 2)
    hist, edges = np.histogram(a, bins=bins, range=(0.0, amax))
    hist = hist.astype(np.float64)
    best_i, best_kl = bins, np.inf
    for i in range(levels, bins + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nz = p > 0
        # merge the i reference bins into `levels` groups, spread each group over its non-empty bins
        group = (np.arange(i) * levels) // i
        sums = np.bincount(group, weights=hist[:i], minlength=levels)
        counts = np.bincount(group, weights=nz.astype(np.float64), minlength=levels)
        q = np.where(nz, sums[group] / np.maximum(counts[group], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        pn, qn = p[nz] / ps, q[nz] / qs
        kl = float(np.sum(pn * np.log(pn / np.maximum(qn, 1e-30))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return float(edges[best_i])


def choose_range(stats: TensorStats, method: str, *, bits: int, symmetric: bool,
                 percentile: float = 99.99) -> tuple[float, float]:
    if method == "minmax":
        return stats.min, stats.max
    if method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], not {percentile!r}")
        lo, hi = np.percentile(stats.sample, [100.0 - percentile, percentile])
        return float(min(lo, 0.0)), float(max(hi, 0.0))
    if method == "mse":
        return mse_range(stats, bits=bits, symmetric=symmetric)
    if method == "entropy":
        nonneg = stats.min >= 0.0
        levels = (1 << bits) - 1 if nonneg else 1 << (bits - 1)
        # exact zeros (ReLU's spike) are represented exactly by any range: leave them out
        t = kl_threshold(stats.sample[stats.sample != 0], levels=levels)
        return (0.0, t) if nonneg else (max(-t, stats.min), min(t, stats.max))
    raise ConfigError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, not {method!r}")
