"""Host side of the accelerator protocol: turn one GEMM into stream beats and results back into a matrix.

Pure Python/NumPy, no simulator: the Amaranth testbenches, the cocotb bench (``qhw.sim``), the
board link and the benchmarks all use the same beat order, documented in ``docs/hardware.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arith import INT32_MAX, INT32_MIN, Requant
from ..contract import MAX_GEMM_M, MAX_GEMM_N, MODE_CODES
from ..errors import ConfigError, DataError
from .config import ArrayConfig
from .layouts import act_layout, command_layout, params_layout, weights_layout

__all__ = ["GemmProgram", "fold_bias", "plan_gemm", "stream_beats", "unpack_result"]


def fold_bias(bias, w, x_zero_point: int) -> np.ndarray:
    """``bias - x_zp * sum_k w[k, n]``: with it, ``x_q @ w + bias_hw == (x_q - x_zp) @ w + bias``."""
    w = np.asarray(w, dtype=np.int64)
    return np.asarray(bias, dtype=np.int64) - np.int64(x_zero_point) * w.sum(axis=0)


@dataclass(frozen=True)
class GemmProgram:
    """Beats for each input stream of ``qhw.hw.accel.Accelerator`` and the shape of the result.

    ``command`` and ``params`` entries are dicts for ``layout.const``; ``weights``
    and ``act`` entries are lists of ints, one per array element.
    """

    config: ArrayConfig
    m: int
    k: int
    n: int
    command: dict
    weights: list
    params: list
    act: list

    @property
    def out_beats(self) -> int:
        return self.m * self.config.gemm_tiles(self.k, self.n)[1]

    def decode(self, rows) -> np.ndarray:
        """Result beats (``cols`` ints each, in arrival order) to the M x N output matrix."""
        c = self.config
        rows = np.asarray(rows, dtype=np.int64)
        if rows.shape != (self.out_beats, c.cols):
            raise DataError(f"expected {self.out_beats} result rows of {c.cols}, got shape {rows.shape}")
        n_tiles = c.gemm_tiles(self.k, self.n)[1]
        y = rows.reshape(n_tiles, self.m, c.cols).transpose(1, 0, 2).reshape(self.m, n_tiles * c.cols)
        return y[:, :self.n]


def stream_beats(programs) -> dict[str, list[int]]:
    """Raw payload integers per input stream (``cmd``, ``weights``, ``params``, ``act``) for one or
    more programs run back to back; bit layouts as in the manifest's ``streams``."""
    if isinstance(programs, GemmProgram):
        programs = [programs]
    c = programs[0].config

    def pack(layout, value):
        return layout.const(value).as_value().value

    return {
        "cmd": [pack(command_layout(c), p.command) for p in programs],
        "weights": [pack(weights_layout(c), w) for p in programs for w in p.weights],
        "params": [pack(params_layout(c), q) for p in programs for q in p.params],
        "act": [pack(act_layout(c), a) for p in programs for a in p.act],
    }


def unpack_result(config: ArrayConfig, raw: int) -> list[int]:
    """One raw ``out`` payload to its ``cols`` output elements."""
    bits = config.act_bits
    mask = (1 << bits) - 1
    values = []
    for j in range(config.cols):
        v = (raw >> (j * bits)) & mask
        if config.act_signed and v >> (bits - 1):
            v -= 1 << bits
        values.append(v)
    return values


def _check_range(name, values, lo, hi, error=DataError):
    if values.size and (values.min() < lo or values.max() > hi):
        raise error(f"{name} must lie in [{lo}, {hi}], got [{values.min()}, {values.max()}]")


