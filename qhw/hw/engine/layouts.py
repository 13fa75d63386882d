"""Descriptor layouts for the hardware, generated from ``qhw.engine.isa.FIELDS`` (the only place the
fields and their widths are written), so a descriptor register has exactly the program's fields."""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ...engine.isa import FIELDS, Descriptor
from ...errors import ConfigError

__all__ = ["descriptor_const", "descriptor_layout"]


def descriptor_layout(op: str) -> data.StructLayout:
    """Every field of opcode ``op`` as a struct member of its ISA width and signedness."""
    if op not in FIELDS:
        raise ConfigError(f"unknown engine opcode {op!r}")
    return data.StructLayout({name: (signed if s else unsigned)(width) for name, width, s in FIELDS[op]})


def descriptor_const(d: Descriptor) -> data.Const:
    """``d`` as a constant of ``descriptor_layout(d.op)`` (for testbenches and initial contents)."""
    return descriptor_layout(d.op).const(dict(d.fields))
