"""Golden-model rules of the elementwise integer ops (qhw.arith, qhw.ops_elementwise): TFLite ADD
with rescaled inputs, MUL, the exact float32 FMA behind the ``onnx`` mode's QLinearAdd, ONNX
Runtime's broadcast roles, requantization of codes. References are exact (Fraction) or written
out step by step; ONNX Runtime itself is compared in tests/test_ort_crosscheck.py.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from onnx import helper

from qhw import arith
from qhw.graph import Node, QParams
from qhw.ops import INT_OPS
from qhw.ops_elementwise import int_kind

MODES = ("single", "tflite", "onnx")


# --------------------------------------------------------------------------- fma_f32


def f32_round(x: Fraction) -> np.float32:
    """Round an exact rational to the nearest float32, ties to even (independent reference)."""
    guess = np.float32(float(x))
    cands = {guess, np.nextafter(guess, np.float32(np.inf)), np.nextafter(guess, np.float32(-np.inf))}
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - x), int(np.array(c).view(np.uint32)) & 1))
    return np.float32(best)


def test_fma_f32_is_correctly_rounded():
    rng = np.random.default_rng(11)
    a = rng.integers(-128, 128, 4000).astype(np.float32)
    b = rng.uniform(0.01, 4, 4000).astype(np.float32)
    c = rng.uniform(-300, 300, 4000).astype(np.float32)
    # half of the cases: c chosen so that a*b + c lies within 2**-60 of a float32 midpoint
    mids = []
    for i in range(2000):
        p = Fraction(float(a[i])) * Fraction(float(b[i]))
        target = f32_round(Fraction(float(c[i])))
        mid = Fraction(float(target)) + Fraction(float(np.nextafter(target, np.float32(np.inf)) - target)) / 2
        cc = f32_round(mid - p)
        mids.append(cc)
    c[:2000] = np.array(mids, np.float32)
    got = arith.fma_f32(a, b, c)
    want = np.array([f32_round(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                     for x, y, z in zip(a, b, c)], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    unfused = (a * b).astype(np.float32) + c
    assert np.sum(unfused != want) > 10          # the cases do exercise the single rounding


# --------------------------------------------------------------------------- TFLite ADD


def test_add_equal_scales_is_exact_sum():
    d = np.arange(-255, 256, dtype=np.int64)
    for mode in ("single", "tflite"):
        r = arith.add_rescaled([d, d[::-1] // 2], [0.05, 0.05], 0.05, bits=8, mode=mode)
        np.testing.assert_array_equal(r, d + d[::-1] // 2)


@pytest.mark.parametrize("mode, expected", [("single", [2, -1, 1, 0]), ("tflite", [2, -2, 1, -1])])
def test_add_ties(mode, expected):
    """Output scale twice the inputs': (a + b) / 2 with .5 ties; single rounds them up, tflite away."""
    a = np.array([1, -1, 1, -1])
    b = np.array([2, -2, 0, 0])
    np.testing.assert_array_equal(arith.add_rescaled([a, b], [1.0, 1.0], 2.0, bits=8, mode=mode), expected)


@pytest.mark.parametrize("mode", ["single", "tflite"])
def test_add_within_one_lsb_of_exact(mode):
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(2, 5))
        scales = rng.uniform(0.001, 0.2, n).astype(np.float32)
        s_out = np.float32(scales.max() * rng.uniform(0.5, 3))
        diffs = [rng.integers(-255, 256, 500) for _ in range(n)]
        r = arith.add_rescaled(diffs, scales, s_out, bits=8, mode=mode)
        exact = sum(d * np.float64(s) for d, s in zip(diffs, scales)) / np.float64(s_out)
        assert np.max(np.abs(r - exact)) <= 1.0


def test_add_sixteen_bit_headroom():
    d = np.array([65535, -65535])
    r = arith.add_rescaled([d, d], [1.0, 1.0], 1.0, bits=16, mode="tflite")
    np.testing.assert_array_equal(r, 2 * d)                      # no int32 overflow


# --------------------------------------------------------------------------- ONNX Runtime's roles


@pytest.mark.parametrize("s0, s1, expected", [
    ((2, 3, 4), (2, 3, 4), False), ((2, 3, 4, 4), (1, 3, 1, 1), False), ((2, 3, 1, 1), (2, 3, 4, 4), True),
    ((3, 1), (1, 5), True), ((1, 5), (3, 1), False), ((1,), (1,), True), ((), (4,), True), ((4,), (), False),
    ((2, 3, 1), (2, 3, 1), False), ((5,), (2, 5), False),
])
def test_span_scalar_input0(s0, s1, expected):
    assert arith.span_scalar_input0(s0, s1) is expected


