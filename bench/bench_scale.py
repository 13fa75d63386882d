"""Coverage and sharding of ``qhw simulate``: coverage per component of a regression, and simulation
throughput with ``--jobs 1`` vs ``--jobs 2`` and on a Dask ``LocalCluster``.

    python bench/bench_scale.py [--limit 96] [--batch 16] [--build-root DIR] [--skip-coverage]

Throughput: the built-in digits CNN (int8, single rounding) on the 8x8 array sized for it
(``-O2`` build, built once before the timed runs), ``simulate_model`` over ``--limit`` test
images with ``jobs=1``, ``jobs=2`` (two local processes) and ``jobs=2`` on a Dask
``LocalCluster`` (two worker processes, started outside the timed region, and once including
its start); every report must equal the single-process one (timings aside).

Coverage: the 4x4 array of the test suite (all three rounding modes), a coverage build (``-O0``),
merged over the suite's GEMM regression (every mode without and with stalls, directed ties) and
the digits MLP over 32 images; prints the per-component table and the functional bins.
Prints Markdown for bench/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "sim"))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _same(a: dict, b: dict) -> bool:
    drop = ("time", "run_dir")
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def throughput(work: Path, root: Path, limit: int, batch: int, opt: str) -> list[str]:
    from dask.distributed import Client, LocalCluster

    from qhw.api import quantize_model
    from qhw.datasets import builtin_model_path, write_digits_npz
    from qhw.fileio import load_data
    from qhw.hw.generate import write
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig
    from qhw.runtime import config_for_model
    from qhw.sim.build import build
    from qhw.sim.manifest import load_hardware
    from qhw.sim.run import simulate_model

    data = write_digits_npz(work / "data")
    xc, _ = load_data(data["calib"])
    qm = quantize_model(builtin_model_path("digits_cnn"), QuantConfig(), calib_x=xc, log=lambda *_: None)
    qpath = work / "digits_cnn.qhw"
    save_qmodel(qm, qpath)
    _, manifest = write(config_for_model(qm.graph, rows=8, cols=8), name="qhw_array_8x8", out_dir=work / "rtl")
    _, build_s = build(load_hardware(manifest), "verilator", build_root=root, opt=opt, log=_log)
    kw = dict(limit=limit, batch=batch, build_root=root, opt=opt)

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    cpus = []

    def timed(**more):
        t, c = time.perf_counter(), cpu()
        rep, _ = simulate_model(qpath, data["test"], manifest, **kw, **more)
        cpus.append(cpu() - c)      # this process and the finished simulator processes
        return rep, time.perf_counter() - t

    one, t1 = timed(jobs=1)
    two, t2 = timed(jobs=2)
    t_start = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        cluster_s = time.perf_counter() - t_start
        dsk, td = timed(jobs=2, executor="dask", scheduler=client)
    assert one["bit_exact"] and _same(one, two) and _same(one, dsk), "sharded reports differ from one process"
    cyc = one["gemm_cycles"]
    rows = [("`--jobs 1` (one process)", t1), ("`--jobs 2` (two local processes)", t2),
            ("`--jobs 2 --executor dask` (LocalCluster, 2 worker processes, running)", td),
            ("the same, LocalCluster start included", td + cluster_s)]
    out = [f"Digits CNN, {limit} test images in batches of {batch} ({one['gemms']} GEMMs, {cyc} array cycles), "
           f"8x8 array, Verilator {opt} (build {build_s:.0f} s, once, not timed); every sharded report equals "
           f"the single-process one (timings aside).", "",
           "| run | wall (s) | images/s | speed-up vs --jobs 1 |", "|---|---|---|---|"]
    out += [f"| {name} | {t:.1f} | {limit / t:.2f} | {t1 / t:.2f} |" for name, t in rows]
    out += ["", f"Dask overhead over local processes: {td - t2:+.1f} s per run ({100 * (td / t2 - 1):+.0f} %), "
                f"plus {cluster_s:.1f} s to start the LocalCluster. CPU seconds (this process and its simulator "
                f"processes): --jobs 1 {cpus[0]:.1f} s, --jobs 2 {cpus[1]:.1f} s (the second shard's start-up and "
                f"host work are the extra)."]
    return out


def coverage(work: Path, root: Path) -> list[str]:
    os.environ.setdefault("QHW_SIM_BUILD", str(root))
    from simcases import hardware
    from test_cocotb import runs

    from qhw.api import quantize_model
    from qhw.datasets import builtin_model_path, write_digits_npz
    from qhw.fileio import load_data
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig
    from qhw.sim import funcov
    from qhw.sim.coverage import write_coverage
    from qhw.sim.run import gemm_runs, simulate_model

    hw = hardware("4x4")
    t = time.perf_counter()
    res, run_dir, build_s = gemm_runs(hw.manifest_path, runs("4x4", list(hw.config.rounding)), seed=1,
                                      build_root=root, opt="-O0", coverage=True, log=_log)
    data = write_digits_npz(work / "data_cov")
    xc, _ = load_data(data["calib"])
    qm = quantize_model(builtin_model_path("digits_mlp"), QuantConfig(), calib_x=xc, log=lambda *_: None)
    save_qmodel(qm, work / "mlp.qhw")
    rep, _ = simulate_model(work / "mlp.qhw", data["test"], hw.manifest_path, limit=32, batch=16, build_root=root,
                            opt="-O0", coverage=str(work / "cov_mlp"))
    functional = funcov.merge([res["functional_coverage"], rep["functional_coverage"]])
    out_dir = work / "coverage"
    summary = write_coverage(out_dir, [run_dir / "coverage.dat", Path(rep["run_dir"]) / "coverage.dat"],
                             top=hw.name, name=hw.name, functional=functional, verilog=hw.verilog_path)
    wall = time.perf_counter() - t

    def pct(h, n):
        return f"{100 * h / n:.1f} % ({h}/{n})" if n else "–"

    out = [f"4x4 array of the test suite (int8, `single`/`tflite`/`onnx`), coverage build `-O0` ({build_s:.0f} s), "
           f"merged over the suite's GEMM regression (each mode without and with stalls, directed ties, modes "
           f"interleaved) and the digits MLP over 32 images; {wall:.0f} s in all. Report: {out_dir / 'coverage.md'}.",
           "", "| component | lines | toggles |", "|---|---|---|"]
    out += [f"| {c} | {pct(v[0], v[1])} | {pct(v[2], v[3])} |" for c, v in summary["counts"].items()]
    hit = [b for b, n in functional["bins"].items() if n]
    out += ["", f"Functional bins hit: {len(hit)}/{len(functional['bins'])}"
                + (f"; missed: {', '.join(functional['missed'])}" if functional["missed"] else " (none missed)")
                + f". Uncovered line points: {len(summary['uncovered_lines'])}."]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=96, help="test images of the throughput runs (default 96)")
    ap.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    ap.add_argument("--build-root", help="build directory root (default: a fresh temporary one)")
    ap.add_argument("--opt", default="-O2", help="Verilator C++ optimization of the throughput runs (default -O2)")
    ap.add_argument("--skip-coverage", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="qhw_bench_scale_"))
    root = Path(args.build_root) if args.build_root else work / "sim_build"
    lines = [f"`python bench/bench_scale.py {shlex.join(argv if argv is not None else sys.argv[1:])}` on "
             f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start", ""]
    if not args.skip_coverage:
        lines += ["### Coverage per component", ""] + coverage(work, root) + [""]
    if not args.skip_throughput:
        lines += ["### Sharding: --jobs 1 vs --jobs 2, and Dask", ""]
        lines += throughput(work, root, args.limit, args.batch, args.opt)
    lines.append(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
