"""Quantizer, golden model and error analysis on the built-in digits models (torch exports)."""

from __future__ import annotations

import numpy as np
import pytest

from qhw.analysis import analyze, auto_keep_float, sensitivity
from qhw.api import accuracy, predictions, quantize_model, requantize_variant, run_batched
from qhw.calibrate import TensorStats, choose_range, kl_threshold, qparams_from_range
from qhw.errors import ConfigError
from qhw.executor import Trace, run_float, run_int
from qhw.kernels import exact_float_dtype, matmul_exact
from qhw.onnx_import import import_model
from qhw.qmodel import load_qmodel, save_qmodel
from qhw.quantize import QuantConfig, quantize_weights


def _quantize(path, digits, **kw):
    return quantize_model(path, QuantConfig(**kw), calib_x=digits["calib_x"], log=lambda m: None)


# --------------------------------------------------------------------------- import and transforms


def test_cnn_import_folds_batchnorm_and_relu(cnn_path):
    graph, is_qdq = import_model(cnn_path)
    assert not is_qdq
    assert [n.op for n in graph.nodes] == ["Conv", "Conv", "MaxPool", "Conv", "GlobalAveragePool", "Flatten",
                                          "Dense"]
    assert [n.attrs.get("activation", {}).get("kind") for n in graph.nodes[:2]] == ["relu", "relu"]


@pytest.mark.parametrize("name", ["cnn_path", "mlp_path"])
def test_float_reference_matches_onnxruntime(name, request, digits):
    import onnxruntime as ort

    path = request.getfixturevalue(name)
    graph, _ = import_model(path)
    x = digits["test_x"]
    ours = run_float(graph, x)[0]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("rounding", ["single", "tflite", "onnx"])
@pytest.mark.parametrize("name", ["cnn_path", "mlp_path"])
def test_int8_accuracy_within_half_point(name, rounding, request, digits):
    qm = _quantize(request.getfixturevalue(name), digits, rounding=rounding)
    yf = run_batched(qm.graph, digits["test_x"], integer=False)
    yq = run_batched(qm.graph, digits["test_x"], integer=True)
    af, aq = accuracy(yf, digits["test_y"]), accuracy(yq, digits["test_y"])
    assert af >= 0.96
    assert aq >= af - 0.005, (af, aq)


