"""The whole digits test split on the simulated network engine against the GEMM co-processor, in one run.

    python bench/bench_engine.py [--limit 450] [--rows 8 --cols 8] [--build-root DIR] [--opt -O2]

Quantizes the built-in digits CNN (int8, per-channel, single rounding), generates the network engine
(``--top network``, memories sized by ``--for``) and the GEMM co-processor (``--top accel``, sized for
the model), both ROWSxCOLS, builds each in a fresh build root, runs ``qhw.sim.run.simulate_model``
over the first ``--limit`` test images on Verilator without stalls and prints Markdown for
bench/results.md: wall time, simulated cycles per second, cycles and host bytes per inference,
bit-exactness, cycles against the compiler's prediction, per-layer cycles, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=450, help="test images (default: the whole split, 450)")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--build-root", help="build directory root (default: a fresh temporary one)")
    ap.add_argument("--opt", default="-O2", help="Verilator C++ optimization (default -O2)")
    ap.add_argument("--json", metavar="FILE", help="also write both reports as JSON")
    args = ap.parse_args(argv)

    from qhw.api import quantize_model
    from qhw.datasets import builtin_model_path, write_digits_npz
    from qhw.engine.compiler import fit_engine
    from qhw.fileio import load_data
    from qhw.hw.generate import write, write_network
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig
    from qhw.runtime import config_for_model
    from qhw.sim.run import simulate_model

    def log(msg):
        print(msg, file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="qhw_bench_engine_"))
    root = Path(args.build_root) if args.build_root else work / "sim_build"
    data = write_digits_npz(work / "data")
    xc, _ = load_data(data["calib"])
    qm = quantize_model(builtin_model_path("digits_cnn"), QuantConfig(), calib_x=xc, log=lambda *_: None)
    qpath = work / "digits_cnn.qhw"
    save_qmodel(qm, qpath)
    array = config_for_model(qm.graph, rows=args.rows, cols=args.cols)
    engine = fit_engine(qm, array, source="digits_cnn")
    t = time.perf_counter()
    _, net = write_network(engine, name=f"qhw_network_{args.rows}x{args.cols}", out_dir=work / "rtl")
    gen_net = time.perf_counter() - t
    t = time.perf_counter()
    _, acc = write(array, name=f"qhw_array_{args.rows}x{args.cols}", out_dir=work / "rtl")
    gen_acc = time.perf_counter() - t

    runs = {}
    for top, manifest, gen in (("network", net, gen_net), ("accel", acc, gen_acc)):
        log(f"{top}: {args.limit} images")
        t = time.perf_counter()
        rep, _ = simulate_model(qpath, data["test"], manifest, limit=args.limit, build_root=root, log=log,
                                opt=args.opt, progress=sys.stderr.isatty())
        rep["time"]["bench_wall_s"] = time.perf_counter() - t
        rep["time"]["generate_s"] = gen
        runs[top] = rep
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))

    n, a = runs["network"], runs["accel"]
    cmd = "python " + " ".join(shlex.quote(x) for x in ["bench/bench_engine.py", *(argv or sys.argv[1:])])
    print(f"### Network engine vs GEMM co-processor, digits CNN, {args.rows}x{args.cols} — `{cmd}`\n")
    print(f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores (shared); Verilator "
          f"C++ {args.opt}; {args.limit} test images, batch 1 on the engine (one image streamed in, its logits "
          f"back, then the next), batch 64 on the co-processor; no random stalls; every scratchpad write (engine) "
          f"or result beat (co-processor) checked against the golden model. Engine: {engine.describe()}.\n")
    print("| top | images | bit-exact | accuracy hw | cycles/inference | predicted | MAC util. | latency cycles | "
          "host bytes/inference | simulated cycles | cycles/s (clock loop) | images/s (wall) | generate s | "
          "build s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for top, r in runs.items():
        tm = r["time"]
        pred = r.get("predicted_cycles_per_inference", "-")
        lat = "-" if r["latency_cycles"] is None else f"{r['latency_cycles']:g}"
        print(f"| {top} | {r['samples']} | {'yes' if r['bit_exact'] else 'NO'} | {100 * r['accuracy_hw']:.2f} % | "
              f"{r['cycles_per_inference']:,.1f} | {pred} | {100 * r['mac_utilization']:.1f} % | {lat} | "
              f"{r['host_bytes_per_inference']:,.0f} | {tm['simulated_cycles']:,} | {tm['cycles_per_s'] or 0:,.0f} | "
              f"{r['samples'] / tm['bench_wall_s']:.1f} | {tm['generate_s']:.1f} | {tm['build_s']:.1f} | "
              f"{tm['bench_wall_s']:.1f} |")
    print()
    print(f"Engine / co-processor: cycles per inference {n['cycles_per_inference'] / a['cycles_per_inference']:.2f}x, "
          f"host bytes per inference {n['host_bytes_per_inference'] / a['host_bytes_per_inference']:.4f}x "
          f"({a['host_bytes_per_inference'] / n['host_bytes_per_inference']:.0f}x less traffic), simulated "
          f"cycles/s {(n['time']['cycles_per_s'] or 0) / (a['time']['cycles_per_s'] or 1):.2f}x, wall time "
          f"{n['time']['bench_wall_s'] / a['time']['bench_wall_s']:.2f}x. Engine cycles equal to the compiler's "
          f"prediction: {'yes' if n.get('cycles_equal') else 'NO'}.\n")
    print("| layer | op | predicted cycles | measured cycles |")
    print("|---|---|---|---|")
    for L in n["layers"]:
        print(f"| {L['name']} | {L['op']} | {L['predicted_cycles']} | {L['measured_cycles']} |")
    return 0 if n["bit_exact"] and a["bit_exact"] and n.get("cycles_equal") else 1


if __name__ == "__main__":
    sys.exit(main())
