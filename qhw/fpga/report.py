"""Reading the tools' own reports: nextpnr's ``--report`` JSON, Yosys's ``stat -json``, fit failures."""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
from collections import Counter
from pathlib import Path

import qhw

from ..errors import ConfigError

__all__ = ["RESOURCES", "dsp_use", "fit_failure", "package_dir", "parse_nextpnr_report", "parse_yosys_stat",
           "qhw_source", "summarize_path"]

# nextpnr utilization keys per family: (logic cells, flip-flops, DSP blocks, block RAMs).
RESOURCES = {
    "ice40": {"luts": "ICESTORM_LC", "ffs": None, "dsps": "ICESTORM_DSP", "brams": "ICESTORM_RAM"},
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D", "brams": "DP16KD"},
}


def _norm(path: str) -> str:
    """``path`` with ``/`` separators, absolute (relative to the working directory) and collapsed;
    Windows paths (``C:\\...``) case-folded, as Windows compares them."""
    p = path.replace("\\", "/")
    drive = re.match(r"[A-Za-z]:/", p)
    if not drive and not p.startswith("/"):
        p = os.getcwd().replace("\\", "/").rstrip("/") + "/" + p
    p = posixpath.normpath(p)
    return p.casefold() if drive else p


def package_dir() -> str:
    """The directory of the qhw package being run (a checkout or site-packages)."""
    return os.path.abspath(Path(qhw.__file__).parent)


# One location in a Yosys ``src`` attribute: ``FILE:LINE`` (Amaranth) or ``FILE:L.C-L.C`` (Verilog).
_LOCATION = re.compile(r"(.+?):(\d+)(?:[.:-][\d.:-]*)?")


def qhw_source(src: str, *, package: str | None = None) -> str:
    """``qhw/hw/pe.py:67`` for the first location of a Yosys ``src`` attribute (locations joined by
    ``|``) that lies inside the qhw package at ``package`` (default: the one running), else ``""``.

    Files are matched by their place under the package directory, not by a ``qhw/`` in their
    path, so a checkout in a folder named ``qhw`` or a site-packages install reads the same."""
    root = _norm(package if package is not None else package_dir())
    for part in src.split("|"):
        m = _LOCATION.fullmatch(part.strip())
        if not m:
            continue
        path = _norm(m.group(1))
        if path.startswith(root + "/"):
            return f"qhw/{path[len(root) + 1:]}:{m.group(2)}"
    return ""


def summarize_path(path: list[dict]) -> dict:
    """Total, logic and routing delay of one nextpnr critical path, its end points and source lines."""
    logic = sum(step["delay"] for step in path if step["type"] != "routing")
    routing = sum(step["delay"] for step in path if step["type"] == "routing")
    sources = []
    for step in path:
        for s in step.get("sources", []):
            s = qhw_source(s)
            if s and s not in sources:
                sources.append(s)
    longest = max((s for s in path if s["type"] == "routing"), key=lambda s: s["delay"], default=None)
    return {
        "delay_ns": round(logic + routing, 3),
        "logic_ns": round(logic, 3),
        "routing_ns": round(routing, 3),
        "from": path[0]["from"]["cell"] if path else "",
        "to": path[-1]["to"]["cell"] if path else "",
        "steps": len(path),
        "longest_route_ns": round(longest["delay"], 3) if longest else 0.0,
        "longest_route_net": longest.get("net", "") if longest else "",
        "sources": sources,
    }


def parse_nextpnr_report(path: Path, *, family: str) -> dict:
    doc = json.loads(Path(path).read_text())
    util = doc.get("utilization", {})
    keys = RESOURCES[family]

    def used(kind):
        key = keys[kind]
        return util.get(key, {}).get("used") if key else None

    def avail(kind):
        key = keys[kind]
        return util.get(key, {}).get("available") if key else None

    fmax = doc.get("fmax", {})
    achieved = min((v["achieved"] for v in fmax.values()), default=0.0)
    # The path that sets Fmax: register to register within one clock (not I/O paths, and not the
    # pseudo clock nextpnr gives a DSP whose clock pin is tied to ground).
    paths = [cp for cp in doc.get("critical_paths", []) if cp.get("path")]
    same = [cp for cp in paths if cp.get("from") == cp.get("to") and "PACKER_GND" not in str(cp.get("from"))]
    worst = None
    for cp in same or paths:
        s = summarize_path(cp["path"])
        s["clock"] = str(cp.get("from", ""))
        if worst is None or s["delay_ns"] > worst["delay_ns"]:
            worst = s
    return {
        "luts": used("luts"), "luts_available": avail("luts"),
        "ffs": used("ffs"),
        "dsps": used("dsps") or 0, "dsps_available": avail("dsps"),
        "brams": used("brams") or 0, "brams_available": avail("brams"),
        "sprams": util.get("ICESTORM_SPRAM", {}).get("used") if family == "ice40" else None,
        "fmax_mhz": round(float(achieved), 2),
        "clocks": {k: {"achieved": round(v["achieved"], 2), "constraint": v["constraint"]} for k, v in fmax.items()},
        "critical_path": worst,
        "utilization": {k: v for k, v in util.items() if v.get("used")},
    }


# A requantization lane's multipliers are built by shared helpers (``wide_mul``, ``PipelinedMul``,
# also used by the DSP arrays): they are counted by the unit that owns them, found in the cell's
# hierarchical name, rather than by the helper's file.
_LANE = re.compile(r"(^|[ .])requant_\d+([ .]|$)")


