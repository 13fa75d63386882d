"""Scores and error statistics of model outputs, independent of how the model runs.

``ErrorStats`` accumulates quantized-vs-float error batch by batch (sums in float64),
so the figures do not depend on how the data was split, up to summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["HIST_SAMPLES", "ErrorStats", "sqnr_db", "predictions", "accuracy"]

HIST_SAMPLES = 20000  # errors kept per tensor for histograms (the first ones, in data order)


def predictions(y: np.ndarray) -> np.ndarray:
    """Class predictions from model outputs: argmax of scores, or the output itself if integer labels."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or y.ndim == 1:
        return y.reshape(-1).astype(np.int64)
    return np.argmax(y.reshape(y.shape[0], -1), axis=1)


def accuracy(y: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions(y) == labels.reshape(-1)))


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
    m2_err: float = 0.0  # sum of squared deviations from the running mean (Chan et al. merge)
    max_abs: float = 0.0
    sum_f2: float = 0.0
    sum_q2: float = 0.0
    sum_fq: float = 0.0
    saturated: int = 0
    coded: int = 0
    errors: list = field(default_factory=list)
    keep_errors: int = HIST_SAMPLES  # how many errors to keep for a histogram (0: none)

    def update(self, f: np.ndarray, q: np.ndarray, limits: tuple[float, float] | None = None) -> None:
        """Add a batch; ``limits`` is the real range the quantized tensor can represent."""
        f = np.asarray(f, dtype=np.float64).ravel()
        q = np.asarray(q, dtype=np.float64).ravel()
        e = q - f
        if e.size:
            # merge this batch's mean and squared deviations: no E[e^2] - E[e]^2 cancellation
            n0, mean0 = self.n, (self.sum_err / self.n if self.n else 0.0)
            mean_b = float(e.mean())
            d = e - mean_b
            self.m2_err += float(d @ d) + (mean_b - mean0) ** 2 * n0 * e.size / (n0 + e.size)
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
        room = self.keep_errors - sum(len(x) for x in self.errors)
        if room > 0:
            self.errors.append(e[:room].astype(np.float32))

    def summary(self) -> dict:
        mean = self.sum_err / self.n if self.n else 0.0
        var = self.m2_err / self.n if self.n else 0.0
        denom = math.sqrt(self.sum_f2 * self.sum_q2)
        return {
            "sqnr_db": sqnr_db(self.sum_f2, self.sum_err2),
            "mean_error": mean,
            "std_error": math.sqrt(var),
            "max_abs_error": self.max_abs,
            "cosine_similarity": (self.sum_fq / denom) if denom else 1.0,
            "saturation_rate": (self.saturated / self.coded) if self.coded else 0.0,
        }
