"""The PLLs: icepll's and ecppll's divider searches (``qhw.fpga.pll.ice40_pll`` / ``ecp5_pll``) against
known outputs of those tools, their range errors, and ``qhw synth --freq`` building the design behind
``SB_PLL40_PAD`` (iCE40) or ``EHXPLLL`` (ECP5)."""

import json
import re

import pytest

from qhw.cli import main
from qhw.errors import ConfigError
from qhw.fpga.pll import ecp5_pll, ice40_pll
from qhw.hw.config import ArrayConfig
from qhw.hw.generate import write

# Printed by icestorm's icepll (-i F_IN -o F_OUT): achieved MHz, DIVR, DIVF, DIVQ, FILTER_RANGE.
ICEPLL = [
    (12, 96, 96.0, 0, 63, 3, 1),
    (12, 48, 48.0, 0, 63, 4, 1),
    (12, 40, 39.75, 0, 52, 4, 1),     # no setting gives 40 from 12 MHz: 636 MHz VCO / 16
    (12, 30, 30.0, 0, 79, 5, 1),
    (48, 60, 60.0, 0, 19, 4, 4),
    (48, 100, 100.0, 2, 49, 3, 1),
    (48, 150, 150.0, 1, 24, 2, 2),
]


@pytest.mark.parametrize("f_in, f_out, achieved, divr, divf, divq, filter_range", ICEPLL)
def test_ice40_pll_matches_icepll(f_in, f_out, achieved, divr, divf, divq, filter_range):
    p = ice40_pll(f_in, f_out)
    assert (p.f_out_mhz, p.divr, p.divf, p.divq, p.filter_range) == (achieved, divr, divf, divq, filter_range)
    assert p.f_out_mhz == f_in / (divr + 1) * (divf + 1) / 2 ** divq
    assert 533 <= p.f_vco_mhz <= 1066 and 10 <= p.f_pfd_mhz <= 133


@pytest.mark.parametrize("f_in, f_out, message", [
    (12, 300, "PLL output frequency (--freq) must be 16..275 MHz on iCE40, not 300"),
    (12, 10, "PLL output frequency (--freq) must be 16..275 MHz on iCE40, not 10"),
    (5, 40, "PLL input frequency must be 10..133 MHz, not 5"),
])
def test_ice40_pll_ranges(f_in, f_out, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        ice40_pll(f_in, f_out)


def test_synth_freq_drives_the_pll(tmp_path, capsys):
    """A 2x2 array top at --freq 40.5 on the iCEBreaker runs from the PLL (icepll's 40.5 MHz setting
    from the 12 MHz oscillator); the JSON reports the PLL, the achieved target and whether it is met."""
    _, j = write(ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single",)), name="qhw_pll",
                 out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), "--board", "icebreaker", "--freq", "40.5", "--json",
                 "-o", str(tmp_path / "b")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["pll"] == {"requested_mhz": 40.5, "f_out_mhz": 40.5, "divr": 0, "divf": 53, "divq": 4, "filter_range": 1}
    assert r["target_mhz"] == 40.5 and r["timing_met"] == (r["fmax_mhz"] >= 40.5) and r["fmax_mhz"] > 0
    il = (tmp_path / "b" / "qhw_top.il").read_text()
    assert "SB_PLL40_PAD" in il
    # nextpnr timed the PLL's output clock (derived from the pin's 12 MHz), not the pin.
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [v["constraint"] for v in report["fmax"].values()] == [pytest.approx(40.5, abs=0.05)]


# Printed by prjtrellis's ecppll (-i F_IN -o F_OUT): CLKI_DIV, CLKFB_DIV, CLKOP_DIV, CLKOP_CPHASE (the
# first two rows as generated files quote them: serv's ecp5_evn_pll.v, 12 -> 16; the ULX3S examples'
# 25 -> 120 and 25 -> 100).
ECPPLL = [
    (12, 16, 3, 4, 37, 18),
    (25, 120, 5, 24, 5, 2),
    (25, 100, 1, 4, 6, 3),
]


@pytest.mark.parametrize("f_in, f_out, clki_div, clkfb_div, clkop_div, cphase", ECPPLL)
def test_ecp5_pll_matches_ecppll(f_in, f_out, clki_div, clkfb_div, clkop_div, cphase):
    p = ecp5_pll(f_in, f_out)
    assert (p.clki_div, p.clkfb_div, p.clkop_div, p.clkop_cphase) == (clki_div, clkfb_div, clkop_div, cphase)
    assert p.f_out_mhz == f_out == f_in / clki_div * clkfb_div
    assert 400 <= p.f_vco_mhz <= 800 and 3.125 <= p.f_pfd_mhz <= 400


@pytest.mark.parametrize("f_in, f_out, message", [
    (25, 500, "PLL output frequency (--freq) must be 10..400 MHz on ECP5, not 500"),
    (4, 40, "PLL input frequency must be 8..400 MHz, not 4"),
])
def test_ecp5_pll_ranges(f_in, f_out, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        ecp5_pll(f_in, f_out)


def test_synth_freq_drives_the_ecp5_pll_board_top(tmp_path, capsys):
    """The ULX3S board top (2x1 accelerator behind the UART link) at --freq 50 runs from the ECP5's
    EHXPLLL (25 MHz x 2): nextpnr times the PLL's output at 50 MHz, and the bitstream is written (the
    smallest ECP5 board top, in CI)."""
    _, j = write(ArrayConfig(rows=2, cols=1, max_k=16, acc_depth=8, rounding=("single",)), name="qhw_e",
                 out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), "--board", "ulx3s-85f", "--top", "board", "--freq", "50", "--json",
                 "-o", str(tmp_path / "b")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["pll"] == {"requested_mhz": 50.0, "f_out_mhz": 50.0, "clki_div": 1, "clkfb_div": 2, "clkop_div": 12}
    assert r["target_mhz"] == 50.0 and r["timing_met"] == (r["fmax_mhz"] >= 50.0) and r["fmax_mhz"] > 0
    assert "EHXPLLL" in (tmp_path / "b" / "qhw_top.il").read_text()
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [v["constraint"] for v in report["fmax"].values()] == [pytest.approx(50, abs=0.05)]
    assert (tmp_path / "b" / "qhw_top.bit").stat().st_size > 1000


def test_synth_freq_outside_the_ecp5_pll_is_one_line(tmp_path, capsys):
    _, j = write(ArrayConfig(rows=2, cols=1, max_k=16, acc_depth=8, rounding=("single",)), name="qhw_e",
                 out_dir=tmp_path / "rtl")
    assert main(["synth", "--rtl", str(j), "--board", "ulx3s-85f", "--top", "board", "--freq", "500",
                 "-o", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip() == (
        "qhw: error: PLL output frequency (--freq) must be 10..400 MHz on ECP5, not 500.0")
    assert not (tmp_path / "b").exists()