def test_qlinear_add_onnx_swaps_roles():
    """With input 0 the span scalar the fixed part is computed with the roles exchanged; the two
    orders differ on some inputs (exhaustive 256 x 1 sweep over scales where they do)."""
    a = np.arange(-128, 128)
    found = False
    rng = np.random.default_rng(3)
    for _ in range(200):
        sa, sb, sc = rng.uniform(0.01, 0.1, 3).astype(np.float32)
        za, zb, zc = (int(v) for v in rng.integers(-128, 128, 3))
        for b in range(-128, 128):
            x = arith.qlinear_add_onnx(np.int64(b), a, sa, za, sb, zb, sc, zc, -128, 127, input0_scalar=True)
            y = arith.qlinear_add_onnx(np.int64(b), a, sa, za, sb, zb, sc, zc, -128, 127, input0_scalar=False)
            if np.any(x != y):
                found = True
                break
        if found:
            break
    assert found


# --------------------------------------------------------------------------- the op binding


def onnx_node(op: str, inputs: list[str], mode: str, qp_out: QParams, **attrs) -> Node:
    proto = helper.make_node(op, inputs, ["y"], **attrs)
    return Node(op.lower(), "Onnx", list(dict.fromkeys(inputs)), ["y"],
                attrs={"op_type": op, "domain": "", "opset": {"": 21}},
                params={"node_proto": np.frombuffer(proto.SerializeToString(), np.uint8).copy()},
                quant={"rounding": mode, "qmin": qp_out.qmin, "qmax": qp_out.qmax})


@pytest.mark.parametrize("mode", MODES)
def test_add_saturates_and_zero_point_extremes(mode):
    qa, qb = QParams(0.1, -128), QParams(0.1, 127)
    qy = QParams(0.1, 127)
    node = onnx_node("Add", ["a", "b"], mode, qy)
    assert int_kind(node) == "Add"
    a = np.array([127, -128, 0, 100])
    b = np.array([127, -128, 127, 127])
    y = INT_OPS["Onnx"](node, [a, b], [qa, qb], [qy])[0]
    # real: (a + 128) * 0.1 + (b - 127) * 0.1 -> codes (a + 128) + (b - 127) + 127, saturated
    np.testing.assert_array_equal(y, np.clip(a + 128 + b - 127 + 127, -128, 127))


@pytest.mark.parametrize("mode", MODES)
def test_sum_of_three_broadcast(mode):
    rng = np.random.default_rng(8)
    qps = [QParams(0.02, 3), QParams(0.05, -7), QParams(0.01, 0)]
    qy = QParams(0.06, -2)
    xs = [rng.integers(-128, 128, s) for s in [(2, 3, 4, 4), (1, 3, 1, 1), (4,)]]
    node = onnx_node("Sum", ["a", "b", "c"], mode, qy)
    y = INT_OPS["Onnx"](node, xs, qps, [qy])[0]
    exact = sum((x - q.zero_point) * q.scale for x, q in zip(xs, qps)) / qy.scale + qy.zero_point
    assert y.shape == (2, 3, 4, 4)
    assert np.max(np.abs(y - np.clip(exact, -128, 127))) <= 1.0


@pytest.mark.parametrize("mode", MODES)
def test_mul_squeeze_excitation_shape(mode):
    rng = np.random.default_rng(9)
    qx, qs, qy = QParams(0.05, -3), QParams(1 / 255, -128), QParams(0.04, 5)
    x = rng.integers(-128, 128, (2, 4, 3, 3))
    s = rng.integers(-128, 128, (2, 4, 1, 1))
    node = onnx_node("Mul", ["x", "s"], mode, qy)
    y = INT_OPS["Onnx"](node, [x, s], [qx, qs], [qy])[0]
    exact = (x - qx.zero_point) * qx.scale * (s - qs.zero_point) * qs.scale / qy.scale + qy.zero_point
    assert np.max(np.abs(y - np.clip(exact, -128, 127))) <= 1.0


def test_mul_by_itself_reads_input_twice():
    qx, qy = QParams(0.1, 0), QParams(0.1, 0)
    node = onnx_node("Mul", ["x", "x"], "single", qy)
    assert node.inputs == ["x"] and int_kind(node) == "Mul"
    y = INT_OPS["Onnx"](node, [np.array([3, -4, 20])], [qx], [qy])[0]
    np.testing.assert_array_equal(y, [1, 2, 40])        # 0.09 -> 0.9 LSB -> 1; 1.6 -> 2; 4.0 -> 40


