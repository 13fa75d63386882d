"""``qhw simulate`` as functions: a quantized model, or one random GEMM, on the simulated array.

The host side (this module) checks that the array can hold the model, builds the simulator (once
per configuration), launches the cocotb job (``qhw.sim.cocotb_job``) and turns its results into the
report: bit-exactness against the golden model, cycles, MAC utilization, accuracy float / int8 /
hardware and the hardware-vs-float error statistics (``qhw.analysis.ErrorStats``).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from ..errors import ConfigError, DataError, QhwError
from ..fileio import write_text
from .build import build, default_build_root, run_cocotb
from .manifest import Hardware, load_hardware

__all__ = ["add_coverage", "gemm_runs", "run_sharded", "simulate_gemm", "simulate_model", "write_junit"]


def _shard_outputs(dirs) -> np.ndarray:
    """The hardware's outputs of every shard, in sample order (each shard writes ``hw.npz``)."""
    ys = []
    for d in dirs:
        with np.load(d / "hw.npz", allow_pickle=False) as z:
            ys.append(z["y"])
    return np.concatenate(ys)


def _run_dir(root: Path, hw: Hardware, kind: str) -> Path:
    """A new folder per run (two runs in the same second get two folders)."""
    runs = Path(root).resolve() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{hw.name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=runs))


def _launch(hw: Hardware, job: dict, *, simulator: str, waves: bool, build_root, log,
            opt: str | None = None, coverage: bool = False, run=None) -> tuple[dict, Path, float]:
    """Build (or reuse) and run one cocotb job in ``run`` (default: a new run folder); returns the
    job's result, its folder and the build time. ``coverage``: the coverage build, and the job
    counts functional coverage bins (``qhw.sim.coverage``); Verilator writes ``coverage.dat``."""
    root = default_build_root() if build_root is None else Path(build_root)
    bdir, build_s = build(hw, simulator, build_root=root, waves=waves, log=log, opt=opt, coverage=coverage)
    if hw.netlist is not None:
        # The idle-simulator rate (20 000 cycles) costs a gate-level netlist more than the run.
        job = {**job, "measure_sim": False}
    if run is None:
        run = _run_dir(root, hw, job["kind"])
    run = Path(run).resolve()
    run.mkdir(parents=True, exist_ok=True)
    job = {**job, "rtl": str(hw.manifest_path.resolve()), "out": str(run), "coverage": coverage,
           "build": bdir.name}                 # which build ran (the RTL's or a netlist's)
    write_text(run / "job.json", json.dumps(job, indent=1))
    env = {"QHW_SIM_JOB": str(run / "job.json")}
    if simulator == "icarus" and waves:
        job_plus = [f"+dumpfile_path={run / (hw.name + '.fst')}"]
    else:
        job_plus = []
    from cocotb_tools.check_results import get_results

    try:
        xml = run_cocotb(hw, simulator, bdir, test_module="qhw.sim.cocotb_job", test_dir=run, env=env,
                         waves=waves, seed=int(job.get("seed", 0)), log_file=run / "sim.log",
                         plusargs=job_plus)
        failed = get_results(xml)[1]
    except (RuntimeError, OSError) as e:
        raise QhwError(f"simulation failed ({e}); see {run / 'sim.log'}") from None
    if failed or not (run / "result.json").is_file():
        raise QhwError(f"simulation failed; see {run / 'sim.log'}")
    return json.loads((run / "result.json").read_text()), run, build_s


def _timing(res: dict, build_s: float, wall: float) -> dict:
    """Where the time went. ``python_per_cycle_s`` is measured directly (the clock loop's body:
    drivers, monitor, checker); ``awaiting_s`` is the rest of the loop (cocotb's trigger handling
    plus the simulator); ``simulator_idle_s`` is the simulator alone on an idle design (a lower
    bound of its share)."""
    t = res["time"]
    rate = t.get("sim_only_cycles_per_s")
    cycles = res["sim_cycles"]
    loop = t["clock_loop"]
    waiting = t.get("awaiting", 0.0)
    return {
        "build_s": build_s,
        "wall_s": wall,
        "simulated_cycles": cycles,
        "cycles_per_s": cycles / loop if loop else None,
        "clock_loop_s": loop,
        "python_per_cycle_s": loop - waiting,
        "awaiting_s": waiting,
        "simulator_idle_s": cycles / rate if rate else None,
        "host_runtime_s": t["host"],
        "startup_s": max(wall - build_s - t["total"], 0.0),
    }