def dsp_use(netlist: dict, dsp_type: str, *, lines: bool = False) -> dict:
    """DSP blocks of a synthesized Yosys JSON netlist: those inside a requantization lane as
    ``qhw/hw/requant.py``, the others by the qhw source file of the multiplication that made them.
    With ``lines``, every block by the file and line of its multiplication."""
    count = Counter()
    for mod in netlist.get("modules", {}).values():
        for name, cell in mod.get("cells", {}).items():
            if cell.get("type") == dsp_type:
                attrs = cell.get("attributes", {})
                src = qhw_source(attrs.get("src", "")) or "other"
                if lines:
                    count[src] += 1
                elif _LANE.search(attrs.get("hdlname") or name):
                    count["qhw/hw/requant.py"] += 1
                else:
                    count[src.split(":")[0]] += 1
    return dict(sorted(count.items()))


def parse_yosys_stat(path: Path) -> dict:
    """Flip-flop and DSP counts of the synthesized top from ``stat -json``."""
    doc = json.loads(Path(path).read_text())
    design = doc.get("design") or {}
    cells = design.get("num_cells_by_type") or {}
    if not cells:                       # older Yosys: only per-module statistics
        for mod in doc.get("modules", {}).values():
            for k, v in mod.get("num_cells_by_type", {}).items():
                cells[k] = cells.get(k, 0) + v
    ffs = sum(v for k, v in cells.items() if k.startswith("SB_DFF") or k == "TRELLIS_FF")
    return {"ffs": ffs, "cells": cells, "dsp_use": {}}


_UTIL_LINE = re.compile(r"^\s*Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")


# The network engine's smallest array (``EngineConfig``: cols >= 4 for a 4-byte load word, cols dividing rows)
ENGINE_MIN = "4x4"


def fit_failure(logfile: Path, board, config, dsp_split: dict | None = None, *, engine: bool = False) -> str | None:
    """One line when nextpnr's log shows a resource over capacity: which, by how much, what would fit.
    ``engine``: a network engine (its control, memories and lanes do not shrink with the array, and it
    has no array below 4x4), so no smaller array is suggested."""
    try:
        text = Path(logfile).read_text(errors="replace")
    except OSError:
        return None
    over = []
    for line in text.splitlines():
        m = _UTIL_LINE.match(line)
        if m and int(m.group(2)) > int(m.group(3)):
            over.append((m.group(1), int(m.group(2)), int(m.group(3))))
    if not over and "Unable to find legal placement" in text:
        # within capacity, but too full to place: name the fullest resource (not a one-of-a-kind block
        # such as the GSR, which is always 100 % used)
        util = [(m.group(1), int(m.group(2)), int(m.group(3))) for m in map(_UTIL_LINE.match, text.splitlines())
                if m and int(m.group(3)) >= 8]
        if util:
            res, used, avail = max(util, key=lambda o: o[1] / o[2])
            return (f"{config.rows}x{config.cols} does not place on {board.device}: {res} {used} of {avail} "
                    f"({100 * used // avail}%) leaves nextpnr no legal placement; a smaller design is needed")
    if not over:
        m = re.search(r"no BELs remaining to implement cell type '(\w+)'", text)
        if not m:
            return None
        over = [(m.group(1), 0, 0)]
    res, used, avail = max(over, key=lambda o: (o[1] / o[2]) if o[2] else math.inf)
    amount = f"{used} of {avail} ({used - avail} over, {100 * used / avail:.0f}%)" if avail else "more than available"
    hint = suggest_smaller(config, used, avail)
    if engine:
        hint = (f"the network engine is at least {ENGINE_MIN} and its units and memories do not shrink with the "
                f"array; use a larger device or the GEMM accelerator (qhw generate --top accel)")
    elif res in ("ICESTORM_DSP", "MULT18X18D") and dsp_split and avail:
        outside = {k: v for k, v in dsp_split.items() if not k.startswith(("qhw/hw/pe", "qhw/hw/dsp"))}
        other = sum(outside.values())
        array = sum(dsp_split.values()) - other
        if other >= avail:
            hint = (f"{other} of them are not in the PE array ({', '.join(f'{k} {v}' for k, v in outside.items())}); "
                    f"share requantization lanes (qhw generate --requant-lanes), build fewer rounding modes "
                    f"or a generic-logic target")
        elif array:
            hint = (suggest_smaller(config, array, avail - other, margin=1.0)
                    + f" (PE array {array} DSPs, other {other})")
    return f"{config.rows}x{config.cols} does not fit {board.device}: {res} needs {amount}; {hint}"


def suggest_smaller(config, used: int, avail: int, margin: float = 0.9) -> str:
    """A smaller array that should fit, scaling the MAC count by the overflowing resource (an estimate;
    ``margin`` 0.9 for logic, 1.0 for DSP blocks, which scale exactly with the PE count)."""
    if not avail or not used:
        return "try a smaller --rows/--cols"
    macs = config.rows * config.cols
    budget = macs * avail / used * margin
    r, c = config.rows, config.cols
    while r * c > budget and (r > 1 or c > 1):
        if c >= r and c > 1:
            c -= 1
        else:
            r -= 1
    if r * c > budget:
        return "even a 1x1 array is estimated not to fit"
    return f"a {r}x{c} array (qhw generate --rows {r} --cols {c}) should fit (estimated from this run)"


def check_resources(result: dict, board, config) -> None:
    """Raise ``ConfigError`` when a routed design still uses more than the device has (defensive)."""
    for kind in ("luts", "dsps", "brams"):
        used, avail = result.get(kind), result.get(f"{kind}_available")
        if used and avail and used > avail:
            raise ConfigError(f"{config.rows}x{config.cols} does not fit {board.device}: {kind} needs {used} of "
                              f"{avail}; {suggest_smaller(config, used, avail)}")
