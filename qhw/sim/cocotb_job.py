"""cocotb test module behind ``qhw simulate``: runs one job (a whole model, or one random GEMM) on
the simulated accelerator and writes the results for the command to report.

The job comes in as a JSON file named by ``QHW_SIM_JOB`` (written by ``qhw.sim.run``); results go
to ``result.json`` (per-layer checks, cycles, timings) and ``hw.npz`` (hardware outputs) in the
job's folder. Everything is computed by ``qhw.runtime`` with ``SimBackend``; every GEMM is checked
against the golden model as it comes out.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cocotb
import numpy as np

from qhw.fileio import save_npz
from qhw.sim.backend import SimBackend
from qhw.sim.bench import AccelBench
from qhw.sim.manifest import load_hardware


def _progress(enabled: bool, t0: float):
    def show(msg: str) -> None:
        if enabled:
            sys.stderr.write(f"\r\x1b[K[{time.perf_counter() - t0:6.1f}s] {msg}")
            sys.stderr.flush()
    return show


async def _sim_only_rate(bench: AccelBench, cycles: int = 20000) -> float:
    """Cycles per second of the simulator alone (no Python per cycle): one Timer over ``cycles`` with
    every input idle. A lower bound of the simulator's share: an event-driven simulator (Icarus)
    is much slower while the array computes."""
    from cocotb.triggers import Timer

    t = time.perf_counter()
    await Timer(10 * cycles, unit="ns")
    return cycles / max(time.perf_counter() - t, 1e-9)


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["QHW_SIM_JOB"]).read_text())
    out = Path(job["out"])
    t_start = time.perf_counter()
    hw = load_hardware(job["rtl"])
    stalls = bool(job.get("in_gap") or job.get("out_stall"))
    bench = AccelBench(dut, hw, seed=int(job["seed"]), in_gap=job.get("in_gap", 0.0),
                       out_stall=job.get("out_stall", 0.0))
    await bench.start()
    backend = SimBackend(bench, check_cycles=not stalls)
    show = _progress(bool(job.get("progress")), t_start)
    result: dict = {"kind": job["kind"]}
    if job["kind"] == "gemm":
        from qhw.sim.gemm import random_gemm

        m, k, n = job["gemm"]
        rng = np.random.default_rng(int(job["seed"]))
        call = random_gemm(hw.config, m, k, n, mode=job["mode"], rng=rng, layer=f"gemm {m}x{k}x{n}")
        await backend.run([call])
        result["ideal_cycles"] = hw.ideal_cycles(m, k, n)
    else:
        from qhw.executor import check_input
        from qhw.fileio import load_data
        from qhw.qmodel import load_qmodel
        from qhw.runtime import Runtime

        qm = load_qmodel(job["qmodel"])
        x, _ = load_data(job["data"])
        x = check_input(qm.graph, x, job["data"])
        if job.get("limit"):
            x = x[:int(job["limit"])]
        rt = Runtime(qm.graph, hw.config)
        batch = int(job.get("batch", 64))
        ys, codes = [], []
        layer_names = [n.name for n in qm.graph.nodes]

        def on_layer(layer: str, done: int) -> None:
            show(f"simulating: images {done}-{min(done + batch, x.shape[0])} of {x.shape[0]}, layer "
                 f"{layer} ({layer_names.index(layer) + 1}/{len(layer_names)})")

        backend.on_layer = on_layer
        for s in range(0, x.shape[0], batch):
            backend.position = s
            y = await rt.run_async(x[s:s + batch], backend)
            ys.append(y[0])
            codes.append(rt.last_codes.get(qm.graph.outputs[0], np.zeros((0,))))
        show(f"simulated {x.shape[0]} images\n")
        y = np.concatenate(ys)
        save_npz(out / "hw.npz", y=y.astype(np.float32), **({"codes": np.concatenate(codes)}
                                                             if all(c.size for c in codes) else {}))
        result["samples"] = int(x.shape[0])
    loop = bench.stats.wall
    total = time.perf_counter() - t_start
    rate = await _sim_only_rate(bench) if job.get("measure_sim", True) else None
    records = bench.stats.records
    result.update({
        "layers": [lc.to_json() for lc in backend.layers.values()],
        "first_mismatch": None if backend.first is None else str(backend.first),
        "gemms": len(records),
        "gemm_cycles": int(sum(r.cycles for r in records)),
        "macs": int(sum(r.macs for r in records)),
        "gemm_records": [{"layer": r.layer, "m": r.m, "k": r.k, "n": r.n, "cycles": r.cycles}
                         for r in records[:2000]],
        "sim_cycles": int(bench.stats.cycles),
        "time": {"total": total, "clock_loop": loop, "awaiting": bench.stats.waiting, "host": total - loop,
                 "sim_only_cycles_per_s": rate},
        "peak_macs_per_cycle": hw.config.peak_macs_per_cycle,
    })
    (out / "result.json").write_text(json.dumps(result, indent=1))
