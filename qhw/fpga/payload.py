"""The GEMM accelerator and the network engine as the host link's payload: the bytes of each
stream's beat, the receive FIFO size and the info frame (the link itself is payload-agnostic,
``qhw.fpga.link``)."""

from __future__ import annotations

from amaranth.hdl import Shape

from ..engine.config import EngineConfig
from ..hw.config import ArrayConfig
from ..hw.layouts import act_layout, command_layout, out_layout, params_layout, weights_layout
from .protocol import OVERHEAD, info_bytes

__all__ = ["DEFAULT_FRAME_BYTES", "board_info_bytes", "fifo_depth", "network_fifo_depth", "network_info_bytes",
           "packet_bytes", "result_bytes"]

DEFAULT_FRAME_BYTES = 64        # network top: 16 load words or 64/rows input beats a frame (89 % payload)


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


# ---------------------------------------------------------------- the network engine

def result_bytes(engine: EngineConfig) -> int:
    """A result frame's payload: one output beat's ``rows`` bytes and the ``last`` byte."""
    return engine.array.rows + 1


def network_fifo_depth(frame_bytes: int) -> int:
    """Receive FIFO bytes: four of the largest frames, a power of two, at least 256."""
    depth = 256
    while depth < 4 * (frame_bytes + OVERHEAD):
        depth *= 2
    return depth


def network_info_bytes(engine: EngineConfig, frame_bytes: int = DEFAULT_FRAME_BYTES) -> bytes:
    """The info frame payload of a network board top built for ``engine``."""
    return info_bytes(engine.array.to_manifest()["parameters"], fifo_depth=network_fifo_depth(frame_bytes),
                      engine=engine.to_manifest()["engine"], frame_bytes=frame_bytes)
