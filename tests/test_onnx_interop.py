"""Models from other tools: onnxruntime quantize_static (QDQ) imports, skl2onnx exports,
and qhw's own QDQ export read back by ONNX Runtime. In ``onnx`` rounding mode the
golden model must equal ONNX Runtime exactly."""

from __future__ import annotations

import numpy as np
import pytest
from ort_ref import SATURATION_FREE_WEIGHT_BITS, U8S8_EXACT, lsb_mismatches, ort_output

from qhw.api import accuracy, quantize_model, run_batched
from qhw.export_onnx import export_qdq
from qhw.quantize import QuantConfig


@pytest.fixture(scope="session")
def ort_qdq_models(tmp_path_factory, digits, cnn_path, mlp_path):
    """The demo models quantized by ONNX Runtime's quantize_static (QDQ, int8; 7-bit weights on CPUs
    whose ORT int8 kernels saturate, see tests/ort_ref.py)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"x": digits["calib_x"][i:i + 100]} for i in range(0, 500, 100))

        def get_next(self):
            return next(self.batches, None)

    out = {}
    d = tmp_path_factory.mktemp("ortq")
    for name, path in (("cnn", cnn_path), ("mlp", mlp_path)):
        for per_channel in (False, True):
            for act in ("s8", "u8"):
                dst = d / f"{name}_pc{int(per_channel)}_{act}.onnx"
                quantize_static(str(path), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, weight_type=QuantType.QInt8, reduce_range=not U8S8_EXACT,
                                activation_type=QuantType.QInt8 if act == "s8" else QuantType.QUInt8)
                out[(name, per_channel, act)] = dst
    return out


@pytest.mark.parametrize("act", ["s8", "u8"], ids=["int8-act", "uint8-act"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_ort_qdq_model_reproduced_exactly(name, per_channel, act, ort_qdq_models, digits):
    path = ort_qdq_models[(name, per_channel, act)]
    qm = quantize_model(path, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
    assert qm.is_qdq
    x = digits["test_x"]
    assert lsb_mismatches(qm, run_batched(qm.graph, x, integer=True), ort_output(path, x)) == 0


@pytest.mark.parametrize("rounding", ["single", "tflite"])
def test_ort_qdq_model_other_roundings_within_one_lsb(rounding, ort_qdq_models, digits):
    path = ort_qdq_models[("cnn", True, "s8")]
    qm = quantize_model(path, QuantConfig(rounding=rounding), calib_x=None, log=lambda m: None)
    x = digits["test_x"]
    ours, theirs = run_batched(qm.graph, x, integer=True), ort_output(path, x)
    scale = qm.graph.tensors[qm.graph.outputs[0]].scale
    # rounding differences propagate through 4 layers, so the output may drift by a few LSB
    match = float(np.mean(np.abs(ours - theirs) <= scale / 100))
    print(f"{rounding}: output match rate vs ORT {100 * match:.2f} %")
    assert accuracy(ours, digits["test_y"]) >= accuracy(theirs, digits["test_y"]) - 0.01


@pytest.mark.parametrize("name", ["cnn_path", "mlp_path"])
def test_export_onnx_round_trip_exact_in_onnx_mode(name, request, digits, tmp_path):
    cfg = QuantConfig(rounding="onnx", weight_bits=SATURATION_FREE_WEIGHT_BITS)     # see tests/ort_ref.py
    qm = quantize_model(request.getfixturevalue(name), cfg, calib_x=digits["calib_x"], log=lambda m: None)
    out = tmp_path / "model.qdq.onnx"
    export_qdq(qm, out)
    x = digits["test_x"]
    assert lsb_mismatches(qm, run_batched(qm.graph, x, integer=True), ort_output(out, x)) == 0
    # and the exported file imports back into the same integer model
    back = quantize_model(out, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
    np.testing.assert_array_equal(run_batched(back.graph, x, integer=True), run_batched(qm.graph, x, integer=True))


def test_skl2onnx_mlp_partial_quantization(skl_mlp, digits):
    x = digits["calib_x"].reshape(-1, 64)
    notes = []
    qm = quantize_model(skl_mlp, QuantConfig(), calib_x=x, log=notes.append)
    float_ops = {n.attrs.get("op_type") for n in qm.graph.nodes if n.quant is None}
    assert {"Softmax", "ArgMax"} <= float_ops
    assert any("Softmax" in n and "ArgMax" in n for n in qm.notes)
    assert [n.op for n in qm.graph.quantized_nodes()] == ["Dense", "Dense"]
    xt = digits["test_x"].reshape(-1, 64)
    yf = run_batched(qm.graph, xt, integer=False)
    yq = run_batched(qm.graph, xt, integer=True)
    np.testing.assert_array_equal(yf, ort_output(skl_mlp, xt))  # float reference = ORT on the labels output
    assert accuracy(yq, digits["test_y"]) >= accuracy(yf, digits["test_y"]) - 0.01


def test_skl2onnx_per_channel_works_where_ort_quantizer_fails(skl_mlp, digits):
    """MEASURED.md: ORT's QDQ quantizer crashes on this graph with per_channel=True; qhw handles it."""
    x = digits["calib_x"].reshape(-1, 64)
    qm = quantize_model(skl_mlp, QuantConfig(granularity="per-channel"), calib_x=x, log=lambda m: None)
    assert all(n.qparams["weight_scale"].size > 1 for n in qm.graph.quantized_nodes())