def _check_gemm(hw: Hardware, rtl, m: int, k: int, n: int, mode: str) -> None:
    """Refuse a GEMM the array cannot run, before anything is built."""
    c = hw.config
    if mode not in c.rounding:
        raise ConfigError(f"{rtl}: rounding {mode!r} is not built into this array ({','.join(c.rounding)}); "
                          f"regenerate with qhw generate --rounding {','.join([*c.rounding, mode])}")
    if k > c.max_k:
        raise ConfigError(f"{rtl}: --gemm needs K={k} but max_k is {c.max_k}; regenerate with qhw generate "
                          f"--max-k {k}")
    if m > 0xFFFF or n > 0xFFFF or (k > c.rows and m > c.acc_depth):
        raise ConfigError(f"--gemm {m},{k},{n}: M must be below 65536 (and at most acc_depth={c.acc_depth} "
                          f"when K > rows={c.rows}), N below 65536")


def _hardware(rtl, post_synth: str | None, simulator: str, build_root, log, *, program=None) -> Hardware:
    """The manifest's hardware: its generated RTL, or with ``post_synth`` (a board name) the netlist
    Yosys maps for that board's family, on the vendor primitive models (``qhw.fpga.postsynth``).
    A network top's netlist is its engine (``network_design``); ``program``: the model's compiled
    program, whose image an embedded manifest (``qhw generate --embed``) must hold."""
    hw = load_hardware(rtl)
    if post_synth is None:
        return hw
    if simulator != "verilator":
        raise ConfigError(f"--post-synth simulates the vendor primitive models on Verilator, not {simulator}; "
                          f"leave --simulator out")
    from ..fpga.boards import board_info
    from ..fpga.postsynth import network_design, post_synth_hardware

    design = None
    if hw.top == "network":
        design = network_design(hw.engine, board_info(post_synth).family, name=hw.name,
                                image=_embedded_image(hw, rtl, program))
    return post_synth_hardware(hw, board=post_synth, design=design, build_root=build_root, log=log)


def _embedded_image(hw: Hardware, rtl, program) -> bytes | None:
    """The ``.qbin`` an embedded network top was generated with: the simulated model's, which must
    be the one embedded (the manifest records its hash), so its netlist's memories start with it."""
    import hashlib

    embedded = hw.manifest["engine"].get("embedded")
    if not embedded:
        return None
    blob = program.to_bytes()
    if hashlib.sha256(blob).hexdigest() != embedded.get("program_sha256"):
        raise ConfigError(f"{rtl}: --post-synth rebuilds the engine with its embedded model "
                          f"({embedded.get('model')}), but the model simulated compiles to another program; "
                          f"simulate that model, or regenerate without --embed")
    return blob


def gemm_runs(rtl, runs: Sequence[dict], *, seed: int = 0, simulator: str = "verilator", waves: bool = False,
              build_root=None, log=None, opt: str | None = None, coverage: bool = False,
              post_synth: str | None = None) -> tuple[dict, Path, float]:
    """Runs of random GEMMs one after the other on one simulated array (``qhw.sim.cocotb_job``).

    Each run is ``{"name", "seed", "in_gap", "out_stall", "gemms": [[m, k, n, mode(, directed)], ...]}``; its
    GEMMs are ``qhw.sim.gemm.random_gemms(config, gemms, seed=seed)``. Returns the job's result
    (``runs``: per-run checks and per-GEMM cycles), the run folder and the build time.
    ``coverage``: on the coverage build (``coverage.dat`` in the run folder, functional bins in the
    result).
    ``post_synth``: simulate the post-synthesis netlist for that board (``_hardware``).
    """
    hw = load_hardware(rtl)
    for run in runs:
        for m, k, n, mode, *_ in run["gemms"]:
            _check_gemm(hw, rtl, m, k, n, mode)
        for key in ("in_gap", "out_stall"):
            if not 0.0 <= float(run.get(key, 0.0)) < 1.0:
                raise ConfigError(f"{key} must be a probability in [0, 1), not {run[key]}")
    job = {"kind": "gemm", "seed": seed, "runs": [dict(run) for run in runs]}
    hw = _hardware(rtl, post_synth, simulator, build_root, log)
    return _launch(hw, job, simulator=simulator, waves=waves, build_root=build_root, log=log, opt=opt,
                   coverage=coverage)