def plan_gemm(config: ArrayConfig, x_q, w, bias_hw, requant: Requant) -> GemmProgram:
    """Beats that make the accelerator compute ``requant.apply(x_q @ w + bias_hw)``.

    ``x_q`` is M x K (raw quantized activations), ``w`` K x N, ``bias_hw`` N int32
    values with the activation zero point folded in (``fold_bias``).
    """
    c = config
    x = np.asarray(x_q, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    bias = np.asarray(bias_hw, dtype=np.int64).reshape(-1)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0] or bias.shape != (w.shape[1],):
        raise DataError(f"shapes must be x (M, K), w (K, N), bias (N,), got {x.shape}, {w.shape}, {bias.shape}")
    m, k = x.shape
    n = w.shape[1]
    if m < 1 or k < 1 or n < 1:
        raise DataError(f"GEMM dimensions must be positive, got M={m}, K={k}, N={n}")
    if k > c.max_k:
        raise ConfigError(f"K must be at most max_k={c.max_k}, not {k}")
    kt, nt = c.gemm_tiles(k, n)
    if kt > 1 and m > c.acc_depth:
        raise ConfigError(f"M must be at most acc_depth={c.acc_depth} when K > rows, not {m}")
    if m > MAX_GEMM_M or n > MAX_GEMM_N:
        raise ConfigError(f"M must be at most {MAX_GEMM_M} and N at most {MAX_GEMM_N}, got M={m}, N={n}")
    if requant.mode not in c.rounding:
        raise ConfigError(f"rounding mode {requant.mode!r} is not built into this array ({', '.join(c.rounding)})")
    _check_range("activations", x, *c.act_range)
    _check_range("weights", w, *c.weight_range)
    _check_range("bias", bias, INT32_MIN, INT32_MAX)
    lo, hi = c.act_range
    for name in ("zero_point", "qmin", "qmax"):
        _check_range(name, np.asarray(getattr(requant, name)), lo, hi, ConfigError)

    def per_column(values, name):
        values = np.asarray(values, dtype=np.int64).reshape(-1)
        if values.size == 1:
            values = np.repeat(values, n)
        if values.size != n:
            raise DataError(f"{name} must have 1 or N={n} entries, got {values.size}")
        if not c.per_channel and np.any(values != values[0]):
            raise ConfigError(f"{name} varies per channel but the array is built per-tensor")
        return np.concatenate([values, np.repeat(values[-1:], nt * c.cols - n)])

    mult = per_column(requant.multiplier, "multiplier")
    shift = per_column(requant.shift, "shift")
    _check_range("multiplier", mult, 0, (1 << 31) - 1)
    _check_range("shift", shift, -31, 30)
    scale = np.asarray(requant.scale, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(scale)) or np.any(scale < 0):
        raise DataError("onnx scales must be finite and non-negative")
    scale = per_column(scale.view(np.uint32).astype(np.int64), "scale")   # float32 bit patterns
    bias_p = np.concatenate([bias, np.zeros(nt * c.cols - n, dtype=np.int64)])
    w_p = np.zeros((kt * c.rows, nt * c.cols), dtype=np.int64)
    w_p[:k, :n] = w
    x_p = np.zeros((m, kt * c.rows), dtype=np.int64)
    x_p[:, :k] = x

    weights, params, act = [], [], []
    for ni in range(nt):
        cols = slice(ni * c.cols, (ni + 1) * c.cols)
        params.append({
            "bias": bias_p[cols].tolist(),
            "multiplier": mult[cols].tolist() if c.per_channel else int(mult[0]),
            "shift": shift[cols].tolist() if c.per_channel else int(shift[0]),
        })
        if "onnx" in c.rounding:
            params[-1]["scale"] = scale[cols].tolist() if c.per_channel else int(scale[0])
        for ki in range(kt):
            k0 = ki * c.rows
            weights.extend(w_p[k0:min(k0 + c.rows, k), cols].tolist())
            act.extend(x_p[:, k0:k0 + c.rows].tolist())
    command = {"m": m, "k": k, "n": n, "mode": MODE_CODES[requant.mode],
               "zero_point": int(requant.zero_point), "qmin": int(requant.qmin), "qmax": int(requant.qmax)}
    return GemmProgram(config=c, m=m, k=k, n=n, command=command, weights=weights, params=params, act=act)
