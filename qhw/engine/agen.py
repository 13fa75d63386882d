"""Address generation: the scratchpad words each descriptor reads and writes, in hardware order.

The reference model gathers beats with these addresses and the cycle model tracks the words'
readiness with them, so both see exactly what the hardware's address generators produce. Addresses
are word addresses; ``PAD`` marks a beat the generator replaces by the activation zero point.
"""

from __future__ import annotations

import numpy as np

from .isa import IN_WINDOW, POOL_NONE, Descriptor

__all__ = ["PAD", "k_tiles", "matmul_reads", "matmul_writes", "pixel_words", "pool_geometry"]

PAD = -1


def k_tiles(d: Descriptor) -> int:
    """K tiles per N tile: one per (channel word, ky, kx), or one per kernel row for a window input."""
    return d["kh"] if d["in_kind"] == IN_WINDOW else d["kcw"] * d["kh"] * d["kw"]


def matmul_reads(d: Descriptor) -> np.ndarray:
    """Word read by each beat, shape (n_tiles, k_tiles, M), M = oh*ow in raster order; ``PAD`` outside."""
    m = np.arange(d["oh"] * d["ow"])
    oy, ox = m // d["ow"], m % d["ow"]
    nt = np.arange(d["n_tiles"])[:, None, None]
    if d["in_kind"] == IN_WINDOW:
        ky = np.arange(d["kh"])[None, :, None]
        y = oy * d["sh"] + ky * d["dh"] - d["pt"]
        addr = d["in_base"] + y * d["in_w"] + ox + 0 * nt
        valid = (y >= 0) & (y < d["in_h"]) & (nt >= 0)
        return np.where(valid, addr, PAD)
    kt = np.arange(k_tiles(d))
    cwi, tap = kt // (d["kh"] * d["kw"]), kt % (d["kh"] * d["kw"])
    ky, kx = (tap // d["kw"])[None, :, None], (tap % d["kw"])[None, :, None]
    y = oy * d["sh"] + ky * d["dh"] - d["pt"]
    x = ox * d["sw"] + kx * d["dw"] - d["pl"]
    valid = (y >= 0) & (y < d["in_h"]) & (x >= 0) & (x < d["in_w"])
    cw = d["in_cw0"] + nt * d["cw_step"] + cwi[None, :, None]
    addr = d["in_base"] + (y * d["in_w"] + x) * d["in_pp"] + cw
    return np.where(valid, addr, PAD)


def pool_geometry(d: Descriptor) -> tuple[int, int]:
    """(pkh, pkw) of a MATMUL's fused pool (window = stride), (1, 1) without one."""
    return (d["pkh"], d["pkw"]) if d["pool"] != POOL_NONE else (1, 1)


def matmul_writes(d: Descriptor, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Word each result row lands in, shape (n_tiles, M) (``PAD``: dropped, a pool's remainder row),
    and the lane offset of each N tile's ``cols`` values inside that word, shape (n_tiles,)."""
    m = np.arange(d["oh"] * d["ow"])
    oy, ox = m // d["ow"], m % d["ow"]
    pkh, pkw = pool_geometry(d)
    py, px = oy // pkh, ox // pkw
    keep = (py < d["out_h"]) & (px < d["out_w"])
    first = np.arange(d["n_tiles"]) * cols
    addr = (d["out_base"] + (py * d["out_w"] + px) * d["out_pp"] + d["out_cw0"])[None, :] + (first // rows)[:, None]
    return np.where(keep[None, :], addr, PAD), first % rows


def pixel_words(base: int, h: int, w: int, pp: int, cw0: int, cws: int) -> np.ndarray:
    """Words of ``cws`` channel words of an ``h x w`` channel-last tensor, shape (h, w, cws)."""
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(cws), indexing="ij")
    return base + (y * w + x) * pp + cw0 + c
