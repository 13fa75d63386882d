"""The network top's verification features measured: ``--jobs 1`` vs ``--jobs 2``, the Dask path's
overhead, coverage per component, and post-synthesis simulation time per FPGA family.

    python bench/bench_simnet.py [--rows 4] [--limit 8] [--build-root DIR] [--skip ...]

The built-in digits CNN (int8, ``single`` rounding) on a ``--rows`` x ``--rows`` network engine
sized for it (``qhw generate --top network --for``):

* throughput: ``simulate_model`` over ``--limit`` test images with ``jobs=1``, ``jobs=2`` (two local
  processes) and ``jobs=2`` on a Dask ``LocalCluster`` (two worker processes, started outside the
  timed region; its start is reported apart); the build is made before the timed runs; every
  sharded report must equal the single-process one (timings aside);
* coverage: a coverage build, ``--cov-limit`` images with stalls (0.3); the per-component table
  and the functional bins;
* post-synthesis: per family (``--boards``), Yosys synthesis, the netlist's Verilator build and one
  image, each timed (the netlist and build are cached in the build root: a second run reuses them;
  the times printed are those of this run).

Prints Markdown for bench/results.md, with ``uptime``'s load before and after each part.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _load() -> str:
    return "load " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def _same(a: dict, b: dict) -> bool:
    drop = ("time", "run_dir")
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def prepare(work: Path, rows: int, embed: bool = False):
    from qhw.api import quantize_model
    from qhw.cli import main
    from qhw.datasets import builtin_model_path, write_digits_npz
    from qhw.fileio import load_data
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig

    data = write_digits_npz(work / "data")
    xc, _ = load_data(data["calib"])
    qpath = work / "digits_cnn.qhw"
    if not qpath.is_file():
        save_qmodel(quantize_model(builtin_model_path("digits_cnn"), QuantConfig(), calib_x=xc, log=lambda *_: None),
                    qpath)
    name = f"qhw_network_{rows}x{rows}"
    rtl = work / "rtl" / f"{name}.json"
    if not rtl.is_file():
        assert main(["generate", "--top", "network", "--rows", str(rows), "--cols", str(rows), "--for", str(qpath),
                     "--name", name, "-o", str(work / "rtl")]) == 0
    return qpath, data["test"], rtl


def throughput(work: Path, root: Path, rows: int, limit: int, opt: str) -> list[str]:
    from dask.distributed import Client, LocalCluster

    from qhw.sim.build import build
    from qhw.sim.manifest import load_hardware
    from qhw.sim.run import simulate_model

    q, data, rtl = prepare(work, rows)
    _, build_s = build(load_hardware(rtl), "verilator", build_root=root, opt=opt, log=_log)
    kw = dict(limit=limit, build_root=root, opt=opt)
    before = _load()

    def timed(**more):
        t = time.perf_counter()
        rep, _ = simulate_model(q, data, rtl, **kw, **more)
        return rep, time.perf_counter() - t

    one, t1 = timed(jobs=1)
    two, t2 = timed(jobs=2)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        cluster_s = time.perf_counter() - t0
        dsk, td = timed(jobs=2, executor="dask", scheduler=client)
    assert one["bit_exact"] and _same(one, two) and _same(one, dsk), "sharded reports differ from one process"
    rows_ = [("`--jobs 1` (one process)", t1), ("`--jobs 2` (two local processes)", t2),
             ("`--jobs 2 --executor dask` (LocalCluster, 2 worker processes, running)", td)]
    out = [f"Digits CNN on the {rows}x{rows} network engine (`qhw generate --top network --for`), {limit} test "
           f"images ({one['cycles_per_inference']:.0f} cycles each), Verilator {opt} (build {build_s:.0f} s, once, not "
           f"timed); every sharded report equals the single-process one (timings aside). Machine: 2 cores shared "
           f"with other sessions, {before} before, {_load()} after (`os.getloadavg`, as `uptime`).", "",
           "| run | wall (s) | images/s | speed-up vs --jobs 1 |", "|---|---|---|---|"]
    out += [f"| {name} | {t:.1f} | {limit / t:.2f} | {t1 / t:.2f} |" for name, t in rows_]
    out += ["", f"Dask overhead over local processes: {td - t2:+.1f} s per run ({100 * (td / t2 - 1):+.0f} %), plus "
                f"{cluster_s:.1f} s to start the LocalCluster."]
    return out


def coverage(work: Path, root: Path, rows: int, limit: int) -> list[str]:
    from qhw.sim.run import simulate_model

    q, data, rtl = prepare(work, rows)
    before = _load()
    t = time.perf_counter()
    rep, _ = simulate_model(q, data, rtl, limit=limit, stall=0.3, seed=1, build_root=root, opt="-O0",
                            coverage=work / "cov", log=_log)
    wall = time.perf_counter() - t
    assert rep["bit_exact"]
    md = (work / "cov" / "coverage.md").read_text().split("\n## Modules")[0].split("\n", 4)[-1]
    fc = rep["functional_coverage"]
    unc = json.loads((work / "cov" / "coverage.json").read_text())["uncovered_lines"]
    return [f"Digits CNN, {limit} images with stalls (`--stall 0.3 --seed 1`) on the {rows}x{rows} network engine, "
            f"coverage build `-O0` ({rep['time']['build_s']:.0f} s), run {wall - rep['time']['build_s']:.0f} s "
            f"({before} before, {_load()} after):", "", md.strip(), "",
            f"Functional bins ({len(fc['bins']) - len(fc['missed'])}/{len(fc['bins'])} hit): "
            + ", ".join(f"`{k}` {v}" for k, v in fc["bins"].items()) + ".", "",
            f"Missed: {', '.join(f'`{k}`' for k in fc['missed'])}. Uncovered line points: {len(unc)} "
            f"(listed in `coverage.md`)."]


def post_synth(work: Path, root: Path, rows: int, boards: list[str]) -> list[str]:
    from qhw.fpga.boards import board_info
    from qhw.fpga.postsynth import network_design, post_synth_hardware
    from qhw.sim.build import build
    from qhw.sim.manifest import load_hardware
    from qhw.sim.run import simulate_model

    q, data, rtl = prepare(work, rows)
    hw = load_hardware(rtl)
    out = ["| family (board) | Yosys synthesis (s) | Verilator build of the netlist (s) | one image (s) | bit-exact | "
           "cells | load before / after |", "|---|---|---|---|---|---|---|"]
    for board in boards:
        family = board_info(board).family
        before = _load()
        t = time.perf_counter()
        ps = post_synth_hardware(hw, board=board, design=network_design(hw.engine, family, name=hw.name),
                                 build_root=root, log=_log)
        synth_s = time.perf_counter() - t
        _, build_s = build(ps, "verilator", build_root=root, opt="-O0", log=_log)
        t = time.perf_counter()
        rep, _ = simulate_model(q, data, rtl, limit=1, build_root=root, opt="-O0", post_synth=board, log=_log)
        run_s = time.perf_counter() - t
        text = ps.verilog_path.read_text()
        cells = {c: text.count(f" {c} ") + text.count(f"{c} #(") for c in
                 ("DP16KD", "MULT18X18D", "TRELLIS_DPR16X4", "SB_RAM40_4K", "SB_MAC16", "SB_SPRAM256KA")}
        cells = ", ".join(f"{k} {v}" for k, v in cells.items() if v)
        out.append(f"| {family} ({board}) | {synth_s:.0f} | {build_s:.0f} | {run_s:.0f} | "
                   f"{'yes' if rep['bit_exact'] else 'NO'} ({rep['netlist']}) | {cells} | {before} / {_load()} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--cov-limit", type=int, default=2)
    ap.add_argument("--opt", default="-O2")
    ap.add_argument("--boards", default="ulx3s-85f,icebreaker")
    ap.add_argument("--build-root", default=str(REPO / "sim_build"))
    ap.add_argument("--work", default=str(REPO / "sim_build" / "bench_simnet"))
    ap.add_argument("--skip", default="", help="comma-separated: throughput, coverage, postsynth")
    a = ap.parse_args()
    work, root = Path(a.work), Path(a.build_root)
    work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))
    print(f"`python bench/bench_simnet.py {shlex.join(sys.argv[1:])}`\n")
    if "throughput" not in skip:
        print("\n".join(throughput(work, root, a.rows, a.limit, a.opt)) + "\n")
    if "coverage" not in skip:
        print("\n".join(coverage(work, root, a.rows, a.cov_limit)) + "\n")
    if "postsynth" not in skip:
        print("\n".join(post_synth(work, root, a.rows, a.boards.split(","))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
