"""cocotb/Verilator (and Icarus, where installed) runs of the generated accelerator.

Every configuration is generated and built once (``conftest.built``); each test launches the
cocotb runner on ``sim/tb_accel.py``. Random GEMMs (M = 1, K and N not multiples of the array,
K = max_k, full-rate tiles) for every rounding mode, once without stalls (cycle counts must equal
the manifest's analytical model wherever it is exact) and once with random input gaps and output
back-pressure (bit-exact). The seed is ``QHW_SIM_SEED`` (default 1) and is printed on failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from simcases import CONFIGS, REPO, config

from qhw.sim.build import run_cocotb

SEED = int(os.environ.get("QHW_SIM_SEED", "1"))


def shapes(name: str) -> list[list[int]]:
    c = config(name)
    r, k_max, cols = c.rows, c.max_k, c.cols
    full = c.min_m_for_full_rate
    return [
        [1, r + 1, cols + 1],            # M = 1, K and N one past a tile
        [full, 2 * r + 3, 2 * cols - 1],  # several tiles at full rate: ideal_cycles is exact
        [full + 3, r, cols],             # one tile
        [2, 3, 1],
        [5, k_max, 3],                   # K = max_k
        [full, max(r - 1, 1), 2 * cols + 1],
    ]


def run_case(built, name: str, simulator: str, tmp_path: Path, *, modes=None, in_gap=0.2,
             out_stall=0.3) -> dict:
    hw, bdir = built(name, simulator)
    tmp_path.mkdir(parents=True, exist_ok=True)
    results = tmp_path / "results.json"
    case = {"rtl": str(hw.manifest_path), "modes": list(modes or hw.config.rounding), "shapes": shapes(name),
            "seed": SEED, "in_gap": in_gap, "out_stall": out_stall, "results": str(results)}
    (tmp_path / "case.json").write_text(json.dumps(case))
    from cocotb_tools.check_results import get_results

    xml = run_cocotb(hw, simulator, bdir, test_module="tb_accel", test_dir=tmp_path,
                     env={"QHW_CASE": str(tmp_path / "case.json")}, python_paths=(REPO / "sim",),
                     log_file=tmp_path / "sim.log", seed=SEED)
    tests, failed = get_results(xml)
    data = json.loads(results.read_text()) if results.is_file() else {}
    problems = [f"{k}: {v['first_mismatch'] or v['cycle_errors']}" for k, v in data.items()
                if v["first_mismatch"] or v["cycle_errors"]]
    where = problems or f"see {tmp_path / 'sim.log'}"
    assert not failed and not problems, (f"{name} on {simulator}, seed {SEED} (QHW_SIM_SEED): {failed} of "
                                         f"{tests} cocotb tests failed; {where}")
    assert tests == 2 * len(case["modes"]) and len(data) == tests
    return data


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_gemms_verilator(sim_build, name, tmp_path):
    data = run_case(sim_build, name, "verilator", tmp_path)
    checked = sum(lc["cycle_checks"] for v in data.values() for lc in v["layers"])
    assert checked >= 2 * len(config(name).rounding)


def test_random_gemms_icarus_matches_verilator(sim_build, tmp_path):
    """Icarus gives the same results and, with the same seeds, the same cycle counts, stalls included."""
    ica = run_case(sim_build, "4x4", "icarus", tmp_path / "icarus")
    ver = run_case(sim_build, "4x4", "verilator", tmp_path / "verilator")
    for key in ver:
        assert [lc["cycles"] for lc in ica[key]["layers"]] == [lc["cycles"] for lc in ver[key]["layers"]], key


def test_cycles_match_amaranth_simulation(sim_build, tmp_path):
    """Where the analytical model is not exact (several tiles, small M), the Verilog takes exactly as
    many cycles as the Amaranth design in Amaranth's simulator."""
    from qhw.hw.driver import plan_gemm
    from qhw.hw.simulate import simulate
    from qhw.sim.gemm import random_gemm

    name = "2x2"
    data = run_case(sim_build, name, "verilator", tmp_path, modes=["single"])["single-nostall"]
    c = config(name)
    rng = np.random.default_rng(SEED)    # the bench's seed for mode index 0 without stalls
    calls = [random_gemm(c, m, k, n, mode="single", rng=rng) for m, k, n in shapes(name)]
    progs = [plan_gemm(c, x.x, x.w, x.bias, x.requant) for x in calls]
    res = simulate(progs)
    ends = np.cumsum([p.out_beats for p in progs]) - 1
    amaranth = [res.out_cycles[e] - res.cmd_cycles[i] for i, e in enumerate(ends)]
    assert [lc["cycles"] for lc in data["layers"]] == amaranth


# --------------------------------------------------------------------------- whole models, CLI


