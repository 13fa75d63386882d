"""The board top's host protocol: byte-level framing shared by the gateware and the host driver.

Host to board, one packet per stream beat (payloads little-endian, the stream's payload bits
zero-padded to whole bytes; bit layouts as in the manifest's ``streams``)::

    'C' cmd payload       one GEMM command           (ceil(cmd bits / 8) bytes)
    'P' params payload    requantization parameters  (ceil(params bits / 8) bytes)
    'W' weights payload   one weight row             (ceil(weights bits / 8) bytes)
    'A' act payload       one activation row         (ceil(act bits / 8) bytes)
    'I'                   ask for the info frame

Board to host, frames::

    'R' out payload       one result row             (ceil(out bits / 8) bytes)
    'K'                   one packet has been consumed (credit: its bytes left the receive FIFO)
    'I' info (13 bytes)   b"QHW", version 1, rows, cols, act_bits | act_signed << 7,
                          weight_bits | per_channel << 7, rounding mask (single 1, tflite 2,
                          onnx 4), max_k (u16 LE), receive FIFO depth in bytes (u16 LE)
    'E' opcode            an unknown opcode was received (the packet is dropped)

Flow control is by credits: the board's receive FIFO holds ``fifo_depth`` bytes, and the host
keeps the bytes of unacknowledged packets (sent, no ``'K'`` yet) at or below it. A packet is
acknowledged when its beat has been handed to the accelerator, so a stalled stream (weights
waiting for a free bank, activations waiting for output credit) can never overflow the FIFO.
"""

from __future__ import annotations

from amaranth.hdl import Shape

from ..hw.config import ArrayConfig
from ..hw.layouts import act_layout, command_layout, out_layout, params_layout, weights_layout

__all__ = ["INFO_BYTES", "OPCODES", "RESP", "fifo_depth", "info_bytes", "packet_bytes", "rounding_mask"]

OPCODES = {"cmd": ord("C"), "params": ord("P"), "weights": ord("W"), "act": ord("A"), "info": ord("I")}
RESP = {"result": ord("R"), "credit": ord("K"), "info": ord("I"), "error": ord("E")}
INFO_BYTES = 13
VERSION = 1


def _layouts(config: ArrayConfig) -> dict:
    return {"cmd": command_layout(config), "params": params_layout(config), "weights": weights_layout(config),
            "act": act_layout(config), "out": out_layout(config)}


def packet_bytes(config: ArrayConfig) -> dict[str, int]:
    """Payload bytes of each stream's packet (without the opcode byte)."""
    return {k: -(-Shape.cast(v).width // 8) for k, v in _layouts(config).items()}


def fifo_depth(config: ArrayConfig) -> int:
    """Receive FIFO bytes: room for two of the largest packets, a power of two, at least 64."""
    largest = max(n for k, n in packet_bytes(config).items() if k != "out") + 1
    depth = 64
    while depth < 2 * largest:
        depth *= 2
    return depth


def rounding_mask(config: ArrayConfig) -> int:
    return sum(bit for mode, bit in (("single", 1), ("tflite", 2), ("onnx", 4)) if mode in config.rounding)


def info_bytes(config: ArrayConfig) -> bytes:
    """The 13 info bytes the board sends after ``'I'``."""
    if not (config.rows < 256 and config.cols < 256 and config.max_k < 65536):
        raise ValueError("the info frame holds rows, cols < 256 and max_k < 65536")
    depth = fifo_depth(config)
    return bytes([*b"QHW", VERSION, config.rows, config.cols, config.act_bits | (config.act_signed << 7),
                  config.weight_bits | (config.per_channel << 7), rounding_mask(config),
                  config.max_k & 255, config.max_k >> 8, depth & 255, depth >> 8])