def _netlist_fields(hw: Hardware) -> dict | None:
    """What makes ``hw`` a post-synthesis netlist rather than its manifest's RTL (``_job_worker``
    puts it back), as plain data a worker process receives."""
    if hw.netlist is None:
        return None
    return {"verilog_path": str(hw.verilog_path), "models": [str(m) for m in hw.models],
            "sim_args": list(hw.sim_args), "netlist": hw.netlist}


def _job_worker(rtl: str, job: dict, simulator: str, waves: bool, build_root: str, opt: str | None,
                coverage: bool, run_dir: str, netlist: dict | None = None) -> dict:
    """One shard's cocotb job in ``run_dir`` (a top-level function: local processes and Dask
    workers call it; the build is already there). ``netlist``: ``_netlist_fields`` of a
    post-synthesis run (without it the manifest's RTL would be simulated)."""
    from dataclasses import replace

    hw = load_hardware(rtl)
    if netlist is not None:
        hw = replace(hw, verilog_path=Path(netlist["verilog_path"]), models=tuple(Path(m) for m in netlist["models"]),
                     sim_args=tuple(netlist["sim_args"]), netlist=netlist["netlist"])
    res, _, _ = _launch(hw, job, simulator=simulator, waves=waves, build_root=build_root, log=None,
                        opt=opt, coverage=coverage, run=run_dir)
    return res


def run_sharded(hw: Hardware, job: dict, ranges: Sequence[tuple[int, int]], *, simulator: str, waves: bool,
                build_root, log, opt: str | None, coverage: bool, jobs: int = 1, executor: str = "local",
                scheduler=None, kind: str | None = None, merge=None) -> tuple[dict, list[Path], Path, float]:
    """``job`` over its inputs cut into ``ranges`` (``qhw.sim.shard.shard_ranges``; the job reads
    ``start``/``stop``), one simulator process per shard sharing one build, on ``jobs`` local
    processes or the Dask cluster at ``scheduler`` (``qhw.parallel``). Returns the merged result
    (``qhw.sim.shard.merge_results``), the shard folders (in input order), the run folder and the
    build time. One shard runs in the run folder itself. ``merge``: how shard results merge
    (default ``merge_results``; the network top's ``merge_network_results``)."""
    from ..parallel import map_ordered
    from .shard import merge_results

    if hw.netlist is not None and len(ranges) > 1:
        raise ConfigError("--post-synth simulates one netlist in one process; leave --jobs out")

    root = (default_build_root() if build_root is None else Path(build_root)).resolve()
    _, build_s = build(hw, simulator, build_root=root, waves=waves, log=log, opt=opt, coverage=coverage)
    run = _run_dir(root, hw, kind or job["kind"])
    dirs = [run] if len(ranges) == 1 else [run / f"shard-{i}" for i in range(len(ranges))]
    args = [(str(hw.manifest_path.resolve()), {**job, "start": a, "stop": b}, simulator, waves, str(root), opt,
             coverage, str(d), _netlist_fields(hw)) for (a, b), d in zip(ranges, dirs)]
    if log and len(ranges) > 1:
        log(f"simulating {len(ranges)} shards on {jobs if executor == 'local' else 'the Dask cluster'}"
            f"{' local processes' if executor == 'local' else ''}")
    parts = map_ordered(_job_worker, args, jobs=jobs, kind=executor, scheduler=scheduler)
    return (merge or merge_results)(parts), dirs, run, build_s


