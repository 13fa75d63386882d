"""The cocotb test module behind ``qhw simulate`` and the test suite: runs one job on the simulated
accelerator (``qhw.sim.bench``) and writes the results for the host to report.

Jobs (a JSON file named by ``QHW_SIM_JOB``, written by ``qhw.sim.run``):

* ``gemm``: runs of random GEMMs (``qhw.sim.gemm.random_gemms``), one after the other on the same
  bench, each with its own seed and idle / back-pressure rates; without stalls every GEMM's cycle
  count is compared with the manifest's analytical model wherever that model is exact;
* ``model``: a quantized model over a data file (or a shard of it: samples ``start`` to ``stop``),
  through ``qhw.runtime``; with stalls, each batch's pause pattern is seeded from the seed and its
  first sample, so a sharded run stalls exactly where a single run does;
* ``network``: the same on the network top (``qhw.sim.network``), one image at a time (a shard:
  images ``start`` to ``stop``; with stalls each image's pauses are seeded from its index).

With ``coverage`` the bench counts functional coverage bins (``qhw.sim.funcov``; the network top's:
``qhw.sim.netcov``) into the result.

Every GEMM is checked bit for bit against the golden model as it comes out; after the last one
the bench checks that no further result comes (``AccelBench.finish``). Results go to
``result.json`` (per-run and per-layer checks, cycles, timings) and, for a model, ``hw.npz``
(hardware outputs) in the job's folder.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import cocotb
import numpy as np

from qhw.fileio import save_npz, write_text
from qhw.sim.backend import SimBackend
from qhw.sim.bench import AccelBench
from qhw.sim.gemm import random_gemms
from qhw.sim.manifest import Hardware, load_hardware


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


async def _gemm_run(bench: AccelBench, hw: Hardware, run: dict) -> dict:
    """One run of random GEMMs; its checks and per-GEMM cycles."""
    seed = int(run["seed"])
    stalls = bool(run.get("in_gap") or run.get("out_stall"))
    bench.set_random_pauses(in_gap=run.get("in_gap", 0.0), out_stall=run.get("out_stall", 0.0), seed=seed)
    backend = SimBackend(bench, check_cycles=not stalls)
    start = len(bench.stats.records)
    await backend.run(random_gemms(hw.config, run["gemms"], seed=seed))
    layers = [lc.to_json() for lc in backend.layers.values()]
    return {
        "name": run.get("name", ""), "seed": seed, "in_gap": run.get("in_gap", 0.0),
        "out_stall": run.get("out_stall", 0.0), "layers": layers,
        "first_mismatch": None if backend.first is None else str(backend.first),
        "mismatches": sum(lc["mismatches"] for lc in layers),
        "cycle_checks": sum(lc["cycle_checks"] for lc in layers),
        "cycle_errors": [e for lc in backend.layers.values() for e in lc.cycle_errors],
        "gemms": [{"m": r.m, "k": r.k, "n": r.n, "mode": g[3], "cycles": r.cycles, "mismatches": r.mismatches,
                   "ideal_cycles": hw.ideal_cycles(r.m, r.k, r.n)}
                  for r, g in zip(bench.stats.records[start:], run["gemms"])],
    }


async def _model_run(bench: AccelBench, hw: Hardware, job: dict, show) -> dict:
    """A quantized model over the job's data; hardware outputs to ``hw.npz``."""
    from qhw.executor import check_input
    from qhw.fileio import load_data
    from qhw.qmodel import load_qmodel
    from qhw.runtime import Runtime
    from qhw.sim.shard import merge_layers

    stalls = bool(job.get("in_gap") or job.get("out_stall"))
    qm = load_qmodel(job["qmodel"])
    x, _ = load_data(job["data"])
    x = check_input(qm.graph, x, job["data"])
    if job.get("limit"):
        x = x[:int(job["limit"])]
    first = int(job.get("start", 0))            # a shard: samples [start, stop) of the data
    x = x[first:int(job.get("stop", x.shape[0]))]
    rt = Runtime(qm.graph, hw.config)
    batch = int(job.get("batch", 64))
    ys, codes = [], []
    layer_names = [n.name for n in qm.graph.nodes]

    def on_layer(layer: str, done: int) -> None:
        show(f"simulating: images {done}-{min(done + batch, x.shape[0])} of {x.shape[0]}, layer "
             f"{layer} ({layer_names.index(layer) + 1}/{len(layer_names)})")

    batches, first_mismatch = [], None
    for s in range(0, x.shape[0], batch):
        backend = SimBackend(bench, check_cycles=not stalls)      # per batch: its own layer checks
        backend.on_layer = on_layer
        backend.position = s
        if stalls:      # the stall pattern of a batch depends on its first sample only (shards reproduce it)
            bench.set_random_pauses(in_gap=job.get("in_gap", 0.0), out_stall=job.get("out_stall", 0.0),
                                    seed=random.Random(f"{job['seed']}/{first + s}").getrandbits(32))
        y = await rt.run_async(x[s:s + batch], backend)
        ys.append(y[0])
        codes.append(rt.last_codes.get(qm.graph.outputs[0], np.zeros((0,))))
        batches.append({"start": first + s, "stop": first + s + y[0].shape[0],
                        "layers": [lc.to_json() for lc in backend.layers.values()]})
        if first_mismatch is None and backend.first is not None:
            first_mismatch = str(backend.first)
    show(f"simulated {x.shape[0]} images\n")
    y = np.concatenate(ys)
    save_npz(Path(job["out"]) / "hw.npz", y=y.astype(np.float32),
             **({"codes": np.concatenate(codes)} if all(c.size for c in codes) else {}))
    return {"samples": int(x.shape[0]), "layers": merge_layers([b["layers"] for b in batches]),
            "batches": batches, "first_mismatch": first_mismatch}


