"""Cross-check of qhw's arithmetic against ONNX Runtime where the two meet.

Single-node ONNX models run on ORT's CPU execution provider with graph
optimizations off, so each node runs as given:

* QLinearMatMul / QLinearConv (int8 and uint8 activations, int8 weights,
  per-tensor or per-channel scales, int32 bias): qhw accumulates
  ``(x - zx) * (w - zw)`` exactly (int64) plus the bias and requantizes with
  ``arith.Requant``. ``onnx`` mode must match ORT bit for bit; ``single`` and
  ``tflite`` may differ by at most 1 LSB and their match rates are printed
  (``pytest -s`` or ``-rP`` shows them). Adversarial per-channel scales pin the
  float32 evaluation order of ``s_in * s_w / s_out``.
* QLinear(Global)AveragePool (com.microsoft) against the onnx-mode average rule.
* QuantizeLinear / DequantizeLinear against ``arith.quantize_float`` / ``dequantize``.
* QLinearAdd / QLinearMul (every broadcast role, every code pair), QLinearConcat, QLinearSigmoid /
  QLinearLeakyRelu tables against ``qhw.arith`` and ``qhw.ops_elementwise``.
* QDQ models (single groups, and ORT's own quantize_static of a residual model) run by ORT with its
  default optimizations (QDQ fusions, int8 -> uint8 rewrite) and imported into qhw with onnx
  rounding: zero mismatches, nothing kept float.

Every random case is drawn from ``case_rng(seed, *labels)``: the seed in its
test id plus the other parameters of the id, so each id is reproducible alone.
"""

from __future__ import annotations

import platform
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pytest
from onnx import NodeProto, helper
from ort_ref import WEIGHT_CODE_RANGE

from qhw import arith, kernels
from qhw.graph import Node, QParams
from qhw.ops import INT_OPS

SEEDS = [0, 1, 2, 3, 4]
OPSET = 21
ACT_TYPES = ["int8", "uint8"]


def seed_id(seed: int) -> str:
    return f"seed={seed}"


def case_rng(seed: int, *labels: str) -> np.random.Generator:
    """Generator for one test case: the seed, mixed with a stable hash of the other parameters."""
    return np.random.default_rng([seed, zlib.crc32("|".join(labels).encode())])


# --------------------------------------------------------------------------- ORT plumbing


