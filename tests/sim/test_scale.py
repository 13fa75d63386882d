"""Coverage and sharding of ``qhw simulate``: the parts without a simulator (shard cuts, merges,
the coverage file reader, the tie/saturation classifier against exact fractions), then one
coverage run (2x2, every rounding mode, directed ties, stalls: every functional bin hit) and one
model run sharded over local processes and a Dask ``LocalCluster`` (the same report as one
process). Random data state their seed (``SEED``)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from simcases import BUILD_ROOT, TEST_OPT, hardware

from qhw.arith import Requant, saturating_rounding_doubling_high_mul
from qhw.sim import coverage as cov
from qhw.sim.funcov import FunctionalCoverage, bin_names, merge, requant_cases
from qhw.sim.gemm import TIE_SCALE
from qhw.sim.shard import merge_layers, merge_results, shard_ranges

SEED = 11


# --------------------------------------------------------------------------- no simulator


@pytest.mark.parametrize("n,jobs,align", [(24, 2, 8), (10, 3, 1), (5, 8, 2), (1, 4, 64), (64, 1, 8), (17, 4, 4)])
def test_shard_ranges_cover_the_inputs_in_whole_batches(n, jobs, align):
    r = shard_ranges(n, jobs, align=align)
    assert r[0][0] == 0 and r[-1][1] == n and len(r) <= jobs
    assert all(a < b for a, b in r) and all(b == a2 for (_, b), (a2, _) in zip(r, r[1:]))
    assert all(a % align == 0 for a, _ in r)
    assert len(r) == min(jobs, -(-n // align))


def _layer(name, **kw):
    base = {"layer": name, "gemms": 1, "elements": 4, "mismatches": 0, "cycles": 10, "macs": 8, "cycle_checks": 1,
            "cycle_errors": [], "first_mismatch": None}
    return {**base, **kw}


def test_merge_layers_and_results_add_up_in_order():
    a = [_layer("fc1"), _layer("fc2", mismatches=2, first_mismatch="A")]
    b = [_layer("fc1", cycles=7, cycle_errors=[{"m": 1}]), _layer("fc2", first_mismatch="B")]
    got = merge_layers([a, b])
    assert [g["layer"] for g in got] == ["fc1", "fc2"]
    assert got[0]["cycles"] == 17 and got[0]["gemms"] == 2 and got[0]["cycle_errors"] == [{"m": 1}]
    assert got[1]["mismatches"] == 2 and got[1]["first_mismatch"] == "A"
    t = {"total": 1.0, "clock_loop": 0.5, "awaiting": 0.1, "host": 0.5, "sim_only_cycles_per_s": 100.0}
    parts = [{"samples": 8, "gemms": 2, "gemm_cycles": 20, "macs": 16, "sim_cycles": 30, "layers": a, "batches": [1],
              "first_mismatch": None, "time": t, "functional_coverage": {"bins": {"x": 0, "y": 1}}},
             {"samples": 4, "gemms": 2, "gemm_cycles": 17, "macs": 16, "sim_cycles": 25, "layers": b, "batches": [2],
              "first_mismatch": "B", "time": {**t, "total": 2.0}, "functional_coverage": {"bins": {"x": 3, "y": 0}}}]
    m = merge_results(parts)
    assert (m["samples"], m["gemm_cycles"], m["sim_cycles"], m["batches"]) == (12, 37, 55, [1, 2])
    assert m["first_mismatch"] == "B" and m["time"]["total"] == 2.0 and m["time"]["clock_loop"] == 1.0
    assert m["functional_coverage"] == {"bins": {"x": 3, "y": 1}, "missed": []}
    assert merge([{"bins": {"x": 0}}, {"bins": {"x": 0}}])["missed"] == ["x"]


def _exact_ties(rq: Requant, acc: np.ndarray) -> int:
    """Ties counted with exact fractions, from the rules' definitions (not from qhw.sim.funcov)."""
    n = 0
    m0 = np.broadcast_to(np.atleast_1d(rq.multiplier), (acc.shape[1],))
    sh = np.broadcast_to(np.atleast_1d(rq.shift), (acc.shape[1],))
    sc = np.broadcast_to(np.atleast_1d(rq.scale), (acc.shape[1],))
    for (_, j), a in np.ndenumerate(acc):
        a, m, s = int(a), int(m0[j]), int(sh[j])
        if rq.mode == "single":
            v = Fraction(a * m, 2 ** (31 - s))
            n += v - (v.numerator // v.denominator) == Fraction(1, 2)
        elif rq.mode == "onnx":
            v = Fraction(float(np.float32(a) * np.float32(sc[j])))
            n += v - (v.numerator // v.denominator) == Fraction(1, 2)
        else:
            x = max(min(a, 2**31 - 1), -2**31) << max(s, 0)
            x = (x + 2**31) % 2**32 - 2**31
            v = Fraction(x * m, 2**31)
            half1 = v - (v.numerator // v.denominator) == Fraction(1, 2)
            hi = int(saturating_rounding_doubling_high_mul(x, m))
            right = max(-s, 0)
            half2 = right > 0 and Fraction(hi, 2**right) - (hi >> right) == Fraction(1, 2)
            n += half1 or half2
    return n


@pytest.mark.parametrize("mode", ["single", "tflite", "onnx"])
@pytest.mark.parametrize("scale", [TIE_SCALE, 0.25, 0.0123, 3.0])
def test_requant_cases_match_exact_ties_and_the_clamp(mode, scale):
    rng = np.random.default_rng(SEED)
    acc = rng.integers(-3000, 3000, size=(16, 3), dtype=np.int64)
    acc[0, 0] = 2**33 + 1                       # beyond int32: the wide paths
    rq = Requant.from_scales(mode=mode, s_in=1.0, s_w=np.full(3, scale), s_out=1.0, zero_point=3, qmin=-128, qmax=127)
    got = requant_cases(rq, acc)
    assert got["tie"] == _exact_ties(rq, acc)
    free = Requant.from_scales(mode=mode, s_in=1.0, s_w=np.full(3, scale), s_out=1.0, zero_point=3,
                               qmin=-2**40, qmax=2**40).apply(acc)
    assert got["saturate_high"] == int(np.count_nonzero(free > 127))
    assert got["saturate_low"] == int(np.count_nonzero(free < -128))
    if scale == TIE_SCALE:                      # every odd accumulator is a tie (the directed GEMMs' premise)
        assert got["tie"] >= int(np.count_nonzero(acc % 2)) - 1


DAT = ("# SystemC::Coverage-3\n"
       "C '\x01f\x02/abs/top.v\x01l\x0210\x01page\x02v_line/top\x01o\x02block\x01h\x02top' 3\n"
       "C '\x01f\x02/abs/top.v\x01l\x0220\x01page\x02v_branch/top.requant.requant_0\x01o\x02if\x01h\x02top' 0\n"
       "C '\x01f\x02/abs/top.v\x01l\x0221\x01page\x02v_toggle/top.requant.requant_1\x01o\x02a[0]:0->1\x01h\x02x' 2\n"
       "C '\x01f\x02/abs/top.v\x01l\x0222\x01page\x02v_toggle/top.requant.requant_1\x01o\x02a[0]:1->0\x01h\x02x' 0\n")


def test_coverage_file_read_merged_and_summarized_per_component(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "coverage.dat").write_text(DAT)
    (tmp_path / "b.dat").write_text(DAT.replace("' 0\n", "' 5\n", 1))      # the branch covered in run b
    s = cov.write_coverage(tmp_path / "out", [tmp_path / "a" / "coverage.dat", tmp_path / "b.dat"], top="top",
                           name="top")
    assert s["components"] == {"top": {"lines": 1.0, "toggles": None}, "requant": {"lines": 1.0, "toggles": 0.5}}
    merged = cov.read_dat(tmp_path / "out" / "coverage.dat")
    assert sorted(merged.values()) == [0, 4, 5, 6] and "/abs/" not in (tmp_path / "out" / "coverage.dat").read_text()
    one = cov.summarize(cov.read_dat(tmp_path / "a" / "coverage.dat"), "top")
    assert one["components"]["requant"] == {"lines": 0.0, "toggles": 0.5}
    assert [(u["component"], u["file"], u["line"]) for u in one["uncovered_lines"]] == [("requant", "top.v", "20")]
    assert "requant.requant" in one["modules"]
    assert json.loads((tmp_path / "out" / "coverage.json").read_text())["components"]["requant"]["toggles"] == 0.5
    # Yosys' dummy ``if`` that starts an always @* block is not design logic: left out when the source is given
    lines = ["x"] * 25
    lines[19] = "    if (\\$auto$verilog_backend.cc:2355:dump_module$25 ) begin end"
    (tmp_path / "top.v").write_text("\n".join(lines) + "\n")
    assert cov.artefact_lines(tmp_path / "top.v") == {("top.v", "20")}
    s = cov.write_coverage(tmp_path / "out2", [tmp_path / "a" / "coverage.dat"], top="top", name="top",
                           verilog=tmp_path / "top.v")
    assert s["components"]["requant"]["lines"] is None and s["skipped"] == 1 and not s["uncovered_lines"]
    with pytest.raises(Exception, match="no coverage data"):
        cov.write_coverage(tmp_path / "x", [tmp_path / "missing.dat"], top="top", name="top")


# --------------------------------------------------------------------------- with the simulator


def test_coverage_run_hits_every_functional_bin(tmp_path):
    """A coverage build of the 2x2 array (all three rounding modes): per rounding mode a directed tie
    GEMM and random ones (saturating columns, ReLU clamps), one and many K tiles, M = 1 over K tiles
    (forwarding), stalls on every stream; every bin is hit, the Verilator points merge per component
    and the coverage build is not the normal build."""
    from qhw.sim.build import build_dir_for
    from qhw.sim.run import add_coverage, gemm_runs

    hw = hardware("2x2")
    c = hw.config
    runs = [{"name": f"{mode}", "seed": SEED + i, "in_gap": 0.3, "out_stall": 0.4,
             "gemms": [[6, c.rows + 1, 3, mode], [1, 3 * c.rows, 2, mode], [4, c.rows, 3, mode],
                       [6, c.rows + 3, 2, mode, {"real_scale": TIE_SCALE}]]}
            for i, mode in enumerate(c.rounding)]
    res, run_dir, _ = gemm_runs(hw.manifest_path, runs, seed=SEED, build_root=BUILD_ROOT, opt=TEST_OPT, coverage=True)
    assert all(r["mismatches"] == 0 for r in res["runs"]), [r["first_mismatch"] for r in res["runs"]]
    fc = res["functional_coverage"]
    assert set(fc["bins"]) == set(bin_names(c)) and fc["missed"] == [], fc
    report: dict = {}
    add_coverage(report, tmp_path / "cov", hw, res, [run_dir])
    comps = report["coverage"]
    assert {"accumulator", "array", "requant", "loader", "queue"} <= set(comps)
    for name, v in comps.items():
        assert v["toggles"] is None or 0 < v["toggles"] <= 1, name
        assert v["lines"] is None or 0 < v["lines"] <= 1, name
    md = (tmp_path / "cov" / "coverage.md").read_text()
    assert "| requant |" in md and "## Uncovered lines" in md and "forwarding/same_row" in md
    assert (tmp_path / "cov" / "coverage.dat").stat().st_size > 1000
    assert build_dir_for(hw, "verilator", BUILD_ROOT, opt=TEST_OPT, coverage=True) != \
        build_dir_for(hw, "verilator", BUILD_ROOT, opt=TEST_OPT)


def test_functional_coverage_counts_a_gemm_without_simulator():
    """The bins a GEMM hits, from its shape and operands alone (the mutation check of the bins:
    a GEMM with one K tile and no tie scale hits neither forwarding nor ties)."""
    from qhw.sim.gemm import random_gemms

    hw = hardware("2x2")
    fc = FunctionalCoverage(hw.config)
    for call in random_gemms(hw.config, [[3, 2, 2, "single"]], seed=SEED):
        fc.sample_gemm(call, 3, 2, 2)
    assert fc.bins["k_tiles/1"] == 1 and fc.bins["forwarding/same_row"] == 0 and fc.bins["rounding/single/tie"] == 0
    for call in random_gemms(hw.config, [[1, 5, 2, "onnx", {"real_scale": TIE_SCALE}]], seed=SEED):
        fc.sample_gemm(call, 1, 5, 2)
    assert fc.bins["k_tiles/many"] == 1 and fc.bins["forwarding/same_row"] == 1 and fc.bins["rounding/onnx/tie"] > 0


@pytest.fixture(scope="module")
def mlp_model(tmp_path_factory, mlp_path, digits):
    from qhw.api import quantize_model
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig

    qm = quantize_model(mlp_path, QuantConfig(), calib_x=digits["calib_x"][:200], log=lambda *_: None)
    path = tmp_path_factory.mktemp("scale") / "mlp.qhw"
    save_qmodel(qm, path)
    return path


def _without_timing(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if k not in ("time", "run_dir")}


def test_sharded_model_report_equals_single_process(mlp_model, digits_files):
    """The digits MLP on the 4x4 array, 24 samples in batches of 8 with stalls: one process, two
    local shards and two shards on a Dask LocalCluster give the same report and outputs."""
    from dask.distributed import Client, LocalCluster

    from qhw.sim.run import simulate_model

    hw = hardware("4x4")
    kw = dict(limit=24, batch=8, seed=SEED, stall=0.2, build_root=BUILD_ROOT, opt=TEST_OPT)
    one, y1 = simulate_model(mlp_model, digits_files["test"], hw.manifest_path, **kw)
    two, y2 = simulate_model(mlp_model, digits_files["test"], hw.manifest_path, jobs=2, **kw)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dsk, y3 = simulate_model(mlp_model, digits_files["test"], hw.manifest_path, jobs=2, executor="dask",
                                 scheduler=client, **kw)
    assert one["bit_exact"] and one["samples"] == 24 and len(one["batches"]) == 3
    assert (one["time"]["shards"], two["time"]["shards"], dsk["time"]["shards"]) == (1, 2, 2)
    assert _without_timing(two) == _without_timing(one)
    assert _without_timing(dsk) == _without_timing(one)
    assert np.array_equal(y1, y2) and np.array_equal(y1, y3)


def test_pytest_plugin_one_test_per_layer_and_batch(tmp_path, mlp_model, digits_files):
    """A user's test module with ``hardware_regression``: 2 batches x (the MLP's array layers + its
    output) tests, in a separate pytest run with ``--junitxml`` (one simulation for all of them)."""
    import os
    import subprocess
    import sys

    from qhw.qmodel import load_qmodel

    hw = hardware("4x4")
    (tmp_path / "test_net.py").write_text(
        "from qhw.pytest_plugin import hardware_regression\n"
        f"test_net_hw = hardware_regression({str(mlp_model)!r}, rtl={str(hw.manifest_path)!r}, "
        f"data={str(digits_files['test'])!r}, batch=8, limit=16)\n")
    repo = str(BUILD_ROOT.parent) if (BUILD_ROOT.parent / "qhw").is_dir() else ""
    env = {**os.environ, "QHW_SIM_BUILD": str(BUILD_ROOT), "QHW_VERILATOR_OPT": TEST_OPT,
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:qhw", "-p", "qhw.pytest_plugin",
                        "--junitxml=junit.xml", "-p", "no:cacheprovider", "test_net.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from qhw.runtime import array_layers

    layers = [ly.name for ly in array_layers(load_qmodel(mlp_model).graph, "mlp")]
    assert len(layers) >= 2
    assert f"{2 * (len(layers) + 1)} passed" in r.stdout
    xml = (tmp_path / "junit.xml").read_text()
    assert xml.count("<testcase ") == 2 * (len(layers) + 1)
    assert all(f"batch{b}-{name}" in xml for b in (0, 1) for name in (*layers, "output"))


def test_pytest_plugin_case_fails_on_a_mismatch():
    """The generated tests fail on a wrong layer, wrong outputs, a cycle error or a missing layer."""
    from qhw.pytest_plugin import check_case

    ok = {"layer": "fc1", "mismatches": 0, "cycle_errors": [], "first_mismatch": None}
    rep = {"batches": [{"start": 0, "stop": 8, "output_mismatches": 0, "layers": [ok]},
                       {"start": 8, "stop": 16, "output_mismatches": 3,
                        "layers": [{**ok, "mismatches": 2, "first_mismatch": "first mismatch: row 1"},
                                   {**ok, "layer": "fc2", "cycle_errors": [{"m": 1}]}]}]}
    check_case(rep, 0, "fc1")
    check_case(rep, 0, "output")
    for layer, msg in (("fc1", "row 1"), ("output", "3 outputs"), ("fc2", "cycle counts"), ("fc3", "no GEMM")):
        with pytest.raises(AssertionError, match=msg):
            check_case(rep, 1, layer)


def test_scale_flag_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """--coverage off Verilator, --executor dask without a scheduler: one line, exit 2, nothing built."""
    from qhw.cli import main
    from qhw.hw.config import ArrayConfig
    from qhw.hw.generate import write

    monkeypatch.setenv("QHW_SIM_BUILD", str(tmp_path / "sim_build"))
    _, j = write(ArrayConfig(rows=2, cols=2, max_k=16), name="small", out_dir=tmp_path / "rtl")
    for argv, msg in (
            (["--gemm", "2,2,2", "--simulator", "icarus", "--coverage", "c"],
             "--coverage needs --simulator verilator, not icarus"),
            (["--gemm", "2,2,2", "--executor", "dask"], "--executor dask needs --scheduler ADDR (tcp://host:8786)")):
        assert main(["simulate", "--rtl", str(j), *argv]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"qhw: error: {msg}"]
    with pytest.raises(SystemExit):
        main(["simulate", "--rtl", str(j), "--gemm", "2,2,2", "--jobs", "0"])
    assert "--jobs: must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "sim_build").exists()
