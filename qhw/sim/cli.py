"""``qhw simulate``: a quantized model (or one random GEMM) on the simulated accelerator.

``add_parser(subparsers)`` registers the subcommand; ``run(args)`` returns the exit status and
raises ``QhwError`` subclasses for user errors (the main command prints them as one line).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError

__all__ = ["add_parser", "run"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "simulate", help="run a quantized model (or a random GEMM) on the simulated hardware",
        description="Run QMODEL over DATA.npz on the generated array (cocotb + Verilator or Icarus), "
                    "check every GEMM bit for bit against the golden model and report accuracy, cycles "
                    "and the error against the float model. With --gemm M,K,N: one random GEMM.")
    p.add_argument("qmodel", nargs="?", metavar="QMODEL", help="quantized model written by qhw quantize")
    p.add_argument("--rtl", required=True, metavar="DIR/NAME.json", help="manifest written by qhw generate")
    p.add_argument("--data", metavar="DATA.npz", help="x (float32, batch first) and optional labels y")
    p.add_argument("--limit", type=int, metavar="N", help="simulate the first N samples")
    p.add_argument("--gemm", metavar="M,K,N", help="simulate one random GEMM instead of a model")
    p.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    p.add_argument("--post-synth", metavar="BOARD", choices=_boards(),
                   help="simulate the netlist Yosys maps for BOARD's FPGA family (synth_ice40 / synth_ecp5, as qhw "
                        "synth runs it) on the vendor primitive models, instead of the generated RTL "
                        f"(Verilator; boards: {', '.join(_boards())})")
    p.add_argument("--waves", action="store_true", help="write waveforms (FST/VCD) into the run's folder")
    p.add_argument("--seed", type=int, default=0, help="seed of random GEMM data and stream stalls (default 0)")
    p.add_argument("--stall", type=float, default=0.0, metavar="P",
                   help="probability of an idle input cycle and of output back-pressure (default 0: "
                        "cycle counts are the hardware's own)")
    p.add_argument("--rounding", choices=("single", "tflite", "onnx"), help="rounding mode of a --gemm run")
    p.add_argument("--batch", type=int, default=64, help="samples per runtime batch (default 64)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-o", "--output", metavar="OUT.npz", help="hardware outputs (y, float) as .npz")
    p.add_argument("--junit", metavar="FILE", help="JUnit XML with one test case per layer check")
    add_scale_arguments(p)
    p.set_defaults(func=run)
    return p


def add_scale_arguments(p: argparse.ArgumentParser) -> None:
    """``--coverage``, ``--jobs``, ``--executor``, ``--scheduler`` (``scale_options`` reads them)."""
    from ..cli_types import positive_int

    p.add_argument("--coverage", metavar="DIR",
                   help="Verilator line/toggle and functional coverage, merged over all runs, into DIR "
                        "(coverage.md, coverage.json, coverage.dat); a separate coverage build")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="shard the inputs over N simulator processes sharing one build (default 1)")
    p.add_argument("--executor", default="local", choices=("local", "dask"),
                   help="where the shards run: local processes, or a Dask cluster (--scheduler)")
    p.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address (tcp://host:8786) for --executor dask")


def scale_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``simulate_model`` from ``add_scale_arguments``' flags."""
    if args.executor == "dask" and not args.scheduler:
        raise ConfigError("--executor dask needs --scheduler ADDR (tcp://host:8786)")
    if args.coverage and args.simulator != "verilator":
        raise ConfigError(f"--coverage needs --simulator verilator, not {args.simulator}")
    return {"coverage": args.coverage, "jobs": args.jobs, "executor": args.executor, "scheduler": args.scheduler}

def _boards() -> tuple[str, ...]:
    from ..fpga.boards import BOARDS

    return tuple(BOARDS)