def ort_run(node: NodeProto, feeds: dict[str, np.ndarray], out_dtype) -> np.ndarray:
    """Run one node in ORT (CPU EP, no graph optimizations); every input is a graph input."""
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for name, v in feeds.items()]
    out_type = helper.np_dtype_to_tensor_dtype(np.dtype(out_dtype))
    output = helper.make_tensor_value_info(node.output[0], out_type, None)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(node.domain, 1)] if node.domain else [])
    model = helper.make_model(helper.make_graph([node], node.op_type, inputs, [output]), opset_imports=opsets)
    model.ir_version = 10
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def type_range(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def rand_q(rng, dtype, shape) -> np.ndarray:
    lo, hi = type_range(dtype)
    return rng.integers(lo, hi + 1, shape).astype(dtype)


def rand_weights(rng, act_dtype, shape) -> np.ndarray:
    """int8 weight codes; with u8 activations only those this CPU's ORT multiplies exactly (``ort_ref``)."""
    lo, hi = WEIGHT_CODE_RANGE if np.dtype(act_dtype) == np.uint8 else type_range(np.int8)
    return rng.integers(lo, hi + 1, shape).astype(np.int8)


# --------------------------------------------------------------------------- quantized-op cases


@dataclass
class QCase:
    """One quantized op: the ORT node and feeds, and what qhw needs to compute the same output."""

    node: NodeProto
    feeds: dict[str, np.ndarray]
    accumulate: Callable[[np.ndarray, int], np.ndarray]   # (activations, zero point) -> int64 acc + bias
    x: np.ndarray
    zx: int
    sx: np.float32
    sw: np.ndarray
    sy: np.float32
    zy: int
    out_dtype: type
    axis: int                                             # output channel axis

    def requant(self, acc, mode: str, *, zy: int | None = None, qrange=None) -> np.ndarray:
        lo, hi = qrange or type_range(self.out_dtype)
        rq = arith.Requant.from_scales(mode=mode, s_in=self.sx, s_w=self.sw, s_out=self.sy,
                                       zero_point=self.zy if zy is None else zy, qmin=lo, qmax=hi)
        return rq.apply(acc, axis=self.axis)


def pick_scales(rng, acc: np.ndarray, nch: int, kind: str):
    """Activation, weight (per channel) and output scales, float32.

    ``random``: arbitrary values, output scale set so the outputs spread over the
    8-bit range with some saturation. ``pow2``: powers of two, so acc * scale hits
    exact .5 ties often.
    """
    sx = np.float32(rng.uniform(0.005, 0.05))
    sw = rng.uniform(0.001, 0.05, nch).astype(np.float32)
    if kind == "pow2":
        sx = np.float32(2.0 ** -int(rng.integers(3, 7)))
        sw = (2.0 ** -rng.integers(4, 8, nch)).astype(np.float32)
    spread = float(np.std(acc)) + 1.0
    sy = np.float32(sx * np.median(sw) * spread / 40.0)
    if kind == "pow2":
        sy = np.float32(2.0 ** np.round(np.log2(sy)))
    return sx, sw, sy


def matmul_case(seed: int, act: str, per_column: bool, scales: str) -> QCase:
    rng = case_rng(seed, "QLinearMatMul", act, str(per_column), scales)
    adt = np.dtype(act).type
    batch = tuple(rng.integers(1, 4, int(rng.integers(0, 2))))    # A is 2-D or 3-D
    m, k, n = (int(v) for v in rng.integers(1, [40, 512, 40], endpoint=True))
    a = rand_q(rng, adt, (*batch, m, k))
    b = rand_weights(rng, adt, (k, n))
    za = adt(rand_q(rng, adt, ()))
    zb_shape = n if per_column else ()
    zb = (rng.integers(-3, 4, zb_shape) if seed % 2 else np.zeros(zb_shape)).astype(np.int8)   # odd: zb != 0
    zy = adt(rand_q(rng, adt, ()))

    def accumulate(x, zx):
        return kernels.matmul_exact(x.astype(np.int64) - zx, b.astype(np.int64) - zb.astype(np.int64))

    sx, sw, sy = pick_scales(rng, accumulate(a, int(za)), n if per_column else 1, scales)
    sw_feed = sw if per_column else sw.reshape(())
    feeds = dict(a=a, a_scale=np.array(sx), a_zp=np.array(za), b=b, b_scale=sw_feed, b_zp=zb,
                 y_scale=np.array(sy), y_zp=np.array(zy))
    node = helper.make_node("QLinearMatMul", list(feeds), ["y"])
    return QCase(node, feeds, accumulate, a, int(za), sx, sw, sy, int(zy), adt, axis=-1)


def conv_case(seed: int, act: str, depthwise: bool, scales: str) -> QCase:
    rng = case_rng(seed, "QLinearConv", act, str(depthwise), scales)
    adt = np.dtype(act).type
    n = int(rng.integers(1, 3))
    c = int(rng.integers(1, 17 if depthwise else 9))
    group = c if depthwise else 1
    m = c * int(rng.integers(1, 3)) if depthwise else int(rng.integers(1, 17))
    h, w = (int(v) for v in rng.integers(7, 16, 2))
    kernel = tuple(int(v) for v in rng.choice([1, 2, 3, 5], 2))
    strides = tuple(int(v) for v in rng.integers(1, 3, 2))
    dilations = tuple(int(v) for v in rng.integers(1, 3, 2)) if max(kernel) <= 3 else (1, 1)
    pads = tuple(int(v) for v in rng.integers(0, 3, 4))                          # top, left, bottom, right
    x = rand_q(rng, adt, (n, c, h, w))
    wq = rand_weights(rng, adt, (m, c // group, *kernel))
    zx = adt(rand_q(rng, adt, ()))
    zw = (rng.integers(-3, 4, m) if seed % 2 else np.zeros(m)).astype(np.int8)              # odd: zw != 0
    zy = adt(rand_q(rng, adt, ()))

    def conv(xv, zxv):
        return kernels.conv2d_int(xv, wq, pads=pads, strides=strides, dilations=dilations, group=group,
                                  x_zero=zxv, w_zero=zw)

    spread = float(np.std(conv(x, int(zx)))) + 1.0
    bias = rng.integers(-2 * spread, 2 * spread, m, endpoint=True).astype(np.int32)

    def accumulate(xv, zxv):
        return conv(xv, zxv) + bias.astype(np.int64).reshape(-1, 1, 1)

    sx, sw, sy = pick_scales(rng, accumulate(x, int(zx)), m, scales)
    feeds = dict(x=x, x_scale=np.array(sx), x_zp=np.array(zx), w=wq, w_scale=sw, w_zp=zw,
                 y_scale=np.array(sy), y_zp=np.array(zy), B=bias)
    node = helper.make_node("QLinearConv", list(feeds), ["y"], kernel_shape=list(kernel), group=group,
                            strides=list(strides), dilations=list(dilations), pads=list(pads))
    return QCase(node, feeds, accumulate, x, int(zx), sx, sw, sy, int(zy), adt, axis=1)


# --------------------------------------------------------------------------- the check


@pytest.fixture(scope="module")
def match_stats():
    """Per-mode counters of exact matches with ORT, printed once at the end of the module."""
    stats = {mode: {"equal": 0, "total": 0} for mode in ("single", "tflite")}
    yield stats
    print("\nmatch rate vs ORT over all QLinearMatMul/QLinearConv outputs:")
    for mode, s in stats.items():
        print(f"  {mode}: {s['equal']}/{s['total']} = {s['equal'] / max(s['total'], 1):.4%}")


def check_against_ort(case: QCase, stats) -> None:
    y_ort = ort_run(case.node, case.feeds, case.out_dtype).astype(np.int64)
    acc = case.accumulate(case.x, case.zx)
    assert np.max(np.abs(acc)) < 2**31, "accumulators must stay in int32 for ORT to be exact"

    y = case.requant(acc, "onnx")
    assert y.shape == y_ort.shape
    mismatches = int(np.sum(y != y_ort))
    assert mismatches == 0, f"onnx mode: {mismatches}/{y.size} outputs differ from ORT"

    if case.out_dtype is np.uint8:
        # qhw convention: q_s8 = q_u8 - 128 and zp_s8 = zp_u8 - 128 give the same accumulators and outputs
        acc_s8 = case.accumulate(case.x.astype(np.int64) - 128, case.zx - 128)
        np.testing.assert_array_equal(acc_s8, acc)
        y_s8 = case.requant(acc_s8, "onnx", zy=case.zy - 128, qrange=arith.qrange(8))
        np.testing.assert_array_equal(y_s8 + 128, y_ort)

    lines = []
    for mode in ("single", "tflite"):
        ym = case.requant(acc, mode)
        diff = np.abs(ym - y_ort)
        equal = int(np.sum(diff == 0))
        stats[mode]["equal"] += equal
        stats[mode]["total"] += diff.size
        lines.append(f"{mode} {equal}/{diff.size} ({equal / diff.size:.2%}) equal")
        assert diff.max() <= 1, f"{mode} mode: an output is {diff.max()} LSB from ORT"
    print(f"{case.node.op_type} {case.x.shape}->{y.shape}: onnx exact; " + ", ".join(lines))


@pytest.mark.parametrize("seed", SEEDS, ids=seed_id)
@pytest.mark.parametrize("scales", ["random", "pow2"])
@pytest.mark.parametrize("weights", ["per-tensor", "per-column"])
@pytest.mark.parametrize("act", ACT_TYPES)
def test_qlinearmatmul(act, weights, scales, seed, match_stats):
    check_against_ort(matmul_case(seed, act, weights == "per-column", scales), match_stats)


@pytest.mark.parametrize("seed", SEEDS, ids=seed_id)
@pytest.mark.parametrize("scales", ["random", "pow2"])
@pytest.mark.parametrize("conv", ["group1", "depthwise"])
@pytest.mark.parametrize("act", ACT_TYPES)
def test_qlinearconv(act, conv, scales, seed, match_stats):
    check_against_ort(conv_case(seed, act, conv == "depthwise", scales), match_stats)


# --------------------------------------------------------------------------- the requantization scale


ALT_SCALES = {
    # plausible ways to compute s_in * s_w / s_out that are NOT what ORT does
    "float64-real": lambda sx, sw, sy: (np.float64(sx) * sw / np.float64(sy)).astype(np.float32),
    "sx*(sw/sy)": lambda sx, sw, sy: sx * (sw / sy),
    "reciprocal": lambda sx, sw, sy: (sx * sw) * (np.float32(1) / sy),
}


def onnx_outputs(acc, scale):
    return arith.mul_scale_onnx(acc, scale, -128, 127)


def adversarial_weight_scales(rng, sx, sy, acc_col: np.ndarray, n: int) -> np.ndarray:
    """Weight scales (one per column) for which column j's outputs change if the scale were computed
    the ALT_SCALES[j % 3] way instead of arith.onnx_scale (random search)."""
    names = list(ALT_SCALES)
    found = []
    while len(found) < n:
        alt = ALT_SCALES[names[len(found) % len(names)]]
        cand = rng.uniform(1e-3, 5e-3, 2048).astype(np.float32)
        ref = onnx_outputs(acc_col[:, None], arith.onnx_scale(sx, cand, sy)[None, :])
        other = onnx_outputs(acc_col[:, None], alt(sx, cand, sy)[None, :])
        hits = np.nonzero(np.any(ref != other, axis=0))[0]
        if hits.size:
            found.append(cand[hits[0]])
    return np.array(found, np.float32)


@pytest.mark.parametrize("op", ["QLinearMatMul", "QLinearConv"])
def test_requant_scale_is_computed_like_ort(op):
    """Per-channel scales picked so that any other evaluation order of s_in*s_w/s_out changes an output."""
    rng = np.random.default_rng(99)
    sx, sy = np.float32(0.0173), np.float32(0.291)
    levels = np.arange(-128, 128, dtype=np.int8)                  # every activation value, zero point 0
    w_col = np.int8(127)                                         # acc = level * 127 in every channel
    n = 24
    sw = adversarial_weight_scales(rng, sx, sy, levels.astype(np.int64) * int(w_col), n)
    zero = np.array(np.int8(0))
    if op == "QLinearMatMul":
        feeds = dict(a=levels.reshape(-1, 1), sa=np.array(sx), za=zero, b=np.full((1, n), w_col, np.int8),
                     sb=sw, zb=np.zeros(n, np.int8), sy=np.array(sy), zy=zero)
        y_ort = ort_run(helper.make_node(op, list(feeds), ["y"]), feeds, np.int8)          # (256, n)
    else:
        feeds = dict(x=levels.reshape(1, 1, 16, 16), sx=np.array(sx), zx=zero,
                     w=np.full((n, 1, 1, 1), w_col, np.int8), sw=sw, zw=np.zeros(n, np.int8),
                     sy=np.array(sy), zy=zero)
        node = helper.make_node(op, list(feeds), ["y"], kernel_shape=[1, 1])
        y_ort = ort_run(node, feeds, np.int8).reshape(n, 256).T                             # (256, n)
    acc = (levels.astype(np.int64) * int(w_col))[:, None]
    np.testing.assert_array_equal(onnx_outputs(acc, arith.onnx_scale(sx, sw, sy)), y_ort)
    for name, alt in ALT_SCALES.items():
        wrong = int(np.sum(onnx_outputs(acc, alt(sx, sw, sy)) != y_ort))
        print(f"{op}: scale computed as {name} would mismatch ORT in {wrong} outputs")
        assert wrong > 0


# --------------------------------------------------------------------------- average pooling (onnx mode)


@dataclass
class PoolCase:
    node: NodeProto
    feeds: dict[str, np.ndarray]
    out_dtype: type
    geometry: dict

    def qhw_onnx(self) -> np.ndarray:
        """qhw's golden AveragePool / GlobalAveragePool op in onnx mode (unsigned codes mapped to
        signed by the qhw convention, and back)."""
        f = self.feeds
        shift = 128 if self.out_dtype is np.uint8 else 0
        bits = 8
        in_qp = QParams(scale=float(f["sx"]), zero_point=int(f["zx"]) - shift, bits=bits, unsigned=bool(shift))
        out_qp = QParams(scale=float(f["sy"]), zero_point=int(f["zy"]) - shift, bits=bits, unsigned=bool(shift))
        g = self.geometry
        op = "GlobalAveragePool" if self.node.op_type == "QLinearGlobalAveragePool" else "AveragePool"
        node = Node("pool", op, ["x"], ["y"], attrs={"kernel": list(g["kernel"]), "strides": list(g["strides"]),
                                                      "pads": list(g["pads"]),
                                                      "count_include_pad": int(g["count_include_pad"])},
                    quant={"rounding": "onnx", "qmin": out_qp.qmin, "qmax": out_qp.qmax})
        y = INT_OPS[op](node, [f["x"].astype(np.int64) - shift], [in_qp], [out_qp])[0]
        return y + shift


def pool_case(seed: int, act: str, op: str, size: int | None = None) -> PoolCase:
    rng = case_rng(seed, op, act)
    adt = np.dtype(act).type
    if size is None:
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 9)), *(int(v) for v in rng.integers(4, 14, 2)))
    else:
        shape = (2, 8, size, size)
    x = rand_q(rng, adt, shape)
    sx = np.float32(rng.uniform(0.01, 0.1))
    sy = sx if seed % 2 else np.float32(sx * rng.uniform(0.3, 2.0))
    feeds = dict(x=x, sx=np.array(sx), zx=np.array(adt(rand_q(rng, adt, ()))), sy=np.array(sy),
                 zy=np.array(adt(rand_q(rng, adt, ()))))
    if op == "QLinearGlobalAveragePool":
        node = helper.make_node(op, list(feeds), ["y"], domain="com.microsoft", channels_last=0)
        return PoolCase(node, feeds, adt, dict(kernel=x.shape[2:], strides=(1, 1), pads=(0, 0, 0, 0),
                                               count_include_pad=False))
    kernel = tuple(int(v) for v in rng.integers(2, 4, 2))
    geometry = dict(kernel=kernel, strides=tuple(int(v) for v in rng.integers(1, 3, 2)),
                    pads=tuple(int(v) for v in rng.integers(0, min(kernel), 4)),
                    count_include_pad=bool(rng.integers(0, 2)))
    node = helper.make_node(op, list(feeds), ["y"], domain="com.microsoft", kernel_shape=list(kernel),
                            strides=list(geometry["strides"]), pads=list(geometry["pads"]),
                            count_include_pad=int(geometry["count_include_pad"]))
    return PoolCase(node, feeds, adt, geometry)


