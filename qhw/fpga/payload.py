"""The GEMM accelerator as the host link's payload: the bytes of each stream's beat and the
receive FIFO size (the link itself is payload-agnostic, ``qhw.fpga.link``)."""

from __future__ import annotations

from amaranth.hdl import Shape

from ..hw.config import ArrayConfig
from ..hw.layouts import act_layout, command_layout, out_layout, params_layout, weights_layout
from .protocol import OVERHEAD, info_bytes

__all__ = ["board_info_bytes", "fifo_depth", "packet_bytes"]


def packet_bytes(config: ArrayConfig) -> dict[str, int]:
    """Payload bytes of each stream's beat (``cmd``, ``params``, ``weights``, ``act``, ``out``)."""
    layouts = {"cmd": command_layout(config), "params": params_layout(config), "weights": weights_layout(config),
               "act": act_layout(config), "out": out_layout(config)}
    return {k: -(-Shape.cast(v).width // 8) for k, v in layouts.items()}


def fifo_depth(config: ArrayConfig) -> int:
    """Receive FIFO bytes: room for four of the largest frames, a power of two, at least 256 (one
    iCE40 block RAM holds 512)."""
    largest = max(n for k, n in packet_bytes(config).items() if k != "out") + OVERHEAD
    depth = 256
    while depth < 4 * largest:
        depth *= 2
    return depth


def board_info_bytes(config: ArrayConfig) -> bytes:
    """The info frame payload of a board top built for ``config``."""
    return info_bytes(config.to_manifest()["parameters"], fifo_depth=fifo_depth(config))