def add_coverage(report: dict, out_dir, hw: Hardware, res: dict, run_dirs: Sequence[Path]) -> None:
    """Merge the runs' Verilator coverage into ``out_dir`` (``qhw.sim.coverage.write_coverage``) and
    add ``coverage`` (``{component: {"lines", "toggles"}}``) and ``functional_coverage`` to ``report``."""
    from .build import sim_toplevel
    from .coverage import write_coverage

    functional = res.get("functional_coverage")
    wrapper = [sim_toplevel(hw)] if sim_toplevel(hw) != hw.name else []      # the network top's, not design
    summary = write_coverage(out_dir, [Path(d) / "coverage.dat" for d in run_dirs], top=hw.name, name=hw.name,
                             functional=functional, verilog=hw.verilog_path, exclude=wrapper)
    report["coverage"] = summary["components"]
    report["functional_coverage"] = functional
    report["coverage_report"] = str(Path(out_dir) / "coverage.md")


def simulate_gemm(rtl, m: int, k: int, n: int, *, seed: int = 0, simulator: str = "verilator",
                  mode: str | None = None, waves: bool = False, stall: float = 0.0, build_root=None,
                  log=None, opt: str | None = None, coverage=None, post_synth: str | None = None) -> dict:
    """One random M x K x N GEMM on the simulated array: bit-exactness, cycles, MAC utilization.
    ``coverage``: a folder for the coverage report (``add_coverage``); ``post_synth``: on the
    post-synthesis netlist for that board (``_hardware``)."""
    hw = load_hardware(rtl)
    if hw.top == "network":
        raise ConfigError(f"{rtl}: --gemm runs on the GEMM co-processor (qhw generate --top accel); this manifest "
                          f"is a network top: give MODEL.qhw --data DATA.npz")
    c = hw.config
    mode = mode or c.rounding[0]
    t0 = time.perf_counter()
    res, run_dir, build_s = gemm_runs(rtl, [{"name": "gemm", "seed": seed, "in_gap": stall, "out_stall": stall,
                                             "gemms": [[m, k, n, mode]]}],
                                      seed=seed, simulator=simulator, waves=waves, build_root=build_root, log=log,
                                      opt=opt, coverage=coverage is not None, post_synth=post_synth)
    run = res["runs"][0]
    cycles = res["gemm_cycles"]
    report = {
        "gemm": [m, k, n], "mode": mode, "seed": seed, "simulator": simulator, "top": "accel",
        "bit_exact": run["mismatches"] == 0, "mismatches": run["mismatches"],
        "first_mismatch": run["first_mismatch"],
        "cycles": cycles, "ideal_cycles": run["gemms"][0]["ideal_cycles"],
        "mac_utilization": m * k * n / (cycles * c.peak_macs_per_cycle),
        "layers": run["layers"], "run_dir": str(run_dir),
        "time": _timing(res, build_s, time.perf_counter() - t0),
    }
    if coverage is not None:
        add_coverage(report, coverage, load_hardware(rtl), res, [run_dir])
    if post_synth is not None:
        report["netlist"] = _netlist(post_synth)
    return report


def _netlist(board: str) -> str:
    from ..fpga.boards import board_info

    return f"post-synth {board_info(board).family}"


