"""Compares of an unsigned value with a constant as plain logic.

Yosys maps ``value > constant`` to a carry chain (ECP5 ``CCU2C`` cells) that logic synthesis cannot
merge with the gates around it; the same compare as AND/OR terms lets ABC fold it into the LUTs of
the control logic it feeds (the 8x8 accelerator's command check went through six of them).
"""

from __future__ import annotations

from amaranth.hdl import Const, Value

__all__ = ["above"]


def above(value, bound: int) -> Value:
    """``value > bound`` (``value`` unsigned, ``bound`` an integer), without a carry chain."""
    value = Value.cast(value)
    if bound < 0:
        return Const(1, 1)
    if bound >= (1 << len(value)) - 1:
        return Const(0, 1)
    gt = Const(0, 1)
    for i in range(len(value)):         # value[:i + 1] > bound[:i + 1], from the low bit up
        gt = (value[i] & gt) if (bound >> i) & 1 else (value[i] | gt)
    return gt
