"""``qhw compile`` (model -> engine program) and ``qhw disasm`` (program -> text).

``add_parser(subparsers)`` registers both on the main ``qhw`` parser (``qhw.cli.COMMAND_MODULES``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import ModelError
from ..fileio import atomic_path
from .config import DEFAULT_ACT_KIB, DEFAULT_PROGRAM_WORDS, DEFAULT_WEIGHT_KIB, EngineConfig

__all__ = ["add_parser", "compile_report", "engine_config", "layer_table", "run_compile", "run_disasm"]

_SIZES = ("weight_kib", "act_kib", "program_words", "tables")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compile", help="compile a quantized model into a network-engine program (.qbin)",
        description="Write the engine program + weight image and print one row per layer: op, shape, tiles, "
                    "predicted cycles, memory used. The array comes from --rtl (a qhw generate manifest) or "
                    "--rows/--cols; memory sizes from the manifest's 'engine' section, else the defaults "
                    f"(--weight-kib {DEFAULT_WEIGHT_KIB}, --act-kib {DEFAULT_ACT_KIB}, "
                    f"--program-words {DEFAULT_PROGRAM_WORDS}); flags win.")
    p.add_argument("qmodel", metavar="MODEL.qhw")
    p.add_argument("--rtl", metavar="DIR/NAME.json", help="manifest of the generated hardware")
    p.add_argument("--rows", type=int, help="array rows without --rtl (default 8)")
    p.add_argument("--cols", type=int, help="array columns without --rtl (default 8)")
    p.add_argument("--weight-kib", type=int, help=f"weight/parameter store KiB (default {DEFAULT_WEIGHT_KIB})")
    p.add_argument("--act-kib", type=int, help=f"activation scratchpad KiB (default {DEFAULT_ACT_KIB})")
    p.add_argument("--program-words", type=int, help=f"program store words (default {DEFAULT_PROGRAM_WORDS})")
    p.add_argument("--tables", type=int, help="table-activation slots (default 1)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.qbin")
    p.add_argument("--listing", action="store_true", help="also print the disassembly")
    p.add_argument("--json", action="store_true", help="print one JSON object (layers, cycles, memory) instead")
    p.set_defaults(func=run_compile)

    d = subparsers.add_parser("disasm", help="print a network-engine program (.qbin) for people")
    d.add_argument("program", metavar="MODEL.qbin")
    d.set_defaults(func=run_disasm)


def engine_config(args: argparse.Namespace, graph) -> EngineConfig:
    """The engine the flags describe: the manifest's array (or one sized for ``graph``) and memory sizes."""
    from ..runtime import config_for_model

    flags = {k: getattr(args, k) for k in _SIZES if getattr(args, k) is not None}
    if args.rtl:
        from ..sim.manifest import load_hardware

        hw = load_hardware(args.rtl)
        base = EngineConfig.from_manifest(hw.manifest, source=str(args.rtl), array=hw.config)
        return replace(base, **flags)
    array = config_for_model(graph, rows=args.rows or 8, cols=args.cols or 8)
    return EngineConfig(array=array, **flags)


def layer_table(compiled, report) -> list[str]:
    """The per-descriptor table ``qhw compile`` prints, and its summary lines."""
    cfg, prog = compiled.config, compiled.program
    peak = cfg.array.peak_macs_per_cycle
    rows = [("#", "layer", "op", "shape", "tiles", "cycles", "util", "weights B", "act B")]
    for layer in compiled.layers:
        cyc = report.per_descriptor[layer.index]
        util = f"{100 * layer.macs / (peak * cyc):.1f}%" if layer.macs and cyc else "-"
        rows.append((str(layer.index), layer.name, layer.op, layer.shape, layer.tiles, str(cyc), util,
                     str(layer.weight_bytes or "-"), str(layer.act_bytes or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (1, 2, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    ideal = -(-compiled.total_macs // peak)
    lines.append(f"total {report.total} cycles per inference; ideal MACs/(R*C) {ideal}; MAC utilization "
                 f"{100 * report.utilization:.1f} %")
    lines.append(f"memory: weight/param store {len(prog.image)} of {cfg.weight_bytes} B, scratchpad "
                 f"{prog.act_bytes_used} of {cfg.act_bytes} B, program {prog.words} of {cfg.program_words} words")
    if compiled.host_nodes:
        lines.append(f"on the host: {', '.join(compiled.host_nodes)}")
    return lines


def compile_report(compiled, report) -> dict:
    """JSON form of the table: ``layers`` (``name``, ``op``, ``predicted_cycles``, ...) as ``qhw simulate``
    will report them next to the measured cycles, the totals and the memory map."""
    cfg, prog = compiled.config, compiled.program
    return {
        "layers": [{"name": x.name, "op": x.op, "shape": x.shape, "tiles": x.tiles,
                    "predicted_cycles": report.per_descriptor[x.index], "macs": x.macs,
                    "weight_bytes": x.weight_bytes, "act_bytes": x.act_bytes} for x in compiled.layers],
        "cycles_per_inference": report.total,
        "ideal_cycles": -(-compiled.total_macs // cfg.array.peak_macs_per_cycle),
        "mac_utilization": report.utilization,
        "memory": {"weight_bytes": len(prog.image), "weight_capacity": cfg.weight_bytes,
                   "act_bytes": prog.act_bytes_used, "act_capacity": cfg.act_bytes,
                   "program_words": prog.words, "program_capacity": cfg.program_words},
        "host_nodes": list(compiled.host_nodes),
    }


def run_compile(args: argparse.Namespace) -> int:
    from ..qmodel import load_qmodel
    from .compiler import compile_model
    from .cycles import predict
    from .program import disassemble

    qm = load_qmodel(args.qmodel)
    cfg = engine_config(args, qm.graph)
    compiled = compile_model(qm, cfg, source=str(args.qmodel))
    report = predict(compiled.program, cfg, compiled.total_macs)
    with atomic_path(args.output) as tmp:
        Path(tmp).write_bytes(compiled.program.to_bytes())
    if args.json:
        print(json.dumps(compile_report(compiled, report)))
        return 0
    print(f"{cfg.describe()} -> {args.output}")
    print("\n".join(layer_table(compiled, report)))
    if args.listing:
        print(disassemble(compiled.program))
    return 0


def run_disasm(args: argparse.Namespace) -> int:
    from .program import Program, disassemble

    path = Path(args.program)
    if not path.is_file():
        raise ModelError(f"{path}: no such file (expected a program written by 'qhw compile')")
    print(disassemble(Program.from_bytes(path.read_bytes(), source=str(path))))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main

    sys.exit(main(["compile", *sys.argv[1:]]))