@pytest.mark.parametrize("seed", SEEDS, ids=seed_id)
@pytest.mark.parametrize("op", ["QLinearGlobalAveragePool", "QLinearAveragePool"])
@pytest.mark.parametrize("act", ACT_TYPES)
def test_average_pool_onnx_mode(act, op, seed):
    """qhw's onnx-mode pooling equals ORT: the MLAS integer path for the global pool, per-tap float
    sums for QLinearAveragePool (odd seeds keep s_out == s_in, where near-ties are most frequent)."""
    case = pool_case(seed, act, op)
    y_ort = ort_run(case.node, case.feeds, case.out_dtype).astype(np.int64)
    np.testing.assert_array_equal(case.qhw_onnx(), y_ort)


@pytest.mark.parametrize("act", ACT_TYPES)
def test_average_pool_onnx_mode_large(act):
    for seed in (1, 3, 5):                                          # odd seeds: s_out == s_in
        case = pool_case(seed, act, "QLinearAveragePool", size=24)
        y_ort = ort_run(case.node, case.feeds, case.out_dtype).astype(np.int64)
        np.testing.assert_array_equal(case.qhw_onnx(), y_ort)


# --------------------------------------------------------------------------- Quantize/DequantizeLinear


def quantize_inputs(rng, scale: np.float32, n: int = 3000) -> np.ndarray:
    """Floats around the quantization grid: random, exact or near .5 ties, far out of range, +-inf."""
    k = rng.integers(-300, 300, n)
    return np.concatenate([
        rng.normal(0, 100 * scale, n),
        (k + 0.5) * np.float64(scale),                   # ties (exact when scale is a power of two)
        k * np.float64(scale),
        rng.uniform(-1e4, 1e4, 50) * scale,              # saturation
        [np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38],
    ]).astype(np.float32)


