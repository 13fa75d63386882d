"""Random GEMMs for every hardware test and ``qhw simulate --gemm``: seeded, with outputs spread
over the whole element range (some columns saturating), for any array configuration and rounding
mode. The one generator: the Amaranth tests, the cocotb bench and the board link all draw here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..arith import INT32_MAX, Requant
from ..errors import ConfigError
from ..hw.config import ArrayConfig
from ..hw.driver import fold_bias
from ..runtime import GemmCall

__all__ = ["TIE_SCALE", "gemm_layer", "parse_gemm", "random_gemm", "random_gemms"]


def parse_gemm(text: str) -> tuple[int, int, int]:
    """``"M,K,N"`` -> (M, K, N)."""
    try:
        m, k, n = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--gemm must be M,K,N (three positive integers), not {text!r}") from None
    if min(m, k, n) < 1:
        raise ConfigError(f"--gemm must be M,K,N (three positive integers), not {text!r}")
    return m, k, n


def gemm_layer(m: int, k: int, n: int) -> str:
    """The layer name a random GEMM reports under."""
    return f"gemm {m}x{k}x{n}"


def random_gemm(config: ArrayConfig, m: int, k: int, n: int, *, mode: str, rng: np.random.Generator,
                layer: str = "gemm", per_channel: bool | None = None, x=None, w=None, bias=None,
                x_zero_point: int | None = None, zero_point: int | None = None, qmin: int | None = None,
                qmax: int | None = None, real_scale=None) -> GemmCall:
    """A random GEMM the array can run, as ``requant.apply((x - x_zero_point) @ w + bias)`` with the
    input zero point folded into the bias (``fold_bias``).

    Drawn from ``rng`` unless given: full-range activations and weights, an input zero point, a
    bias of the accumulator's own spread, per-column multipliers scaled so outputs cover the
    element range (one column in eight 16x larger, saturating), an output zero point and, one
    time in three, a fused-ReLU clamp. Given operands must fit the array's element ranges.
    """
    c = config                  # what the array accepts (K, M, element ranges) is plan_gemm's check
    alo, ahi = c.act_range
    wlo, whi = c.weight_range
    x = rng.integers(alo, ahi + 1, size=(m, k), dtype=np.int64) if x is None else np.asarray(x, dtype=np.int64)
    w = rng.integers(wlo, whi + 1, size=(k, n), dtype=np.int64) if w is None else np.asarray(w, dtype=np.int64)
    if x_zero_point is None:
        # bounded so that the folded bias stays an int32 for every element width
        limit = (INT32_MAX // 2) // max(int(np.abs(w.sum(axis=0)).max(initial=0)), 1)
        x_zero_point = int(np.clip(rng.integers(alo, ahi + 1) // 4, -limit, limit))
    spread = int(np.sqrt(k) * max(abs(alo), ahi) * max(abs(wlo), whi))
    if bias is None:
        bound = min(max(spread, 1), INT32_MAX // 2)
        bias = rng.integers(-bound, bound + 1, size=n, dtype=np.int64)
    bias = np.asarray(bias, dtype=np.int64)
    acc = (x - x_zero_point) @ w + bias
    per_channel = c.per_channel if per_channel is None else per_channel
    if real_scale is None:
        rms = np.maximum(np.sqrt(np.mean(np.square(acc.astype(np.float64)), axis=0)), 1.0)
        gain = rng.uniform(0.25, 1.0, size=n if per_channel else 1)
        gain = np.where(rng.random(gain.shape) < 0.125, 16.0 * gain, gain)
        real_scale = (ahi - alo) / 4.0 / (rms if per_channel else rms.mean()) * gain
    real_scale = np.atleast_1d(np.asarray(real_scale, dtype=np.float64))
    if not per_channel:
        real_scale = real_scale[:1]
    if zero_point is None:
        zero_point = int(rng.integers(alo, ahi + 1) // 4)
    if qmin is None and qmax is None and rng.random() < 0.3:
        qmin = max(alo, zero_point)                         # a fused ReLU
    rq = Requant.from_scales(mode=mode, s_in=1.0, s_w=real_scale, s_out=1.0, zero_point=zero_point,
                             qmin=alo if qmin is None else qmin, qmax=ahi if qmax is None else qmax)
    return GemmCall(x=x, w=w, bias=fold_bias(bias, w, x_zero_point), requant=rq, layer=layer)


# A real scale of exactly 1/2 (M0 = 2**30, shift 0; float32 0.5): every odd accumulator is a rounding tie.
TIE_SCALE = 0.5
_DIRECTED = {"real_scale", "zero_point", "qmin", "qmax", "per_channel"}


def random_gemms(config: ArrayConfig, gemms: Sequence[Sequence], *, seed: int) -> list[GemmCall]:
    """One random GEMM per ``(m, k, n, mode)`` or ``(m, k, n, mode, {directed})``, drawn in order from
    ``default_rng(seed)``, each named ``gemm_layer(m, k, n)``: the same calls wherever the same list
    and seed are given. ``directed`` fixes some of ``random_gemm``'s draws (``real_scale``,
    ``zero_point``, ``qmin``, ``qmax``, ``per_channel``), e.g. ``{"real_scale": TIE_SCALE}``."""
    rng = np.random.default_rng(seed)
    out = []
    for m, k, n, mode, *directed in gemms:
        kw = dict(directed[0]) if directed else {}
        if set(kw) - _DIRECTED:
            raise ConfigError(f"a directed GEMM may fix {', '.join(sorted(_DIRECTED))}, "
                              f"not {', '.join(sorted(set(kw) - _DIRECTED))}")
        out.append(random_gemm(config, int(m), int(k), int(n), mode=str(mode), rng=rng, layer=gemm_layer(m, k, n),
                               **kw))
    return out
