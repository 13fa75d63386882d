"""``qhw generate``: write an array's Verilog and JSON manifest.

``add_parser(subparsers)`` registers the subcommand on the main ``qhw`` parser;
``run(args)`` returns the exit code and raises ``QhwError`` subclasses for user
errors (the main command prints them as one line).
"""

from __future__ import annotations

import argparse
import time

from ..contract import PE_KINDS
from .config import ArrayConfig
from .generate import write

__all__ = ["add_parser", "config_for_model", "config_from_args", "engine_from_args", "run"]


def config_for_model(path, **overrides) -> ArrayConfig:
    """``qhw generate --for QMODEL``: an array sized for a quantized model (largest K, rounding
    mode, per-channel requantization, element widths); explicit flags in ``overrides`` win."""
    from ..qmodel import load_qmodel
    from ..runtime import config_for_model as fit

    return fit(load_qmodel(path).graph, source=str(path), **overrides)


def _rounding(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``generate`` on ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "generate", help="generate the systolic array's Verilog and JSON manifest",
        description="Write NAME.v (Verilog) and NAME.json (manifest: parameters, ports, latencies) to DIR.")
    p.add_argument("--top", choices=("accel", "network"), default="accel",
                   help="accel: the GEMM co-processor (default); network: the network engine that runs a whole "
                        "quantized network from its on-chip memories (docs/engine.md)")
    add_hardware_args(p)
    p.add_argument("--embed", action="store_true",
                   help="--top network with --for: the compiled program and weights become the memories' initial "
                        "contents (the hardware boots with the model; loading another one still works)")
    p.add_argument("--for", dest="for_model", metavar="QMODEL", help="size the array for a quantized model")
    p.add_argument("--name", required=True, help="top module and file name")
    p.add_argument("-o", "--out-dir", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=run)
    return p


def add_hardware_args(p: argparse.ArgumentParser) -> None:
    """The flags that describe the hardware (array and, for ``--top network``, the engine's memories and
    units): ``qhw generate``'s, and the bench scripts' that build an engine without writing it."""
    p.add_argument("--rows", type=int, help="PE rows, the K extent of a weight tile (default 8)")
    p.add_argument("--cols", type=int, help="PE columns, the N extent of a weight tile (default 8)")
    p.add_argument("--act-bits", type=int, help="activation/output bits: 4, 8 or 16 (default 8)")
    p.add_argument("--weight-bits", type=int, help="weight bits: 4, 8 or 16 (default 8)")
    p.add_argument("--max-k", type=int, help="largest reduction length K (default 4096)")
    p.add_argument("--rounding", type=_rounding, metavar="single|tflite|onnx[,...]",
                   help="requantization modes to build, comma-separated (default single,tflite,onnx)")
    p.add_argument("--acc-bits", type=int, help="accumulator bits (default: exact bit growth of --max-k)")
    p.add_argument("--acc-depth", type=int, help="accumulator rows, the largest M when K > rows (default 512)")
    p.add_argument("--per-tensor", action="store_true", help="one multiplier/shift per tile, not per channel")
    p.add_argument("--unsigned-act", action="store_true", help="unsigned activations and outputs (uint8)")
    p.add_argument("--tile-rows", type=int, help="PE rows per combinational tile (default 1)")
    p.add_argument("--tile-cols", type=int, help="PE columns per combinational tile (default 1)")
    p.add_argument("--tile-pipeline", type=int, help="register stages between tiles (default 1)")
    p.add_argument("--requant-lanes", type=int,
                   help="requantization lanes (DSP multipliers), a divisor of --cols; fewer lanes are shared "
                        "and space result rows (default: one per column)")
    p.add_argument("--requant-mul", metavar="parallel|serial",
                   help="how a requantization lane multiplies: parallel (DSP blocks, one element per cycle; "
                        "default) or serial (logic cells only, one element per 32 cycles; single/tflite only; "
                        "for the iCE40 UP5K, whose DSPs the array takes)")
    p.add_argument("--pe", metavar="|".join(PE_KINDS),
                   help="PE kind: generic (default), or the DSP-mapped ice40-dual (8-bit) / ecp5-pipelined, which "
                        "qhw synth --top accel|board builds for that FPGA family; 1x1 tiles only")
    p.add_argument("--weight-kib", type=int, help="--top network: weight/parameter store KiB (default: --for's "
                                                   "model, else 32)")
    p.add_argument("--act-kib", type=int, help="--top network: activation scratchpad KiB (default: --for's model, "
                                                "else 8)")
    p.add_argument("--program-words", type=int, help="--top network: program store words (default: --for's model, "
                                                      "else 1024)")
    p.add_argument("--weight-ram", choices=("block", "spram"),
                   help="--top network: what the weight store is built from: block (block RAM; default) or spram "
                        "(single-port RAM: SB_SPRAM256KA on the iCE40 UP5K, at most 64 KiB, cols 4 or 8, no --embed)")
    p.add_argument("--pool-avg", choices=("lane", "div"),
                   help="--top network: how pools average: lane (default; the divider and a requantization lane "
                        "per pool lane, for pools that rescale) or div (the divider only, no DSPs: qhw's own "
                        "quantizer keeps a pool's scale; a model that needs a lane is refused)")
    p.add_argument("--units", metavar="LIST",
                   help="--top network: the optional units built, comma-separated from add (residual Add and "
                        "table passes), pool (standalone pooling), or none; used (with --for): those the model "
                        "needs (default: all). A model needing a unit left out is refused, naming the layer")


