"""The command-line contract: commands, flags, JSON keys, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qhw.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cnn_qmodel(tmp_path_factory, cnn_path, digits_files):
    out = tmp_path_factory.mktemp("cli") / "cnn.qhw"
    assert main(["quantize", str(cnn_path), "--calib", str(digits_files["calib"]), "-o", str(out)]) == 0
    return out


def test_quantize_run_analyze_export(capsys, cnn_qmodel, digits_files, digits, tmp_path):
    code, out, err = _run(capsys, "run", cnn_qmodel, "--data", digits_files["test"], "-o", tmp_path / "y.npz")
    assert code == 0
    with np.load(tmp_path / "y.npz") as z:
        assert z["y"].shape == (digits["test_x"].shape[0], 10) and z["y"].dtype == np.float32

    code, out, err = _run(capsys, "analyze", cnn_qmodel, "--data", digits_files["test"], "--json",
                          "-o", tmp_path / "report")
    assert code == 0
    r = json.loads(out)
    for key in ("samples", "accuracy_float", "accuracy_quant", "output_sqnr_db", "layers"):
        assert key in r
    assert r["samples"] == digits["test_x"].shape[0] and 0 <= r["accuracy_quant"] <= 1
    for layer in r["layers"]:
        assert {"name", "sqnr_db", "mean_error", "std_error", "max_abs_error"} <= set(layer)
    for f in ("report.md", "report.json", "sqnr.png", "errors.png"):
        assert (tmp_path / "report" / f).stat().st_size > 0

    code, out, err = _run(capsys, "export-onnx", cnn_qmodel, "-o", tmp_path / "q.onnx")
    assert code == 0
    onnx.checker.check_model(onnx.load(tmp_path / "q.onnx"))


def test_quantize_flags(capsys, mlp_path, digits_files, tmp_path):
    code, out, err = _run(capsys, "quantize", mlp_path, "--calib", digits_files["calib"], "-o", tmp_path / "m.qhw",
                          "--weight-bits", "4", "--act-bits", "16", "--granularity", "per-tensor",
                          "--calib-method", "percentile", "--rounding", "tflite",
                          "--keep-float", "/fc3/Gemm", "--auto-keep-float", "1.0")
    assert code == 0, err
    from qhw.qmodel import load_qmodel
    qm = load_qmodel(tmp_path / "m.qhw")
    assert qm.config.weight_bits == 4 and qm.config.act_bits == 16 and qm.config.rounding == "tflite"
    assert "/fc3/Gemm" in qm.config.keep_float
    assert qm.graph.node("/fc3/Gemm").quant is None


def _conv_model(path, **conv_attrs):
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 3, 3], np.ones(18, np.float32))
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv_same", **conv_attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _nan_data(path):
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[1, 0, 2, 3] = np.nan
    np.savez(path, x=x)
    return path


BAD_INPUTS = {
    "missing model": (lambda t, f: ["quantize", t / "nope.onnx", "--calib", f["calib"]],
                      r"nope\.onnx: no such file"),
    "not onnx": (lambda t, f: ["quantize", f["calib"], "--calib", f["calib"]], r"calib\.npz: not an ONNX model"),
    "unsupported attribute": (lambda t, f: ["quantize", _conv_model(t / "same.onnx", auto_pad="SAME_UPPER"),
                                            "--calib", f["calib"], "--strict"],
                              r"node 'conv_same' \(Conv\): attribute auto_pad=SAME_UPPER is not supported"),
    "shape mismatch": (lambda t, f: ["quantize", _conv_model(t / "c.onnx"), "--calib", _flat(t, f)],
                       r"x has shape \(500, 64\), model input 'x' expects \(N, 1, 8, 8\)"),
    "nan in calibration": (lambda t, f: ["quantize", _conv_model(t / "c.onnx"), "--calib", _nan_data(t / "n.npz")],
                           r"n\.npz: 'x' contains 1 NaN or Inf value"),
    "empty calibration": (lambda t, f: ["quantize", _conv_model(t / "c.onnx"), "--calib", _empty(t)],
                          r"e\.npz: 'x' is empty"),
    "missing data": (lambda t, f: ["quantize", _conv_model(t / "c.onnx"), "--calib", t / "none.npz"],
                     r"none\.npz: no such file"),
    "unknown keep-float": (lambda t, f: ["quantize", _conv_model(t / "c.onnx"), "--calib", f["calib"],
                                         "--keep-float", "ghost"], r"--keep-float ghost: no node of that name"),
    "float model without calibration": (lambda t, f: ["quantize", _conv_model(t / "c.onnx")],
                                        r"a float model needs calibration data"),
}


def _flat(t, f):
    with np.load(f["calib"]) as z:
        np.savez(t / "flat.npz", x=z["x"].reshape(-1, 64))
    return t / "flat.npz"


def _empty(t):
    np.savez(t / "e.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    return t / "e.npz"


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_error(case, capsys, tmp_path, digits_files):
    make, pattern = BAD_INPUTS[case]
    out_file = tmp_path / "out.qhw"
    code, out, err = _run(capsys, *make(tmp_path, digits_files), "-o", out_file)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qhw: error: "), err
    import re
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not out_file.exists()
    assert not any(p.name.startswith(".out.qhw") for p in tmp_path.iterdir())  # no temp file left


def test_keep_float_lets_an_unsupported_node_run(capsys, tmp_path, digits_files):
    model = _conv_model(tmp_path / "same.onnx", auto_pad="SAME_UPPER")
    code, out, err = _run(capsys, "quantize", model, "--calib", digits_files["calib"], "-o", tmp_path / "m.qhw",
                          "--keep-float", "conv_same")
    assert code == 0, err
    code, out, err = _run(capsys, "run", tmp_path / "m.qhw", "--data", digits_files["test"], "-o", tmp_path / "y.npz")
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as z:
        assert z["y"].shape[1:] == (2, 8, 8)


def test_run_rejects_wrong_qmodel_file(capsys, tmp_path, digits_files):
    bad = tmp_path / "bad.qhw"
    bad.write_text("hello")
    code, out, err = _run(capsys, "run", bad, "--data", digits_files["test"], "-o", tmp_path / "y.npz")
    assert code == 2 and "not a qhw quantized model" in err and not (tmp_path / "y.npz").exists()


def test_entry_point_in_a_real_process(tmp_path):
    """The installed console script: help works, user errors exit 2 without a traceback."""
    ok = subprocess.run([sys.executable, "-m", "qhw.cli", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "quantize" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "qhw.cli", "quantize", str(tmp_path / "x.onnx"), "-o",
                          str(tmp_path / "y.qhw")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no such file" in bad.stderr


def test_generate_for_a_quantized_model(capsys, cnn_qmodel, tmp_path):
    """`qhw generate --for QMODEL` sizes the array for the model; explicit flags win."""
    code, out, err = _run(capsys, "generate", "--for", cnn_qmodel, "--rows", "4", "--cols", "4",
                          "--name", "cnn_array", "-o", tmp_path)
    assert code == 0, err
    manifest = json.loads((tmp_path / "cnn_array.json").read_text())
    p = manifest["parameters"]
    assert (p["rows"], p["cols"], p["max_k"]) == (4, 4, 16 * 3 * 3)  # conv3: 16 channels x 3x3
    assert p["rounding"] == ["single"] and p["per_channel"] is True
    assert (tmp_path / "cnn_array.v").stat().st_size > 0


def test_analyze_batch_size(capsys, cnn_qmodel, digits_files):
    reports = {}
    for flags in ([], ["--batch-size", "7"], ["--batch-size", "1000"]):
        code, out, err = _run(capsys, "analyze", cnn_qmodel, "--data", digits_files["test"], "--json",
                              "--no-sensitivity", *flags)
        assert code == 0, err
        reports[tuple(flags)] = json.loads(out)
    base = reports[()]
    from qhw.qmodel import load_qmodel
    assert [o["name"] for o in base["outputs"]] == load_qmodel(cnn_qmodel).graph.outputs
    assert base["outputs"][0]["sqnr_db"] == base["output_sqnr_db"]
    for r in reports.values():
        assert r.keys() == base.keys()
        assert r["top1_agreement"] == base["top1_agreement"] and r["accuracy_quant"] == base["accuracy_quant"]
        for a, b in zip(r["layers"], base["layers"]):
            assert a["sqnr_db"] == pytest.approx(b["sqnr_db"], rel=1e-5)
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(cnn_qmodel), "--data", str(digits_files["test"]), "--batch-size", "0"])
    assert e.value.code == 2
    assert "--batch-size: must be a positive integer, not '0'" in capsys.readouterr().err