def simulate_model(qmodel, data, rtl, *, limit: int | None = None, seed: int = 0, simulator: str = "verilator",
                   waves: bool = False, stall: float = 0.0, batch: int = 64, build_root=None, log=None,
                   progress: bool = False, opt: str | None = None, coverage=None, jobs: int = 1,
                   executor: str = "local", scheduler=None, post_synth: str | None = None,
                   job_extra: dict | None = None) -> tuple[dict, np.ndarray]:
    """A quantized model on the simulated array over DATA.npz; returns (report, hardware outputs).

    ``jobs``: the samples cut into that many shards (whole batches) on as many simulator processes
    sharing one build, locally or, with ``executor="dask"``, on the cluster at ``scheduler``; the
    report is the one a single process gives (timings aside). ``coverage``: a folder for the
    merged coverage report (``add_coverage``). ``post_synth``: on the post-synthesis netlist for that
    board (``_hardware``). A network-top manifest runs ``simulate_network`` (the same options);
    ``job_extra`` goes into its cocotb job (the tests' deliberate faults: ``mutate``,
    ``corrupt_image``, ``load``)."""
    from ..analysis import ErrorStats
    from ..api import accuracy, run_batched
    from ..executor import fixed_batch
    from ..runtime import check_model, load_array_run

    qm, x, labels = load_array_run(qmodel, data, limit=limit)
    hw = load_hardware(rtl)
    if jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, not {jobs}")
    if hw.top == "network":
        return simulate_network(qm, qmodel, data, x, labels, hw, seed=seed, simulator=simulator, waves=waves,
                                stall=stall, build_root=build_root, log=log, progress=progress, opt=opt,
                                extra=job_extra, coverage=coverage, jobs=jobs, executor=executor,
                                scheduler=scheduler, post_synth=post_synth)
    check_model(qm.graph, hw.config, str(rtl))          # refuse before building or simulating
    if batch < 1:
        raise ConfigError(f"batch must be positive, not {batch}")
    fixed = fixed_batch(qm.graph)
    if fixed is not None:  # the model runs exactly `fixed` samples at a time
        if x.shape[0] % fixed:
            raise DataError(f"{data}: {x.shape[0]} samples; the model's fixed batch size {fixed} must divide "
                            f"them (use --limit)")
        batch = fixed
    from .shard import shard_ranges

    t0 = time.perf_counter()
    ranges = shard_ranges(int(x.shape[0]), jobs, align=batch)
    job = {"kind": "model", "qmodel": str(Path(qmodel).resolve()), "data": str(Path(data).resolve()),
           "limit": int(x.shape[0]), "seed": seed, "in_gap": stall, "out_stall": stall, "batch": batch,
           "progress": progress and len(ranges) == 1}
    hw = _hardware(rtl, post_synth, simulator, build_root, log)
    res, dirs, run, build_s = run_sharded(hw, job, ranges, simulator=simulator, waves=waves, build_root=build_root,
                                          log=log, opt=opt, coverage=coverage is not None, jobs=jobs,
                                          executor=executor, scheduler=scheduler)
    wall = time.perf_counter() - t0
    y_hw = _shard_outputs(dirs)
    y_q = run_batched(qm.graph, x, integer=True)
    y_f = run_batched(qm.graph, x, integer=False)
    out_diff = int(np.count_nonzero(y_hw != y_q))
    layer_mm = sum(lc["mismatches"] for lc in res["layers"])
    err = ErrorStats()
    err.update(y_f, y_hw)
    s = err.summary()
    n = int(x.shape[0])
    cycles = res["gemm_cycles"]
    ops = {nd.name: nd.op for nd in qm.graph.nodes}
    for lc in res["layers"]:
        lc.update({"name": lc["layer"], "op": ops.get(lc["layer"], "?"), "measured_cycles": lc["cycles"] / n,
                   "predicted_cycles": lc.get("ideal_cycles") / n if lc.get("ideal_cycles") is not None else None})
    report = {
        "model": qm.source or Path(qmodel).name, "rtl": str(rtl), "simulator": simulator, "seed": seed,
        "top": "accel", "samples": n,
        "bit_exact": layer_mm == 0 and out_diff == 0,
        "mismatches": layer_mm + out_diff,
        "first_mismatch": res["first_mismatch"],
        "cycles_per_inference": cycles / n,
        "mac_utilization": res["macs"] / (cycles * res["peak_macs_per_cycle"]) if cycles else 0.0,
        "accuracy_float": accuracy(y_f, labels) if labels is not None else None,
        "accuracy_quant": accuracy(y_q, labels) if labels is not None else None,
        "accuracy_hw": accuracy(y_hw, labels) if labels is not None else None,
        "hw_vs_float": {k: s[k] for k in ("mean_error", "std_error", "max_abs_error", "sqnr_db")},
        "latency_cycles": None,      # images go through layer by layer in batches: no per-image latency
        "host_bytes_per_inference": res["host_bytes"] / n if "host_bytes" in res else None,
        "gemms": res["gemms"],
        "gemm_cycles": cycles,
        "layers": res["layers"],
        "batches": [{**b, "output_mismatches": int(np.count_nonzero(y_hw[b["start"]:b["stop"]]
                                                                    != y_q[b["start"]:b["stop"]]))}
                    for b in res["batches"]],
        "run_dir": str(run),
        "time": {**_timing(res, build_s, wall), "shards": len(ranges)},
    }
    _finish_report(report, coverage=coverage, coverage_hw=hw, res=res, dirs=dirs,
                   netlist=hw.netlist if post_synth is not None else None, labelled=labels is not None)
    return report, y_hw


