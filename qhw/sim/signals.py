"""Fast reads of DUT signals in the bench's clock loop."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["int_reader"]


def int_reader(handle) -> Callable[[], int]:
    """A fast ``int`` reader of a signal: the GPI object's own getter (no ``Logic``/``LogicArray``
    object per read) when this cocotb has it, else ``int(handle.value)``. X/Z raise ValueError
    either way."""
    raw = getattr(handle, "_handle", None)
    width = len(handle)
    if raw is not None and hasattr(raw, "get_signal_val_binstr"):
        if width <= 32 and hasattr(raw, "get_signal_val_long"):
            mask = (1 << width) - 1
            get_long = raw.get_signal_val_long
            return lambda: get_long() & mask
        get_bin = raw.get_signal_val_binstr
        return lambda: int(get_bin(), 2)
    return lambda: int(handle.value)
