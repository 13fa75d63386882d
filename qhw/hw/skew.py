"""Fixed per-lane delay lines: the activation skew at the array's left edge and the de-skew at its bottom."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError

__all__ = ["Skew", "delayed"]


def delayed(m: Module, value, cycles: int, *, name: str, reset_less: bool = False, clear=None):
    """``value`` delayed by ``cycles`` registers in ``m``'s sync domain (``cycles`` = 0 returns it);
    ``reset_less`` for datapath values that a valid bit elsewhere qualifies; with ``clear`` (one bit) every
    stage loads 0 in a clear's cycle, so nothing in flight survives it."""
    for stage in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{stage + 1}", reset_less=reset_less)
        m.d.sync += reg.eq(value if clear is None else Mux(clear, 0, value))
        value = reg
    return value


class Skew(wiring.Component):
    """``o[i]`` is ``i[i]`` delayed by ``delays[i]`` cycles.

    A datapath delay line: its registers have no reset (a reset, e.g. the board link's
    ``ResetInserter``, would otherwise fan out to every one of them; what they carry is qualified
    by valid bits kept elsewhere).

    Parameters
    ----------
    shape:
        Shape of one lane's element.
    delays:
        Non-negative delay of each lane, in cycles.
    """

    def __init__(self, *, shape, delays):
        delays = tuple(delays)
        if not delays or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in delays):
            raise ConfigError(f"delays must be a non-empty sequence of non-negative integers, not {delays!r}")
        self.shape = Shape.cast(shape) if not isinstance(shape, data.Layout) else shape
        self.delays = delays
        super().__init__({
            "i": In(data.ArrayLayout(shape, len(delays))),
            "o": Out(data.ArrayLayout(shape, len(delays))),
        })

    @property
    def latency(self) -> int:
        """Longest lane delay."""
        return max(self.delays)

    def elaborate(self, platform):
        m = Module()
        for lane, cycles in enumerate(self.delays):
            m.d.comb += self.o[lane].eq(delayed(m, self.i[lane], cycles, name=f"lane{lane}", reset_less=True))
        return m
