"""Quantizer benchmark: accuracy and SQNR of qhw vs onnxruntime's quantize_static, and speed.

Run from the repository root:  .venv/bin/python bench/bench_quant.py  > /tmp/quant.md
Prints Markdown tables (pasted into bench/results.md). Uses the digits split of qhw.datasets;
calibration = first 500 training images, evaluation = the 450-image test split.
"""

from __future__ import annotations

import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qhw.analysis import ErrorStats, analyze
from qhw.api import accuracy, quantize_model, run_batched
from qhw.datasets import builtin_model_path, digits_split
from qhw.quantize import QuantConfig

MODELS = ("digits_mlp", "digits_cnn")


def ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def sqnr(ref, y) -> float:
    e = ErrorStats()
    e.update(ref, y)
    v = e.summary()["sqnr_db"]
    return float("inf") if v is None else v


def ort_quantize(src: Path, dst: Path, xc: np.ndarray, per_channel: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"x": xc[i:i + 100]} for i in range(0, len(xc), 100))

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def timed(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    warnings.filterwarnings("ignore")
    import logging
    logging.disable(logging.WARNING)
    d = digits_split()
    xc, xt, yt = d["train"][0][:500], d["test"][0], d["test"][1]
    tmp = Path(tempfile.mkdtemp())
    print(f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores, numpy {np.__version__}, "
          f"onnxruntime {ort.__version__}\n")

    print("## Accuracy (digits test split, 450 images) and output SQNR against the float model\n")
    print("| model | scheme | top-1 | output SQNR dB |")
    print("|---|---|---|---|")
    configs = [("int8 w/a, per-channel, minmax, single (default)", QuantConfig()),
               ("int8, per-channel, minmax, onnx rounding", QuantConfig(rounding="onnx")),
               ("int8, per-channel, entropy", QuantConfig(calib_method="entropy")),
               ("int8, per-channel, mse", QuantConfig(calib_method="mse")),
               ("int8, per-tensor, minmax", QuantConfig(granularity="per-tensor")),
               ("int4 weights / int8 act, per-channel", QuantConfig(weight_bits=4)),
               ("int4 weights + bias correction", QuantConfig(weight_bits=4, bias_correction=True)),
               ("int16 weights / int16 act", QuantConfig(weight_bits=16, act_bits=16))]
    for name in MODELS:
        path = builtin_model_path(name)
        yf = ort_run(path, xt)
        print(f"| {name} | float (ONNX Runtime) | {100 * accuracy(yf, yt):.2f} % | |")
        for label, cfg in configs:
            qm = quantize_model(path, cfg, calib_x=xc, log=lambda m: None)
            yq = run_batched(qm.graph, xt, integer=True)
            print(f"| {name} | qhw {label} | {100 * accuracy(yq, yt):.2f} % | {sqnr(yf, yq):.1f} |")
        for pc in (False, True):
            dst = tmp / f"{name}_ort_pc{int(pc)}.onnx"
            ort_quantize(path, dst, xc, pc)
            yo = ort_run(dst, xt)
            print(f"| {name} | ONNX Runtime quantize_static QDQ int8 {'per-channel' if pc else 'per-tensor'} | "
                  f"{100 * accuracy(yo, yt):.2f} % | {sqnr(yf, yo):.1f} |")

    print("\n## Speed (best of 5)\n")
    print("| model | what | time | throughput |")
    print("|---|---|---|---|")
    xbig = np.concatenate([xt] * 10)  # 4500 images
    for name in MODELS:
        path = builtin_model_path(name)
        t_q = timed(lambda: quantize_model(path, QuantConfig(), calib_x=xc, log=lambda m: None), 3)
        qm = quantize_model(path, QuantConfig(), calib_x=xc, log=lambda m: None)
        t_a = timed(lambda: analyze(qm, xt, yt), 3)
        t_g = timed(lambda: run_batched(qm.graph, xbig, integer=True, batch=512))
        t_f = timed(lambda: run_batched(qm.graph, xbig, integer=False, batch=512))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        t_o = timed(lambda: sess.run(None, {"x": xbig}))
        ortq = tmp / f"{name}_ort_pc1.onnx"
        sq = ort.InferenceSession(str(ortq), providers=["CPUExecutionProvider"])
        t_oq = timed(lambda: sq.run(None, {"x": xbig}))
        n = xbig.shape[0]
        print(f"| {name} | qhw quantize (500 calibration images) | {1000 * t_q:.0f} ms | |")
        print(f"| {name} | qhw analyze (450 images, incl. per-layer sensitivity) | {1000 * t_a:.0f} ms | |")
        print(f"| {name} | qhw integer golden model | {1000 * t_g:.0f} ms | {n / t_g:,.0f} inf/s |")
        print(f"| {name} | qhw float reference (NumPy) | {1000 * t_f:.0f} ms | {n / t_f:,.0f} inf/s |")
        print(f"| {name} | ONNX Runtime float | {1000 * t_o:.0f} ms | {n / t_o:,.0f} inf/s |")
        print(f"| {name} | ONNX Runtime int8 QDQ (per-channel) | {1000 * t_oq:.0f} ms | {n / t_oq:,.0f} inf/s |")
        print(f"| {name} | golden model time / ORT int8 time | {t_g / t_oq:.1f}x | |")


if __name__ == "__main__":
    main()
