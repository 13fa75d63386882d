"""The generated Verilog, simulated by Verilator through cocotb, is bit-exact with the golden model.

One build directory per configuration; the beats come from ``qhw.hw.driver`` and the expected
outputs from qhw.arith/qhw.kernels (hw_cases.make_case), so the Amaranth simulation and the
Verilog are held to the same model.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hw_cases import make_case

from qhw.hw.config import ArrayConfig
from qhw.hw.driver import stream_beats, unpack_result
from qhw.hw.generate import write
from qhw.hw.lint import WAIVERS, find_verilator

HERE = Path(__file__).resolve().parent

runner_mod = pytest.importorskip("cocotb_tools.runner")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_verilator() is None, reason="verilator not installed")]


@pytest.mark.parametrize("seed", [31])
def test_verilog_gemm_matches_golden(tmp_path, monkeypatch, seed):
    config = ArrayConfig(rows=4, cols=4, max_k=64, acc_depth=16)
    name = "qhw_cosim_4x4"
    verilog, _ = write(config, name=name, out_dir=tmp_path / "rtl")
    waivers = tmp_path / "rtl" / "waivers.vlt"
    waivers.write_text(WAIVERS)
    cases = [make_case(config, 9, 11, 6, mode=mode, seed=seed + i)
             for i, mode in enumerate(("single", "tflite", "onnx"))]
    programs = [case.program for case in cases]
    spec = {"beats": stream_beats(programs), "out_beats": sum(p.out_beats for p in programs),
            "seed": seed, "in_gap": 0.2, "out_stall": 0.3, "latency": config.latency}
    (tmp_path / "in.json").write_text(json.dumps(spec))

    verilator = Path(find_verilator())
    monkeypatch.setenv("PATH", f"{verilator.parent}{os.pathsep}{os.environ['PATH']}")
    # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the precompiled header is
    # passed to c++ as an input file and the build fails; supply the flag through make.
    monkeypatch.setenv("MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include")
    runner = runner_mod.get_runner("verilator")
    runner.build(sources=[runner_mod.VerilatorControlFile(waivers), verilog], hdl_toplevel=name,
                 build_dir=tmp_path / "build", build_args=["-O1"], timescale=("1ns", "1ps"))
    runner.test(hdl_toplevel=name, test_module="cocotb_accel", test_dir=HERE, build_dir=tmp_path / "build",
                results_xml=str(tmp_path / "results.xml"),
                extra_env={"QHW_COSIM_IN": str(tmp_path / "in.json"), "QHW_COSIM_OUT": str(tmp_path / "out.json"),
                           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])})
    assert (tmp_path / "out.json").exists(), "the cocotb test failed; see its log above"
    rows = [unpack_result(config, raw) for raw in json.loads((tmp_path / "out.json").read_text())]
    start = 0
    for case in cases:
        n = case.program.out_beats
        assert np.array_equal(case.program.decode(rows[start:start + n]), case.expected)
        start += n
