"""Random GEMMs for the benches and ``qhw simulate --gemm``: seeded, with outputs spread over the
whole element range (some columns saturating), for any array configuration and rounding mode."""

from __future__ import annotations

import numpy as np

from ..arith import Requant, quantize_multiplier
from ..errors import ConfigError
from ..hw.config import ArrayConfig
from ..runtime import GemmCall

__all__ = ["parse_gemm", "random_gemm"]


def parse_gemm(text: str) -> tuple[int, int, int]:
    """``"M,K,N"`` -> (M, K, N)."""
    try:
        m, k, n = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--gemm must be M,K,N (three positive integers), not {text!r}") from None
    if min(m, k, n) < 1:
        raise ConfigError(f"--gemm must be M,K,N (three positive integers), not {text!r}")
    return m, k, n


def random_gemm(config: ArrayConfig, m: int, k: int, n: int, *, mode: str, rng: np.random.Generator,
                layer: str = "gemm", per_channel: bool | None = None) -> GemmCall:
    """A random GEMM the array can run: full-range activations and weights, int32 bias, per-column
    multipliers scaled so outputs cover the element range, random zero point and clamp."""
    c = config
    if k > c.max_k:
        raise ConfigError(f"K={k} exceeds the array's max_k={c.max_k}")
    alo, ahi = c.act_range
    wlo, whi = c.weight_range
    x = rng.integers(alo, ahi + 1, size=(m, k), dtype=np.int64)
    w = rng.integers(wlo, whi + 1, size=(k, n), dtype=np.int64)
    acc = x @ w
    bias = rng.integers(-(1 << 20), 1 << 20, size=n, dtype=np.int64)
    rms = np.maximum(np.sqrt(np.mean(np.square((acc + bias).astype(np.float64)), axis=0)), 1.0)
    per_channel = c.per_channel if per_channel is None else per_channel
    # most columns use about half the output range; one in eight is scaled up 16x and saturates
    gain = rng.uniform(0.25, 1.0, size=n if per_channel else 1)
    gain = np.where(rng.random(gain.shape) < 0.125, 16.0 * gain, gain)
    real = (ahi - alo) / 4.0 / (rms if per_channel else rms.mean()) * gain
    m0, shift = quantize_multiplier(real)
    zp = int(rng.integers(alo, ahi + 1) // 4)
    if rng.random() < 0.3:
        qmin, qmax = max(alo, zp), ahi              # a fused ReLU
    else:
        qmin, qmax = alo, ahi
    rq = Requant(mode=mode, multiplier=np.atleast_1d(m0), shift=np.atleast_1d(shift),
                 scale=np.atleast_1d(np.asarray(real, dtype=np.float32)), zero_point=zp, qmin=qmin, qmax=qmax)
    return GemmCall(x=x, w=w, bias=bias, requant=rq, layer=layer)
