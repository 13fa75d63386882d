"""Shared fixtures: the digits data files and quantized demo models, built once per session."""

from __future__ import annotations

import numpy as np
import pytest

from qhw.datasets import builtin_model_path, write_digits_npz


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory):
    return write_digits_npz(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def digits(digits_files):
    with np.load(digits_files["calib"]) as c, np.load(digits_files["test"]) as t:
        return {"calib_x": c["x"], "calib_y": c["y"], "test_x": t["x"], "test_y": t["y"]}


@pytest.fixture(scope="session")
def cnn_path():
    return builtin_model_path("digits_cnn")


@pytest.fixture(scope="session")
def mlp_path():
    return builtin_model_path("digits_mlp")


@pytest.fixture(scope="session")
def skl_mlp(tmp_path_factory, digits):
    """A scikit-learn MLPClassifier exported by skl2onnx: MatMul/Add/Relu, then Softmax, ArgMax, Cast
    (outputs: the label, int64, then the probabilities)."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x = digits["calib_x"].reshape(-1, 64)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0).fit(x, digits["calib_y"])
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=13)
    path = tmp_path_factory.mktemp("skl") / "mlp.onnx"
    path.write_bytes(onx.SerializeToString())
    return path