async def _network_job(dut, hw: Hardware, job: dict, show) -> dict:
    """A quantized model over the job's data on the network top: load the program (unless the
    manifest says this very program is embedded, or ``load`` is false), then per sample the host
    runs ``qhw.engine.run.segment_steps`` with every segment on the hardware, each checked write by
    write (``qhw.sim.network``). Hardware outputs to ``hw.npz``."""
    import hashlib

    from qhw.engine.compiler import compile_model
    from qhw.engine.run import segment_steps
    from qhw.executor import check_input
    from qhw.fileio import load_data
    from qhw.qmodel import load_qmodel
    from qhw.sim.network import NetworkBench, NetworkExpect, WriteChecker, descriptor_shares

    t_start = time.perf_counter()
    engine = hw.engine
    qm = load_qmodel(job["qmodel"])
    compiled = compile_model(qm, engine, source=Path(job["qmodel"]).name)
    program = compiled.program
    blob = program.to_bytes()
    names = {x.index: (x.name, x.op) for x in compiled.layers}
    expect = NetworkExpect(program, engine, names)
    cov = None
    if job.get("coverage"):                # functional bins, counted on the reference model (qhw.sim.netcov)
        from qhw.sim.netcov import CoverageModel, NetworkCoverage

        cov = NetworkCoverage(hw.config.rounding)
        expect.model = CoverageModel(program, act_words=engine.act_words, coverage=cov)
    for k, v in job.get("mutate", {}).items():        # a test's wrong expectation: (descriptor, nth write) -> +1
        d, nth = map(int, k.split(","))
        _mutate(expect, d, nth, int(v))
    x, _ = load_data(job["data"])
    x = check_input(qm.graph, x, job["data"])[:int(job["limit"])]
    first = int(job.get("start", 0))            # a shard: images [start, stop) of the data
    x = x[first:int(job.get("stop", x.shape[0]))]
    in_gap, out_stall = job.get("in_gap", 0.0), job.get("out_stall", 0.0)
    bench = NetworkBench(dut, hw, seed=int(job["seed"]), in_gap=in_gap, out_stall=out_stall)
    await bench.start()
    embedded = hw.manifest["engine"].get("embedded") or {}
    load_cycles, load_count = 0, 0
    loaded = False
    if job.get("load", True) and embedded.get("program_sha256") != hashlib.sha256(blob).hexdigest():
        from qhw.engine.load import load_words

        image = bytearray(program.image)
        for off in job.get("corrupt_image", []):          # a test's corrupted load: weight bytes flipped
            image[int(off)] ^= 0x5A
        loaded_prog = program if not job.get("corrupt_image") else _with_image(program, bytes(image))
        words = load_words(loaded_prog)
        load_count = len(words)
        load_cycles = await bench.load_program(words)
        loaded = True
    checker = WriteChecker(expect, hw.config.rows)
    ys, codes, measured, latencies, beats, bad_out, first_out = [], [], [], [], [], 0, None
    out_name = qm.graph.outputs[0]
    for s in range(x.shape[0]):
        show(f"simulating: image {s + 1} of {x.shape[0]}")
        if bench.stalls:    # each image's stall pattern depends on its index only (shards reproduce it)
            bench.set_random_pauses(in_gap=in_gap, out_stall=out_stall, seed=f"{job['seed']}/{first + s}")
        if cov is not None:
            cov.inference(program)
        gen = segment_steps(program, qm.graph, x[s:s + 1])
        ends: dict[int, int] = {}
        lat, nin, nout, nbeats = 0, 0, 0, 0
        try:
            calls = next(gen)
            while True:
                results = []
                for c in calls:
                    outs, rec = await bench.run_segment(expect, c.segment, c.inputs, checker)
                    results.append(outs)
                    ends.update({(c.segment, k): v for k, v in rec.ends.items()})
                    lat += rec.latency
                    nin += rec.bytes_in
                    nout += rec.bytes_out
                    nbeats += rec.beats_in + rec.beats_out
                    bad_out += rec.output_mismatches
                    first_out = first_out or rec.first_mismatch
                calls = gen.send(results)
        except StopIteration as stop:
            y, code = stop.value
        ys.append(y[0])
        codes.append(code.get(out_name, np.zeros((1, 0))))
        shares = [0] * len(program.descriptors)
        for seg in sorted({k[0] for k in ends}):
            part = descriptor_shares(program, {k[1]: v for k, v in ends.items() if k[0] == seg})
            shares = [a + b for a, b in zip(shares, part)]
        measured.append(shares)
        latencies.append(lat)
        beats.append((nin, nout, nbeats))
    show(f"simulated {x.shape[0]} images\n")
    save_npz(Path(job["out"]) / "hw.npz", y=np.concatenate(ys).astype(np.float32),
             **({"codes": np.concatenate(codes)} if all(np.size(c) for c in codes) else {}))
    m = np.asarray(measured, dtype=np.int64)
    if cov is not None:
        cov.add_backpressure({"load": bench.load.stalls, "i": bench.inp.stalls, "o": bench.monitor.stalls})
    return {
        "samples": int(x.shape[0]), "top": "network",
        "loaded": loaded, "load_cycles": load_cycles, "load_words": load_count,
        "write_mismatches": checker.bad, "output_mismatches": bad_out,
        "first_mismatch": checker.first or first_out,
        "cycle_errors": checker.cycle_errors,
        "cycles_compared": not bench.stalls and expect.single,
        "predicted": expect.report.per_descriptor, "predicted_total": expect.report.total,
        "measured": m.tolist() if m.shape[0] <= 8 else m[:8].tolist(),
        "measured_min": m.min(axis=0).tolist(), "measured_max": m.max(axis=0).tolist(),
        "measured_sum": m.sum(axis=0).tolist(),
        "totals": m.sum(axis=1).tolist(), "latencies": latencies,
        "beats": beats, "rows": hw.config.rows,
        "layers": [{"index": x.index, "name": x.name, "op": x.op, "macs": x.macs} for x in compiled.layers],
        "macs": compiled.total_macs, "peak_macs_per_cycle": hw.config.peak_macs_per_cycle,
        "sim_cycles": int(bench.cycles),
        "time": {"total": time.perf_counter() - t_start, "clock_loop": bench.wall, "awaiting": bench.waiting,
                 "host": time.perf_counter() - t_start - bench.wall, "sim_only_cycles_per_s": None},
        **({"functional_coverage": cov.to_json()} if cov is not None else {}),
    }