@pytest.fixture(scope="module")
def sim_env(monkeypatch_module):
    """``qhw simulate`` through the CLI reuses the test builds (same root, same C++ optimization)."""
    from simcases import BUILD_ROOT, TEST_OPT

    monkeypatch_module.setenv("QHW_SIM_BUILD", str(BUILD_ROOT))
    monkeypatch_module.setenv("QHW_VERILATOR_OPT", TEST_OPT)
    return BUILD_ROOT


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, cnn_path, mlp_path, digits):
    from qhw.api import quantize_model
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig

    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, path, cfg in (("cnn", cnn_path, QuantConfig()), ("mlp", mlp_path, QuantConfig(rounding="tflite")),
                            ("mlp_onnx", mlp_path, QuantConfig(rounding="onnx"))):
        qm = quantize_model(path, cfg, calib_x=digits["calib_x"][:300], log=lambda *_: None)
        save_qmodel(qm, d / f"{name}.qhw")
        out[name] = d / f"{name}.qhw"
    return out


def test_cli_gemm_json(sim_env, sim_build, capsys):
    from qhw.cli import main

    hw, _ = sim_build("4x4", "verilator")
    assert main(["simulate", "--rtl", str(hw.manifest_path), "--gemm", "40,13,6", "--seed", "3", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bit_exact"] is True and rep["cycles"] == rep["ideal_cycles"] == hw.config.ideal_cycles(40, 13, 6)
    assert 0 < rep["mac_utilization"] <= 1


@pytest.mark.parametrize("model,limit,stall", [("mlp", 40, 0.0), ("cnn", 6, 0.0), ("mlp", 12, 0.25),
                                               ("mlp_onnx", 30, 0.0)])
def test_whole_model_on_8x8(sim_env, sim_build, quantized, digits_files, tmp_path, capsys, model, limit, stall):
    """``qhw simulate`` of a quantized digits model: bit-exact with the golden model, every GEMM's
    cycle count equal to the manifest's model where exact, outputs/JUnit written."""
    from qhw.cli import main

    hw, _ = sim_build("8x8", "verilator")
    out, junit = tmp_path / "y.npz", tmp_path / "junit.xml"
    argv = ["simulate", str(quantized[model]), "--rtl", str(hw.manifest_path), "--data", str(digits_files["test"]),
            "--limit", str(limit), "--seed", str(SEED), "--stall", str(stall), "--json", "-o", str(out),
            "--junit", str(junit), "--batch", str(limit)]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    for key in ("bit_exact", "mismatches", "samples", "cycles_per_inference", "mac_utilization", "accuracy_float",
                "accuracy_quant", "accuracy_hw", "hw_vs_float"):
        assert key in rep
    assert set(rep["hw_vs_float"]) == {"mean_error", "std_error", "max_abs_error", "sqnr_db"}
    assert rep["bit_exact"] and rep["mismatches"] == 0 and rep["samples"] == limit
    assert rep["accuracy_hw"] == rep["accuracy_quant"]
    if stall == 0:
        assert sum(lc["cycle_checks"] for lc in rep["layers"]) > 0
        assert not any(lc["cycle_errors"] for lc in rep["layers"])
    with np.load(out) as z:
        assert z["y"].shape[0] == limit
    assert junit.read_text().count("<testcase ") == len(rep["layers"]) + 1
    assert not list(Path(rep["run_dir"]).glob("*.fst")) and not list(Path(rep["run_dir"]).glob("*.vcd"))


def test_icarus_waves_in_run_folder(sim_env, sim_build, capsys):
    """--waves writes the waveform into the run's own folder (Icarus: a separate build with tracing)."""
    from qhw.cli import main

    hw, _ = sim_build("2x2", "icarus")
    assert main(["simulate", "--rtl", str(hw.manifest_path), "--gemm", "3,5,3", "--simulator", "icarus",
                 "--waves", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bit_exact"]
    assert list(Path(rep["run_dir"]).glob("*.fst"))


def test_demo_end_to_end(sim_env, tmp_path):
    """``qhw demo``'s CNN path: quantize -> generate 8x8 -> simulate -> README with the hardware section."""
    from qhw.demo import run_demo

    out = tmp_path / "demo"
    assert run_demo(out_dir=out, models=("digits_cnn",), log=lambda *_: None, limit=8) == 0
    text = (out / "README.md").read_text()
    assert "## digits_cnn on the simulated 8x8 array" in text
    assert "bit-exact with the golden model: **yes**" in text
    rep = json.loads((out / "digits_cnn" / "hardware.json").read_text())
    assert rep["bit_exact"] and rep["samples"] == 8
    assert (out / "rtl" / "qhw_array_8x8.v").is_file() and (out / "digits_cnn" / "report.md").is_file()