@pytest.mark.parametrize("mode", MODES)
def test_requantize_codes(mode):
    q = np.arange(-128, 128)
    np.testing.assert_array_equal(arith.requantize_codes(q, 0.1, 3, 0.1, 3, -128, 127, mode=mode), q)
    r = arith.requantize_codes(q, 0.1, 3, 0.2, -5, -128, 127, mode=mode)
    exact = (q - 3) / 2 - 5
    assert np.max(np.abs(r - exact)) <= 0.5


# --------------------------------------------------------------------------- Concat


@pytest.mark.parametrize("mode", MODES)
def test_concat_requantizes_only_differing_inputs(mode):
    qy = QParams(0.1, 2)
    qps = [QParams(0.1, 2), QParams(0.05, -3), QParams(0.1, 0)]
    node = onnx_node("Concat", ["a", "b", "c"], mode, qy, axis=1)
    assert int_kind(node) == "Concat"
    x = [np.full((2, 1, 3), v) for v in (-128, 127, 5)]
    y = INT_OPS["Onnx"](node, x, qps, [qy])[0]
    assert y.shape == (2, 3, 3)
    np.testing.assert_array_equal(y[:, 0], -128)                 # same scale and zero point: copied
    np.testing.assert_array_equal(y[:, 1], 67)                   # (127 + 3) * 0.05 / 0.1 + 2
    np.testing.assert_array_equal(y[:, 2], 7)                    # a zero-point shift only


def concat_model(path):
    """x -> conv a, conv b -> Concat -> GlobalAveragePool."""
    import onnx
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.normal(0, s, (2, 1, 3, 3)).astype(np.float32), f"w{i}")
             for i, s in enumerate((0.2, 1.5))]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
             helper.make_node("Conv", ["x", "w1"], ["b"], pads=[1, 1, 1, 1], name="conv_b"),
             helper.make_node("Concat", ["a", "b"], ["cat"], axis=1, name="concat"),
             helper.make_node("GlobalAveragePool", ["cat"], ["y"], name="gap")]
    g = helper.make_graph(nodes, "cat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("mode", MODES)
def test_concat_inputs_share_the_output_scale(mode, tmp_path):
    from qhw.api import quantize_model, run_batched
    from qhw.quantize import QuantConfig

    concat_model(tmp_path / "cat.onnx")
    x = np.random.default_rng(0).normal(0, 1, (32, 1, 6, 6)).astype(np.float32)
    qm = quantize_model(tmp_path / "cat.onnx", QuantConfig(rounding=mode), calib_x=x, log=lambda m: None)
    t = qm.graph.tensors
    assert t["a"] == t["b"] == t["cat"]                            # each conv quantizes straight to it
    assert qm.graph.node("concat").quant is not None and not qm.notes
    yf, yq = run_batched(qm.graph, x, integer=False), run_batched(qm.graph, x, integer=True)
    assert np.max(np.abs(yf - yq)) < 3 * t["y"].scale


# --------------------------------------------------------------------------- ReduceMean


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes_form", ["attribute", "input", "negative"])
def test_reduce_mean_is_global_average_pool(axes_form, keepdims, mode):
    """x.mean(dim=(2, 3)) in every export form runs GlobalAveragePool's integer rule."""
    from qhw.onnx_node import CONST_PREFIX

    rng = np.random.default_rng(12)
    qx, qy = QParams(0.04, -5), QParams(0.03, 7)
    if axes_form == "input":
        node = onnx_node("ReduceMean", ["x", "axes"], mode, qy, keepdims=keepdims)
        node.params[CONST_PREFIX + "axes"] = np.array([2, 3], np.int64)
        node.inputs = ["x"]
    else:
        node = onnx_node("ReduceMean", ["x"], mode, qy, keepdims=keepdims,
                         axes=[2, 3] if axes_form == "attribute" else [-1, -2])
    assert int_kind(node) == "ReduceMean"
    x = rng.integers(-128, 128, (2, 3, 5, 4))
    y = INT_OPS["Onnx"](node, [x], [qx], [qy])[0]
    gap = Node("gap", "GlobalAveragePool", ["x"], ["y"], quant=node.quant)
    ref = INT_OPS["GlobalAveragePool"](gap, [x], [qx], [qy])[0]
    np.testing.assert_array_equal(y, ref if keepdims else ref.reshape(2, 3))


def test_reduce_mean_over_channels_stays_float():
    node = onnx_node("ReduceMean", ["x"], "single", QParams(0.1, 0), axes=[1])
    assert int_kind(node) is None


# --------------------------------------------------------------------------- end to end


def residual_model(path, pool: str) -> None:
    """conv -> relu -> conv -> Add with the skip -> relu -> squeeze-excitation (ReduceMean, 1x1 conv,
    Sigmoid table, Mul) -> Transpose -> Concat with the block output -> GAP+Flatten or ReduceMean
    (keepdims 0) -> Gemm."""
    import onnx
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, shape, s):
        return numpy_helper.from_array(rng.normal(0, s, shape).astype(np.float32), name)

    inits = [init("w1", (4, 3, 3, 3), 0.3), init("b1", (4,), 0.1), init("w2", (4, 4, 3, 3), 0.3),
             init("b2", (4,), 0.1), init("wse", (4, 4, 1, 1), 0.5), init("bse", (4,), 0.1),
             init("wf", (8, 5), 0.3), init("bf", (5,), 0.1)]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             n("Relu", ["c1"], ["r1"], name="relu1"),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             n("Add", ["c2", "r1"], ["s"], name="add"),
             n("Relu", ["s"], ["r2"], name="relu2"),
             n("ReduceMean", ["r2"], ["m"], axes=[2, 3], keepdims=1, name="se_mean"),
             n("Conv", ["m", "wse", "bse"], ["e"], name="se_conv"),
             n("Sigmoid", ["e"], ["g"], name="se_sigmoid"),
             n("Mul", ["r2", "g"], ["se"], name="se_mul"),
             n("Transpose", ["se"], ["t"], perm=[0, 1, 3, 2], name="transpose"),
             n("Concat", ["r2", "t"], ["cat"], axis=1, name="concat")]
    if pool == "gap":
        nodes += [n("GlobalAveragePool", ["cat"], ["p"], name="gap"), n("Flatten", ["p"], ["f"], name="flat")]
    else:
        nodes += [n("ReduceMean", ["cat"], ["f"], axes=[2, 3], keepdims=0, name="mean")]
    nodes.append(n("Gemm", ["f", "wf", "bf"], ["y"], name="fc"))
    g = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pool", ["gap", "reduce-mean"])
