"""``synth()``: elaborate a top for a board, then Yosys, nextpnr and the bitstream packer (YoWASP).

Amaranth's platform writes the RTLIL, the Yosys script and the pin/clock constraints
(``platform.build(..., do_build=False)``); qhw runs the three tools itself so it can show progress
per step, ask nextpnr for its JSON report (``--report``) and read Fmax, utilization and the
critical path from it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ..contract import REPLICA_ATTR
from ..errors import ConfigError
from ..fileio import write_text
from ..hw.config import ArrayConfig, read_manifest
from .boards import board_info, platform_for
from .report import dsp_use, fit_failure, parse_nextpnr_report, parse_yosys_stat
from .toolchain import ToolError, log, run_step, setup_env

__all__ = ["SYNTH_KEYS", "build_top", "config_from_manifest", "engine_from_manifest", "synth", "yosys_overrides"]

# Keys every ``qhw synth --json`` object has.
SYNTH_KEYS = ("board", "device", "top", "pe", "rows", "cols", "luts", "ffs", "dsps", "brams", "fmax_mhz",
              "target_mhz", "macs", "peak_gops", "bitstream")


def config_from_manifest(path) -> tuple[ArrayConfig, str]:
    """The ``ArrayConfig`` (and top name) a ``qhw generate`` manifest describes
    (``qhw.hw.config.read_manifest``)."""
    config, doc = read_manifest(path)
    return config, doc["name"]


def engine_from_manifest(path):
    """The ``EngineConfig`` of a ``qhw generate --top network`` manifest; any other manifest is a
    one-line error."""
    from ..engine.config import EngineConfig, manifest_top
    config, doc = read_manifest(path)
    if manifest_top(doc) != "network":
        raise ConfigError(f"{path}: --top network needs a manifest written by qhw generate --top network "
                          f"(this one describes the GEMM accelerator: --top accel or board)")
    return EngineConfig.from_manifest(doc, source=str(path), array=config)


def build_top(config, *, top: str, family: str, clk_hz: float | None = None, baud: int = 115200):
    """The elaboratable for ``top`` (``array``, ``accel``, ``network`` or ``board``), built with
    ``config.pe``'s PEs on ``family``'s DSP primitives; ``config`` is an ``EngineConfig`` for ``network``,
    else an ``ArrayConfig``."""
    if top == "array":
        from .arrays import make_array
        from .tops import ArrayTop
        return ArrayTop(make_array(config, family=family))
    if top == "accel":
        from ..hw.accel import Accelerator
        from .tops import AccelTop
        return AccelTop(Accelerator(config=config, family=family))
    if top == "network":
        from ..hw.engine.engine import NetworkEngine
        from .tops import NetworkTop
        return NetworkTop(NetworkEngine(engine=config, family=family))
    if top == "board":
        from ..engine.config import EngineConfig
        if isinstance(config, EngineConfig):       # a --top network manifest: the engine behind the link
            from .network_top import NetworkBoardTop
            return NetworkBoardTop(engine=config, family=family, clk_hz=clk_hz, baud=baud)
        from .board_top import BoardTop
        return BoardTop(config=config, family=family, clk_hz=clk_hz, baud=baud)
    raise ConfigError(f"top must be array, accel, network or board, not {top!r}")


# The stand-in type of the design's own SB_MAC16 cells during `synth_ice40` (``yosys_overrides``):
# SB_MAC16's ports and parameters (Yosys's share/ice40/cells_sim.v) under another name.
SB_MAC16_SHIELD = "QHW_SB_MAC16"
_SB_MAC16_SHIELD = f"""(* blackbox *)
module {SB_MAC16_SHIELD} (input CLK, CE, input [15:0] C, A, B, D, input AHOLD, BHOLD, CHOLD, DHOLD,
  input IRSTTOP, IRSTBOT, ORSTTOP, ORSTBOT, OLOADTOP, OLOADBOT, ADDSUBTOP, ADDSUBBOT, OHOLDTOP, OHOLDBOT,
  input CI, ACCUMCI, SIGNEXTIN, output [31:0] O, output CO, ACCUMCO, SIGNEXTOUT);
  parameter [0:0] NEG_TRIGGER = 0;
  parameter [0:0] C_REG = 0;
  parameter [0:0] A_REG = 0;
  parameter [0:0] B_REG = 0;
  parameter [0:0] D_REG = 0;
  parameter [0:0] TOP_8x8_MULT_REG = 0;
  parameter [0:0] BOT_8x8_MULT_REG = 0;
  parameter [0:0] PIPELINE_16x16_MULT_REG1 = 0;
  parameter [0:0] PIPELINE_16x16_MULT_REG2 = 0;
  parameter [1:0] TOPOUTPUT_SELECT = 0;
  parameter [1:0] TOPADDSUB_LOWERINPUT = 0;
  parameter [0:0] TOPADDSUB_UPPERINPUT = 0;
  parameter [1:0] TOPADDSUB_CARRYSELECT = 0;
  parameter [1:0] BOTOUTPUT_SELECT = 0;
  parameter [1:0] BOTADDSUB_LOWERINPUT = 0;
  parameter [0:0] BOTADDSUB_UPPERINPUT = 0;
  parameter [1:0] BOTADDSUB_CARRYSELECT = 0;
  parameter [0:0] MODE_8x8 = 0;
  parameter [0:0] A_SIGNED = 0;
  parameter [0:0] B_SIGNED = 0;
