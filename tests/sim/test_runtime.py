"""Host runtime (``qhw.runtime``) with the golden backend, model/array checks, payload packing from
the manifest, and ``qhw simulate`` argument errors. No simulator needed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qhw.api import quantize_model
from qhw.cli import main
from qhw.errors import ConfigError
from qhw.executor import run_int
from qhw.hw.config import ArrayConfig
from qhw.hw.driver import plan_gemm, stream_beats
from qhw.hw.generate import manifest
from qhw.quantize import QuantConfig
from qhw.runtime import GoldenBackend, Runtime, check_model, config_for_model
from qhw.sim.gemm import random_gemm
from qhw.sim.manifest import StreamCodec

SEED = 20261126


@pytest.fixture(scope="module")
def cnn(cnn_path, digits):
    return quantize_model(cnn_path, QuantConfig(), calib_x=digits["calib_x"][:200], log=lambda *_: None)


@pytest.fixture(scope="module")
def mlp(mlp_path, digits):
    return quantize_model(mlp_path, QuantConfig(rounding="tflite"), calib_x=digits["calib_x"][:200],
                          log=lambda *_: None)


@pytest.mark.parametrize("acc_depth", [512, 7])
def test_runtime_golden_equals_run_int(cnn, mlp, digits, acc_depth):
    """The same lowering the hardware gets (im2col, zero point folded into the bias, M chunks of at
    most acc_depth) reproduces the golden model exactly."""
    x = digits["test_x"][:40]
    for qm in (cnn, mlp):
        cfg = config_for_model(qm.graph, rows=4, cols=4, acc_depth=acc_depth)
        y = Runtime(qm.graph, cfg).run(x, GoldenBackend())[0]
        assert np.array_equal(y, run_int(qm.graph, x)[0])


def test_runtime_grouped_strided_dilated_conv(tmp_path):
    rng = np.random.default_rng(SEED)
    f = np.float32
    inits = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(f), "b1": rng.normal(0, 0.1, 8).astype(f),
             "w2": rng.normal(0, 0.3, (8, 2, 3, 3)).astype(f), "b2": rng.normal(0, 0.1, 8).astype(f)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2], pads=[1, 0, 2, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="grouped", group=4, dilations=[2, 2],
                              pads=[2, 2, 2, 2])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 11, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / "zoo.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = rng.normal(0, 1, (16, 3, 11, 12)).astype(f)
    qm = quantize_model(path, QuantConfig(), calib_x=x, log=lambda *_: None)
    y = Runtime(qm.graph, config_for_model(qm.graph, rows=2, cols=2, acc_depth=20)).run(x, GoldenBackend())[0]
    assert np.array_equal(y, run_int(qm.graph, x)[0])


def test_config_for_model(cnn, mlp):
    c = config_for_model(cnn.graph)
    assert (c.rows, c.cols, c.max_k, c.rounding, c.per_channel, c.act_bits, c.weight_bits) == \
        (8, 8, 144, ("single",), True, 8, 8)
    assert config_for_model(mlp.graph, rows=4, cols=2).rounding == ("tflite",)
    check_model(cnn.graph, c)


def test_check_model_refuses_with_one_line(cnn):
    with pytest.raises(ConfigError) as e:
        check_model(cnn.graph, ArrayConfig(max_k=64), "rtl_out/qhw_array_8x8.json")
    assert str(e.value) == ("rtl_out/qhw_array_8x8.json: layer '/conv3/Conv' needs K=144 but max_k is 64; "
                            "regenerate with qhw generate --max-k 144")
    with pytest.raises(ConfigError, match=r"^a.json: layer '/conv1/Conv' uses rounding 'single' but the array "
                                          r"has tflite; layer '/conv1/Conv' has per-channel requantization but "
                                          r"the array is built per-tensor; regenerate with qhw generate "
                                          r"--rounding tflite,single without --per-tensor$"):
        check_model(cnn.graph, ArrayConfig(rounding=("tflite",), per_channel=False), "a.json")
    with pytest.raises(ConfigError, match=r"int8 weights but the array is built for int4; regenerate with "
                                          r"qhw generate --weight-bits 8$"):
        check_model(cnn.graph, ArrayConfig(weight_bits=4), "a.json")
    with pytest.raises(ConfigError, match=r"built for uint8; regenerate with qhw generate --act-bits 8$"):
        check_model(cnn.graph, ArrayConfig(act_signed=False), "a.json")


@pytest.mark.parametrize("params", [dict(rows=4, cols=4), dict(rows=2, cols=3, per_channel=False, act_signed=False,
                                                                 rounding=("single",)),
                                    dict(rows=3, cols=2, act_bits=16, weight_bits=4)])
def test_manifest_codecs_pack_like_the_driver(params):
    """Payloads packed from the manifest's field offsets equal the Amaranth layouts' own packing."""
    c = ArrayConfig(**params)
    man = manifest(c, name="t")
    rng = np.random.default_rng(SEED)
    call = random_gemm(c, 5, 2 * c.rows + 1, c.cols + 1, mode=c.rounding[0], rng=rng)
    p = plan_gemm(c, call.x, call.w, call.bias, call.requant)
    want = stream_beats(p)
    cod = {s: StreamCodec(man["streams"][s]) for s in ("cmd", "params", "weights", "act")}
    assert cod["cmd"].pack(cod["cmd"].columns([p.command])) == want["cmd"]
    assert cod["params"].pack(cod["params"].columns(p.params)) == want["params"]
    assert cod["weights"].pack(np.asarray(p.weights)) == want["weights"]
    assert cod["act"].pack(np.asarray(p.act)) == want["act"]
    out = StreamCodec(man["streams"]["out"])
    vals = rng.integers(*c.act_range, size=(7, c.cols), endpoint=True)
    assert np.array_equal(out.unpack(out.pack(vals)), vals)


def test_simulate_cli_errors(tmp_path, capsys, cnn_path, digits_files, monkeypatch):
    """User errors end in one line and exit status 2, before anything is built or simulated."""
    from qhw.hw.generate import write
    from qhw.qmodel import save_qmodel

    monkeypatch.setenv("QHW_SIM_BUILD", str(tmp_path / "sim_build"))
    _, j = write(ArrayConfig(rows=2, cols=2, max_k=16), name="small", out_dir=tmp_path / "rtl")
    qm = quantize_model(cnn_path, QuantConfig(), calib_x=np.load(digits_files["calib"])["x"][:50],
                        log=lambda *_: None)
    save_qmodel(qm, tmp_path / "cnn.qhw")
    cases = [
        ([str(tmp_path / "cnn.qhw"), "--rtl", str(j), "--data", str(digits_files["test"])],
         f"{j}: layer '/conv3/Conv' needs K=144 but max_k is 16; regenerate with qhw generate --max-k 144"),
        (["--rtl", str(j)], "qhw simulate needs QMODEL and --data DATA.npz (or --gemm M,K,N)"),
        (["--rtl", str(j), "--gemm", "4,x,4"], "--gemm must be M,K,N (three positive integers), not '4,x,4'"),
        (["--rtl", str(tmp_path / "none.json"), "--gemm", "4,4,4"],
         f"{tmp_path / 'none.json'}: no such manifest (qhw generate writes NAME.json beside NAME.v)"),
        (["--rtl", str(j), "--gemm", "4,17,4"],
         f"{j}: --gemm needs K=17 but max_k is 16; regenerate with qhw generate --max-k 17"),
    ]
    for argv, msg in cases:
        assert main(["simulate", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"qhw: error: {msg}"]
    assert not (tmp_path / "sim_build").exists()


def test_junit_has_one_case_per_layer(tmp_path):
    from qhw.sim.run import write_junit

    rep = {"samples": 3, "bit_exact": False, "mismatches": 2, "gemm_cycles": 10, "layers": [
        {"layer": "a", "gemms": 1, "elements": 4, "mismatches": 0, "cycles": 5, "cycle_errors": [],
         "first_mismatch": None},
        {"layer": "b<&>", "gemms": 1, "elements": 4, "mismatches": 2, "cycles": 5, "cycle_errors": [],
         "first_mismatch": "first mismatch: layer 'b<&>' ..."}]}
    write_junit(tmp_path / "j.xml", rep)
    import xml.etree.ElementTree as ET

    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == ["a", "b<&>", "model output vs golden model"]
    assert suite.get("failures") == "2"
    assert json.dumps(rep)  # JSON-serializable as the CLI prints it
