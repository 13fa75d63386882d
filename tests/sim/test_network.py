"""cocotb/Verilator runs of the network top (``qhw generate --top network``) on the digits CNN.

The program and weights go in through ``load`` (or are embedded), each test image streams in and
its logits back; every scratchpad write is compared with the golden model's (``qhw.sim.network``)
and, without stalls, every write's cycle and each layer's cycles with the compiler's prediction.
Deliberate faults (a wrong expectation, a corrupted weight word) must fail naming the layer.
Seeds: stalls use ``SEED``; the images are the first of the digits test split.
"""

from __future__ import annotations

import numpy as np
import pytest
from simcases import BUILD_ROOT, TEST_OPT

from qhw.cli import main
from qhw.sim.run import simulate_model

SEED = 3
ROWS = COLS = 4               # a small engine: the Verilog generates and builds fastest
NAME = f"qhw_network_{ROWS}x{COLS}"   # qhw demo's name at this size: the demo test reuses this build
# the keys of qhw simulate's JSON (today's, plus the network top's)
KEYS = {"bit_exact", "mismatches", "samples", "cycles_per_inference", "mac_utilization", "accuracy_float",
        "accuracy_quant", "accuracy_hw", "hw_vs_float", "top", "latency_cycles", "host_bytes_per_inference",
        "layers", "first_mismatch", "gemms", "gemm_cycles", "run_dir", "time"}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory, cnn_path, digits, digits_files):
    """The quantized digits CNN, its network top (memories sized by --for) and, embedded, a second one."""
    from qhw.api import quantize_model
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig

    d = tmp_path_factory.mktemp("net")
    q = d / "cnn.qhw"
    save_qmodel(quantize_model(cnn_path, QuantConfig(), calib_x=digits["calib_x"], log=lambda m: None), q)
    for name, extra in ((NAME, []), ("nete", ["--embed"])):
        assert main(["generate", "--top", "network", "--rows", str(ROWS), "--cols", str(COLS), "--for", str(q),
                     *extra, "--name", name, "-o", str(d / "rtl")]) == 0
    return {"q": q, "rtl": d / "rtl" / f"{NAME}.json", "embed": d / "rtl" / "nete.json", "data": digits_files["test"],
            "dir": d}


def compiled_total(cnn) -> int:
    """The compiler's cycles per inference for the generated engine (``qhw compile --rtl``)."""
    from qhw.engine.compiler import compile_model
    from qhw.engine.cycles import predict
    from qhw.qmodel import load_qmodel
    from qhw.sim.manifest import load_hardware

    engine = load_hardware(cnn["rtl"]).engine
    return predict(compile_model(load_qmodel(cnn["q"]), engine).program, engine).total


def sim(cnn, limit, rtl=None, **kw):
    return simulate_model(cnn["q"], cnn["data"], rtl or cnn["rtl"], limit=limit, seed=SEED, build_root=BUILD_ROOT,
                          opt=TEST_OPT, **kw)[0]


def test_digits_cnn_bit_exact_and_cycles_equal(cnn):
    rep = sim(cnn, 2)
    assert set(rep) >= KEYS, KEYS - set(rep)
    assert rep["top"] == "network" and rep["samples"] == 2 and rep["program_loaded"]
    assert rep["bit_exact"] and rep["mismatches"] == 0, rep["first_mismatch"]
    assert rep["cycles_equal"], (rep["cycle_errors"], rep["layers"])
    total = compiled_total(cnn)
    assert rep["cycles_per_inference"] == rep["predicted_cycles_per_inference"] == total
    assert [L["measured_cycles"] for L in rep["layers"]] == [L["predicted_cycles"] for L in rep["layers"]]
    assert [L["name"] for L in rep["layers"]] == ["x", "/conv1/Conv", "/conv2/Conv", "/conv3/Conv", "/fc/Gemm",
                                                  "logits"]
    assert rep["latency_cycles"] == total - 1           # first input beat (cycle 0) to the last output beat
    assert rep["host_bytes_per_inference"] == 64 + 10        # the image in, the logits out
    assert rep["host_beats_per_inference"] == 64 // ROWS + -(-10 // ROWS)       # the last one padded
    assert rep["mac_utilization"] == pytest.approx(152384 / (ROWS * COLS * total))


