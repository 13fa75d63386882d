"""Engine-hardware fixtures: compiled programs of the digits CNN and of small random conv models
(built with the reference model's own helpers, ``tests/engine/conftest.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from engine.conftest import Net, engine_for, own_scale_pools, quantize  # noqa: F401  (tests/engine's model builders)
from engine.test_model import CASES, SEED  # noqa: F401

from qhw.engine.compiler import compile_model


def case_program(tmp_path, name: str, rounding: str = "single"):
    """The program ``tests/engine`` compiles for random case ``name`` (same seed, same model)."""
    _, shape, build = next(c for c in CASES if c[0] == name)
    rng = np.random.default_rng([SEED, sum(map(ord, name))])
    path = build(Net(rng, shape)).save(tmp_path / f"{name}.onnx")
    x = rng.uniform(-1, 1, (24, *shape[1:])).astype(np.float32)
    qm = quantize(path, x[:16], rounding=rounding)
    return compile_model(qm, engine_for(qm.graph)).program, qm, x


@pytest.fixture(scope="session")
def digits_cnn_program(cnn_path, digits):
    qm = quantize(cnn_path, digits["calib_x"])
    return compile_model(qm, engine_for(qm.graph)).program


def own_scale_pools_program(tmp_path, rounding: str):
    """``tests/engine``'s ``own_scale_pools`` model, compiled: its program and quantized model."""
    qm, _ = own_scale_pools(tmp_path, rounding)
    return compile_model(qm, engine_for(qm.graph)).program, qm
