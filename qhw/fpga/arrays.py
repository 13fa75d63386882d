"""Which systolic array a synthesis top instantiates: the generic one or an FPGA DSP variant.

The array top takes it from ``--pe`` (``resolve_pe``, then ``replace(config, pe=...)``); the
accelerator and board tops build what the manifest's ``pe`` says (``manifest_pe`` checks ``--pe``
and the board family against it). Either way ``config.pe`` is the kind built.
"""

from __future__ import annotations

from dataclasses import replace

from ..contract import PE_FAMILY
from ..errors import ConfigError
from ..hw.array import SystolicArray
from ..hw.config import ArrayConfig
from ..hw.dsp_array import DspArray

__all__ = ["PE_KINDS", "make_array", "manifest_pe", "resolve_pe"]

PE_KINDS = ("auto", "generic", "ice40-dual", "ecp5-pipelined")
_NATIVE = {"ice40": "ice40-dual", "ecp5": "ecp5-pipelined"}


def resolve_pe(config: ArrayConfig, *, pe: str, family: str) -> str:
    """``auto``: the family's DSP variant when the configuration allows it, else ``generic``."""
    if pe not in PE_KINDS:
        raise ConfigError(f"pe must be one of {', '.join(PE_KINDS)}, not {pe!r}")
    if pe == "auto":
        pe = _NATIVE[family]
        try:
            replace(config, pe=pe)      # ArrayConfig checks the tiling and element widths of a DSP kind
        except ConfigError:
            return "generic"
        return pe
    if pe != "generic" and _NATIVE[family] != pe:
        raise ConfigError(f"pe {pe} is for {pe.split('-')[0]} boards, not {family}")
    return pe


def manifest_pe(config: ArrayConfig, *, pe: str, family: str, board: str) -> str:
    """The PE kind of an accelerator/board top: the manifest's ``config.pe``. ``pe`` (``--pe``) must be
    ``auto`` or the same, and a DSP kind must be for ``family``; each mismatch is a one-line error."""
    if pe not in PE_KINDS:
        raise ConfigError(f"pe must be one of {', '.join(PE_KINDS)}, not {pe!r}")
    if pe not in ("auto", config.pe):
        raise ConfigError(f"--pe {pe} does not match the manifest's pe {config.pe}; regenerate the RTL with "
                          f"qhw generate --pe {pe} (or leave --pe out)")
    if config.pe != "generic" and PE_FAMILY[config.pe] != family:
        raise ConfigError(f"the manifest's pe {config.pe} is for {PE_FAMILY[config.pe]} boards, not {board} "
                          f"({family}); regenerate with qhw generate --pe {_NATIVE[family]} or --pe generic")
    return config.pe


def make_array(config: ArrayConfig, *, family: str):
    """The array of kind ``config.pe`` (``DspArray`` with ``family``'s primitives for a DSP kind)."""
    if config.pe == "generic":
        return SystolicArray(config=config)
    return DspArray(config=config, family=family)