def _with_image(program, image: bytes):
    from dataclasses import replace

    return replace(program, image=image)


def _mutate(expect, descriptor: int, nth: int, delta: int) -> None:
    """Make the expectation wrong on purpose: ``delta`` added to the first value of the ``nth``
    write of ``descriptor`` (the test that a wrong layer is named)."""
    run = expect.run

    def wrong(segment, inputs):
        outs, writes = run(segment, inputs)
        mine = [k for k, w in enumerate(writes) if w.descriptor == descriptor]
        if nth < len(mine):
            w = writes[mine[nth]]
            writes[mine[nth]] = type(w)(w.cycle, w.descriptor, w.word, w.lane,
                                        (w.values[0] + delta, *w.values[1:]))
        return outs, writes
    expect.run = wrong


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["QHW_SIM_JOB"]).read_text())
    t_start = time.perf_counter()
    hw = load_hardware(job["rtl"])
    if job["kind"] == "network":
        result = await _network_job(dut, hw, job, _progress(bool(job.get("progress")), t_start))
        write_text(Path(job["out"]) / "result.json", json.dumps(result, indent=1))
        return
    bench = AccelBench(dut, hw, seed=int(job["seed"]), in_gap=job.get("in_gap", 0.0),
                       out_stall=job.get("out_stall", 0.0), coverage=bool(job.get("coverage")))
    await bench.start()
    result: dict = {"kind": job["kind"]}
    if job["kind"] == "gemm":
        result["runs"] = [await _gemm_run(bench, hw, run) for run in job["runs"]]
    else:
        result.update(await _model_run(bench, hw, job, _progress(bool(job.get("progress")), t_start)))
    await bench.finish()
    loop = bench.stats.wall
    total = time.perf_counter() - t_start
    rate = await _sim_only_rate(bench) if job.get("measure_sim", True) else None
    records = bench.stats.records
    result.update({
        "gemms": len(records),
        "gemm_cycles": int(sum(r.cycles for r in records)),
        "macs": int(sum(r.macs for r in records)),
        "gemm_records": [{"layer": r.layer, "m": r.m, "k": r.k, "n": r.n, "cycles": r.cycles}
                         for r in records[:2000]],
        "sim_cycles": int(bench.stats.cycles),
        "host_bytes": int(bench.stats.host_bytes),
        "time": {"total": total, "clock_loop": loop, "awaiting": bench.stats.waiting, "host": total - loop,
                 "sim_only_cycles_per_s": rate},
        "peak_macs_per_cycle": hw.config.peak_macs_per_cycle,
    })
    if bench.coverage is not None:
        result["functional_coverage"] = bench.functional_coverage()
    write_text(Path(job["out"]) / "result.json", json.dumps(result, indent=1))
