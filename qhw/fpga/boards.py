"""Boards qhw builds for: amaranth-boards platforms, subclassed (never copied), plus device limits.

``platform_for(board, clock_mhz=...)`` returns a fresh platform whose default clock is
constrained at ``clock_mhz`` (the board oscillator's frequency when ``None``), so nextpnr's
timing-driven placement aims at the requested target.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from amaranth.build import Clock
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import (
    ULX3S_12F_Platform,
    ULX3S_25F_Platform,
    ULX3S_45F_Platform,
    ULX3S_85F_Platform,
)

from ..errors import ConfigError

__all__ = ["BOARDS", "Board", "board_info", "platform_for"]


class _TargetClock:
    """Mixin: constrain the default clock at a chosen frequency instead of the oscillator's.

    Only the timing constraint changes (nextpnr reports Fmax against it); the pin table is the
    amaranth-boards one. A real build at a frequency above the oscillator's needs a PLL.
    """

    def __init__(self, *args, clock_hz: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if clock_hz is not None:
            key = (self.default_clk, 0)
            res = copy.copy(self.resources[key])      # the class-level Resource is shared
            res.clock = Clock(float(clock_hz))
            self.resources[key] = res


class ICEBreaker(_TargetClock, ICEBreakerPlatform):
    """iCEBreaker (iCE40UP5K-SG48): 12 MHz oscillator, UART through the FTDI FT2232H."""


class ULX3S_12F(_TargetClock, ULX3S_12F_Platform):
    """ULX3S with LFE5U-12F."""


class ULX3S_25F(_TargetClock, ULX3S_25F_Platform):
    """ULX3S with LFE5U-25F."""


class ULX3S_45F(_TargetClock, ULX3S_45F_Platform):
    """ULX3S with LFE5U-45F."""


class ULX3S_85F(_TargetClock, ULX3S_85F_Platform):
    """ULX3S with LFE5U-85F: 25 MHz oscillator, UART through the FTDI FT231X."""


@dataclass(frozen=True)
class Board:
    name: str
    family: str             # "ice40" or "ecp5"
    device: str
    platform: type
    clock_mhz: float        # on-board oscillator
    luts: int               # logic cells (iCE40 LC / ECP5 LUT4)
    dsps: int               # SB_MAC16 / MULT18X18D
    brams: int              # SB_RAM40_4K / DP16KD
    default_target_mhz: float   # --top array default constraint (the target)


# Capacities as nextpnr reports them (ICESTORM_LC, ICESTORM_DSP, ICESTORM_RAM; TRELLIS_COMB,
# MULT18X18D, DP16KD).
BOARDS = {
    "icebreaker": Board("icebreaker", "ice40", "iCE40UP5K-SG48", ICEBreaker, 12.0, 5280, 8, 30, 40.0),
    "ulx3s-12f": Board("ulx3s-12f", "ecp5", "LFE5U-12F-6BG381C", ULX3S_12F, 25.0, 24288, 28, 56, 150.0),
    "ulx3s-25f": Board("ulx3s-25f", "ecp5", "LFE5U-25F-6BG381C", ULX3S_25F, 25.0, 24288, 28, 56, 150.0),
    "ulx3s-45f": Board("ulx3s-45f", "ecp5", "LFE5U-45F-6BG381C", ULX3S_45F, 25.0, 43848, 72, 108, 150.0),
    "ulx3s-85f": Board("ulx3s-85f", "ecp5", "LFE5U-85F-6BG381C", ULX3S_85F, 25.0, 83640, 156, 208, 150.0),
}


def board_info(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ConfigError(f"board must be one of {', '.join(BOARDS)}, not {name!r}") from None


def platform_for(name: str, *, clock_mhz: float | None = None):
    """A new platform instance for ``name`` with its default clock constrained at ``clock_mhz``."""
    board = board_info(name)
    if clock_mhz is not None and not (isinstance(clock_mhz, (int, float)) and 0 < clock_mhz <= 1000):
        raise ConfigError(f"clock frequency must be a number of MHz in (0, 1000], not {clock_mhz!r}")
    return board.platform(clock_hz=None if clock_mhz is None else clock_mhz * 1e6)
