"""cocotb/Verilator runs of the network top (``qhw generate --top network``) on the digits CNN.

The program and weights go in through ``load`` (or are embedded), each test image streams in and
its logits back; every scratchpad write is compared with the golden model's (``qhw.sim.network``)
and, without stalls, every write's cycle and each layer's cycles with the compiler's prediction.
Deliberate faults (a wrong expectation, a corrupted weight word) must fail naming the layer.
Seeds: stalls use ``SEED``; the images are the first of the digits test split.
"""

from __future__ import annotations

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


def test_stalls_bit_exact(cnn):
    rep = sim(cnn, 1, stall=0.3)
    assert rep["bit_exact"], rep["first_mismatch"]
    # gaps and back-pressure can only delay (8 input beats feed 64 window words: gaps may cost nothing)
    assert rep["cycles_equal"] is None and rep["cycles_per_inference"] >= compiled_total(cnn)


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