@pytest.mark.parametrize("seed", SEEDS, ids=seed_id)
@pytest.mark.parametrize("scale_kind", ["random", "pow2"])
@pytest.mark.parametrize("dtype", ACT_TYPES)
def test_quantize_linear(dtype, scale_kind, seed):
    rng = case_rng(seed, "QuantizeLinear", dtype, scale_kind)
    qt = np.dtype(dtype).type
    lo, hi = type_range(qt)
    pow2 = scale_kind == "pow2"
    scale = np.float32(2.0 ** -int(rng.integers(0, 10)) if pow2 else 10.0 ** rng.uniform(-3, 0))
    zp = qt(rand_q(rng, qt, ()))
    x = quantize_inputs(rng, scale)
    y_ort = ort_run(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
                    dict(x=x, s=np.array(scale), z=np.array(zp)), qt).astype(np.int64)
    with np.errstate(over="ignore", invalid="ignore"):      # 3e38 / scale overflows to inf on purpose
        y = arith.quantize_float(x, scale, int(zp), lo, hi)
        ratio = x / scale
        ties = int(np.sum(np.isfinite(ratio) & (ratio - np.floor(ratio) == 0.5)))
    saturated = int(np.sum((y == lo) | (y == hi)))
    print(f"QuantizeLinear {dtype} scale={scale!r} zp={int(zp)}: {x.size} values, {ties} exact ties, "
          f"{saturated} saturated")
    assert saturated > 10 and (ties > 1000 or not pow2)
    np.testing.assert_array_equal(y, y_ort)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="NaN -> qmin is MLAS's x86 behaviour (MAXPS); other CPUs may differ")
