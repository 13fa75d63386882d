"""The expected write trace (what the hardware's write-back debug tap is compared with)."""

from __future__ import annotations

import numpy as np

from qhw.engine.compiler import compile_model
from qhw.engine.cycles import predict
from qhw.engine.trace import write_trace

from .conftest import engine_for, golden_codes


def test_digits_cnn_trace(digits_q, digits):
    qm = digits_q["digits_cnn"]
    cfg = engine_for(qm.graph)
    compiled = compile_model(qm, cfg)
    x = digits["test_x"][:1]
    codes = {"x": qm_codes(qm, x)}
    trace = write_trace(compiled.program, cfg, codes)
    cycles = [e.cycle for e in trace]
    assert cycles == sorted(cycles) and len(set(cycles)) == len(cycles)     # one write port: one write a cycle
    report = predict(compiled.program, cfg)
    assert trace[-1].cycle < report.total
    by_desc = {}
    for e in trace:
        by_desc.setdefault(e.descriptor, []).append(e)
    # INPUT 64 window words; conv1 64 rows; conv2 16 pooled pixels x 2 N tiles; conv3 4 GAP words; fc 2 rows
    assert [len(by_desc[i]) for i in range(5)] == [64, 64, 32, 4, 2]
    logits = np.concatenate([e.values for e in by_desc[4]])[:10]
    assert logits.tolist() == golden_codes(qm.graph, x)["logits"][0].tolist()


def qm_codes(qm, x):
    from qhw.arith import quantize_float

    p = qm.graph.tensors["x"]
    return quantize_float(x, p.scale, p.zero_point, p.qmin, p.qmax)


def test_one_write_per_cycle_on_random_models(tmp_path):
    """The write port is never asked for two writes in one cycle (the in-order write rule), on the
    random conv models of test_model (rounding single, seed 7 mixed with the case name)."""
    from .conftest import Net, quantize
    from .test_model import CASES, SEED

    for name, shape, build in CASES:
        rng = np.random.default_rng([SEED, sum(map(ord, name))])
        path = build(Net(rng, shape)).save(tmp_path / f"{name}.onnx")
        x = rng.uniform(-1, 1, (16, *shape[1:])).astype(np.float32)
        qm = quantize(path, x)
        cfg = engine_for(qm.graph)
        compiled = compile_model(qm, cfg)
        trace = write_trace(compiled.program, cfg, {"x": qm_codes(qm, x[:1])})
        cycles = [e.cycle for e in trace]
        assert len(set(cycles)) == len(cycles), name
