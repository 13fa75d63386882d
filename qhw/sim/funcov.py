"""Functional coverage of the bench: named bins of the cases that matter, counted on the cocotb side.

Bins (``FunctionalCoverage.bins``, name -> hits):

* ``rounding/<mode>/tie``: output elements whose requantization rounds an exact half (``single``:
  the dropped bits are exactly half of ``2**(31 - shift)``; ``tflite``: a half in the doubling
  high multiply or in the divide by a power of two; ``onnx``: a float32 product ending in .5);
* ``rounding/<mode>/saturate_high`` / ``saturate_low``: elements clamped at ``qmax`` / ``qmin``
  (a fused ReLU's clamp included), from the arithmetic contract (``qhw.arith.Requant``) with the
  clamp opened;
* ``backpressure/<stream>``: cycles a beat waited on that stream (inputs: the driver's ``valid``
  high with the DUT's ``ready`` low; ``out``: the DUT's ``valid`` high with the monitor's
  ``ready`` low);
* ``k_tiles/1``, ``k_tiles/many``: GEMMs with one K tile, and with several (accumulated);
* ``forwarding/same_row``: GEMMs whose consecutive array beats hit the same accumulator row
  (M = 1 over several K tiles: the accumulator's forwarding path).

Every bin is listed for the array's rounding modes and streams, hit or not, so a report shows
what was missed. Counts of shards and runs add up (``merge``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from ..arith import Requant, saturating_rounding_doubling_high_mul
from ..hw.config import ArrayConfig

__all__ = ["STREAMS", "FunctionalCoverage", "bin_names", "merge", "requant_cases"]

STREAMS = ("cmd", "params", "weights", "act", "out")
_WIDE = 1 << 40          # a clamp no requantized value reaches


def bin_names(config: ArrayConfig) -> list[str]:
    """Every bin of an array, in report order."""
    names = [f"rounding/{mode}/{case}" for mode in config.rounding for case in ("tie", "saturate_high",
                                                                                 "saturate_low")]
    names += [f"backpressure/{s}" for s in STREAMS]
    return names + ["k_tiles/1", "k_tiles/many", "forwarding/same_row"]


def _per_channel(p, n: int) -> np.ndarray:
    return np.broadcast_to(np.atleast_1d(np.asarray(p)), (n,))


def _ties(rq: Requant, acc: np.ndarray) -> np.ndarray:
    """Elements of ``acc`` (M x N) whose requantization rounds an exact half."""
    n = acc.shape[1]
    if rq.mode == "onnx":
        v = acc.astype(np.float32) * _per_channel(rq.scale, n).astype(np.float32)
        return (v - np.floor(v)) == np.float32(0.5)
    m0 = _per_channel(rq.multiplier, n).astype(np.int64)
    shift = _per_channel(rq.shift, n).astype(np.int64)
    if rq.mode == "single":
        total = 31 - shift
        if np.abs(acc).max(initial=0) < (1 << 31):       # |acc * m0| < 2**62: int64 is exact
            low = (acc * m0) & ((np.int64(1) << total) - 1)
        else:
            low = (acc.astype(object) * m0.astype(object)) % (np.int64(1) << total).astype(object)
        return low == (np.int64(1) << (total - 1))
    # tflite: the doubling high multiply, then the rounding divide by 2**right
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    x = np.clip(acc, -(1 << 31), (1 << 31) - 1) << left
    x = ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    tie = ((x * m0) & ((1 << 31) - 1)) == (1 << 30)
    q = saturating_rounding_doubling_high_mul(x, m0)
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), -1)
    return tie | ((q & ((np.int64(1) << right) - 1)) == half)


def requant_cases(rq: Requant, acc) -> dict[str, int]:
    """``{"tie", "saturate_high", "saturate_low"}`` element counts of ``rq.apply(acc)`` (M x N)."""
    acc = np.asarray(acc, dtype=np.int64).reshape(-1, np.asarray(acc).shape[-1])
    free = replace(rq, qmin=-_WIDE, qmax=_WIDE).apply(acc, axis=-1)
    return {"tie": int(np.count_nonzero(_ties(rq, acc))), "saturate_high": int(np.count_nonzero(free > rq.qmax)),
            "saturate_low": int(np.count_nonzero(free < rq.qmin))}


class FunctionalCoverage:
    """The bins of one bench (``bin_names``), sampled per GEMM and per stalled cycle."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        self.bins: dict[str, int] = dict.fromkeys(bin_names(config), 0)

    def sample_gemm(self, call, m: int, k: int, n: int) -> None:
        """One GEMM (a ``qhw.runtime.GemmCall``) as the array runs it."""
        from ..kernels import matmul_exact

        kt = self.config.gemm_tiles(k, n)[0]
        self.bins["k_tiles/1" if kt == 1 else "k_tiles/many"] += 1
        if m == 1 and kt > 1:
            self.bins["forwarding/same_row"] += 1
        rq = call.requant
        for case, hits in requant_cases(rq, matmul_exact(call.x, call.w) + call.bias).items():
            key = f"rounding/{rq.mode}/{case}"
            self.bins[key] = self.bins.get(key, 0) + hits

    def add_backpressure(self, stalls: dict[str, int]) -> None:
        for s, v in stalls.items():
            self.bins[f"backpressure/{s}"] += int(v)

    def to_json(self) -> dict:
        return {"bins": dict(self.bins), "missed": [k for k, v in self.bins.items() if not v]}


def merge(parts: Iterable[dict]) -> dict:
    """``to_json`` results of shards or runs -> one (hits added, bins in first-seen order)."""
    bins: dict[str, int] = {}
    for p in parts:
        for k, v in p["bins"].items():
            bins[k] = bins.get(k, 0) + int(v)
    return {"bins": bins, "missed": [k for k, v in bins.items() if not v]}
