"""Built-in demo data: scikit-learn's digits set, and the ONNX models trained on it.

The preprocessing and the train/test split are defined here once; the
training script ``qhw/models/train_digits.py`` imports them, so the shipped
models and the data qhw evaluates them on always agree. Pure NumPy and
scikit-learn: nothing here needs torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .fileio import save_npz

__all__ = [
    "BUILTIN_MODELS",
    "SPLIT_SEED",
    "TEST_SIZE",
    "builtin_model_path",
    "digits_split",
    "write_digits_npz",
]

BUILTIN_MODELS: tuple[str, ...] = ("digits_mlp", "digits_cnn", "digits_resnet")
TEST_SIZE = 0.25
SPLIT_SEED = 0

_MODELS_DIR = Path(__file__).resolve().parent / "models"


def digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return ``{"train": (x, y), "test": (x, y)}`` for the digits set.

    ``x`` is float32 of shape (N, 1, 8, 8) scaled to [0, 1] (pixels / 16);
    ``y`` is int64 class labels 0..9. The split is stratified and fixed
    (``test_size=0.25``, ``random_state=0``): 1347 train, 450 test samples.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)
    return {
        "train": (np.ascontiguousarray(x_tr), np.ascontiguousarray(y_tr)),
        "test": (np.ascontiguousarray(x_te), np.ascontiguousarray(y_te)),
    }


def write_digits_npz(directory: str | os.PathLike[str], *, calib_samples: int = 500) -> dict[str, Path]:
    """Write ``calib.npz`` and ``test.npz`` into ``directory`` and return their paths.

    ``calib.npz`` holds the first ``calib_samples`` training samples, ``test.npz``
    the whole test split; each has keys ``x`` (float32, (N, 1, 8, 8)) and
    ``y`` (int64, (N,)). Files are written atomically and deterministically.
    """
    split = digits_split()
    n_train = len(split["train"][1])
    if not 1 <= calib_samples <= n_train:
        raise ConfigError(f"calib_samples must be between 1 and {n_train}, got {calib_samples}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr = split["train"]
    x_te, y_te = split["test"]
    paths = {"calib": out / "calib.npz", "test": out / "test.npz"}
    save_npz(paths["calib"], x=x_tr[:calib_samples], y=y_tr[:calib_samples])
    save_npz(paths["test"], x=x_te, y=y_te)
    return paths


def builtin_model_path(name: str) -> Path:
    """Return the path of the packaged ONNX model ``name`` (one of ``BUILTIN_MODELS``)."""
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"unknown built-in model {name!r}; valid names: {', '.join(BUILTIN_MODELS)}")
    return _MODELS_DIR / f"{name}.onnx"
