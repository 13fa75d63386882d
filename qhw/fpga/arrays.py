"""Which systolic array a synthesis top instantiates: the generic one or an FPGA DSP variant."""

from __future__ import annotations

from ..errors import ConfigError
from ..hw.array import SystolicArray
from ..hw.config import ArrayConfig
from ..hw.dsp_array import DspArray, check_dsp_config

__all__ = ["PE_KINDS", "make_array", "resolve_pe"]

PE_KINDS = ("auto", "generic", "ice40-dual", "ecp5-pipelined")
_NATIVE = {"ice40": "ice40-dual", "ecp5": "ecp5-pipelined"}


def resolve_pe(config: ArrayConfig, *, pe: str, family: str) -> str:
    """``auto``: the family's DSP variant when the configuration allows it, else ``generic``."""
    if pe not in PE_KINDS:
        raise ConfigError(f"pe must be one of {', '.join(PE_KINDS)}, not {pe!r}")
    if pe == "auto":
        pe = _NATIVE[family]
        try:
            check_dsp_config(config, pe, family)
        except ConfigError:
            return "generic"
        return pe
    if pe != "generic" and _NATIVE[family] != pe:
        raise ConfigError(f"pe {pe} is for {pe.split('-')[0]} boards, not {family}")
    return pe


def make_array(config: ArrayConfig, *, pe: str, family: str):
    if pe == "generic":
        return SystolicArray(config=config)
    return DspArray(config=config, kind=pe, family=family)