def simulate_network(qm, qmodel, data, x, labels, hw: Hardware, *, seed: int = 0, simulator: str = "verilator",
                     waves: bool = False, stall: float = 0.0, build_root=None, log=None, progress: bool = False,
                     opt: str | None = None, extra: dict | None = None, coverage=None, jobs: int = 1,
                     executor: str = "local", scheduler=None, post_synth: str | None = None
                     ) -> tuple[dict, np.ndarray]:
    """A quantized model on the simulated network top (``qhw generate --top network``): the program
    loaded through ``load`` (or embedded), every sample streamed in and its outputs back, every
    scratchpad write checked against the golden model and, without stalls, every write's cycle and
    each layer's cycles against the compiler's prediction (``qhw.sim.network``).

    ``jobs``: the images cut into that many shards on as many simulator processes sharing one
    build (each loads the program), locally or on the Dask cluster at ``scheduler``; the report is
    the one a single process gives (timings aside). ``coverage``: a folder for the merged line,
    toggle and functional coverage (``add_coverage``, bins of ``qhw.sim.netcov``). ``post_synth``:
    on the engine's post-synthesis netlist for that board (``_hardware``)."""
    from ..analysis import ErrorStats
    from ..api import accuracy, run_batched
    from ..engine.compiler import check_hardware, compile_model
    from .shard import merge_network_results, shard_ranges

    # refuse (one line) before building or simulating: a model that does not fit, or a rule not built
    compiled = compile_model(qm, hw.engine, source=str(qmodel))
    check_hardware(compiled, source=str(qmodel))
    if post_synth is not None and jobs > 1:
        raise ConfigError("--post-synth simulates one netlist in one process; leave --jobs out")
    t0 = time.perf_counter()
    ranges = shard_ranges(int(x.shape[0]), jobs)
    job = {"kind": "network", "qmodel": str(Path(qmodel).resolve()), "data": str(Path(data).resolve()),
           "limit": int(x.shape[0]), "seed": seed, "in_gap": stall, "out_stall": stall,
           "progress": progress and len(ranges) == 1, **(extra or {})}
    rtl_hw = hw
    hw = _hardware(hw.manifest_path, post_synth, simulator, build_root, log, program=compiled.program)
    res, dirs, run, build_s = run_sharded(hw, job, ranges, simulator=simulator, waves=waves, build_root=build_root,
                                          log=log, opt=opt, coverage=coverage is not None, jobs=jobs,
                                          executor=executor, scheduler=scheduler, merge=merge_network_results)
    wall = time.perf_counter() - t0
    y_hw = _shard_outputs(dirs)
    y_q = run_batched(qm.graph, x, integer=True)
    y_f = run_batched(qm.graph, x, integer=False)
    out_diff = int(np.count_nonzero(y_hw != y_q))
    err = ErrorStats()
    err.update(y_f, y_hw)
    st = err.summary()
    n = int(x.shape[0])
    totals = res["totals"]
    cycles = float(np.mean(totals)) if totals else 0.0
    lo, hi = res["measured_min"], res["measured_max"]
    mean = [v / n for v in res["measured_sum"]]
    layers = [{"name": L["name"], "op": L["op"], "predicted_cycles": res["predicted"][L["index"]],
               "measured_cycles": lo[L["index"]] if lo[L["index"]] == hi[L["index"]] else mean[L["index"]]}
              for L in res["layers"]]
    compared = res["cycles_compared"]
    cycles_equal = (compared and not res["cycle_errors"] and all(t == res["predicted_total"] for t in totals)
                    and all(a == b == p for a, b, p in zip(lo, hi, res["predicted"]))) if compared else None
    mism = res["write_mismatches"] + res["output_mismatches"] + out_diff
    rows = res["rows"]
    report = {
        "model": qm.source or Path(qmodel).name, "rtl": str(hw.manifest_path), "simulator": simulator,
        "seed": seed, "top": "network", "samples": n,
        "bit_exact": mism == 0, "mismatches": mism,
        "first_mismatch": res["first_mismatch"] or (f"{out_diff} model outputs differ from the golden model"
                                                    if out_diff else None),
        "cycles_per_inference": cycles,
        "predicted_cycles_per_inference": res["predicted_total"],
        "cycles_equal": cycles_equal,
        "cycle_errors": res["cycle_errors"],
        "latency_cycles": float(np.mean(res["latencies"])) if res["latencies"] else 0.0,
        "host_bytes_per_inference": float(np.mean([a + b for a, b, _ in res["beats"]])) if res["beats"] else 0,
        "host_beats_per_inference": float(np.mean([c for *_, c in res["beats"]])) if res["beats"] else 0,
        "beat_bytes": rows,
        "mac_utilization": res["macs"] / (res["peak_macs_per_cycle"] * cycles) if cycles else 0.0,
        "accuracy_float": accuracy(y_f, labels) if labels is not None else None,
        "accuracy_quant": accuracy(y_q, labels) if labels is not None else None,
        "accuracy_hw": accuracy(y_hw, labels) if labels is not None else None,
        "hw_vs_float": {k: st[k] for k in ("mean_error", "std_error", "max_abs_error", "sqnr_db")},
        "gemms": [],
        "gemm_cycles": int(sum(totals)),
        "layers": layers,
        "program_loaded": res["loaded"], "load_words": res["load_words"], "load_cycles": res["load_cycles"],
        "run_dir": str(run),
        "time": {**_timing(res, build_s, wall), "shards": len(ranges)},
    }
    _finish_report(report, coverage=coverage, coverage_hw=rtl_hw, res=res, dirs=dirs,
                   netlist=hw.netlist if post_synth is not None else None, labelled=labels is not None)
    return report, y_hw


