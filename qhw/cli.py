"""The ``qhw`` command line. User mistakes end in one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

from .cli_types import positive_int
from .errors import QhwError

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2
# Modules that register further subcommands with ``add_parser(subparsers)`` (each sets ``func``).
COMMAND_MODULES = ("qhw.hw.cli", "qhw.sim.cli", "qhw.fpga.cli", "qhw.engine.cli", "qhw.formal.cli")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def progress(it, desc: str):
    """A progress bar on a terminal, nothing otherwise."""
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, disable=None, file=sys.stderr, unit="batch")


def _budget(text: str) -> float:
    try:
        v = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of accuracy points, e.g. 0.5, not {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text!r}")
    return v


# --------------------------------------------------------------------------- commands


def _model_and_data(args):
    """The QMODEL and DATA.npz of run/analyze, checked against each other."""
    from .executor import check_input
    from .fileio import load_data
    from .qmodel import load_qmodel

    qm = load_qmodel(args.qmodel)
    x, y = load_data(args.data)
    return qm, check_input(qm.graph, x, str(args.data)), y


def cmd_quantize(args) -> int:
    from .api import quantize_model
    from .fileio import load_data
    from .qmodel import save_qmodel
    from .quantize import QuantConfig

    cfg = QuantConfig(weight_bits=args.weight_bits, act_bits=args.act_bits, granularity=args.granularity,
                      weight_symmetric=args.weight_scheme == "sym", act_symmetric=args.act_scheme == "sym",
                      calib_method=args.calib_method, percentile=args.percentile, rounding=args.rounding,
                      bias_correction=args.bias_correction, keep_float=tuple(args.keep_float or ()))
    x = y = None
    if args.calib:
        x, y = load_data(args.calib, what="--calib")
    qm = quantize_model(args.model, cfg, calib_x=x, calib_y=y, auto_keep_float=args.auto_keep_float,
                        calib_source=str(args.calib), progress=progress, log=_log, strict=args.strict)
    save_qmodel(qm, args.output)
    cfg = qm.config
    nq = sum(1 for n in qm.graph.nodes if n.quant is not None)
    for note in qm.notes:
        _log(f"note: {note}")
    _log(f"quantized {nq} of {len(qm.graph.nodes)} nodes (weights int{cfg.weight_bits} {cfg.granularity}, "
         f"activations int{cfg.act_bits}, {cfg.calib_method}, rounding {cfg.rounding}) -> {args.output}")
    return 0


def cmd_run(args) -> int:
    from .api import run_batched
    from .fileio import save_npz

    qm, x, _ = _model_and_data(args)
    y = run_batched(qm.graph, x, integer=not args.float, progress=progress)
    save_npz(args.output, y=y.astype(np.float32))
    _log(f"ran {'float reference' if args.float else 'integer golden model'} on {x.shape[0]} samples "
         f"-> {args.output}")
    return 0


def cmd_analyze(args) -> int:
    from .analysis import analyze
    from .report import markdown, public_report, write_report

    qm, x, y = _model_and_data(args)
    report = analyze(qm, x, y, with_sensitivity=not args.no_sensitivity, progress=progress,
                     batch_size=args.batch_size)
    if args.output:
        files = write_report(report, args.output)
        _log(f"wrote {files['markdown']} and {files['json']}")
    if args.json:
        print(json.dumps(public_report(report)))
    elif not args.output:
        print(markdown(report))
    return 0


def cmd_export_onnx(args) -> int:
    from .export_onnx import export_qdq
    from .qmodel import load_qmodel

    qm = load_qmodel(args.qmodel)
    notes = export_qdq(qm, args.output)
    for n in notes:
        _log(f"note: {n}")
    _log(f"wrote {args.output}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(out_dir=Path(args.output), models=args.model, log=_log, progress=progress,
                    limit=args.limit, top=args.top)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qhw", description="Float ONNX model -> INT8 model -> verified hardware.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quantize", help="quantize a float (or QDQ) ONNX model")
    q.add_argument("model", metavar="MODEL.onnx")
    q.add_argument("--calib", metavar="DATA.npz", help="calibration data: x (float32, batch first), optional y")
    q.add_argument("-o", "--output", required=True, metavar="QMODEL")
    q.add_argument("--weight-bits", type=int, default=8, choices=(4, 8, 16))
    q.add_argument("--act-bits", type=int, default=8, choices=(8, 16))
    q.add_argument("--granularity", default="per-channel", choices=("per-channel", "per-tensor"))
    q.add_argument("--weight-scheme", default="sym", choices=("sym", "asym"),
                   help="symmetric (zero point 0, narrow range; default) or asymmetric weights")
    q.add_argument("--act-scheme", default="asym", choices=("asym", "sym"),
                   help="asymmetric (default) or symmetric activations")
    q.add_argument("--calib-method", default="minmax", choices=("minmax", "percentile", "mse", "entropy"))
    q.add_argument("--percentile", type=float, default=99.99, help="for --calib-method percentile")
    q.add_argument("--rounding", default="single", choices=("single", "tflite", "onnx"))
    q.add_argument("--keep-float", nargs="+", action="extend", metavar="NAME",
                   help="nodes to keep in float (repeatable)")
    q.add_argument("--auto-keep-float", type=_budget, metavar="BUDGET",
                   help="keep the most sensitive layers float until the top-1 loss is within BUDGET points")
    q.add_argument("--bias-correction", action="store_true", help="correct each layer's mean output shift")
    q.add_argument("--strict", action="store_true",
                   help="an attribute qhw cannot run in integers (e.g. AveragePool ceil_mode) is an error instead "
                        "of running that node in float")
    q.set_defaults(func=cmd_quantize)

    r = sub.add_parser("run", help="run the integer golden model (or --float reference)")
    r.add_argument("qmodel", metavar="QMODEL")
    r.add_argument("--data", required=True, metavar="DATA.npz")
    r.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    r.add_argument("--float", action="store_true", help="run the float reference instead")
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("analyze", help="quantization error analysis against the float model")
    a.add_argument("qmodel", metavar="QMODEL")
    a.add_argument("--data", required=True, metavar="DATA.npz")
    a.add_argument("-o", "--output", metavar="REPORT_DIR", help="write report.md, report.json and plots")
    a.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    a.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity runs")
    a.add_argument("--batch-size", type=positive_int, metavar="N",
                   help="samples per chunk (memory grows with it; default: from the model's activation size, "
                        "or the model's fixed batch)")
    a.set_defaults(func=cmd_analyze)

    e = sub.add_parser("export-onnx", help="write the quantized model as a QDQ ONNX model")
    e.add_argument("qmodel", metavar="QMODEL")
    e.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    e.set_defaults(func=cmd_export_onnx)

    d = sub.add_parser("demo", help="the embedded end-to-end demo on the digits models")
    d.add_argument("-o", "--output", default="demo_out", metavar="DIR")
    d.add_argument("--model", nargs="+", default=["digits_cnn", "digits_mlp"],
                   choices=("digits_cnn", "digits_mlp", "digits_resnet"))
    d.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images")
    d.add_argument("--top", choices=("network", "accel"), default="network",
                   help="hardware the CNN runs on: network (default: the whole network on the network engine) "
                        "or accel (the GEMM co-processor, the host runs everything but the GEMMs)")
    d.set_defaults(func=cmd_demo)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except QhwError as e:
        print(f"qhw: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("qhw: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
