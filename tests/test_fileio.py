"""``qhw.fileio.exclusive``: parallel test workers (pytest-xdist) and CI jobs share one build root;
the lock makes a second process wait instead of building into the same folder at once."""

from __future__ import annotations

import subprocess
import sys

from qhw.fileio import exclusive

# Exit 1 if the lock is taken (non-blocking attempt), 0 if it was free.
_TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a") as f:
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(1)
"""


def _other_process_gets(lock) -> bool:
    return subprocess.run([sys.executable, "-c", _TRY_LOCK, str(lock)]).returncode == 0


def test_exclusive_blocks_another_process_until_released(tmp_path):
    lock = tmp_path / "sub" / ".x.lock"
    with exclusive(lock):
        assert lock.is_file()                       # created with its folder
        assert not _other_process_gets(lock)
    assert _other_process_gets(lock)