endmodule
"""


def yosys_overrides(family: str, *, stat_file: str | None = None) -> dict:
    """The Amaranth platform overrides of qhw's Yosys script (``script_after_read``, ``synth_opts``,
    ``script_after_synth``): the one definition ``synth`` and the post-synthesis netlist
    (``qhw.fpga.postsynth``) both use. ``stat_file``: also write ``stat -json`` there."""
    # Registers made as deliberate copies (qhw.hw.replica) keep their flip-flops: opt_merge would
    # fold them back into one register with the fan-out they were made to split.
    after_read = ["rename -hide w:*]", "proc", f"setattr -set keep 1 a:{REPLICA_ATTR} %ci1:+[Q] a:{REPLICA_ATTR} %d"]
    after_synth = ["check -assert"]
    if family == "ice40":
        # Yosys's ice40_dsp pass (run by `synth_ice40 -dsp`) also takes SB_MAC16 cells the design
        # instantiates itself and rewrites them as 16x16 multipliers: MODE_8x8 := 0 and the output
        # selects := 3, so the dual 8x8 PEs (qhw/hw/pe_ice40.py) compute a*b of the packed operands
        # instead of two products. Found by the post-synthesis simulation (docs/verification.md).
        # The design's own SB_MAC16 cells are therefore renamed to a black box Yosys does not know
        # before synthesis and renamed back after it, parameters untouched.
        after_read = [f"read_verilog -lib <<EOT\n{_SB_MAC16_SHIELD}EOT",
                      f"chtype -set {SB_MAC16_SHIELD} t:SB_MAC16", *after_read]
        after_synth = [f"chtype -set SB_MAC16 t:{SB_MAC16_SHIELD}", *after_synth]
    if stat_file:
        after_synth.append(f"tee -q -o {stat_file} stat -json")
    overrides = {
        # Amaranth names each element of an array-shaped signal `x[i]` beside `x` itself; ABC maps
        # bit i of `x` back by the name "x[i]" and can hit bit 0 of the element wire instead, tying
        # two flip-flops together (seen with shared requantization lanes: nextpnr stops with "net is
        # multiply driven"). Hiding the element aliases removes the ambiguity; `check -assert` makes
        # any such netlist fail here, named, rather than in place-and-route or silently.
        "script_after_read": "\n".join(after_read),
        "script_after_synth": "\n".join(after_synth),
    }
    if family == "ice40":
        # Infer SB_MAC16 for generic multipliers (the accelerator's requantization lanes too: in
        # logic cells one lane alone is ~4000 of the UP5K's 5280).
        overrides["synth_opts"] = "-dsp"
    return overrides


def _nextpnr_args(platform, family: str, name: str) -> list[str]:
    if family == "ice40":
        pkg = platform.package.lower() + platform._nextpnr_package_options.get(platform.device, "")
        return [platform._nextpnr_device_options[platform.device], "--package", pkg,
                "--json", f"{name}.json", "--pcf", f"{name}.pcf", "--asc", f"{name}.asc"]
    return [platform._nextpnr_device_options[platform.device],
            "--package", platform._nextpnr_package_options[platform.package].upper(),
            "--speed", str(platform.speed),
            "--json", f"{name}.json", "--lpf", f"{name}.lpf", "--textcfg", f"{name}.config"]


def synth(config, *, board: str, top: str = "array", freq_mhz: float | None = None,
          seed: int = 1, out_dir=None, pe: str = "auto", name: str = "qhw_top", quiet: bool = False,
          baud: int = 115200, keep: bool = True) -> dict:
    """Synthesize, place and route ``config`` for ``board``; return the report dict (``SYNTH_KEYS`` ...).

    ``config`` is the ``ArrayConfig`` of an ``array``/``accel``/``board`` top, or the ``EngineConfig`` of
    a ``network`` top (``engine_from_manifest``; the engine's memories are loaded through its ``load``
    port, so nothing of the model is built in).

    ``freq_mhz`` is the clock constraint given to nextpnr (default: the board's target for
    ``array``/``accel`` tops, the oscillator for the ``board`` top, which runs from it). A ``freq_mhz``
    other than the oscillator's drives the family's PLL (``qhw.fpga.pll``; any top): the design runs
    from it and is timed at the PLL's achieved frequency (``target_mhz``; ``pll`` in the report).
    Raises ``ConfigError`` (one line: resource, overflow, a smaller configuration that fits)
    when the design does not fit.
    """
    info = board_info(board)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, not {seed!r}")
    pll = None
    requested = freq_mhz
    if freq_mhz is None:
        freq_mhz = info.clock_mhz if top == "board" else info.default_target_mhz
    elif freq_mhz != info.clock_mhz:
        # --freq drives the PLL: the design runs (and is timed) at the PLL's achieved frequency.
        from .pll import ecp5_pll, ice40_pll
        pll = (ice40_pll if info.family == "ice40" else ecp5_pll)(info.clock_mhz, freq_mhz)
        freq_mhz = pll.f_out_mhz
    from ..engine.config import EngineConfig
    from .arrays import manifest_pe, resolve_pe
    design = config                         # network and board tops of a network manifest build the engine
    if top == "network" and not isinstance(config, EngineConfig):
        raise ConfigError("--top network needs an engine configuration (a qhw generate --top network manifest)")
    if isinstance(config, EngineConfig):
        config = config.array
    if top == "array":
        pe = resolve_pe(config, pe=pe, family=info.family)
        config = replace(config, pe=pe)     # the array top builds --pe; config.pe is its one source
    else:
        pe = manifest_pe(config, pe=pe, family=info.family, board=board)
    setup_env()
    start = time.monotonic()
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix=f"qhw_synth_{board}_"))
    build = Path(out_dir)
    try:
        build.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output directory cannot be created: {e}") from None

    # With the PLL the pin keeps the oscillator's constraint; nextpnr derives the PLL output's.
    platform = platform_for(board, clock_mhz=info.clock_mhz if pll else freq_mhz)
    elab = build_top(design if top in ("network", "board") else config, top=top, family=info.family,
                     clk_hz=(pll.f_out_mhz if pll else info.clock_mhz) * 1e6, baud=baud)
    if pll is not None:
        from .pll import PllTop
        elab = PllTop(elab, pll)
    stat_file = f"{name}_stat.json"
    overrides = yosys_overrides(info.family, stat_file=stat_file)
    if not quiet:
        via = f" (PLL from {info.clock_mhz:g} MHz, {requested:g} requested)" if pll else ""
        log(f"[qhw] {board}: elaborating {top} top {config.rows}x{config.cols} (pe {pe}) "
            f"at {freq_mhz:g} MHz{via} in {build}")
    # Tools write into a private directory; results are moved into place only when all succeeded.
    work = Path(tempfile.mkdtemp(prefix=".work_", dir=build))
    try:
        plan = platform.build(elab, name=name, build_dir=str(work), do_build=False, **overrides)
        plan.extract(str(work))
        t_syn = run_step("YOSYS", ["-q", "-l", f"{name}.rpt", f"{name}.ys"], cwd=work, step="synthesis",
                         quiet=quiet)
        stat = parse_yosys_stat(work / stat_file)
        netlist = json.loads((work / f"{name}.json").read_text())
        dsp_type = "SB_MAC16" if info.family == "ice40" else "MULT18X18D"
        stat["dsp_use"] = dsp_use(netlist, dsp_type)
        stat["dsp_use_lines"] = dsp_use(netlist, dsp_type, lines=True)
        del netlist
        var = "NEXTPNR_ICE40" if info.family == "ice40" else "NEXTPNR_ECP5"
        args = [*_nextpnr_args(platform, info.family, name), "--log", f"{name}.tim",
                "--report", "report.json", "--detailed-timing-report", "--timing-allow-fail",
                "--seed", str(seed)]
        try:
            t_pnr = run_step(var, args, cwd=work, step="place-and-route", quiet=quiet)
        except ToolError as e:
            failure = fit_failure(work / f"{name}.tim", info, config, stat["dsp_use"],
                                  engine=isinstance(design, EngineConfig))
            if failure:
                raise ConfigError(failure) from None
            raise e
        report = parse_nextpnr_report(work / "report.json", family=info.family)
        if info.family == "ice40":
            bit = f"{name}.bin"
            t_pack = run_step("ICEPACK", [f"{name}.asc", bit], cwd=work, step="bitstream", quiet=quiet)
        else:
            bit = f"{name}.bit"
            t_pack = run_step("ECPPACK", ["--compress", "--input", f"{name}.config", "--bit", bit], cwd=work,
                              step="bitstream", quiet=quiet)
        for f in work.iterdir():
            os.replace(f, build / f.name)
    except (ToolError, ConfigError) as e:
        # Keep the tools' logs for the user (the message names them); no partial outputs.
        logs = build / "logs"
        logs.mkdir(exist_ok=True)
        for f in [*work.glob("*.log"), *work.glob("*.tim"), *work.glob("*.rpt")]:
            os.replace(f, logs / f.name)
        raise type(e)(str(e).replace(str(work), str(logs))) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)

    fmax = report["fmax_mhz"]
    macs = config.rows * config.cols
    result = {
        "board": board,
        "device": info.device,
        "family": info.family,
        "top": top,
        "pe": pe,
        "rows": config.rows,
        "cols": config.cols,
        "luts": report["luts"],
        "luts_available": report["luts_available"],
        "ffs": stat["ffs"] if stat["ffs"] is not None else report.get("ffs"),
        "dsps": report["dsps"],
        "dsps_available": report["dsps_available"],
        "brams": report["brams"],
        "brams_available": report["brams_available"],
        "sprams": report.get("sprams"),
        "fmax_mhz": fmax,
        "target_mhz": float(freq_mhz),
        "timing_met": fmax >= freq_mhz,
        "pll": None if pll is None else pll.report(requested),
        "macs": macs,
        "peak_gops": round(2 * macs * fmax / 1000, 3),
        "gops_per_dsp": round(2 * macs * fmax / 1000 / report["dsps"], 4) if report["dsps"] else None,
        "dsp_use": stat["dsp_use"],
        "dsp_use_lines": stat["dsp_use_lines"],
        "critical_path": report["critical_path"],
        "seed": seed,
        "times_s": {"synthesis": round(t_syn, 1), "place_and_route": round(t_pnr, 1),
                    "bitstream": round(t_pack, 1), "total": round(time.monotonic() - start, 1)},
        "bitstream": str((build / bit).resolve()),
        "report": str((build / "report.json").resolve()),
    }
    write_text(build / "synth.json", json.dumps(result, indent=2) + "\n")
    return result
