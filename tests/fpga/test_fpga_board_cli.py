"""``qhw board run`` / ``qhw board info`` through the simulated board top (``--port sim``), and their
one-line errors."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qhw.api import quantize_model
from qhw.cli import main
from qhw.executor import run_int
from qhw.hw.generate import write
from qhw.metrics import accuracy
from qhw.qmodel import save_qmodel
from qhw.quantize import QuantConfig
from qhw.runtime import config_for_model

SEED = 11


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3 -> 2 -> 2 Dense model (seed 11), its data and a 2x2 board manifest that holds it."""
    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(SEED)
    f = np.float32
    inits = {"w1": rng.normal(0, 0.5, (2, 3)).astype(f), "b1": rng.normal(0, 0.1, 2).astype(f),
             "w2": rng.normal(0, 0.5, (2, 2)).astype(f), "b2": rng.normal(0, 0.1, 2).astype(f)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), d / "tiny.onnx")
    x = rng.normal(0, 1, (3, 3)).astype(f)
    y = rng.integers(0, 2, 3)
    np.savez(d / "data.npz", x=x, y=y)
    qm = quantize_model(d / "tiny.onnx", QuantConfig(), calib_x=rng.normal(0, 1, (32, 3)).astype(f),
                        log=lambda *_: None)
    save_qmodel(qm, d / "tiny.qhw")
    _, manifest = write(config_for_model(qm.graph, rows=2, cols=2, acc_depth=8), name="board", out_dir=d / "rtl")
    return d, qm, x, y, manifest


def test_board_run_sim_with_faults_is_bit_exact(tiny, capsys):
    d, qm, x, y, manifest = tiny
    argv = ["board", "run", str(d / "tiny.qhw"), "--port", "sim", "--rtl", str(manifest), "--data",
            str(d / "data.npz"), "--json", "--faults", "0.005", "--seed", "5"]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bit_exact"] is True and rep["mismatches"] == 0 and rep["samples"] == 3
    assert rep["accuracy_hw"] == accuracy(run_int(qm.graph, x)[0], y)
    assert rep["inferences_per_s"] > 0 and rep["link_errors_recovered"] >= 0


def test_board_info_sim(tiny, capsys):
    _, qm, _, _, manifest = tiny
    assert main(["board", "info", "--port", "sim", "--rtl", str(manifest), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == config_for_model(qm.graph, rows=2, cols=2, acc_depth=8).to_manifest()["parameters"]


def test_board_cli_errors(tiny, capsys):
    d, _, _, _, manifest = tiny
    run = ["board", "run", str(d / "tiny.qhw"), "--data", str(d / "data.npz")]
    cases = [(run + ["--port", "sim"], "--port sim needs --rtl DIR/NAME.json (the board top to simulate)"),
             (run + ["--port", "/dev/nonexistent-qhw", "--faults", "0.1"],
              "--faults injects faults into the simulated link only (--port sim)"),
             (run + ["--port", "sim", "--rtl", str(manifest), "--faults", "1.5"],
              "--faults must be a rate in [0, 1), not 1.5")]
    for argv, msg in cases:
        assert main(argv) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"qhw: error: {msg}"]
    assert main(["board", "info", "--port", "/dev/nonexistent-qhw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qhw: error: cannot open /dev/nonexistent-qhw: ")