def _finish_report(report: dict, *, coverage, coverage_hw: Hardware, res: dict, dirs, netlist: str | None,
                   labelled: bool) -> None:
    """What a model run's report adds last, whatever ran it: the coverage of ``coverage_hw`` (the RTL
    build, also when the run was on a netlist), the netlist name, and no accuracy keys without labels."""
    if coverage is not None:
        add_coverage(report, coverage, coverage_hw, res, dirs)
    if netlist is not None:
        report["netlist"] = netlist
    if not labelled:
        for k in ("accuracy_float", "accuracy_quant", "accuracy_hw"):
            del report[k]


def write_junit(path, report: dict, *, suite: str = "qhw.simulate") -> None:
    """JUnit XML: one test case per layer check (bit-exact against the golden model, and cycle
    counts against the manifest's model where exact), plus the model output check."""
    cases = []
    if report.get("top") == "network":
        for lc in report["layers"]:
            off = report["cycles_equal"] is not None and lc["measured_cycles"] != lc["predicted_cycles"]
            failure = f"measured {lc['measured_cycles']} cycles, predicted {lc['predicted_cycles']}"
            cases.append((lc["name"], lc["measured_cycles"], failure if off else None,
                          f"{lc['op']}: {lc['measured_cycles']} cycles (predicted {lc['predicted_cycles']})"))
    for lc in report["layers"] if report.get("top") != "network" else []:
        failure = lc["first_mismatch"] or (f"cycle counts differ from the manifest's model: {lc['cycle_errors']}"
                                           if lc["cycle_errors"] else None)
        cases.append((lc["layer"], lc["cycles"], failure,
                      f"{lc['gemms']} GEMMs, {lc['elements']} outputs, {lc['mismatches']} mismatches, "
                      f"{lc['cycles']} cycles"))
    if "samples" in report:
        ok = report["bit_exact"]
        cases.append(("model output vs golden model", report["gemm_cycles"],
                      None if ok else f"{report['mismatches']} outputs differ from the golden model",
                      f"{report['samples']} samples"))
    fails = sum(1 for c in cases if c[2])
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites><testsuite name={quoteattr(suite)} tests="{len(cases)}" failures="{fails}" errors="0">']
    for name, _cycles, failure, out in cases:
        lines.append(f'  <testcase classname={quoteattr(suite)} name={quoteattr(name)} time="0">')
        if failure:
            lines.append(f"    <failure message={quoteattr(failure)}/>")
        lines.append(f"    <system-out>{escape(out)}</system-out>")
        lines.append("  </testcase>")
    lines.append("</testsuite></testsuites>")
    try:
        write_text(path, "\n".join(lines) + "\n")
    except OSError as e:
        raise DataError(f"{path}: cannot write JUnit XML ({e.strerror})") from None
