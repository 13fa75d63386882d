"""Model-zoo-style architectures (bench/zoo.py) through qhw and ONNX Runtime's quantizer.

Run from the repository root:
    .venv/bin/python bench/bench_zoo.py [--archs resnet ...] [--size 32] [--analyze-size 224]
        [--analyze-archs resnet inception densenet] [--images 4 8] [--before PATH]
Per architecture (weights seed 0; calibration 32 images seed 1; test 64 images seed 2, smooth random
images from ``zoo.images``): ONNX nodes, qhw's integer nodes / imported nodes, output SQNR against
the float model for qhw (default settings: per-channel 8-bit weights, min-max, ``single`` rounding)
and for ORT ``quantize_static`` per-channel QDQ after ``quant_pre_process`` (int8 activations and
weights; "8-bit" evaluated by qhw's ``--rounding onnx`` golden model, which is what ORT computes on
CPUs whose int8 kernels do not saturate; "7-bit" = ``reduce_range=True`` run by ORT itself), and
the mismatching outputs of qhw ``--rounding onnx`` against ORT on its 7-bit QDQ model.
Then ``qhw analyze`` (with sensitivity) wall time and peak RSS in a fresh process on ``--images``
images of ``--analyze-size`` (peak RSS: the analyze process's VmHWM, which includes about 200 MB
of Python, NumPy and ONNX Runtime). ``--before PATH`` also counts integer nodes with the qhw package
found at PATH (an older checkout), in a subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402

CALIB, TEST = 32, 64


def _sqnr(ref: np.ndarray, y: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - y) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def _ort(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _ort_qdq(src: Path, dst: Path, calib: np.ndarray, *, reduce_range: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"x": calib[i:i + 8]} for i in range(0, len(calib), 8))

        def get_next(self):
            return next(self.batches, None)

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8, reduce_range=reduce_range)


def count_nodes(model: str, calib: str) -> str:
    """'integer/total' qhw nodes, with whichever qhw is importable (used for --before)."""
    from qhw.api import quantize_model
    from qhw.quantize import QuantConfig

    with np.load(calib) as f:
        x = f["x"]
    try:
        qm = quantize_model(model, QuantConfig(), calib_x=x, log=lambda m: None)
    except Exception as e:  # an old version may refuse the model: say so in the table
        return f"refused ({type(e).__name__})"
    return f"{sum(n.quant is not None for n in qm.graph.nodes)}/{len(qm.graph.nodes)}"


def measure(arch: str, d: Path, size: int, before: str | None) -> dict:
    import onnx

    from qhw.api import quantize_model, run_batched
    from qhw.quantize import QuantConfig

    model = zoo.build(arch, size=size, seed=0)
    path = d / f"{arch}.onnx"
    onnx.save(model, path)
    calib, test = zoo.images(CALIB, size=size, seed=1), zoo.images(TEST, size=size, seed=2)
    np.savez(d / "calib.npz", x=calib)
    yf = _ort(path, test)
    t0 = time.perf_counter()
    qm = quantize_model(path, QuantConfig(), calib_x=calib, log=lambda m: None)
    t_quant = time.perf_counter() - t0
    row = {"arch": arch, "onnx_nodes": len(model.graph.node),
           "qhw_int": sum(n.quant is not None for n in qm.graph.nodes), "qhw_nodes": len(qm.graph.nodes),
           "qhw_sqnr": _sqnr(yf, run_batched(qm.graph, test, integer=True)), "quantize_s": t_quant}
    logging.disable(logging.WARNING)
    for rr in (False, True):
        q = d / f"{arch}.ort{int(rr)}.onnx"
        _ort_qdq(path, q, calib, reduce_range=rr)
        qo = quantize_model(q, QuantConfig(rounding="onnx"), calib_x=None, log=lambda m: None)
        ours = run_batched(qo.graph, test, integer=True)
        if rr:
            theirs = _ort(q, test)
            row["ort7_sqnr"] = _sqnr(yf, theirs)
            scale = qo.graph.tensors[qo.graph.outputs[0]].scale
            row["ort7_mismatch"] = int(np.count_nonzero(np.abs(ours - theirs) > scale / 100))
            row["outputs"] = int(theirs.size)
        else:
            row["ort8_sqnr"] = _sqnr(yf, ours)
    logging.disable(logging.NOTSET)
    if before:
        out = subprocess.run([sys.executable, __file__, "--count", str(path), str(d / "calib.npz")],
                             env={"PYTHONPATH": before, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
        row["before"] = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "error"
    return row


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that over ``exec`` from
    the forked parent, so a child started by a large parent reports at least the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def analyze_child(qmodel: str, data: str, out: str) -> None:
    from qhw.cli import main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["analyze", qmodel, "--data", data, "--json"])
    wall = time.perf_counter() - t0
    Path(out).write_text(json.dumps({"rc": rc, "wall_s": wall, "peak_rss_mb": _peak_rss_mb()}))


def analyze_rows(archs: list[str], size: int, images: list[int], d: Path) -> list[tuple]:
    import onnx

    from qhw.cli import main as qhw

    rows = []
    for arch in archs:
        model = zoo.build(arch, size=size, seed=0)
        onnx.save(model, d / f"{arch}{size}.onnx")
        np.savez(d / "c.npz", x=zoo.images(8, size=size, seed=1))
        with contextlib.redirect_stdout(io.StringIO()):
            rc = qhw(["quantize", str(d / f"{arch}{size}.onnx"), "--calib", str(d / "c.npz"), "-o", str(d / "m.qhw")])
        assert rc == 0, f"quantize {arch} failed"
        for n in images:
            np.savez(d / "x.npz", x=zoo.images(n, size=size, seed=2))
            subprocess.run([sys.executable, __file__, "--child", str(d / "m.qhw"), str(d / "x.npz"),
                            str(d / "r.json")], check=True)
            r = json.loads((d / "r.json").read_text())
            assert r["rc"] == 0, f"analyze {arch} failed"
            rows.append((arch, len(model.graph.node), n, r["wall_s"], r["peak_rss_mb"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=list(zoo.ARCHS), choices=list(zoo.ARCHS))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--analyze-size", type=int, default=224)
    ap.add_argument("--analyze-archs", nargs="*", default=["resnet", "inception", "densenet"])
    ap.add_argument("--images", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--before", metavar="PATH", help="directory holding an older qhw package")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--count", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        analyze_child(*args.child)
        return
    if args.count:
        print(count_nodes(*args.count))
        return
    with tempfile.TemporaryDirectory() as d:
        rows = [measure(a, Path(d), args.size, args.before) for a in args.archs]
        arows = analyze_rows(args.analyze_archs, args.analyze_size, args.images, Path(d))
    print(f"Style-alike models from bench/zoo.py at {args.size}x{args.size} (seed 0); calibration {CALIB} "
          f"images (seed 1), test {TEST} images (seed 2); {platform.machine()}, Python {platform.python_version()}\n")
    before = " before |" if args.before else ""
    print(f"| architecture | ONNX nodes | qhw integer / nodes |{before} SQNR qhw dB | SQNR ORT 8-bit dB "
          "| SQNR ORT 7-bit dB | qhw `onnx` vs ORT 7-bit: mismatching outputs |")
    print("|---|---|---|" + ("---|" if args.before else "") + "---|---|---|---|")
    for r in rows:
        b = f" {r['before']} |" if args.before else ""
        print(f"| {r['arch']} | {r['onnx_nodes']} | {r['qhw_int']}/{r['qhw_nodes']} |{b} {r['qhw_sqnr']:.1f} | "
              f"{r['ort8_sqnr']:.1f} | {r['ort7_sqnr']:.1f} | {r['ort7_mismatch']} of {r['outputs']} |")
    print(f"\n`qhw analyze` (with sensitivity, default --batch-size) at {args.analyze_size}x{args.analyze_size}:\n")
    print("| architecture | ONNX nodes | images | wall s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for arch, nodes, n, wall, rss in arows:
        print(f"| {arch} | {nodes} | {n} | {wall:.1f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
