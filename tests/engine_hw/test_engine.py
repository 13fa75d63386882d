# amaranth: UnusedElaboratable=no
"""``NetworkEngine`` whole, in the Amaranth simulator: a compiled model loaded through the ``load``
stream (or embedded), images in, outputs out; every output bit-exact with the golden model, every
scratchpad write (debug tap) equal to ``qhw.engine.trace.write_trace`` in cycle, word, lanes and
values, each descriptor's end and the total equal to ``qhw.engine.cycles.predict``."""

from __future__ import annotations

import numpy as np
import pytest
from engine.conftest import golden_codes, quantize

from qhw.engine.compiler import compile_model, fit_engine
from qhw.engine.cycles import descriptor_end, predict
from qhw.engine.trace import write_trace
from qhw.hw.engine.engine import NetworkEngine
from qhw.runtime import config_for_model

from .engine_bench import Run, output_tensors


def cases(qm, program, x):
    """Per image: the engine's input codes (the host quantizes the segment's input) and the golden
    model's output codes."""
    from qhw.arith import quantize_float

    t_in = next(t for t in program.tensors if t.direction == 0)
    p = qm.graph.tensors[t_in.name]
    inputs, golden = [], []
    for i in range(len(x)):
        v = x[i:i + 1].reshape(1, *t_in.logical_shape)
        inputs.append({t_in.name: quantize_float(v, p.scale, p.zero_point, p.qmin, p.qmax)})
        codes = golden_codes(qm.graph, x[i:i + 1])
        golden.append({t.name: codes[t.name][0] for t in program.tensors if t.direction == 1})
    return inputs, golden


def compiled(qm, rows, cols):
    cfg = fit_engine(qm, config_for_model(qm.graph, rows=rows, cols=cols))
    return compile_model(qm, cfg).program, cfg


def check_run(run, program, cfg, inputs, golden, *, timing=True):
    """Outputs bit-exact; with ``timing``, writes and descriptor ends as predicted."""
    R = cfg.array.rows
    report = predict(program, cfg)
    ends = np.cumsum(report.per_descriptor).tolist()
    for n, codes in enumerate(inputs):
        got = output_tensors(program, [b for _, b, _ in run.outputs[n]], R)
        for name, want in golden[n].items():
            assert got[name].tolist() == want.tolist(), (n, name)
        if not timing:
            continue
        want = [(e.cycle, e.word, e.lane, e.values) for e in write_trace(program, cfg, codes)]
        assert run.writes[n] == want, n
        last_write = {}
        for e in write_trace(program, cfg, codes):
            last_write[e.descriptor] = e.cycle
        hw_end = 0
        for i, d in enumerate(program.descriptors):
            if d.op in ("HALT", "END"):
                continue
            hw_end = max(hw_end, descriptor_end(d.op, cfg, last_read=run.issues[n].get(i),
                                                last_write=last_write.get(i)))
            assert hw_end == ends[i], (n, i, d.op)
        assert run.outputs[n][-1][0] + 1 == report.total


@pytest.fixture(scope="module")
def digits_models(cnn_path, mlp_path, digits):
    x = digits["calib_x"]
    return {"cnn": quantize(cnn_path, x), "mlp": quantize(mlp_path, x)}


def test_digits_mlp_loaded_through_the_stream(digits_models, digits):
    """The MLP (three Dense layers, M = 1) on 8x8, loaded word by word; two images back to back."""
    qm = digits_models["mlp"]
    program, cfg = compiled(qm, 8, 8)
    inputs, golden = cases(qm, program, digits["test_x"][:2])
    run = Run(NetworkEngine(engine=cfg), program, inputs, rows=8).run()
    check_run(run, program, cfg, inputs, golden)


@pytest.mark.slow
def test_digits_cnn_embedded(digits_models, digits):
    """The CNN on 8x8 from the embedded image (``image=``, ``loaded`` high from reset): one image,
    2,714 cycles, every write and descriptor end as predicted."""
    qm = digits_models["cnn"]
    program, cfg = compiled(qm, 8, 8)
    inputs, golden = cases(qm, program, digits["test_x"][3:4])
    run = Run(NetworkEngine(engine=cfg, image=program.to_bytes()), program, inputs, rows=8, load=False).run()
    check_run(run, program, cfg, inputs, golden)
    assert predict(program, cfg).total == 2714


def test_digits_mlp_gaps_and_back_pressure(digits_models, digits):
    """Random input gaps (30 %) and output back-pressure (50 %), seed 5: values still bit-exact."""
    qm = digits_models["mlp"]
    program, cfg = compiled(qm, 8, 8)
    inputs, golden = cases(qm, program, digits["test_x"][5:7])
    run = Run(NetworkEngine(engine=cfg, image=program.to_bytes()), program, inputs, rows=8, load=False,
              gaps=0.3, stall=0.5, seed=5).run()
    check_run(run, program, cfg, inputs, golden, timing=False)