def _without_timing(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if k not in ("time", "run_dir")}


def test_stalls_bit_exact_and_sharded_runs_equal(cnn):
    """Two images with stalls (seed SEED) in one process, in two local processes and in two shards on
    a Dask LocalCluster (one build): bit-exact, and the same report and outputs apart from timings."""
    from dask.distributed import Client, LocalCluster

    kw = dict(limit=2, seed=SEED, stall=0.3, build_root=BUILD_ROOT, opt=TEST_OPT)
    one, y1 = simulate_model(cnn["q"], cnn["data"], cnn["rtl"], **kw)
    assert one["bit_exact"], one["first_mismatch"]
    # gaps and back-pressure can only delay (8 input beats feed 64 window words: gaps may cost nothing)
    assert one["cycles_equal"] is None and one["cycles_per_inference"] >= compiled_total(cnn)
    two, y2 = simulate_model(cnn["q"], cnn["data"], cnn["rtl"], jobs=2, **kw)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dsk, y3 = simulate_model(cnn["q"], cnn["data"], cnn["rtl"], jobs=2, executor="dask", scheduler=client, **kw)
    assert (one["time"]["shards"], two["time"]["shards"], dsk["time"]["shards"]) == (1, 2, 2)
    assert _without_timing(two) == _without_timing(one)
    assert _without_timing(dsk) == _without_timing(one)
    assert np.array_equal(y1, y2) and np.array_equal(y1, y3)


def test_network_merge_of_shards():
    """``merge_network_results`` without a simulator: counts and lists joined, cycles' min / max / sum
    over every image, the first shard's first mismatch, cycle errors up to five."""
    from qhw.sim.shard import merge_network_results

    t = {"total": 1.0, "clock_loop": 0.5, "awaiting": 0.25, "host": 0.5, "sim_only_cycles_per_s": None}
    a = {"samples": 2, "write_mismatches": 0, "output_mismatches": 1, "sim_cycles": 10, "first_mismatch": None,
         "cycle_errors": ["a"] * 4, "totals": [5, 6], "latencies": [4, 5], "beats": [[1, 2, 3]] * 2,
         "measured": [[1, 4], [2, 4]], "measured_min": [1, 4], "measured_max": [2, 4], "measured_sum": [3, 8],
         "time": t, "loaded": True, "functional_coverage": {"bins": {"x": 1, "y": 0}}}
    b = {**a, "samples": 1, "write_mismatches": 2, "first_mismatch": "B", "cycle_errors": ["b"] * 3, "totals": [9],
         "latencies": [8], "beats": [[1, 2, 3]], "measured": [[0, 9]], "measured_min": [0, 9],
         "measured_max": [0, 9], "measured_sum": [0, 9], "time": {**t, "total": 2.0},
         "functional_coverage": {"bins": {"x": 0, "y": 0}}}
    m = merge_network_results([a, b])
    assert (m["samples"], m["write_mismatches"], m["output_mismatches"], m["sim_cycles"]) == (3, 2, 2, 20)
    assert m["first_mismatch"] == "B" and m["cycle_errors"] == ["a"] * 4 + ["b"]
    assert m["totals"] == [5, 6, 9] and m["latencies"] == [4, 5, 8] and len(m["beats"]) == 3
    assert (m["measured_min"], m["measured_max"], m["measured_sum"]) == ([0, 4], [2, 9], [3, 17])
    assert m["time"]["total"] == 2.0 and m["time"]["clock_loop"] == 1.0
    assert m["functional_coverage"] == {"bins": {"x": 1, "y": 0}, "missed": ["y"]}


def test_wrong_expectation_names_the_layer(cnn):
    # the expected 6th write of descriptor 2 (conv2) off by one: the checker must name it
    rep = sim(cnn, 1, job_extra={"mutate": {"2,5": 1}})
    assert not rep["bit_exact"] and rep["mismatches"] >= 1
    assert rep["first_mismatch"].startswith("first mismatch: layer '/conv2/Conv' (Conv+MaxPool, descriptor 2)")