@pytest.mark.parametrize("kw", [dict(weight_bits=4), dict(weight_bits=16, act_bits=16),
                                dict(granularity="per-tensor"), dict(weight_symmetric=False),
                                dict(act_symmetric=True), dict(calib_method="percentile"),
                                dict(calib_method="mse"), dict(calib_method="entropy"),
                                dict(bias_correction=True)],
                         ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_schemes_run_and_stay_accurate(kw, cnn_path, digits):
    qm = _quantize(cnn_path, digits, **kw)
    aq = accuracy(run_batched(qm.graph, digits["test_x"], integer=True), digits["test_y"])
    assert aq >= (0.90 if kw.get("weight_bits") == 4 else 0.97), aq
    w = qm.graph.nodes[0].qparams["weight"]
    bits = kw.get("weight_bits", 8)
    assert w.min() >= -(1 << (bits - 1)) and w.max() <= (1 << (bits - 1)) - 1


def test_int16_is_closer_to_float_than_int8(cnn_path, digits):
    sq = {}
    for bits in (8, 16):
        qm = _quantize(cnn_path, digits, weight_bits=bits, act_bits=bits)
        sq[bits] = analyze(qm, digits["test_x"][:100], None, with_sensitivity=False)["output_sqnr_db"]
    assert sq[16] > sq[8] + 30, sq


def test_bias_correction_reduces_mean_output_error(cnn_path, digits):
    mean = {}
    for bc in (False, True):
        qm = _quantize(cnn_path, digits, weight_bits=4, bias_correction=bc)
        mean[bc] = abs(analyze(qm, digits["calib_x"], None, with_sensitivity=False)["output"]["mean_error"])
    assert mean[True] < mean[False], mean


# --------------------------------------------------------------------------- integer semantics


def test_golden_model_is_integer_and_bounded(cnn_path, digits):
    qm = _quantize(cnn_path, digits)
    tr = Trace()
    run_int(qm.graph, digits["test_x"][:32], trace=tr)
    for node in qm.graph.quantized_nodes():
        codes = tr.codes[node.outputs[0]]
        assert np.issubdtype(codes.dtype, np.integer)
        assert codes.min() >= node.quant["qmin"] and codes.max() <= node.quant["qmax"]
        qp = qm.graph.tensors[node.outputs[0]]
        if node.attrs.get("activation", {}).get("kind") == "relu":
            assert node.quant["qmin"] == qp.zero_point  # ReLU is the requantization clamp


def test_float_matmul_paths_are_exact_and_guarded():
    rng = np.random.default_rng(1234)
    a = rng.integers(-128, 128, size=(64, 4096))
    b = rng.integers(-128, 128, size=(4096, 32))
    assert exact_float_dtype(a, b) is np.float64  # 4096 * 128 * 128 = 2**26 > 2**24
    np.testing.assert_array_equal(matmul_exact(a, b), a.astype(np.int64) @ b.astype(np.int64))
    # float32 right at its limit: 1040 * 127 * 127 = 16_774_160 < 2**24, every partial sum exact
    full = np.full((3, 1040), 127, dtype=np.int64)
    assert exact_float_dtype(full, full.T) is np.float32
    np.testing.assert_array_equal(matmul_exact(full, full.T), np.full((3, 3), 16_774_160))
    over = np.full((3, 1041), 127, dtype=np.int64)
    assert exact_float_dtype(over, over.T) is np.float64
    big = np.full((2, 3), 1 << 26, dtype=np.int64)
    assert exact_float_dtype(big, big.T) is None  # 3 * 2**52 >= 2**53: falls back to int64
    np.testing.assert_array_equal(matmul_exact(big, big.T), big @ big.T)


def test_weight_quantization_tflite_spec():
    rng = np.random.default_rng(7)
    w = rng.normal(size=(5, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0  # an all-zero channel must not divide by zero
    q, s, zp = quantize_weights(w, bits=8, symmetric=True, per_channel=True)
    assert q.min() >= -127 and q.max() <= 127 and np.all(zp == 0)
    assert np.all(np.abs(q.reshape(5, -1)).max(axis=1)[[0, 1, 3, 4]] == 127)
    np.testing.assert_allclose(q * s[:, None, None, None], w, atol=float(s.max()) / 2 + 1e-7)


def test_calibration_ranges():
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.normal(size=100000), [50.0]]).astype(np.float32)
    st = TensorStats(float(v.min()), float(v.max()), v)
    lo, hi = choose_range(st, "minmax", bits=8, symmetric=False)
    assert hi == 50.0
    for method in ("percentile", "mse", "entropy"):
        lo, hi = choose_range(st, method, bits=8, symmetric=False)
        assert 2.0 < hi < 20.0, (method, hi)  # the outlier is clipped
    assert 2.0 < kl_threshold(np.abs(v), levels=255) < 20.0
    qp = qparams_from_range(0.0, 2.55, bits=8, symmetric=False)
    assert qp.zero_point == -128 and qp.scale == pytest.approx(0.01)
    with pytest.raises(ConfigError, match=r"^calibration method must be one of"):
        choose_range(st, "magic", bits=8, symmetric=False)


# --------------------------------------------------------------------------- partial quantization


def test_keep_float_runs_end_to_end(cnn_path, digits):
    qm = _quantize(cnn_path, digits, keep_float=("/conv2/Conv",))
    kept = [n.name for n in qm.graph.nodes if n.quant is None]
    assert "/conv2/Conv" in kept and "/pool/MaxPool" in kept  # the pool follows its float producer
    assert any("--keep-float" in n for n in qm.notes)
    assert accuracy(run_batched(qm.graph, digits["test_x"], integer=True), digits["test_y"]) >= 0.97


def test_unknown_keep_float_name_is_a_config_error(cnn_path, digits):
    with pytest.raises(ConfigError, match=r"^--keep-float nope: no node of that name"):
        _quantize(cnn_path, digits, keep_float=("nope",))


def test_sensitivity_and_auto_keep_float(cnn_path, digits):
    qm = _quantize(cnn_path, digits, weight_bits=4)
    report = analyze(qm, digits["calib_x"][:200], digits["calib_y"][:200])
    names = [r["name"] for r in report["sensitivity"]]
    assert sorted(names) == sorted(n.name for n in qm.graph.linear_nodes())
    sq = [r["output_sqnr_db"] for r in report["sensitivity"]]
    assert sq == sorted(sq)  # most sensitive (lowest SQNR) first
    keep = auto_keep_float(qm, digits["calib_x"], digits["calib_y"], 0.0, log=lambda m: None)
    g = requantize_variant(qm, keep)
    yf = run_batched(g, digits["calib_x"], integer=False)
    yq = run_batched(g, digits["calib_x"], integer=True)
    assert accuracy(yq, digits["calib_y"]) >= accuracy(yf, digits["calib_y"])
    assert any(n.op in ("Dense", "Conv") for n in g.quantized_nodes())


def test_auto_keep_float_budget_zero_keeps_some_layers_quantized(cnn_path, digits):
    """Per-tensor int4 weights lose top-1 agreement with float on the calibration set, so budget 0
    must keep some layer float; a layer that alone loses nothing must stay quantized."""
    qm = _quantize(cnn_path, digits, weight_bits=4, granularity="per-tensor")
    x = digits["calib_x"]
    y_float = run_batched(qm.graph, x, integer=False)
    assert (predictions(run_batched(qm.graph, x, integer=True)) != predictions(y_float)).any()
    ranking = sensitivity(qm, x, None)
    harmless = [r["name"] for r in ranking if r["score"] == 1.0]
    assert harmless  # quantizing that layer alone keeps full agreement: a quantized layer is possible
    keep = auto_keep_float(qm, x, None, 0.0, log=lambda m: None)
    g = requantize_variant(qm, keep)
    assert 0 < len(keep) < len(qm.graph.linear_nodes())
    assert [n.name for n in g.linear_nodes() if n.quant is not None]  # at least one layer stayed quantized
    np.testing.assert_array_equal(predictions(run_batched(g, x, integer=True)), predictions(y_float))


# --------------------------------------------------------------------------- analysis and file format


def test_analysis_report_fields(mlp_path, digits):
    qm = _quantize(mlp_path, digits)
    r = analyze(qm, digits["test_x"], digits["test_y"], with_sensitivity=False)
    assert r["samples"] == digits["test_x"].shape[0]
    assert 0.9 < r["accuracy_quant"] <= 1.0 and 0.9 < r["accuracy_float"] <= 1.0
    assert r["output_sqnr_db"] > 25
    assert [L["name"] for L in r["layers"]] == [n.name for n in qm.graph.linear_nodes()]
    for L in r["layers"]:
        assert L["max_abs_error"] >= abs(L["mean_error"]) and L["std_error"] >= 0
        assert 0.99 < L["cosine_similarity"] <= 1.0 + 1e-9


def test_qmodel_round_trip_is_byte_stable(cnn_path, digits, tmp_path):
    qm = _quantize(cnn_path, digits)
    a, b = tmp_path / "a.qhw", tmp_path / "b.qhw"
    save_qmodel(qm, a)
    qm2 = load_qmodel(a)
    save_qmodel(qm2, b)
    assert a.read_bytes() == b.read_bytes()
    x = digits["test_x"][:64]
    np.testing.assert_array_equal(run_int(qm.graph, x)[0], run_int(qm2.graph, x)[0])
    import zipfile
    assert all(i.filename.endswith((".json", ".npy")) for i in zipfile.ZipFile(a).infolist())  # no pickle
