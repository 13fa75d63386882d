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