def test_corrupted_load_word_names_the_layer(cnn):
    # a weight byte of conv2 (descriptor 2, its tiles from w_base) corrupted in the load stream
    from qhw.engine.compiler import compile_model
    from qhw.qmodel import load_qmodel
    from qhw.sim.manifest import load_hardware

    prog = compile_model(load_qmodel(cnn["q"]), load_hardware(cnn["rtl"]).engine).program
    assert prog.descriptors[2].op == "MATMUL"
    rep = sim(cnn, 1, job_extra={"corrupt_image": [prog.descriptors[2]["w_base"] + 5]})
    assert rep["program_loaded"] and not rep["bit_exact"]
    assert rep["first_mismatch"].startswith("first mismatch: layer '/conv2/Conv'"), rep["first_mismatch"]


def test_embedded_model_runs_without_loading(cnn):
    rep = sim(cnn, 1, rtl=cnn["embed"])
    assert not rep["program_loaded"] and rep["load_words"] == 0
    assert rep["bit_exact"] and rep["cycles_equal"], rep["first_mismatch"]


def test_model_that_does_not_fit_is_refused_in_one_line(cnn, mlp_path, digits, capsys):
    from qhw.api import quantize_model
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig

    mlp = cnn["dir"] / "mlp.qhw"
    save_qmodel(quantize_model(mlp_path, QuantConfig(), calib_x=digits["calib_x"], log=lambda m: None), mlp)
    assert main(["simulate", str(mlp), "--rtl", str(cnn["rtl"]), "--data", str(cnn["data"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit the engine" in err and "smallest that fits" in err, err


def test_demo_runs_the_network_engine(cnn, tmp_path, monkeypatch):
    """``qhw demo`` (default --top network): the CNN whole on the engine, bit-exact, cycles equal, the
    per-layer table in the README."""
    import json

    from qhw.demo import run_demo

    monkeypatch.setenv("QHW_SIM_BUILD", str(BUILD_ROOT))
    monkeypatch.setenv("QHW_VERILATOR_OPT", TEST_OPT)
    out = tmp_path / "demo"
    lines = []
    assert run_demo(out_dir=out, models=("digits_cnn",), log=lines.append, limit=2, size=(ROWS, COLS)) == 0
    text = (out / "README.md").read_text()
    assert f"## digits_cnn on the simulated {ROWS}x{COLS} network engine" in text
    assert "bit-exact with the golden model: **yes**" in text
    assert "measured cycles equal to the compiler's prediction: **yes**" in text
    assert "| /conv2/Conv | Conv+MaxPool |" in text
    assert any(line.startswith("bit-exact: yes; cycles equal to the compiler's prediction: yes") for line in lines)
    rep = json.loads((out / "digits_cnn" / "hardware.json").read_text())
    assert rep["top"] == "network" and rep["bit_exact"] and rep["samples"] == 2
    assert (out / "rtl" / f"{NAME}.v").read_bytes() == cnn["rtl"].with_suffix(".v").read_bytes()


def test_functional_bins_counted_on_the_reference_model(cnn, digits):
    """The network bins of one digits image, without a simulator: the padded windows per side are
    the CNN's geometry counted by hand (INPUT pads the 8x8 image left/right for conv1's sliding
    window, conv1 pads top/bottom, conv2 (8x8) and conv3 (4x4) every side, the Dense none); every
    MATMUL has several K tiles on a 4-row array; the 10 logits fill 2.5 beats; no table, no Add."""
    from qhw.engine.compiler import compile_model
    from qhw.engine.run import segment_steps
    from qhw.qmodel import load_qmodel
    from qhw.sim.manifest import load_hardware
    from qhw.sim.netcov import CoverageModel, NetworkCoverage, bin_names

    qm = load_qmodel(cnn["q"])
    engine = load_hardware(cnn["rtl"]).engine
    program = compile_model(qm, engine).program
    cov = NetworkCoverage(("single",))
    model = CoverageModel(program, act_words=engine.act_words, coverage=cov)
    calls = next(segment_steps(program, qm.graph, digits["test_x"][:1]))
    model.run_segment(calls[0].segment, calls[0].inputs)
    b = cov.bins
    assert list(b) == bin_names(("single",))
    assert {s: b[f"padding/{s}"] for s in ("top", "bottom", "left", "right")} == \
        {"top": 8 + 8 + 4, "bottom": 8 + 8 + 4, "left": 8 + 8 + 4, "right": 8 + 8 + 4}
    assert (b["k_tiles/1"], b["k_tiles/many"], b["output/partial_beat"]) == (0, 4, 1)
    assert b["table/lookup"] == b["add/run"] == b["add/saturate"] == b["segments/many"] == 0
    assert b["rounding/single/saturate_low"] > 0 and b["pool/max_tie"] > 0      # ReLU clamps, clamped maxima
    assert set(cov.to_json()["missed"]) >= {"k_tiles/1", "table/lookup", "add/run", "backpressure/o"}


def test_coverage_per_component_and_functional_bins(cnn, tmp_path, capsys, monkeypatch):
    """``qhw simulate --coverage DIR --json`` on the network top (its own coverage build): line and
    toggle coverage per engine component, the functional bins (``qhw.sim.netcov``) with what the
    digits CNN never exercises (no table, no Add, no single K tile on 4 rows) listed as missed."""
    import json

    monkeypatch.setenv("QHW_SIM_BUILD", str(BUILD_ROOT))
    monkeypatch.setenv("QHW_VERILATOR_OPT", TEST_OPT)
    out = tmp_path / "cov"
    assert main(["simulate", str(cnn["q"]), "--rtl", str(cnn["rtl"]), "--data", str(cnn["data"]), "--limit", "1",
                 "--stall", "0.3", "--seed", str(SEED), "--coverage", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bit_exact"], rep["first_mismatch"]
    comps = rep["coverage"]
    assert {"fetch_input", "fetch_issue", "fetch_loader", "fetch_params", "fetch_writeback", "input", "issue",
            "loader", "params", "array", "accumulator", "requant", "writeback", "pool", "add", "output", "load",
            "scratch", "weights", "top"} <= set(comps), set(comps)
    for name, v in comps.items():
        assert 0 < v["lines"] <= 1 and 0 < v["toggles"] <= 1, (name, v)
    assert comps["array"]["lines"] == 1.0 and comps["add"]["lines"] < 1.0     # no ADD in the CNN
    fc = rep["functional_coverage"]
    hit = {k for k, v in fc["bins"].items() if v}
    assert {"backpressure/i", "k_tiles/many", "padding/top", "padding/bottom", "padding/left", "padding/right",
            "pool/max_tie", "output/partial_beat", "rounding/single/saturate_low"} <= hit, fc
    assert {"k_tiles/1", "table/lookup", "add/run", "segments/many"} <= set(fc["missed"])
    md = (out / "coverage.md").read_text()
    assert "| writeback |" in md and "## Uncovered lines" in md and "| add/run | **missed** |" in md
    assert "_sim" not in json.loads((out / "coverage.json").read_text())["modules"]     # the wrapper is not design


def test_post_synth_refusals_in_one_line(cnn, cnn_path, digits, capsys):
    """Before any synthesis: --post-synth with --jobs, and an embedded manifest simulated with another
    model (its netlist's memories could not be rebuilt with the embedded image)."""
    from qhw.api import quantize_model
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig

    base = ["--data", str(cnn["data"]), "--limit", "1"]
    assert main(["simulate", str(cnn["q"]), "--rtl", str(cnn["rtl"]), *base, "--post-synth", "ulx3s-85f",
                 "--jobs", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "qhw: error: --post-synth simulates one netlist in one process; leave --jobs out\n", err
    other = cnn["dir"] / "other.qhw"         # the same CNN calibrated on fewer images: other scales
    save_qmodel(quantize_model(cnn_path, QuantConfig(), calib_x=digits["calib_x"][:20], log=lambda m: None), other)
    assert main(["simulate", str(other), "--rtl", str(cnn["embed"]), *base, "--post-synth", "icebreaker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--post-synth rebuilds the engine with its embedded model" in err, err

