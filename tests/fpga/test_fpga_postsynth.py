"""Post-synthesis simulation (``qhw simulate --post-synth BOARD``): the netlist Yosys maps for each
FPGA family, on the vendor primitive models, runs a whole inference of the digits MLP bit-exact.

One 2x2 accelerator per family, as small as the flow places it: iCE40 with the dual 8x8 SB_MAC16
PEs and one shared requantization lane (7 of the UP5K's 8 SB_MAC16), ECP5 with the registered
MULT18X18D PEs, one shared lane and its accumulator memory in DP16KD block RAM. Each test runs Yosys
(``synth_ice40 -dsp`` / ``synth_ecp5``, the script of ``qhw synth``), builds the netlist with the
models in Verilator and simulates one image. The netlists and builds are cached in
``sim_build/`` (``$QHW_SIM_BUILD``) like the RTL test builds.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from qhw.cli import main
from qhw.hw.config import ArrayConfig
from qhw.hw.generate import write

REPO = Path(__file__).resolve().parents[2]
BUILD_ROOT = Path(os.environ.get("QHW_SIM_BUILD", REPO / "sim_build")).resolve()

CONFIGS = {
    "icebreaker": dict(rows=2, cols=2, max_k=64, acc_depth=16, rounding=("single",), pe="ice40-dual",
                       requant_lanes=1),
    # acc_depth 256: the accumulator memory goes to DP16KD block RAM (2), so its model runs too; one
    # shared lane halves the requantization logic (and the build time).
    "ulx3s-85f": dict(rows=2, cols=2, max_k=64, acc_depth=256, rounding=("single",), pe="ecp5-pipelined",
                      requant_lanes=1),
}


@pytest.fixture(scope="module")
def mlp_qhw(tmp_path_factory, mlp_path, digits):
    from qhw.api import quantize_model
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig

    qm = quantize_model(mlp_path, QuantConfig(), calib_x=digits["calib_x"][:300], log=lambda *_: None)
    path = tmp_path_factory.mktemp("ps_model") / "mlp.qhw"
    save_qmodel(qm, path)
    return path


@pytest.mark.parametrize("board, family", [("icebreaker", "ice40"), ("ulx3s-85f", "ecp5")])
def test_post_synth_inference_bit_exact(mlp_qhw, digits_files, tmp_path, capsys, monkeypatch, board, family):
    monkeypatch.setenv("QHW_SIM_BUILD", str(BUILD_ROOT))
    monkeypatch.setenv("QHW_VERILATOR_OPT", "-O0")          # one image: build time dominates
    _, rtl = write(ArrayConfig(**CONFIGS[board]), name=f"qhw_ps_{family}", out_dir=tmp_path / "rtl")
    argv = ["simulate", str(mlp_qhw), "--rtl", str(rtl), "--data", str(digits_files["test"]), "--post-synth",
            board, "--limit", "4", "--batch", "4", "--json"]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["netlist"] == f"post-synth {family}"
    assert rep["bit_exact"] and rep["mismatches"] == 0 and rep["samples"] == 4
    assert rep["accuracy_hw"] == rep["accuracy_quant"]
    # the netlist ran, not the RTL (a model run's worker once re-read the manifest and simulated the RTL)
    from qhw.sim.build import build_dir_for
    from qhw.sim.manifest import load_hardware

    ran = json.loads((Path(rep["run_dir"]) / "job.json").read_text())["build"]
    assert ran != build_dir_for(load_hardware(rtl), "verilator", BUILD_ROOT, opt="-O0").name
    netlist = next((BUILD_ROOT / "postsynth").glob(f"qhw_ps_{family}-{family}-*/qhw_ps_{family}.netlist.v"))
    text = netlist.read_text()
    if family == "ice40":
        # Regression: synth_ice40 -dsp rewrote the dual 8x8 PEs' SB_MAC16 as 16x16 multipliers
        # (MODE_8x8 0, output select 3) and the whole inference went wrong; they stay 8x8.
        dual = re.findall(r"SB_MAC16 #\([^;]*?\.MODE_8x8\(1'h1\)", text)
        assert len(dual) == 2                                # 4 MACs, two per SB_MAC16
        assert text.count("SB_MAC16 #(") == 7
    else:
        assert text.count("MULT18X18D #(") == 4 + 4          # one per MAC, four for the 33x31-bit lane
        assert text.count("DP16KD #(") == 2


def test_post_synth_refuses_cells_without_a_model():
    from qhw.fpga.postsynth import FAMILY_MODELS, netlist_cells

    text = ("module top(a, y);\n  input a;\n  output y;\n  LUT4 #(\n    .INIT(16'h0001)\n  ) l (\n    .A(a),\n"
            "    .Z(y)\n  );\n  EHXPLLL #(\n    .CLKOP_DIV(8)\n  ) \\pll  (\n    .CLKI(a)\n  );\n"
            "  TRELLIS_FF f (.CLK(a));\nendmodule\n")
    assert netlist_cells(text, "top") == {"LUT4", "EHXPLLL", "TRELLIS_FF"}
    known = {c for cells in FAMILY_MODELS["ecp5"].values() for c in cells}
    assert netlist_cells(text, "top") - known == {"EHXPLLL"}


def test_post_synth_needs_verilator(tmp_path, capsys):
    _, rtl = write(ArrayConfig(**CONFIGS["icebreaker"]), name="qhw_ps_ice40", out_dir=tmp_path / "rtl")
    assert main(["simulate", "--rtl", str(rtl), "--gemm", "2,2,2", "--post-synth", "icebreaker",
                 "--simulator", "icarus"]) == 2
    assert capsys.readouterr().err.strip() == ("qhw: error: --post-synth simulates the vendor primitive models on "
                                               "Verilator, not icarus; leave --simulator out")


def test_post_synth_board_must_match_pe(tmp_path, capsys):
    _, rtl = write(ArrayConfig(**CONFIGS["ulx3s-85f"]), name="qhw_ps_ecp5", out_dir=tmp_path / "rtl")
    assert main(["simulate", "--rtl", str(rtl), "--gemm", "2,2,2", "--post-synth", "icebreaker"]) == 2
    assert capsys.readouterr().err.strip() == (
        "qhw: error: the manifest's pe ecp5-pipelined is for ecp5 boards, not icebreaker (ice40); regenerate with "
        "qhw generate --pe ice40-dual or --pe generic")
