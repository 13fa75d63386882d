"""PLLs: divider settings for a requested clock (as the vendor-neutral ``icepll`` and ``ecppll`` choose
them), and the clock domain they drive.

``ice40_pll(f_in, f_out)`` searches DIVR, DIVF and DIVQ exactly as icestorm's ``icepll`` does (SIMPLE
feedback: ``f_out = f_in / (DIVR + 1) * (DIVF + 1) / 2**DIVQ`` with the phase detector at 10..133 MHz and
the VCO at 533..1066 MHz; the first setting closest to the request wins), with icepll's loop filter range.
``ecp5_pll(f_in, f_out)`` searches CLKI_DIV, CLKFB_DIV and CLKOP_DIV as prjtrellis's ``ecppll`` does
(feedback from CLKOP: ``f_out = f_in / CLKI_DIV * CLKFB_DIV``, the VCO ``f_out * CLKOP_DIV`` at 400..800
MHz, the phase detector at 3.125..400 MHz; the closest setting wins, ties to the VCO nearest 600 MHz).
``PllTop`` runs a top's ``sync`` domain from the family's PLL (``SB_PLL40_PAD`` / ``EHXPLLL``) fed by the
board oscillator, held in reset until the PLL has locked and a further ``POR_US`` microseconds have
passed (iCE40 block RAMs read as zero for ~3 us after configuration; Amaranth's own iCE40 reset waits
15 us).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal, Signal

from ..errors import ConfigError

__all__ = ["POR_US", "Ecp5PllParams", "PllParams", "PllTop", "ecp5_pll", "ice40_pll"]

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

    def report(self, requested_mhz: float) -> dict:
        """The ``pll`` entry of ``qhw synth --json``."""
        return {"requested_mhz": float(requested_mhz), "f_out_mhz": self.f_out_mhz, "divr": self.divr,
                "divf": self.divf, "divq": self.divq, "filter_range": self.filter_range}

    def clock(self, m: Module, platform) -> tuple[Signal, Signal]:
        """``SB_PLL40_PAD`` on the oscillator's pin (the PLL's own pad, as on the iCEBreaker): (clock, lock)."""
        pad = platform.request(platform.default_clk, dir="-")
        clk, lock = Signal(), Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=Const(self.divr, 4), p_DIVF=Const(self.divf, 7), p_DIVQ=Const(self.divq, 3),
            p_FILTER_RANGE=Const(self.filter_range, 3),
            i_PACKAGEPIN=pad.io, i_RESETB=Const(1, 1), i_BYPASS=Const(0, 1),
            o_PLLOUTGLOBAL=clk, o_LOCK=lock,
        )
        return clk, lock


@dataclass(frozen=True)
class Ecp5PllParams:
    f_in_mhz: float
    f_out_mhz: float        # achieved
    f_pfd_mhz: float
    f_vco_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def clkop_cphase(self) -> int:
        """CLKOP shifted by 180 degrees, as ecppll (and Lattice's tools) set it."""
        return self.clkop_div // 2

    def report(self, requested_mhz: float) -> dict:
        """The ``pll`` entry of ``qhw synth --json``."""
        return {"requested_mhz": float(requested_mhz), "f_out_mhz": self.f_out_mhz, "clki_div": self.clki_div,
                "clkfb_div": self.clkfb_div, "clkop_div": self.clkop_div}

    def clock(self, m: Module, platform) -> tuple[Signal, Signal]:
        """``EHXPLLL`` fed by the oscillator's input buffer, feedback from CLKOP: (clock, lock). The
        attributes are ecppll's (loop filter settings, and the frequencies for Lattice's tools)."""
        from amaranth.lib import io

        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        clk, lock = Signal(), Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{self.f_in_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{self.f_out_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=self.clki_div, p_CLKFB_DIV=self.clkfb_div, p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=self.clkop_div, p_CLKOP_CPHASE=self.clkop_cphase, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_RST=Const(0, 1), i_STDBY=Const(0, 1), i_CLKI=clk_buf.i, i_CLKFB=clk, o_CLKOP=clk,
            i_PHASESEL0=Const(0, 1), i_PHASESEL1=Const(0, 1), i_PHASEDIR=Const(1, 1), i_PHASESTEP=Const(1, 1),
            i_PHASELOADREG=Const(1, 1), i_PLLWAKESYNC=Const(0, 1), i_ENCLKOP=Const(0, 1),
            o_LOCK=lock,
        )
        return clk, lock


def _check_range(f_in_mhz: float, f_out_mhz: float, *, f_in: tuple[int, int], f_out: tuple[int, int],
                 family: str) -> None:
    """``ConfigError`` (one line) unless both frequencies lie in the family's PLL ranges (MHz)."""
    if not f_in[0] <= f_in_mhz <= f_in[1]:
        raise ConfigError(f"PLL input frequency must be {f_in[0]}..{f_in[1]} MHz, not {f_in_mhz!r}")
    if not f_out[0] <= f_out_mhz <= f_out[1]:
        raise ConfigError(f"PLL output frequency (--freq) must be {f_out[0]}..{f_out[1]} MHz on {family}, "
                          f"not {f_out_mhz!r}")


def ice40_pll(f_in_mhz: float, f_out_mhz: float) -> PllParams:
    """icepll's choice for ``f_in_mhz`` -> ``f_out_mhz`` (SIMPLE feedback); ``ConfigError`` outside the
    PLL's ranges (input 10..133 MHz, output 16..275 MHz)."""
    _check_range(f_in_mhz, f_out_mhz, f_in=(10, 133), f_out=(16, 275), family="iCE40")
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


def ecp5_pll(f_in_mhz: float, f_out_mhz: float) -> Ecp5PllParams:
    """ecppll's choice for ``f_in_mhz`` -> ``f_out_mhz`` (CLKOP feedback); ``ConfigError`` outside the
    PLL's ranges (input 8..400 MHz, output 10..400 MHz)."""
    _check_range(f_in_mhz, f_out_mhz, f_in=(8, 400), f_out=(10, 400), family="ECP5")
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in_mhz / clki_div
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            f_out = f_pfd * clkfb_div
            for clkop_div in range(1, 129):
                f_vco = f_out * clkop_div
                if not 400 <= f_vco <= 800:
                    continue
                key = (abs(f_out - f_out_mhz), abs(f_vco - 600))
                if best is None or key < best[0]:
                    best = (key, f_out, f_pfd, f_vco, clki_div, clkfb_div, clkop_div)
    if best is None:
        raise ConfigError(f"no ECP5 PLL setting gives {f_out_mhz:g} MHz from {f_in_mhz:g} MHz")
    _, f_out, f_pfd, f_vco, clki_div, clkfb_div, clkop_div = best
    return Ecp5PllParams(f_in_mhz, f_out, f_pfd, f_vco, clki_div, clkfb_div, clkop_div)


class PllTop(Elaboratable):
    """``top`` (an Elaboratable) with its ``sync`` domain at ``params.f_out_mhz``, from the platform's
    default clock through the family's PLL (``params.clock``: ``PllParams`` for iCE40, whose pin must
    be the PLL's pad, as iCEBreaker's 12 MHz oscillator on pin 35 is; ``Ecp5PllParams`` for ECP5).
    nextpnr derives the output clock's constraint from the pin's."""

    def __init__(self, top, params: PllParams | Ecp5PllParams):
        self.top, self.params = top, params

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.submodules.top = self.top
        clk, lock = p.clock(m, platform)
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
