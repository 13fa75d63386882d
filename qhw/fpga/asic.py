"""A vendor-neutral estimate for ASIC users: Yosys generic synthesis, cell count and ``stat -tech cmos``.

The design is the generic Verilog's logic (no vendor primitives): ``synth -flatten`` maps it to
Yosys's internal gate library; ``dffunmap`` turns enable/reset flip-flops into plain D flip-flops
plus multiplexers, whose transistor cost Yosys's CMOS table knows, so the estimate is complete
(no trailing "+"). It is a relative measure for comparing configurations, not a sign-off number:
no cell library, no wiring, no sizing. Only the array top (skew, PE grid, de-skew) is
estimated: the accelerator's memories and requantization multipliers take the generic flow too long.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from ..errors import ConfigError
from ..hw.config import ArrayConfig
from .toolchain import log, run_step, setup_env

__all__ = ["asic_estimate"]

_SCRIPT = """\
read_rtlil {name}.il
synth -flatten -top {name}
dffunmap
delete t:$scopeinfo
opt_clean
tee -o {name}_cmos.txt stat -tech cmos
tee -q -o {name}_stat.json stat -json -tech cmos
"""


def asic_estimate(config: ArrayConfig, *, top: str = "array", out_dir=None, name: str = "qhw_top",
                  quiet: bool = False) -> dict:
    """Cells by type, flip-flops, memory bits and the estimated transistor count of ``config``."""
    if top == "array":
        from dataclasses import replace

        from ..hw.array import SystolicArray
        design = SystolicArray(config=replace(config, pe="generic"))   # the generic logic, whatever --pe
    else:
        # The accelerator's accumulator memory and 48-bit requantization multipliers take Yosys's
        # generic flow many minutes even at 2x2; the array is what scales with the configuration.
        raise ConfigError(f"--board generic supports --top array only, not {top!r}")
    setup_env()
    start = time.monotonic()
    build = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="qhw_asic_"))
    build.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".work_", dir=build))
    try:
        (work / f"{name}.il").write_text(rtlil.convert(design, name=name))
        (work / f"{name}.ys").write_text(_SCRIPT.format(name=name))
        if not quiet:
            log(f"[qhw] generic: {top} {config.rows}x{config.cols} in {build}")
        run_step("YOSYS", ["-q", "-l", f"{name}.rpt", f"{name}.ys"], cwd=work, step="generic-synthesis",
                 quiet=quiet)
        for f in work.iterdir():
            os.replace(f, build / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = json.loads((build / f"{name}_stat.json").read_text())
    design_stat = doc.get("design") or next(iter(doc["modules"].values()))
    cells = {k: v for k, v in design_stat.get("num_cells_by_type", {}).items()}
    transistors = str(design_stat.get("estimated_num_transistors", "0"))
    macs = config.rows * config.cols
    return {
        "board": "generic",
        "device": "yosys-generic-cmos",
        "top": top,
        "rows": config.rows,
        "cols": config.cols,
        "macs": macs,
        "cells": int(design_stat.get("num_cells", sum(cells.values()))),
        "cells_by_type": cells,
        "ffs": sum(v for k, v in cells.items() if "DFF" in k),
        "memory_bits": int(design_stat.get("num_memory_bits", 0)),
        "transistors": int(transistors.rstrip("+") or 0),
        "transistors_complete": not transistors.endswith("+"),
        "transistors_per_mac": round(int(transistors.rstrip("+") or 0) / macs),
        "luts": None, "dsps": None, "brams": None, "fmax_mhz": None, "target_mhz": None, "peak_gops": None,
        "bitstream": None,
        "times_s": {"total": round(time.monotonic() - start, 1)},
    }
