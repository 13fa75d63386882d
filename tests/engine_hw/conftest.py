"""Engine-hardware fixtures: compiled programs of the digits CNN and of small random conv models
(built with the reference model's own helpers, ``tests/engine/conftest.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from engine.conftest import Net, engine_for, quantize  # noqa: F401  (tests/engine's model builders)
from engine.test_model import CASES, SEED  # noqa: F401

from qhw.engine.compiler import compile_model


def run_sim(dut, *benches, deadline: float | None = None) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run_until(deadline) if deadline else sim.run()


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
    """The model of ``tests/engine``'s ``test_pool_with_its_own_output_scale`` (seed 3): a conv, a
    fused 2x2 AveragePool, a padded 3x3 AveragePool and a GlobalAveragePool, each pool given its own
    output scale and zero point (as a QDQ model has), so the per-count tables are used."""
    rng = np.random.default_rng(3)
    net = (Net(rng, (1, 3, 8, 8)).conv(8, 3, pads=(1, 1, 1, 1)).op("AveragePool", kernel_shape=[2, 2], strides=[2, 2])
           .op("AveragePool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 0, 1, 1]).op("GlobalAveragePool"))
    path = net.save(tmp_path / "pools.onnx")
    x = rng.uniform(-1, 1, (20, 3, 8, 8)).astype(np.float32)
    qm = quantize(path, x, rounding=rounding)
    g = qm.graph
    for k, node in enumerate(n for n in g.nodes if n.op in ("AveragePool", "GlobalAveragePool")):
        out = node.outputs[0]
        g.tensors[out] = type(g.tensors[out])(scale=g.tensors[out].scale * (0.61 + 0.3 * k),
                                              zero_point=g.tensors[out].zero_point + 3, bits=8)
    return compile_model(qm, engine_for(qm.graph)).program, qm