@pytest.mark.parametrize("dtype, zp", [("int8", -7), ("int8", 5), ("uint8", 0), ("uint8", 200)])
def test_quantize_linear_nan(dtype, zp):
    qt = np.dtype(dtype).type
    lo, hi = type_range(qt)
    x = np.array([np.nan, 1.0, -np.nan], np.float32)
    y_ort = ort_run(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
                    dict(x=x, s=np.array(np.float32(0.5)), z=np.array(qt(zp))), qt)
    np.testing.assert_array_equal(arith.quantize_float(x, np.float32(0.5), zp, lo, hi), y_ort)


@pytest.mark.parametrize("seed", SEEDS, ids=seed_id)
@pytest.mark.parametrize("dtype", ACT_TYPES)
def test_dequantize_linear(dtype, seed):
    rng = case_rng(seed, "DequantizeLinear", dtype)
    qt = np.dtype(dtype).type
    lo, hi = type_range(qt)
    q = np.arange(lo, hi + 1).astype(qt)
    scale = np.float32(10.0 ** rng.uniform(-4, 1))
    zp = qt(rand_q(rng, qt, ()))
    y_ort = ort_run(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
                    dict(q=q, s=np.array(scale), z=np.array(zp)), np.float32)
    y = arith.dequantize(q, scale, int(zp))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.view(np.uint32), y_ort.view(np.uint32))     # bit for bit


# --------------------------------------------------------------------------- QLinearAdd / QLinearMul (onnx mode)

BROADCASTS = {
    "same": ((2, 3, 5, 7), (2, 3, 5, 7)),
    "channel-b": ((2, 3, 5, 7), (1, 3, 1, 1)),      # input 1 is the scalar of each span
    "channel-a": ((2, 3, 1, 1), (2, 3, 5, 7)),      # input 0 is: ORT swaps the kernel's inputs
    "outer": ((6, 1), (1, 37)),
    "scalar-b": ((41,), ()),
    "one": ((1,), (1,)),
}


def elementwise_qhw(op: str, feeds: dict) -> np.ndarray:
    """qhw's onnx-mode kernel (qhw.arith) on the feeds of ORT's QLinearAdd/QLinearMul, codes as stored."""
    f = {k: (v.astype(np.int64) if k in ("a", "b") else v.item()) for k, v in feeds.items()}
    lo, hi = type_range(feeds["a"].dtype)
    args = (f["a"], f["b"], f["sa"], f["za"], f["sb"], f["zb"], f["sy"], f["zy"], lo, hi)
    if op == "Add":
        return arith.qlinear_add_onnx(*args[:2], *args[2:], input0_scalar=arith.span_scalar_input0(
            feeds["a"].shape, feeds["b"].shape))
    a, b = np.broadcast_arrays(f["a"], f["b"])
    return arith.qlinear_mul_onnx(a, b, *args[2:])


def binary_feeds(rng, act: str, shapes, scales: str) -> dict:
    adt = np.dtype(act).type
    sa, sb, sy = (np.float32(v) for v in rng.uniform(0.005, 0.1, 3))
    if scales == "pow2":                                    # exact .5 ties are frequent
        sa, sb, sy = (np.float32(2.0 ** -int(rng.integers(2, 8)) * int(rng.choice([1, 3]))) for _ in range(3))
    return dict(a=rand_q(rng, adt, shapes[0]), sa=np.array(sa), za=np.array(adt(rand_q(rng, adt, ()))),
                b=rand_q(rng, adt, shapes[1]), sb=np.array(sb), zb=np.array(adt(rand_q(rng, adt, ()))),
                sy=np.array(sy), zy=np.array(adt(rand_q(rng, adt, ()))))


@pytest.mark.parametrize("seed", SEEDS, ids=seed_id)
@pytest.mark.parametrize("scales", ["random", "pow2"])
@pytest.mark.parametrize("broadcast", list(BROADCASTS))
@pytest.mark.parametrize("act", ACT_TYPES)
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_qlinear_binary(op, act, broadcast, scales, seed):
    rng = case_rng(seed, op, act, broadcast, scales)
    feeds = binary_feeds(rng, act, BROADCASTS[broadcast], scales)
    ort_feeds = {k: feeds[k] for k in ("a", "sa", "za", "b", "sb", "zb", "sy", "zy")}
    y_ort = ort_run(helper.make_node(op, list(ort_feeds), ["y"], domain="com.microsoft"), ort_feeds,
                    np.dtype(act).type).astype(np.int64)
    y = elementwise_qhw(op[len("QLinear"):], feeds)
    assert y.shape == y_ort.shape
    assert int(np.sum(y != y_ort)) == 0


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("act", ACT_TYPES)
def test_qlinear_binary_every_code_pair(op, act):
    """All 65536 input pairs, on scales where the float32 evaluation order matters (fused vs
    separate multiply-adds, the order of the fixed part): zero mismatches."""
    rng = case_rng(7, op, act, "grid")
    adt = np.dtype(act).type
    lo, hi = type_range(adt)
    grid_a, grid_b = np.meshgrid(np.arange(lo, hi + 1), np.arange(lo, hi + 1), indexing="ij")
    for _ in range(6):
        feeds = binary_feeds(rng, act, [(1,), (1,)], "random")
        feeds["a"], feeds["b"] = grid_a.ravel().astype(adt), grid_b.ravel().astype(adt)
        ort_feeds = {k: feeds[k] for k in ("a", "sa", "za", "b", "sb", "zb", "sy", "zy")}
        y_ort = ort_run(helper.make_node(op, list(ort_feeds), ["y"], domain="com.microsoft"), ort_feeds,
                        adt).astype(np.int64)
        assert int(np.sum(elementwise_qhw(op[len("QLinear"):], feeds) != y_ort)) == 0