def _fmt_pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def run(args: argparse.Namespace) -> int:
    from .gemm import parse_gemm
    from .run import simulate_gemm, simulate_model

    if not 0.0 <= args.stall < 1.0:
        raise ConfigError(f"--stall must be a probability in [0, 1), not {args.stall}")
    if args.gemm:
        if args.qmodel or args.data:
            raise ConfigError("--gemm runs a random GEMM; give either --gemm M,K,N or QMODEL --data DATA.npz")
        m, k, n = parse_gemm(args.gemm)
        scale = scale_options(args)             # one GEMM is one input: --jobs has nothing to shard
        rep = simulate_gemm(args.rtl, m, k, n, seed=args.seed, simulator=args.simulator, mode=args.rounding,
                            waves=args.waves, stall=args.stall, log=_log, coverage=scale["coverage"],
                            post_synth=args.post_synth)

        def summary():
            ideal = rep["ideal_cycles"]
            _log(f"GEMM {m}x{k}x{n} ({rep['mode']}, seed {args.seed}) on {args.simulator}{_on(rep)}: "
                 f"{'bit-exact' if rep['bit_exact'] else 'MISMATCH: ' + str(rep['first_mismatch'])}, "
                 f"{rep['cycles']} cycles" + (f" (model {ideal})" if ideal is not None else "")
                 + f", MAC utilization {100 * rep['mac_utilization']:.1f} %")
        return _emit(args, rep, summary)
    if not args.qmodel or not args.data:
        raise ConfigError("qhw simulate needs QMODEL and --data DATA.npz (or --gemm M,K,N)")
    if args.output and not str(args.output).endswith(".npz"):
        raise ConfigError(f"-o must name an .npz file, not {args.output!r}")
    rep, y_hw = simulate_model(args.qmodel, args.data, args.rtl, limit=args.limit, seed=args.seed,
                               simulator=args.simulator, waves=args.waves, stall=args.stall, batch=args.batch,
                               log=_log, progress=sys.stderr.isatty(), post_synth=args.post_synth,
                               **scale_options(args))
    if args.output:
        from ..fileio import save_npz

        save_npz(args.output, y=y_hw.astype("float32"))

    def summary():
        t = rep["time"]
        e = rep["hw_vs_float"]
        _log(f"{rep['samples']} samples on {args.simulator}{_on(rep)}: "
             f"{'bit-exact with the golden model' if rep['bit_exact'] else 'MISMATCH: ' + str(rep['first_mismatch'])}")
        if "accuracy_hw" in rep:
            _log(f"accuracy float {_fmt_pct(rep['accuracy_float'])}, int8 {_fmt_pct(rep['accuracy_quant'])}, "
                 f"hardware {_fmt_pct(rep['accuracy_hw'])}")
        sq = e["sqnr_db"]
        _log(f"hardware vs float: SQNR {'exact' if sq is None else f'{sq:.1f} dB'}, mean error "
             f"{e['mean_error']:.4g}, std {e['std_error']:.4g}, max abs {e['max_abs_error']:.4g}")
        if rep.get("top") == "network":
            for line in network_table(rep):
                _log(line)
        _log(f"{rep['cycles_per_inference']:.0f} cycles per inference, MAC utilization "
             f"{100 * rep['mac_utilization']:.1f} %; {t['simulated_cycles']} cycles simulated at "
             f"{t['cycles_per_s'] or 0:.0f} cycles/s (build {t['build_s']:.1f} s, total {t['wall_s']:.1f} s)")
        if args.output:
            _log(f"wrote {args.output}")
    return _emit(args, rep, summary)


def _coverage_lines(rep: dict) -> None:
    if "coverage" not in rep:
        return
    for comp, v in rep["coverage"].items():
        _log(f"coverage {comp}: lines {_fmt_pct(v['lines'])}, toggles {_fmt_pct(v['toggles'])}")
    fc = rep.get("functional_coverage") or {}
    if fc:
        hit = len(fc["bins"]) - len(fc["missed"])
        _log(f"functional coverage: {hit}/{len(fc['bins'])} bins hit"
             + (f"; missed: {', '.join(fc['missed'])}" if fc["missed"] else ""))
    _log(f"wrote {rep['coverage_report']}")


def _on(rep: dict) -> str:
    return f" ({rep['netlist']} netlist)" if "netlist" in rep else ""


def network_table(rep: dict) -> list[str]:
    """The network top's per-layer cycles, predicted and measured, and the verdict lines."""
    rows = [("layer", "op", "predicted", "measured")]
    rows += [(L["name"], L["op"], str(L["predicted_cycles"]), str(L["measured_cycles"])) for L in rep["layers"]]
    rows.append(("total", "", str(rep["predicted_cycles_per_inference"]), f"{rep['cycles_per_inference']:g}"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join((c.ljust(w[i]) if i < 2 else c.rjust(w[i])) for i, c in enumerate(r)) for r in rows]
    eq = rep["cycles_equal"]
    lines.append(f"bit-exact: {'yes' if rep['bit_exact'] else 'NO'}; cycles equal to the compiler's prediction: "
                 f"{'not compared (random stalls)' if eq is None else 'yes' if eq else 'NO'}"
                 + (f" ({rep['cycle_errors'][0]})" if rep["cycle_errors"] else ""))
    lines.append(f"latency {rep['latency_cycles']:g} cycles (first input beat to last output beat), host traffic "
                 f"{rep['host_bytes_per_inference']:g} bytes per inference")
    return lines


def _emit(args, rep: dict, summary) -> int:
    """The report as JUnit (``--junit``), one JSON object (``--json``) or the ``summary`` lines;
    exit status 1 on any mismatch."""
    if args.junit:
        from .run import write_junit


        write_junit(args.junit, rep)
    if args.json:
        print(json.dumps(rep))
    else:
        summary()
        _coverage_lines(rep)
    return 0 if rep["bit_exact"] else 1
