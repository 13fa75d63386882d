"""``qhw analyze`` wall time and peak memory on a ResNet-ish stem built with onnx.helper.

Run from the repository root:
    .venv/bin/python bench/bench_analyze.py [--images 4 8] [--blocks 3] [--size 56] [--batch-size default 1]
Builds (seed 0) a Conv 3->64 + ReLU at 56x56 followed by ``--blocks`` residual blocks (3x3 conv
64->64, ReLU, 3x3 conv, Add of the block input, ReLU), global average pool, a 64->10 Gemm and
Softmax; calibrates on 8 images (seed 1); then runs
``qhw analyze`` (with sensitivity) in a fresh process per image count and batch size ("default":
no ``--batch-size`` flag) and prints a Markdown table.
Peak RSS is the analyze process's own VmHWM (model load, data, analysis, sensitivity); not
``ru_maxrss``, which Linux carries over ``exec`` from the forked parent.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HW = 56
CH = 64


def build_model(path: Path, *, blocks: int, seed: int = 0, size: int = HW) -> int:
    """Write the model; returns its number of ONNX nodes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x: str, cin: int, name: str, relu: bool) -> str:
        w = (rng.standard_normal((CH, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (0.01 * rng.standard_normal(CH)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name,
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    t = conv("x", 3, "stem", relu=True)
    for i in range(blocks):  # y = relu(x + conv(relu(conv(x))))
        h = conv(conv(t, CH, f"b{i}_conv1", relu=True), CH, f"b{i}_conv2", relu=False)
        nodes += [helper.make_node("Add", [h, t], [f"b{i}_add"], name=f"b{i}_add"),
                  helper.make_node("Relu", [f"b{i}_add"], [f"b{i}_out"], name=f"b{i}_out")]
        t = f"b{i}_out"
    wf = (rng.standard_normal((10, CH)) * np.sqrt(1.0 / CH)).astype(np.float32)
    inits += [numpy_helper.from_array(wf, "wf"), numpy_helper.from_array(np.zeros(10, np.float32), "bf")]
    nodes += [helper.make_node("GlobalAveragePool", [t], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
              helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1)]
    graph = helper.make_graph(nodes, "resnetish", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["N", 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return len(nodes)


def images(n: int, seed: int, size: int = HW) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def child(qmodel: str, data: str, out: str, extra: list[str]) -> None:
    """One ``qhw analyze`` in this process; writes wall time and peak RSS to ``out``."""
    import contextlib
    import io

    from qhw.cli import main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["analyze", qmodel, "--data", data, "--json", *extra])
    wall = time.perf_counter() - t0
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    Path(out).write_text(json.dumps({"rc": rc, "wall_s": wall, "peak_rss_mb": peak_kb / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--blocks", type=int, default=3, help="residual blocks (two 64->64 3x3 convs each)")
    ap.add_argument("--size", type=int, default=HW, help="input height and width (224: ImageNet size)")
    ap.add_argument("--batch-size", nargs="+", default=["default", "1"],
                    help="analyze --batch-size values to measure ('default': the flag left out)")
    ap.add_argument("--child", nargs=3, metavar=("QMODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, [] if args.batch_size == ["default"] else ["--batch-size", *args.batch_size])
        return
    from qhw.cli import main as qhw

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        n_nodes = build_model(d / "m.onnx", blocks=args.blocks, size=args.size)
        np.savez(d / "calib.npz", x=images(8, 1, args.size))
        rc = qhw(["quantize", str(d / "m.onnx"), "--calib", str(d / "calib.npz"), "-o", str(d / "m.qhw")])
        assert rc == 0, "quantize failed"
        rows = []
        for bs in args.batch_size:
            for n in args.images:
                np.savez(d / f"x{n}.npz", x=images(n, 2, args.size))
                out = d / f"r{n}.json"
                subprocess.run([sys.executable, __file__, "--child", str(d / "m.qhw"), str(d / f"x{n}.npz"),
                                str(out), "--batch-size", bs], check=True)
                r = json.loads(out.read_text())
                assert r["rc"] == 0, "analyze failed"
                rows.append((n, bs, r["wall_s"], r["peak_rss_mb"]))
    print(f"ResNet-ish: conv 3->64, {args.blocks} residual blocks (conv 64->64 3x3, ReLU, conv, Add, ReLU) "
          f"at {args.size}x{args.size}, GAP, Gemm, Softmax (seed 0); {platform.machine()}, "
          f"Python {platform.python_version()}\n")
    print("| ONNX nodes | images | --batch-size | analyze wall s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for n, bs, wall, rss in rows:
        print(f"| {n_nodes} | {n} | {bs} | {wall:.1f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
