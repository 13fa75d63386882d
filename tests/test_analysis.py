"""Error analysis in bounded memory: chunked results equal the whole-data computation, every
model output is reported, fixed-batch models run in chunks of their batch size."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from qhw.analysis import analyze
from qhw.api import quantize_model, run_batched
from qhw.errors import DataError
from qhw.executor import Trace, check_input, run_float, run_int
from qhw.graph import LINEAR_OPS
from qhw.metrics import predictions
from qhw.quantize import QuantConfig, quantize_graph

# Integer results do not depend on the chunks; the float32 reference does, by a few ulps (BLAS
# blocks a product by its shape), and float64 sums by their order. One quantization step flipped
# would move a figure by about a scale (1e-2), far outside the tolerance.
REL, ABS = 1e-5, 1e-5


# --------------------------------------------------------------------------- reference


def _stats(f, q, limits=None) -> dict:
    """Error statistics of whole arrays in one go (the reference for the streaming ErrorStats)."""
    f = np.asarray(f, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    e = q - f
    noise, signal = float(e @ e), float(f @ f)
    d = {"sqnr_db": None if noise == 0 else 10 * math.log10(signal / noise), "mean_error": float(e.mean()),
         "std_error": float(e.std()), "max_abs_error": float(np.abs(e).max()),
         "cosine_similarity": float(f @ q) / math.sqrt(signal * float(q @ q))}
    if limits is not None:
        d["saturation_rate"] = float(np.mean((f < limits[0]) | (f > limits[1])))
    return d


def _reference(qm, x, labels) -> dict:
    """The analysis as computed before streaming: whole-data traces, one variant graph per layer."""
    g = qm.graph
    ft, it = Trace(), Trace()
    yf = run_float(g, x, trace=ft)[0]
    yq = run_int(g, x, trace=it)[0]
    layers = []
    for n in g.nodes:
        if n.quant is not None and n.op in LINEAR_OPS:
            k, qp = n.outputs[0], g.tensors[n.outputs[0]]
            lim = ((qp.qmin - qp.zero_point - 0.5) * qp.scale, (qp.qmax - qp.zero_point + 0.5) * qp.scale)
            layers.append({"name": n.name, **_stats(ft.values[k], it.values[k], lim)})
    linear = [n.name for n in g.linear_nodes()]
    sens = []
    for name in linear:
        v, _ = quantize_graph(g, qm.ranges, qm.config, imported=qm.imported,
                              keep_float=tuple(k for k in linear if k != name))
        y = run_int(v, x)[0]
        s = _stats(yf, y)
        sens.append({"name": name, "output_sqnr_db": s["sqnr_db"], "output_max_abs_error": s["max_abs_error"],
                     "score": float(np.mean(predictions(y) == labels))})
    return {"output": _stats(yf, yq), "layers": layers, "sensitivity": sens,
            "accuracy_float": float(np.mean(predictions(yf) == labels)),
            "accuracy_quant": float(np.mean(predictions(yq) == labels)),
            "top1_agreement": float(np.mean(predictions(yf) == predictions(yq)))}


def _close(a, b, path="") -> None:
    """Equal structures, floats within REL (None for exact zero error must match exactly)."""
    if isinstance(b, dict):
        for k in b:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(b, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            _close(u, v, f"{path}[{i}]")
    elif isinstance(b, float) and b is not None:
        assert a is not None and math.isclose(a, b, rel_tol=REL, abs_tol=ABS), (path, a, b)
    else:
        assert a == b, (path, a, b)


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("name", ["cnn_path", "mlp_path"])
def test_batch_sizes_agree_with_whole_data_computation(name, request, digits):
    qm = quantize_model(request.getfixturevalue(name), QuantConfig(weight_bits=4), calib_x=digits["calib_x"],
                        log=lambda m: None)
    x, y = digits["test_x"][:60], digits["test_y"][:60]
    ref = _reference(qm, x, y)
    reports = {b: analyze(qm, x, y, batch_size=b) for b in (1, 7, len(x))}
    for b, r in reports.items():
        _close(r["output"], ref["output"])
        _close([{k: L[k] for k in ref["layers"][0]} for L in r["layers"]], ref["layers"])
        _close(sorted(r["sensitivity"], key=lambda s: s["name"]), sorted(ref["sensitivity"], key=lambda s: s["name"]))
        for k in ("accuracy_float", "accuracy_quant", "top1_agreement"):
            assert r[k] == ref[k], (b, k)
        assert r["output_sqnr_db"] == r["output"]["sqnr_db"]
        assert [o["name"] for o in r["outputs"]] == qm.graph.outputs
        assert r.keys() == reports[1].keys()
        # histogram samples: the first errors in data order, whatever the chunks
        for k, v in reports[1]["_errors"].items():
            np.testing.assert_allclose(r["_errors"][k], v, rtol=0, atol=1e-5)


def test_default_batch_size_is_bounded_by_memory_budget(cnn_path, digits, monkeypatch):
    import qhw.executor as executor

    qm = quantize_model(cnn_path, QuantConfig(), calib_x=digits["calib_x"], log=lambda m: None)
    x = digits["test_x"]
    assert executor.default_batch_size(qm.graph, x) == executor.DEFAULT_BATCH  # tiny model: the cap
    trace = Trace()
    run_float(qm.graph, x[:1], trace=trace)
    per_sample = sum(v.nbytes for v in trace.values.values())
    monkeypatch.setattr(executor, "MEMORY_BUDGET", 10 * 3 * per_sample)
    assert executor.default_batch_size(qm.graph, x) == 10


def test_memory_does_not_grow_with_the_number_of_samples(mlp_path, digits):
    """Past the histogram samples (20000 errors per tensor: 2000 images of 10 outputs), the peak
    of NumPy allocations is that of one chunk, whatever the number of samples."""
    import tracemalloc

    qm = quantize_model(mlp_path, QuantConfig(), calib_x=digits["calib_x"], log=lambda m: None)
    x, y = np.concatenate([digits["test_x"]] * 12), np.concatenate([digits["test_y"]] * 12)
    peaks = []
    for n in (2500, 5000):
        xs, ys = x[:n].copy(), y[:n].copy()
        tracemalloc.start()
        analyze(qm, xs, ys, batch_size=100)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.05 * peaks[0], peaks


# --------------------------------------------------------------------------- several outputs


def test_skl2onnx_classifier_reports_every_output(skl_mlp, digits):
    qm = quantize_model(skl_mlp, QuantConfig(), calib_x=digits["calib_x"].reshape(-1, 64),
                        log=lambda m: None)
    x, y = digits["test_x"].reshape(-1, 64), digits["test_y"]
    r = analyze(qm, x, y)
    sess = ort.InferenceSession(str(skl_mlp), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]  # label (int64), then the probabilities
    assert len(names) == 2 and names[0] == "label"
    # (the import drops skl2onnx's final Identity, so the probabilities keep their inner name)
    assert [o["name"] for o in r["outputs"]] == qm.graph.outputs and qm.graph.outputs[0] == "label"
    assert len(qm.graph.outputs) == 2
    for o in r["outputs"]:
        assert set(o) == {"name", "sqnr_db", "mean_error", "std_error", "max_abs_error", "cosine_similarity"}
    probs = r["outputs"][1]
    assert isinstance(r["output_sqnr_db"], float) and r["output_sqnr_db"] == probs["sqnr_db"] > 10
    # the float side is ONNX Runtime's own probabilities
    p_ort = sess.run([names[1]], {sess.get_inputs()[0].name: x})[0]
    p_int = run_int(qm.graph, x)[1]
    expect = _stats(p_ort, p_int)
    assert math.isclose(probs["sqnr_db"], expect["sqnr_db"], rel_tol=1e-4)
    assert math.isclose(probs["max_abs_error"], expect["max_abs_error"], rel_tol=1e-4, abs_tol=1e-6)
    assert all(s["output_sqnr_db"] is not None for s in r["sensitivity"])  # probabilities, not labels


def test_variant_graphs_share_onnx_runtime_sessions(skl_mlp, digits):
    from qhw.analysis import sensitivity
    from qhw.onnx_node import _SESSIONS

    qm = quantize_model(skl_mlp, QuantConfig(), calib_x=digits["calib_x"].reshape(-1, 64),
                        log=lambda m: None)
    x = digits["test_x"][:20].reshape(-1, 64)
    run_int(qm.graph, x)
    run_float(qm.graph, x)
    before = len(_SESSIONS)
    sensitivity(qm, x, None)
    assert len(_SESSIONS) == before


def test_analysis_does_not_import_api():
    code = "import sys, qhw.analysis; assert 'qhw.api' not in sys.modules; import qhw.api"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- fixed batch dimension


def _mlp_onnx(path, batch, *, seed: int = 0) -> None:
    """x [batch, 2, 2] -> Reshape [batch, 4] -> Gemm 8 -> Relu -> Gemm 3 (``batch`` an int or "N")."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    shape = np.array([batch if isinstance(batch, int) else -1, 4], dtype=np.int64)
    inits = [numpy_helper.from_array(shape, "shape"),
             numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b2")]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"], name="reshape"),
             helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Gemm", ["hr", "w2", "b2"], ["y"], name="fc2", transB=1)]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("batch", [1, 2])
