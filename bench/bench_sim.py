"""Simulation speed of the generated accelerator under cocotb: Verilator vs Icarus on the same model
and array, and the whole digits test split through the CNN on the simulated 8x8 array.

    python bench/bench_sim.py [--limit 450] [--icarus-limit 20] [--build-root DIR]

Quantizes the built-in digits CNN (int8, per-channel, single rounding), generates the 8x8 array
sized for it, builds each simulator from scratch in a fresh build root (so build times are real
first-build times), runs ``qhw.sim.run.simulate_model`` and prints Markdown for bench/results.md:
simulated cycles/s, inferences/s, and where the time goes (build, startup, host runtime, Python
per-cycle work, the simulator itself).
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--limit", type=int, default=450, help="test images on Verilator (default: the whole split)")
    ap.add_argument("--icarus-limit", type=int, default=20, help="test images on both simulators (default 20)")
    ap.add_argument("--build-root", help="build directory root (default: a fresh temporary one)")
    ap.add_argument("--opt", default="-O2", help="Verilator C++ optimization (default -O2)")
    args = ap.parse_args(argv)

    from qhw.api import quantize_model
    from qhw.datasets import builtin_model_path, write_digits_npz
    from qhw.fileio import load_data
    from qhw.hw.generate import write
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig
    from qhw.runtime import config_for_model
    from qhw.sim.build import simulator_available
    from qhw.sim.run import simulate_model

    work = Path(tempfile.mkdtemp(prefix="qhw_bench_sim_"))
    root = Path(args.build_root) if args.build_root else work / "sim_build"
    data = write_digits_npz(work / "data")
    xc, _ = load_data(data["calib"])
    qm = quantize_model(builtin_model_path("digits_cnn"), QuantConfig(), calib_x=xc, log=lambda *_: None)
    qpath = work / "digits_cnn.qhw"
    save_qmodel(qm, qpath)
    cfg = config_for_model(qm.graph, rows=8, cols=8)
    _, manifest = write(cfg, name="qhw_array_8x8", out_dir=work / "rtl")

    def log(msg):
        print(msg, file=sys.stderr)

    runs = []
    sims = [s for s in ("verilator", "icarus") if simulator_available(s)]
    for sim in sims:
        log(f"{sim}: {args.icarus_limit} images")
        rep, _ = simulate_model(qpath, data["test"], manifest, limit=args.icarus_limit, simulator=sim,
                                build_root=root, log=log, opt=args.opt if sim == "verilator" else None)
        runs.append((sim, args.icarus_limit, rep))
    if "verilator" in sims and args.limit:
        log(f"verilator: {args.limit} images")
        t = time.perf_counter()
        rep, _ = simulate_model(qpath, data["test"], manifest, limit=args.limit, simulator="verilator",
                                build_root=root, log=log, opt=args.opt, progress=sys.stderr.isatty())
        rep["time"]["bench_wall_s"] = time.perf_counter() - t
        runs.append(("verilator", args.limit, rep))

    cmd = "python " + " ".join(shlex.quote(a) for a in ["bench/bench_sim.py", *(argv or sys.argv[1:])])
    print(f"### Simulated 8x8 int8 array (digits CNN), cocotb 2.1 — `{cmd}`\n")
    print(f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; "
          f"Verilator C++ {args.opt}; model: digits CNN int8 per-channel, `single` rounding; "
          f"array: 8x8, max_k {cfg.max_k}; one whole stream beat per cycle, one `await` per cycle; "
          f"no random stalls (cycle counts are the hardware's own).\n")
    print("| simulator | images | bit-exact | accuracy hw | cycles/image | MAC util. | simulated cycles | "
          "cycles/s (clock loop) | images/s (clock loop) | simulator alone, idle design, cycles/s | build s | "
          "total s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sim, n, r in runs:
        t = r["time"]
        loop = t["clock_loop_s"]
        alone = t["simulated_cycles"] / t["simulator_idle_s"] if t["simulator_idle_s"] else None
        print(f"| {sim} | {n} | {'yes' if r['bit_exact'] else 'NO'} | {100 * r['accuracy_hw']:.2f} % | "
              f"{r['cycles_per_inference']:.0f} | {100 * r['mac_utilization']:.1f} % | {t['simulated_cycles']:,} | "
              f"{t['cycles_per_s']:,.0f} | {n / loop:,.1f} | {alone:,.0f} | {t['build_s']:.1f} | "
              f"{t['wall_s']:.1f} |")
    print()
    v = [r for s, n, r in runs if s == "verilator"]
    i = [r for s, n, r in runs if s == "icarus"]
    if v and i:
        print(f"Verilator / Icarus, cycles/s in the clock loop on the same {args.icarus_limit} images: "
              f"{v[0]['time']['cycles_per_s'] / i[0]['time']['cycles_per_s']:.1f}x.\n")
    if args.limit and v:
        r = v[-1]
        t = r["time"]
        build_s = v[0]["time"]["build_s"]
        print(f"Whole run, {args.limit} images on Verilator: {t['bench_wall_s']:.1f} s after the build "
              f"({build_s:.1f} s, done once per configuration and reused).")
        print()
        print("| where the time goes | seconds | share |")
        print("|---|---|---|")
        parts = [("build (Verilator + C++), fresh build root", build_s),
                 ("simulator start, cocotb and Python imports", t["startup_s"]),
                 ("host runtime (im2col, planning, packing beats, golden model per GEMM)", t["host_runtime_s"]),
                 ("Python per-cycle work (drivers, monitor, in-order checker)", t["python_per_cycle_s"]),
                 ("inside `await`: cocotb trigger handling + Verilated model", t["awaiting_s"]),
                 ("final report (golden and float reference runs, error statistics)",
                  t["bench_wall_s"] - t["wall_s"])]
        total = sum(p for _, p in parts)
        for name, sec in parts:
            print(f"| {name} | {sec:.1f} | {100 * sec / total:.0f} % |")
        print(f"| sum | {total:.1f} | |")
        print()
        print(f"Of the time inside `await`, the Verilated model alone needs about {t['simulator_idle_s']:.1f} s "
              f"(one `Timer` over as many cycles, idle inputs); the rest is cocotb's scheduling.")
        print()
        print(f"Cycles/s over the whole clock loop: {t['cycles_per_s']:,.0f} "
              f"(baselines: per-cycle cocotb on a plain 8x8 array, Verilator 31.8k, Icarus 3.6k).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
