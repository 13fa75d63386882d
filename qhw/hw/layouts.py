"""Payload layouts of the accelerator's streams, shared by the hardware and its host-side drivers."""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ..contract import BIAS_BITS, GEMM_M_BITS, MAX_GEMM_N_BITS, MODE_BITS, MULTIPLIER_BITS, SCALE_BITS, SHIFT_BITS
from .config import ArrayConfig
from .mesh import act_shape

# GEMM_M_BITS is re-exported (qhw.contract owns it) for modules that import it from here.
__all__ = ["GEMM_M_BITS", "act_layout", "command_layout", "out_layout", "params_layout", "weights_layout"]


def command_layout(config: ArrayConfig) -> data.StructLayout:
    """One GEMM: shape (M, K, N), rounding ``mode`` (``MODE_CODES``) and the output's zero point and range."""
    out = act_shape(config)
    return data.StructLayout({
        "m": unsigned(GEMM_M_BITS),
        "k": unsigned(max(config.max_k.bit_length(), 1)),
        "n": unsigned(MAX_GEMM_N_BITS),
        "mode": unsigned(MODE_BITS),
        "zero_point": out,
        "qmin": out,
        "qmax": out,
    })


def params_layout(config: ArrayConfig) -> data.StructLayout:
    """Requantization parameters of one N tile: a bias per column; M0, shift (and the float32
    scale when ``onnx`` is built) per column or per tensor."""
    def per(shape):
        return data.ArrayLayout(shape, config.cols) if config.per_channel else shape

    fields = {
        "bias": data.ArrayLayout(signed(BIAS_BITS), config.cols),
        "multiplier": per(unsigned(MULTIPLIER_BITS)),
        "shift": per(signed(SHIFT_BITS)),
    }
    if "onnx" in config.rounding:
        fields["scale"] = per(unsigned(SCALE_BITS))     # float32 bit pattern
    return data.StructLayout(fields)


def weights_layout(config: ArrayConfig) -> data.ArrayLayout:
    """One weight row (one K index, ``cols`` output channels)."""
    return data.ArrayLayout(signed(config.weight_bits), config.cols)


def act_layout(config: ArrayConfig) -> data.ArrayLayout:
    """One activation beat: ``rows`` consecutive K elements of one GEMM row."""
    return data.ArrayLayout(act_shape(config), config.rows)


def out_layout(config: ArrayConfig) -> data.ArrayLayout:
    """One result beat: ``cols`` consecutive output channels of one GEMM row."""
    return data.ArrayLayout(act_shape(config), config.cols)