# --------------------------------------------------------------------------- QDQ models imported with --rounding onnx


def qdq_branch_model(op: str, act: str, seed: int, *, branches: int = 2, pool_input: int | None = None,
                     op_attrs: dict | None = None, scales: tuple | None = None, consts: dict | None = None,
                     act_range: float = 2.5):
    """x -> Q/DQ -> Split into ``branches`` tensors, each re-quantized with its own scale (one of them
    optionally global-average-pooled, for broadcasting) -> ``op`` -> Q/DQ: a QDQ group as
    quantize_static writes it. Returns (model, x)."""
    from onnx import TensorProto, numpy_helper

    rng = case_rng(seed, "qdq", op, act, str(branches), str(pool_input))
    dt = np.dtype(act).type
    c = 3
    inits, nodes = [], []

    def qdq(t: str, scale) -> str:
        scale, zp = scale if isinstance(scale, tuple) else (scale, rand_q(rng, dt, ()) // 4)
        s, z = f"{t}_s", f"{t}_z"
        inits.append(numpy_helper.from_array(np.array(scale, np.float32), s))
        inits.append(numpy_helper.from_array(np.array(zp, dt), z))
        nodes.append(helper.make_node("QuantizeLinear", [t, s, z], [f"{t}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{t}_q", s, z], [f"{t}_dq"]))
        return f"{t}_dq"

    x = qdq("x", float(rng.uniform(0.02, 0.05)))
    parts = [f"p{i}" for i in range(branches)]
    nodes.append(helper.make_node("Split", [x], parts, axis=1, num_outputs=branches))
    ins = []
    for i, p in enumerate(parts):
        t = qdq(p, scales[i] if scales else float(rng.uniform(0.01, 0.08)))
        if i == pool_input:
            nodes.append(helper.make_node("GlobalAveragePool", [t], [f"g{i}"]))
            t = qdq(f"g{i}", float(rng.uniform(0.01, 0.08)))
        ins.append(t)
    for name, value in (consts or {}).items():                 # constant inputs (a PRelu slope)
        inits.append(numpy_helper.from_array(value, name))
        ins.append(name)
    nodes.append(helper.make_node(op, ins, ["y"], **(op_attrs or {})))
    out = qdq("y", scales[-1] if scales else float(rng.uniform(0.02, 0.1)) * (3 if op == "Mul" else 1))
    nodes.append(helper.make_node("Identity", [out], ["out"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c * branches, 12, 10])]
    graph = helper.make_graph(nodes, "qdq", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    xv = rng.normal(0, act_range, (32, c * branches, 12, 10)).astype(np.float32)
    return model, xv


def qhw_vs_ort(model, x, tmp_path) -> int:
    """Mismatching outputs between ORT (default optimizations: its QDQ fusions) and qhw's golden model
    of the imported QDQ model in onnx rounding."""
    import onnx

    from qhw.api import quantize_model, run_batched
    from qhw.quantize import QuantConfig

    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {"x": x})[0]
    qm = quantize_model(path, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
    assert not qm.notes, qm.notes                             # nothing ran in float
    y = run_batched(qm.graph, x, integer=True)
    assert y.shape == y_ort.shape
    return int(np.sum(y != y_ort))


def adversarial_binary_scales(op: str, seed: int) -> tuple:
    """(scale, zero point) of a, b and the output (int8) on which ORT's fused kernel and the float
    DQ -> op -> Q path disagree on the most of the 65536 code pairs (thousands): a model test that could not
    tell the two apart would prove nothing."""
    from qhw.arith import dequantize, qlinear_add_onnx, qlinear_mul_onnx, quantize_float

    rng = case_rng(seed, "adversarial", op)
    a, b = (g.ravel() for g in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij"))
    best, best_n = None, -1
    for _ in range(40):
        # odd multiples of powers of two: random scales almost never separate the two paths
        sa, sb, sy = (np.float32(2.0 ** -int(rng.integers(4, 8)) * int(rng.choice([1, 3, 5, 7]))) for _ in range(3))
        za, zb, zy = (int(v) for v in rng.integers(-100, 100, 3))
        da, db = dequantize(a, sa, za), dequantize(b, sb, zb)
        flt = quantize_float(da * db if op == "Mul" else da + db, sy, zy, -128, 127)
        fused = (qlinear_mul_onnx if op == "Mul" else qlinear_add_onnx)(a, b, sa, za, sb, zb, sy, zy, -128, 127)
        n = int(np.sum(flt != fused))
        if n > best_n:
            best, best_n = ((float(sa), za), (float(sb), zb), (float(sy), zy)), n
    return best


@pytest.mark.parametrize("seed", SEEDS[:3], ids=seed_id)
@pytest.mark.parametrize("pool_input", [None, 0, 1], ids=["same-shape", "pooled-a", "pooled-b"])
@pytest.mark.parametrize("act", ACT_TYPES + ["int16"])
@pytest.mark.parametrize("op", ["Add", "Mul"])
def test_qdq_binary_model_reproduced(op, act, pool_input, seed, tmp_path):
    """8-bit groups run as ORT's QLinearAdd/QLinearMul, 16-bit ones in float between DQ and Q."""
    scales = adversarial_binary_scales(op, seed) if seed % 2 == 0 and act == "int8" else None
    model, x = qdq_branch_model(op, act, seed, pool_input=pool_input, scales=scales)
    assert qhw_vs_ort(model, x, tmp_path) == 0


@pytest.mark.parametrize("seed", SEEDS[:3], ids=seed_id)
@pytest.mark.parametrize("branches", [2, 3])
@pytest.mark.parametrize("act", ACT_TYPES)
def test_qdq_sum_model_reproduced(act, branches, seed, tmp_path):
    """ORT does not fuse Sum: it adds the dequantized inputs in float32, in order."""
    model, x = qdq_branch_model("Sum", act, seed, branches=branches)
    assert qhw_vs_ort(model, x, tmp_path) == 0


# --------------------------------------------------------------------------- table activations (onnx mode)

TABLE_CASES = {
    "Sigmoid": {}, "Tanh": {}, "LeakyRelu": {"alpha": 0.13}, "Elu": {"alpha": 0.7}, "HardSigmoid": {},
    "HardSwish": {}, "Gelu": {}, "Gelu-tanh": {"approximate": "tanh"}, "Softplus": {}, "Selu": {},
    "PRelu": {},
}


@pytest.mark.parametrize("seed", SEEDS[:3], ids=seed_id)
@pytest.mark.parametrize("act", ACT_TYPES + ["int16"])
@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_qdq_table_model_reproduced(case, act, seed, tmp_path):
    """DQ -> f -> Q groups (QLinearSigmoid / QLinearLeakyRelu when ORT fuses them, the float kernel
    between DQ and Q otherwise) equal qhw's table lookup; PRelu has one table per channel."""
    op = case.split("-")[0]
    consts = {"slope": np.array([0.1, -0.3, 0.25], np.float32).reshape(3, 1, 1)} if op == "PRelu" else None
    model, x = qdq_branch_model(op, act, seed, branches=1, op_attrs=TABLE_CASES[case], consts=consts,
                                act_range=1.5 + seed)
    assert qhw_vs_ort(model, x, tmp_path) == 0


@pytest.mark.parametrize("seed", SEEDS, ids=seed_id)
@pytest.mark.parametrize("act", ACT_TYPES)
@pytest.mark.parametrize("op", ["QLinearSigmoid", "QLinearLeakyRelu"])
def test_qlinear_lookup_every_code(op, act, seed):
    """ORT's QLinearLookupBase table (f on the 256 dequantized codes, MlasQuantizeLinear) equals
    qhw's onnx-mode table, code for code, over 20 random scale and zero-point sets per seed."""
    from qhw.graph import Node as QNode
    from qhw.ops_elementwise import build_table

    rng = case_rng(seed, op, act)
    adt = np.dtype(act).type
    off = 128 if act == "uint8" else 0
    x = np.arange(*type_range(adt)[:1], type_range(adt)[1] + 1).astype(adt)
    kind = op[len("QLinear"):]
    attrs = {"alpha": float(np.float32(rng.uniform(0.01, 0.5)))} if kind == "LeakyRelu" else {}
    proto = helper.make_node(kind, ["x"], ["y"], **attrs)
    node = QNode(kind, "Onnx", ["x"], ["y"], attrs={"op_type": kind, "domain": "", "opset": {"": OPSET}},
                 params={"node_proto": np.frombuffer(proto.SerializeToString(), np.uint8).copy()})
    for _ in range(20):
        sx, sy = np.float32(rng.uniform(0.005, 0.2)), np.float32(rng.uniform(0.001, 0.05))
        zx, zy = adt(rand_q(rng, adt, ())), adt(rand_q(rng, adt, ()))
        feeds = dict(x=x, sx=np.array(sx), zx=np.array(zx), sy=np.array(sy), zy=np.array(zy))
        y_ort = ort_run(helper.make_node(op, list(feeds), ["y"], domain="com.microsoft", **attrs), feeds,
                        adt).astype(np.int64)
        qx = QParams(float(sx), int(zx) - off, unsigned=bool(off))
        qy = QParams(float(sy), int(zy) - off, unsigned=bool(off))
        table = build_table(node, qx, qy, "onnx").astype(np.int64)
        np.testing.assert_array_equal(table[x.astype(np.int64) - off + 128] + off, y_ort)


# --------------------------------------------------------------------------- Concat (onnx mode)


@pytest.mark.parametrize("seed", SEEDS, ids=seed_id)
@pytest.mark.parametrize("act", ACT_TYPES)
def test_qlinear_concat(act, seed):
    """QLinearConcat: inputs with the output's scale and zero point are copied, others go through
    the table QuantizeLinear(DequantizeLinear(q)); qhw's requantize_codes per input."""
    rng = case_rng(seed, "QLinearConcat", act)
    adt = np.dtype(act).type
    off = 128 if act == "uint8" else 0
    sy, zy = np.float32(rng.uniform(0.01, 0.1)), adt(rand_q(rng, adt, ()))
    feeds = {"sy": np.array(sy), "zy": np.array(zy)}
    xs, qps = [], []
    for i in range(3):
        same = i == 0
        s = sy if same else np.float32(rng.uniform(0.005, 0.2))
        z = zy if same else adt(rand_q(rng, adt, ()))
        x = rand_q(rng, adt, (2, int(rng.integers(1, 4)), 5))
        feeds.update({f"x{i}": x, f"s{i}": np.array(s), f"z{i}": np.array(z)})
        xs.append(x.astype(np.int64) - off)
        qps.append((float(s), int(z) - off))
    y_ort = ort_run(helper.make_node("QLinearConcat", list(feeds), ["y"], domain="com.microsoft", axis=1), feeds,
                    adt).astype(np.int64)
    lo, hi = arith.qrange(8)
    parts = [arith.requantize_codes(x, s, z, float(sy), int(zy) - off, lo, hi, mode="onnx")
             for x, (s, z) in zip(xs, qps)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1) + off, y_ort)


@pytest.mark.parametrize("seed", SEEDS[:3], ids=seed_id)
@pytest.mark.parametrize("act", ACT_TYPES)
def test_qdq_concat_model_reproduced(act, seed, tmp_path):
    model, x = qdq_branch_model("Concat", act, seed, branches=3, pool_input=None, op_attrs={"axis": 1})
    assert qhw_vs_ort(model, x, tmp_path) == 0


# --------------------------------------------------------------------------- layout ops (onnx mode)

LAYOUT_CASES = {
    "Transpose": dict(op_attrs={"perm": [0, 2, 3, 1]}),
    "Squeeze": dict(consts={"axes": np.array([0], np.int64)}),
    "Unsqueeze": dict(consts={"axes": np.array([2], np.int64)}),
    "Slice": dict(consts={"starts": np.array([1, 0], np.int64), "ends": np.array([10, 5], np.int64),
                          "axes": np.array([2, 3], np.int64), "steps": np.array([2, 1], np.int64)}),
    "Resize": dict(consts={"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2, 2], np.float32)},
                   op_attrs={"mode": "nearest"}),
}


@pytest.mark.parametrize("same_scale", [True, False], ids=["scale-kept", "scale-changed"])
@pytest.mark.parametrize("act", ACT_TYPES)
@pytest.mark.parametrize("op", list(LAYOUT_CASES))
def test_qdq_layout_model_reproduced(op, act, same_scale, tmp_path):
    """Data movement on the codes; ORT drops the Q/DQ pair when the scales agree and requantizes in
    float (DQ -> op -> Q) when a QDQ model gives the output its own scale."""
    rng = case_rng(0, "layout", op, act)
    dt = np.dtype(act).type
    scales = None
    if same_scale:
        s = (float(rng.uniform(0.01, 0.08)), int(rand_q(rng, dt, ()) // 4))
        scales = (s, s)
    case = LAYOUT_CASES[op]
    model, x = qdq_branch_model(op, act, 0, branches=1, scales=scales, op_attrs=case.get("op_attrs"),
                                consts=case.get("consts"))
    if op == "Squeeze":
        x = x[:1]
    assert qhw_vs_ort(model, x, tmp_path) == 0


@pytest.mark.parametrize("seed", SEEDS[:3], ids=seed_id)
@pytest.mark.parametrize("act", ACT_TYPES)
@pytest.mark.parametrize("op", ["AveragePool", "GlobalAveragePool"])
def test_qdq_pool_model_reproduced(op, act, seed, tmp_path):
    """Pools in a QDQ model whose int8 tensors ORT runs as uint8 (one consumer each): QLinearAveragePool
    adds the uint8 zero point before rounding. Same input and output scale: many near-ties."""
    rng = case_rng(seed, "pool", op, act)
    s = (float(rng.uniform(0.01, 0.08)), int(rand_q(rng, np.dtype(act).type, ()) // 4))
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]} if op == "AveragePool" else {}
    model, x = qdq_branch_model(op, act, seed, branches=1, scales=(s, s), op_attrs=attrs)
    assert qhw_vs_ort(model, x, tmp_path) == 0


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("pool", ["gap", "reduce-mean"])
def test_ort_quantize_static_residual_model_reproduced(pool, per_channel, tmp_path):
    """ONNX Runtime's own quantize_static (QDQ, int8) of a residual + squeeze-excitation model: every node
    runs in integers in qhw (onnx rounding) and the outputs equal ORT's exactly."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from test_int_elementwise import residual_model

    from qhw.api import quantize_model, run_batched
    from qhw.quantize import QuantConfig

    rng = np.random.default_rng(21)                                  # calibration and test data
    x = rng.normal(0, 1, (300, 3, 8, 8)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"x": x[i:i + 50]} for i in range(0, 200, 50))

        def get_next(self):
            return next(self.batches, None)

    residual_model(tmp_path / "float.onnx", pool)
    dst = tmp_path / "qdq.onnx"
    quantize_static(str(tmp_path / "float.onnx"), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    qm = quantize_model(dst, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
    assert [n.name for n in qm.graph.nodes if n.quant is None] == [] and not qm.notes
    y = run_batched(qm.graph, x[200:], integer=True)
    y_ort = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x[200:]})[0]
    assert int(np.sum(y != y_ort)) == 0