# ArrayConfig fields set by the flag of the same name (--per-tensor and --unsigned-act are mapped below).
_FIELDS = ("rows", "cols", "act_bits", "weight_bits", "max_k", "rounding", "acc_bits", "acc_depth", "tile_rows",
           "tile_cols", "tile_pipeline", "requant_lanes", "pe", "requant_mul")


def config_from_args(args: argparse.Namespace) -> ArrayConfig:
    """The ``ArrayConfig`` the flags describe (flags left out keep the defaults)."""
    overrides = {field: getattr(args, field) for field in _FIELDS if getattr(args, field) is not None}
    if args.per_tensor:
        overrides["per_channel"] = False
    if args.unsigned_act:
        overrides["act_signed"] = False
    if args.for_model:
        return config_for_model(args.for_model, **overrides)
    return ArrayConfig(**overrides)


_ENGINE_FLAGS = ("weight_kib", "act_kib", "program_words", "weight_ram", "pool_avg")


def _units(args: argparse.Namespace):
    """``--units``: None (all), ``"used"`` (with ``--for``) or a tuple of ``OPTIONAL_UNITS`` in their order."""
    from ..engine.config import OPTIONAL_UNITS
    from ..errors import ConfigError

    if args.units is None:
        return None
    if args.units == "used":
        if not args.for_model:
            raise ConfigError("--units used needs --for MODEL.qhw (the model whose units to build)")
        return "used"
    names = [] if args.units == "none" else args.units.split(",")
    bad = [n for n in names if n not in OPTIONAL_UNITS]
    if bad:
        raise ConfigError(f"--units: {bad[0]!r} is not an optional unit (expected a comma-separated list of "
                          f"{', '.join(OPTIONAL_UNITS)}, or none, or used)")
    return tuple(u for u in OPTIONAL_UNITS if u in names)


def engine_from_args(args: argparse.Namespace):
    """``--top network``: the ``EngineConfig`` the flags describe and, with ``--embed``, the compiled
    program's bytes. ``--for`` sizes the memories with ``qhw.engine.compiler.fit_engine``; explicit
    sizes win, and a model that does not fit them is refused with the compiler's one line."""
    from dataclasses import replace

    from ..engine.compiler import check_hardware, compile_model, fit_engine, units_used
    from ..engine.config import EngineConfig

    if args.embed and not args.for_model:
        from ..errors import ConfigError

        raise ConfigError("--embed needs --for MODEL.qhw (the model whose program and weights to embed)")
    array = config_from_args(args)
    flags = {k: getattr(args, k) for k in _ENGINE_FLAGS if getattr(args, k) is not None}
    units = _units(args)
    if isinstance(units, tuple):
        flags["units"] = units
    if not args.for_model:
        return EngineConfig(array=array, **flags), None
    from ..qmodel import load_qmodel

    qm = load_qmodel(args.for_model)
    source = str(args.for_model)
    engine = replace(fit_engine(qm, array, source=source), **flags) if flags else fit_engine(qm, array, source=source)
    compiled = compile_model(qm, engine, source=source)       # explicit sizes too small: the one-line refusal
    check_hardware(compiled, source=source)
    if units == "used":
        engine = replace(engine, units=units_used(compiled.program))
    return engine, (compiled.program.to_bytes() if args.embed else None)


def _run_network(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .generate import write_network

    start = time.perf_counter()
    engine, image = engine_from_args(args)
    model = Path(args.for_model).name if image is not None else None
    v_path, j_path = write_network(engine, name=args.name, out_dir=args.out_dir, image=image, model=model)
    print(f"wrote {v_path} and {j_path} (network engine: {engine.describe()}"
          f"{', model ' + model + ' embedded' if model else ''}) in {time.perf_counter() - start:.1f} s")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.top == "network":
        return _run_network(args)
    from ..errors import ConfigError

    used = [f"--{k.replace('_', '-')}" for k in (*_ENGINE_FLAGS, "units") if getattr(args, k) is not None]
    if used or args.embed:
        raise ConfigError(f"{(used or ['--embed'])[0]} configures the network engine; add --top network")
    config = config_from_args(args)
    start = time.perf_counter()
    v_path, j_path = write(config, name=args.name, out_dir=args.out_dir)
    print(f"wrote {v_path} and {j_path} ({config.rows}x{config.cols}, pe {config.pe}, "
          f"{config.peak_macs_per_cycle} MACs/cycle, latency {config.latency} cycles) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # python -m qhw.hw.cli generate ...
    import sys

    from ..errors import QhwError
    parser = argparse.ArgumentParser(prog="qhw")
    add_parser(parser.add_subparsers(required=True))
    ns = parser.parse_args()
    try:
        sys.exit(ns.func(ns))
    except QhwError as e:
        print(f"qhw: error: {e}", file=sys.stderr)
        sys.exit(2)
