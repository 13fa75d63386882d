"""iCE40 PLL: divider settings for a requested clock (as icestorm's ``icepll``), and the clock domain.

``ice40_pll(f_in, f_out)`` searches DIVR, DIVF and DIVQ exactly as ``icepll`` does (SIMPLE feedback:
``f_out = f_in / (DIVR + 1) * (DIVF + 1) / 2**DIVQ`` with the phase detector at 10..133 MHz and the VCO
at 533..1066 MHz; the first setting closest to the request wins), with icepll's loop filter range.
``PllTop`` runs a top's ``sync`` domain from an ``SB_PLL40_PAD`` fed by the board oscillator's pin,
held in reset until the PLL has locked and a further ``POR_US`` microseconds have passed (iCE40 block
RAMs read as zero for ~3 us after configuration; Amaranth's own iCE40 reset waits 15 us).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal, Signal

from ..errors import ConfigError

__all__ = ["POR_US", "PllParams", "PllTop", "ice40_pll"]

POR_US = 15         # reset held this long after lock, as Amaranth's iCE40 default clock domain does


@dataclass(frozen=True)
class PllParams:
    f_in_mhz: float
    f_out_mhz: float        # achieved
    f_pfd_mhz: float
    f_vco_mhz: float
    divr: int
    divf: int
    divq: int
    filter_range: int


def ice40_pll(f_in_mhz: float, f_out_mhz: float) -> PllParams:
    """icepll's choice for ``f_in_mhz`` -> ``f_out_mhz`` (SIMPLE feedback); ``ConfigError`` outside the
    PLL's ranges (input 10..133 MHz, output 16..275 MHz)."""
    if not 10 <= f_in_mhz <= 133:
        raise ConfigError(f"PLL input frequency must be 10..133 MHz, not {f_in_mhz!r}")
    if not 16 <= f_out_mhz <= 275:
        raise ConfigError(f"PLL output frequency (--freq) must be 16..275 MHz on iCE40, not {f_out_mhz!r}")
    best = None
    for divr in range(16):
        f_pfd = f_in_mhz / (divr + 1)
        if f_pfd < 10 or f_pfd > 133:
            continue
        for divf in range(128):            # SIMPLE feedback allows DIVF up to 127
            f_vco = f_pfd * (divf + 1)
            if f_vco < 533 or f_vco > 1066:
                continue
            for divq in range(1, 7):
                f_out = f_vco * 2.0 ** -divq
                if best is None or abs(f_out - f_out_mhz) < abs(best[0] - f_out_mhz):
                    best = (f_out, divr, divf, divq)
    if best is None:
        raise ConfigError(f"no iCE40 PLL setting gives {f_out_mhz:g} MHz from {f_in_mhz:g} MHz")
    f_out, divr, divf, divq = best
    f_pfd = f_in_mhz / (divr + 1)
    filter_range = (1 if f_pfd < 17 else 2 if f_pfd < 26 else 3 if f_pfd < 44 else 4 if f_pfd < 66
                    else 5 if f_pfd < 101 else 6)
    return PllParams(f_in_mhz, f_out, f_pfd, f_pfd * (divf + 1), divr, divf, divq, filter_range)


class PllTop(Elaboratable):
    """``top`` (an Elaboratable) with its ``sync`` domain at ``params.f_out_mhz``, from the platform's
    default clock pin through ``SB_PLL40_PAD`` (the pin must be the PLL's pad, as iCEBreaker's 12 MHz
    oscillator on pin 35 is). nextpnr derives the output clock's constraint from the pin's."""

    def __init__(self, top, params: PllParams):
        self.top, self.params = top, params

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.submodules.top = self.top
        pad = platform.request(platform.default_clk, dir="-")
        clk = Signal()
        lock = Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=Const(p.divr, 4), p_DIVF=Const(p.divf, 7), p_DIVQ=Const(p.divq, 3),
            p_FILTER_RANGE=Const(p.filter_range, 3),
            i_PACKAGEPIN=pad.io, i_RESETB=Const(1, 1), i_BYPASS=Const(0, 1),
            o_PLLOUTGLOBAL=clk, o_LOCK=lock,
        )
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk)
        # Reset until locked, then POR_US more (a counter in the PLL's own clock).
        delay = int(POR_US * p.f_out_mhz)
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += ClockSignal("por").eq(clk)
        timer = Signal(range(delay + 1))
        ready = Signal()
        with m.If(~lock):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.d.comb += ResetSignal("sync").eq(~ready)
        return m
