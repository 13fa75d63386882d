"""Safe file output and input checks: atomic writes, data-file loading."""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["atomic_path", "load_data", "save_npz", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The one way qhw writes an output file: a failure (or Ctrl-C) leaves no half-written file
    behind, and a reader never sees a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared like any written file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def exclusive(lock: str | Path):
    """Hold an exclusive lock on the file ``lock`` (created if needed) until the block ends, so
    parallel processes (pytest-xdist workers, CI jobs sharing a build root) build a cached product
    once: the first builds, the others wait and then find its stamp."""
    import fcntl

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8 with ``\\n`` line ends, atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays as ``.npz`` atomically and reproducibly (fixed zip timestamps, no pickle)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arr, order="C"), allow_pickle=False)


def load_data(path: str | Path, *, what: str = "--data") -> tuple[np.ndarray, np.ndarray | None]:
    """Read DATA.npz: ``x`` (float, batch first), optional ``y`` (integer labels)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file ({what} expects an .npz file with 'x' and optional 'y')")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"{p}: no array 'x' (found: {', '.join(z.files) or 'none'})")
            x = z["x"]
            y = z["y"] if "y" in z.files else None
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError for pickled objects, ...
        raise DataError(f"{p}: not a readable .npz file ({type(e).__name__})") from e
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"{p}: 'x' is empty; {what} needs at least one sample")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{p}: 'x' must be numeric, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DataError(f"{p}: 'x' contains {bad} NaN or Inf value(s)")
    if y is not None and (not np.issubdtype(y.dtype, np.integer) or y.shape[:1] != x.shape[:1]):
        raise DataError(f"{p}: 'y' must hold one integer label per sample of 'x' "
                            f"(x has {x.shape[0]}, y has shape {y.shape} {y.dtype})")
    return x.astype(np.float32, copy=False), y