def test_residual_model_end_to_end(pool, mode, tmp_path, capsys):
    """quantize -> run -> analyze -> export-onnx (ORT equal to run in onnx mode) -> the array runtime and
    generate --for, with every node integer."""
    import json

    import onnxruntime as ort

    from qhw.cli import main
    from qhw.qmodel import load_qmodel
    from qhw.runtime import GoldenBackend, Runtime, config_for_model

    residual_model(tmp_path / "res.onnx", pool)
    rng = np.random.default_rng(1)                               # seed of the calibration and test data
    x = rng.normal(0, 1, (300, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x[:200])
    np.savez(tmp_path / "test.npz", x=x[200:], y=rng.integers(0, 5, 100))
    q = tmp_path / "res.qhw"
    assert main(["quantize", str(tmp_path / "res.onnx"), "--calib", str(tmp_path / "calib.npz"), "-o", str(q),
                 "--rounding", mode]) == 0
    qm = load_qmodel(q)
    assert [nd.name for nd in qm.graph.nodes if nd.quant is None] == [] and not qm.notes
    assert main(["run", str(q), "--data", str(tmp_path / "test.npz"), "-o", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as z:
        y = z["y"]
    capsys.readouterr()
    assert main(["analyze", str(q), "--data", str(tmp_path / "test.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output_sqnr_db"] > 25
    assert main(["export-onnx", str(q), "-o", str(tmp_path / "q.onnx")]) == 0
    y_ort = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[200:]})[0]
    if mode == "onnx":
        assert int(np.sum(y_ort != y)) == 0
    else:
        assert np.max(np.abs(y_ort - y)) < 0.1 * np.max(np.abs(y))
    y_rt = Runtime(qm.graph, config_for_model(qm.graph, rows=4, cols=4)).run(x[200:], GoldenBackend())[0]
    np.testing.assert_array_equal(y_rt, y)
    if mode == "single" and pool == "gap":
        assert main(["generate", "--for", str(q), "--rows", "4", "--cols", "4", "--name", "res",
                     "-o", str(tmp_path / "rtl")]) == 0
        assert (tmp_path / "rtl" / "res.json").is_file()


def test_add_before_relu_takes_the_relu_range(tmp_path):
    from qhw.api import quantize_model
    from qhw.quantize import QuantConfig

    residual_model(tmp_path / "res.onnx", "gap")
    x = np.random.default_rng(1).normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    qm = quantize_model(tmp_path / "res.onnx", QuantConfig(), calib_x=x, log=lambda m: None)
    assert qm.ranges["s"][0] < 0                                  # the sum itself goes negative
    assert qm.graph.tensors["s"] == qm.graph.tensors["r2"]
    assert qm.graph.tensors["s"].zero_point == -128               # [0, max]: real 0 at qmin