def test_fixed_batch_model_runs_in_chunks(batch, tmp_path):
    fixed, free = tmp_path / "fixed.onnx", tmp_path / "free.onnx"
    _mlp_onnx(fixed, batch)
    _mlp_onnx(free, "N")
    x = np.random.default_rng(1).standard_normal((5, 2, 2)).astype(np.float32)  # 5: not a multiple of 2
    qf = quantize_model(fixed, QuantConfig(), calib_x=x, log=lambda m: None)
    qd = quantize_model(free, QuantConfig(), calib_x=x, log=lambda m: None)
    assert qf.ranges == qd.ranges  # padding repeats a real sample: the calibration ranges are the data's
    # float reference: ONNX Runtime on the fixed model, one chunk of `batch` samples at a time
    sess = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])
    padded = np.concatenate([x, np.repeat(x[-1:], -len(x) % batch, axis=0)])
    ref = np.concatenate([sess.run(None, {"x": padded[i:i + batch]})[0] for i in range(0, len(padded), batch)])
    np.testing.assert_allclose(run_batched(qf.graph, x, integer=False), ref[:5], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(run_batched(qf.graph, x, integer=True), run_batched(qd.graph, x, integer=True))
    labels = np.array([0, 1, 2, 0, 1])
    rf, rd = analyze(qf, x, labels), analyze(qd, x, labels)
    assert rf["samples"] == 5
    for k in ("output", "outputs", "layers", "sensitivity", "accuracy_quant", "top1_agreement"):
        _close(rf[k], rd[k], k)


def test_fixed_batch_still_checks_the_other_dimensions(tmp_path):
    _mlp_onnx(tmp_path / "m.onnx", 1)
    qm = quantize_model(tmp_path / "m.onnx", QuantConfig(), calib_x=np.ones((3, 2, 2), np.float32),
                        log=lambda m: None)
    with pytest.raises(DataError, match=r"^d.npz: x has shape \(3, 4\), model input 'x' expects \(1, 2, 2\)$"):
        check_input(qm.graph, np.ones((3, 4), np.float32), "d.npz")
