"""The built-in digits data and the shipped ONNX models (qhw.datasets)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qhw.datasets import BUILTIN_MODELS, builtin_model_path, digits_split, write_digits_npz
from qhw.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "qhw" / "models" / "README.md"
# sha256 of the test split (x bytes then y bytes); the shipped models were trained on the
# complement, so a change here means the split moved and test samples may have been trained on.
TEST_SPLIT_SHA256 = "35dd0961baaaedb40454e3f7a5796f6b7cd16d99bded9fe797a67bbc2a59ac0b"


@pytest.fixture(scope="module")
def split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return digits_split()


def readme_accuracy(name: str) -> float:
    match = re.search(rf"^\| `{name}` \|.*\| ([0-9.]+)% \|$", README.read_text(), re.MULTILINE)
    assert match, f"no accuracy for {name} in {README}"
    return float(match.group(1))


def test_split_shapes_and_dtypes(split):
    for part, n in (("train", 1347), ("test", 450)):
        x, y = split[part]
        assert x.shape == (n, 1, 8, 8) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert x.min() == 0.0 and x.max() == 1.0
        assert set(np.unique(y)) == set(range(10))


def test_split_is_deterministic(split):
    again = digits_split()
    for part in ("train", "test"):
        np.testing.assert_array_equal(split[part][0], again[part][0])
        np.testing.assert_array_equal(split[part][1], again[part][1])
    x, y = split["test"]
    assert hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest() == TEST_SPLIT_SHA256


def test_split_is_stratified(split):
    train = np.bincount(split["train"][1], minlength=10)
    test = np.bincount(split["test"][1], minlength=10)
    assert np.all(np.abs(test - 0.25 * (train + test)) <= 1)


def test_write_digits_npz(tmp_path, split):
    paths = write_digits_npz(tmp_path, calib_samples=123)
    assert paths == {"calib": tmp_path / "calib.npz", "test": tmp_path / "test.npz"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "test.npz"]
    for key, (x_ref, y_ref) in (("calib", (a[:123] for a in split["train"])), ("test", split["test"])):
        with np.load(paths[key], allow_pickle=False) as data:
            assert sorted(data.files) == ["x", "y"]
            assert data["x"].dtype == np.float32 and data["y"].dtype == np.int64
            np.testing.assert_array_equal(data["x"], x_ref)
            np.testing.assert_array_equal(data["y"], y_ref)


def test_write_digits_npz_default_and_byte_identical(tmp_path):
    first = {k: p.read_bytes() for k, p in write_digits_npz(tmp_path / "a").items()}
    second = {k: p.read_bytes() for k, p in write_digits_npz(tmp_path / "a").items()}
    assert first == second
    with np.load(tmp_path / "a" / "calib.npz") as data:
        assert data["x"].shape == (500, 1, 8, 8) and data["y"].shape == (500,)
    with np.load(tmp_path / "a" / "test.npz") as data:
        assert data["x"].shape == (450, 1, 8, 8) and data["y"].shape == (450,)


@pytest.mark.parametrize("bad", [0, -1, 1348])
def test_write_digits_npz_rejects_bad_count(tmp_path, bad):
    with pytest.raises(ConfigError):
        write_digits_npz(tmp_path, calib_samples=bad)


def test_builtin_model_path_unknown():
    with pytest.raises(ConfigError) as err:
        builtin_model_path("digits_rnn")
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in BUILTIN_MODELS)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_builtin_model_accuracy(name, split):
    path = builtin_model_path(name)
    assert path.is_file() and path.stat().st_size < 100_000
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert not any(node.op_type == "Constant" for node in model.graph.node)
    x, y = split["test"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"x": x})[0]
    assert logits.shape == (len(y), 10)
    accuracy = 100.0 * float((logits.argmax(axis=1) == y).mean())
    assert accuracy >= readme_accuracy(name) - 0.5


def test_cnn_keeps_batchnorm():
    model = onnx.load(str(builtin_model_path("digits_cnn")))
    initializers = {t.name for t in model.graph.initializer}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 3
    for node in bns:
        assert len(node.output) == 1
        assert set(node.input[1:]) <= initializers


def test_datasets_does_not_import_torch():
    code = "import sys, qhw.datasets; qhw.datasets.digits_split(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
