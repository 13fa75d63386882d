"""Shared helper of the hardware tests: random GEMM cases whose expected output comes from qhw's golden model.

A plain module (not conftest.py) so its name cannot collide with tests/conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qhw.arith import Requant
from qhw.hw.config import ArrayConfig
from qhw.hw.driver import GemmProgram, fold_bias, plan_gemm
from qhw.kernels import matmul_exact


@dataclass
class GemmCase:
    program: GemmProgram
    expected: np.ndarray


def make_case(config: ArrayConfig, m: int, k: int, n: int, *, mode: str, seed: int,
              x=None, w=None, bias=None, x_zero_point=None, zero_point=None, qmin=None, qmax=None,
              real_scale=None) -> GemmCase:
    """A random GEMM (or the given operands) and its golden output ``Requant.apply((x - x_zp) @ w + bias)``."""
    rng = np.random.default_rng(seed)
    lo, hi = config.act_range
    wlo, whi = config.weight_range
    x = rng.integers(lo, hi + 1, (m, k)) if x is None else np.asarray(x)
    w = rng.integers(wlo, whi + 1, (k, n)) if w is None else np.asarray(w)
    if x_zero_point is None:
        x_zero_point = int(rng.integers(lo, hi + 1)) // 4
    bias = rng.integers(-(1 << 14), 1 << 14, n) if bias is None else np.asarray(bias)
    if zero_point is None:
        zero_point = int(rng.integers(lo, hi + 1)) // 8
    qmin = lo if qmin is None else qmin
    qmax = hi if qmax is None else qmax
    if real_scale is None:
        # Scales that map the accumulator spread onto a few output steps, so outputs are
        # neither all saturated nor all zero.
        spread = float(np.sqrt(k)) * (hi - lo) * (whi - wlo) / 12
        real_scale = rng.uniform(0.5, 2.0, n) * (hi - lo) / max(spread, 1.0) / 4
    requant = Requant.from_scales(mode=mode, s_in=1.0, s_w=real_scale, s_out=1.0,
                                  zero_point=zero_point, qmin=qmin, qmax=qmax)
    if not config.per_channel:
        requant = Requant.from_scales(mode=mode, s_in=1.0, s_w=np.atleast_1d(real_scale)[:1], s_out=1.0,
                                      zero_point=zero_point, qmin=qmin, qmax=qmax)
    acc = matmul_exact(x.astype(np.int64) - x_zero_point, w) + bias
    expected = requant.apply(acc)
    program = plan_gemm(config, x, w, fold_bias(bias, w, x_zero_point), requant)
    return GemmCase(program=program, expected=expected)
