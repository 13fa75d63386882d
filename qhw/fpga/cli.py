"""``qhw synth`` and ``qhw sweep``: place and route generated arrays on FPGA boards with YoWASP tools.

``add_parser(subparsers)`` registers both subcommands on the main ``qhw`` parser; the ``run_*``
functions return the exit code and raise ``QhwError`` subclasses for user errors.
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from .boards import BOARDS

__all__ = ["add_parser", "run_sweep", "run_synth"]

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
    s.add_argument("--top", default="array", choices=("array", "accel", "board"),
                   help="array: the PE grid with live stimulus (default); accel: the whole accelerator "
                        "(accumulators, requantization) with live stimulus; board: accelerator + UART host link")
    s.add_argument("--pe", default="auto", choices=("auto", "generic", "ice40-dual", "ecp5-pipelined"),
                   help="PE implementation of the array top (auto: the board family's DSP variant); the "
                        "accel and board tops build the manifest's pe (qhw generate --pe), so auto or that")
    s.add_argument("--freq", type=_mhz, metavar="MHZ",
                   help="clock constraint (default: 40 on iCE40 and 150 on ECP5 for array/accel; "
                        "the board oscillator for --top board)")
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


def run_synth(args) -> int:
    from pathlib import Path

    from .flow import config_from_manifest, synth
    config, name = config_from_manifest(args.rtl)
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
