"""cocotb/Verilator (and Icarus, where installed) runs of the generated accelerator.

Every configuration is generated and built once (``simcases.built``); each test runs random GEMMs
through ``qhw.sim.run.gemm_runs``, the harness ``qhw simulate`` uses (``qhw.sim.cocotb_job``).
Random GEMMs (M = 1, K and N not multiples of the array, K = max_k, full-rate tiles, one whose odd
accumulators are all rounding ties, one with a real scale above 1) for every rounding mode, once
without stalls (cycle counts must equal the manifest's analytical model wherever it is exact), once
with random input gaps and output back-pressure (bit-exact), and all modes interleaved under stalls;
after the last GEMM no further result may come. The seed is ``QHW_SIM_SEED`` (default 1) and is printed on failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from simcases import BUILD_ROOT, CONFIGS, TEST_OPT, config

from qhw.sim.gemm import TIE_SCALE
from qhw.sim.run import gemm_runs

SEED = int(os.environ.get("QHW_SIM_SEED", "1"))
IN_GAP, OUT_STALL = 0.2, 0.3


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


def runs(name: str, modes) -> list[dict]:
    """Per mode: the shapes without stalls, then with stalls; then every mode in turn, with stalls."""
    out = []
    c = config(name)
    for i, mode in enumerate(modes):
        # plus directed GEMMs: odd accumulators all rounding ties (where the modes differ), and a real
        # scale above 1 (a positive shift; random scales stay below 1, coverage found it never ran)
        gemms = [[*s, mode] for s in shapes(name)] + [
            [c.min_m_for_full_rate, c.rows + 1, c.cols + 1, mode, {"real_scale": TIE_SCALE}],
            [2, c.rows, c.cols, mode, {"real_scale": 3.0}]]
        out.append({"name": f"{mode}-nostall", "seed": SEED + 1000 * i, "gemms": gemms})
        out.append({"name": f"{mode}-stalls", "seed": SEED + 1000 * i + 1, "in_gap": IN_GAP, "out_stall": OUT_STALL,
                    "gemms": gemms})
    if len(modes) > 1:
        mixed = [[*s, modes[j % len(modes)]] for j, s in enumerate(shapes(name))]
        out.append({"name": "mixed-stalls", "seed": SEED + 999, "in_gap": IN_GAP, "out_stall": OUT_STALL,
                    "gemms": mixed})
    return out


def run_case(built, name: str, simulator: str, *, modes=None) -> dict:
    """Every run bit-exact and, without stalls, cycle-exact; returns the runs by name."""
    hw, _ = built(name, simulator)
    plan = runs(name, list(modes or hw.config.rounding))
    res, run_dir, _ = gemm_runs(hw.manifest_path, plan, seed=SEED, simulator=simulator, build_root=BUILD_ROOT,
                                opt=TEST_OPT)
    got = {r["name"]: r for r in res["runs"]}
    assert list(got) == [r["name"] for r in plan]
    problems = [f"{k}: {v['first_mismatch'] or v['cycle_errors']}" for k, v in got.items()
                if v["first_mismatch"] or v["mismatches"] or v["cycle_errors"]]
    assert not problems, f"{name} on {simulator}, seed {SEED} (QHW_SIM_SEED): {problems}; see {run_dir}"
    for r in plan:
        assert [g["mode"] for g in got[r["name"]]["gemms"]] == [g[3] for g in r["gemms"]]
    return got


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_gemms_verilator(sim_build, name):
    got = run_case(sim_build, name, "verilator")
    for mode in config(name).rounding:
        nostall = got[f"{mode}-nostall"]
        # the full-rate shapes are exact in the analytical model, so at least those were compared
        assert nostall["cycle_checks"] >= 2
        assert all(g["cycles"] == g["ideal_cycles"] for g in nostall["gemms"] if g["ideal_cycles"] is not None)


def test_random_gemms_icarus_matches_verilator(sim_build):
    """Icarus gives the same results and, with the same seeds, the same cycle counts, stalls included."""
    ica = run_case(sim_build, "4x4", "icarus")
    ver = run_case(sim_build, "4x4", "verilator")
    for key in ver:
        assert [g["cycles"] for g in ica[key]["gemms"]] == [g["cycles"] for g in ver[key]["gemms"]], key


def test_cycles_match_amaranth_simulation(sim_build):
    """Where the analytical model is not exact (several tiles, small M), the Verilog takes exactly as
    many cycles as the Amaranth design in Amaranth's simulator."""
    from qhw.hw.driver import plan_gemm
    from qhw.hw.simulate import simulate
    from qhw.sim.gemm import random_gemms

    name = "2x2"
    run = runs(name, ["single"])[0]
    verilog = run_case(sim_build, name, "verilator", modes=["single"])[run["name"]]
    c = config(name)
    calls = random_gemms(c, run["gemms"], seed=run["seed"])      # the GEMMs the bench ran
    progs = [plan_gemm(c, x.x, x.w, x.bias, x.requant) for x in calls]
    res = simulate(progs)
    ends = np.cumsum([p.out_beats for p in progs]) - 1
    amaranth = [res.out_cycles[e] - res.cmd_cycles[i] for i, e in enumerate(ends)]
    assert [g["cycles"] for g in verilog["gemms"]] == amaranth


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
    """``qhw demo --top accel``'s CNN path: quantize -> generate 8x8 -> simulate -> README with the hardware
    section (the network engine path, the default, is in test_network.py)."""
    from qhw.demo import run_demo

    out = tmp_path / "demo"
    assert run_demo(out_dir=out, models=("digits_cnn",), log=lambda *_: None, limit=8, top="accel") == 0
    text = (out / "README.md").read_text()
    assert "## digits_cnn on the simulated 8x8 array" in text
    assert "bit-exact with the golden model: **yes**" in text
    rep = json.loads((out / "digits_cnn" / "hardware.json").read_text())
    assert rep["bit_exact"] and rep["samples"] == 8
    assert (out / "rtl" / "qhw_array_8x8.v").is_file() and (out / "digits_cnn" / "report.md").is_file()
