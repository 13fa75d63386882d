"""``qhw prove``: the formal property set on a generated design (its manifest's configuration).

``add_parser(subparsers)`` registers it on the main ``qhw`` parser (``qhw.cli.COMMAND_MODULES``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..cli_types import positive_int
from ..engine.config import EngineConfig, manifest_top
from ..hw.config import read_manifest
from .engine_properties import ENGINE_PROPERTIES
from .properties import PROPERTIES, prove_all

__all__ = ["add_parser", "prove_report", "run"]



def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prove", help="prove the hardware's formal properties (SymbiYosys, k-induction) for a generated design",
        description="Prove, for the configuration in DIR/NAME.json. An accelerator (--top accel): "
                    + "; ".join(f"{prop.name} ({prop.component}): {prop.what}" for prop in PROPERTIES)
                    + ". A network engine (--top network): "
                    + "; ".join(f"{prop.name} ({prop.component}): {prop.what}" for prop in ENGINE_PROPERTIES)
                    + ". Work files and counterexample traces (NAME_formal/PROPERTY.vcd) go beside the manifest.")
    p.add_argument("--rtl", required=True, metavar="DIR/NAME.json", help="manifest written by qhw generate")
    p.add_argument("--depth", type=positive_int, default=2,
                   help="k-induction depth, or BMC depth for bounded properties (default 2; a property that "
                        "needs more uses its own minimum)")
    p.add_argument("--jobs", type=positive_int, default=1, help="properties proven in parallel (default 1)")
    p.add_argument("--property", action="append",
                   choices=[prop.name for prop in PROPERTIES] + [prop.name for prop in ENGINE_PROPERTIES],
                   help="prove only this property (repeatable; the top's own set)")
    p.add_argument("--timeout", type=positive_int, metavar="SECONDS",
                   help="stop a property's solvers after this long (it is then 'unknown'); default no limit")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def prove_report(results) -> dict:
    """The ``--json`` document; ``mode`` is ``prove`` (k-induction, unbounded) or ``bmc`` (the first
    ``depth`` cycles); ``trace`` (a VCD path) only on properties that were not proven."""
    rows = []
    for prop, res in results:
        row = {"name": prop.name, "component": prop.component, "status": res.status, "depth": res.depth,
               "seconds": res.seconds, "mode": res.mode}
        if res.trace:
            row["trace"] = res.trace
        rows.append(row)
    return {"properties": rows, "all_proven": all(r["status"] == "proven" for r in rows)}


def run(args) -> int:
    manifest = Path(args.rtl)
    config, doc = read_manifest(manifest)
    if manifest_top(doc) == "network":
        config = EngineConfig.from_manifest(doc, source=str(manifest), array=config)
    build = manifest.parent / f"{doc['name']}_formal"
    results = prove_all(config, build_dir=build, depth=args.depth, jobs=args.jobs, names=args.property,
                         timeout=args.timeout)
    report = prove_report(results)
    for row in report["properties"]:
        if "trace" in row:
            row["trace"] = str(build / row["trace"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'property':<22} {'component':<30} {'status':<8} {'mode':<6} {'depth':>5} {'seconds':>8}")
        for row in report["properties"]:
            print(f"{row['name']:<22} {row['component']:<30} {row['status']:<8} {row['mode']:<6} {row['depth']:>5} "
                  f"{row['seconds']:>8.1f}" + (f"  counterexample: {row['trace']}" if "trace" in row else ""))
    if not report["all_proven"]:
        print("qhw prove: not every property was proven", file=sys.stderr)
    return 0 if report["all_proven"] else 1
