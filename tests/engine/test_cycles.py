"""The cycle model: shares sum to the total, the rules on a hand-worked case, the digits CNN target."""

from __future__ import annotations

import numpy as np
import pytest

from qhw.engine.compiler import compile_model
from qhw.engine.config import EngineConfig
from qhw.engine.cycles import predict
from qhw.hw.config import ArrayConfig

from .conftest import Net, engine_for, quantize

TARGET = 0.85
IDEAL_CNN_8X8 = 2381   # 152,384 MACs / 64


def _predict(qm, **engine):
    cfg = engine_for(qm.graph, **engine)
    compiled = compile_model(qm, cfg)
    return compiled, predict(compiled.program, cfg, compiled.total_macs)


@pytest.mark.parametrize("rounding", [("single",), ("single", "tflite", "onnx")])
def test_digits_cnn_meets_85_percent_on_8x8(digits_q, rounding):
    qm = digits_q["digits_cnn"]
    cfg = EngineConfig(array=ArrayConfig(rows=8, cols=8, rounding=rounding, max_k=engine_for(qm.graph).array.max_k))
    compiled = compile_model(qm, cfg)
    report = predict(compiled.program, cfg, compiled.total_macs)
    assert -(-compiled.total_macs // 64) == IDEAL_CNN_8X8
    assert sum(report.per_descriptor) == report.total
    assert report.utilization >= TARGET
    by_name = {x.name: report.per_descriptor[x.index] for x in compiled.layers}
    # conv3 runs back to back with conv2 (its first plane is written long before): exactly K x N tiles x M
    assert by_name["/conv3/Conv"] == 18 * 4 * 16
    # conv2: its tiles at full rate, plus conv1's drain (the write-back latency, then its last write's
    # read: agen_latency) before its first beat
    assert by_name["/conv2/Conv"] == 9 * 2 * 64 + cfg.writeback_latency + cfg.agen_latency - 1


def test_digits_cnn_figures(digits_q):
    """The numbers docs/engine.md quotes (8x8, built for the model: rounding single)."""
    compiled, report = _predict(digits_q["digits_cnn"])
    assert report.per_descriptor == [66, 194, 1189, 1152, 81, 42, 0]
    assert report.total == 2724 and round(100 * report.utilization, 1) == 87.4


def test_rules_on_a_hand_worked_dense(tmp_path):
    """One Dense 8 -> 8 on 8x8 (single rounding, write-back latency 35), by the documented rules:
    INPUT writes its word at 0 + input_latency 2 (share 3); the tile loads at 0, its beat waits for the
    word (2 + agen 3 = 5: read at 3, the word at 5) and issues at 5 (share 3); the row is written at
    5 + 35 = 40, OUTPUT reads it at 40 + 2 = 42 and its beat leaves at 42 + output_latency 4 (share
    47 - 6 = 41)."""
    rng = np.random.default_rng(5)
    path = Net(rng, (1, 8)).dense(8, 8).save(tmp_path / "fc.onnx")
    qm = quantize(path, rng.uniform(-1, 1, (16, 8)).astype(np.float32))
    compiled, report = _predict(qm)
    assert [d.op for d in compiled.program.descriptors] == ["INPUT", "MATMUL", "OUTPUT", "END"]
    assert compiled.config.writeback_latency == 35
    assert (compiled.config.agen_latency, compiled.config.output_latency) == (3, 4)
    assert report.per_descriptor == [3, 3, 41, 0] and report.total == 47


def test_small_m_is_load_bound(tmp_path):
    """M = 1 tiles: the weight port (one row per cycle) sets the pace, one tile per ``rows`` cycles."""
    rng = np.random.default_rng(6)
    path = Net(rng, (1, 32)).dense(16, 32).save(tmp_path / "fc.onnx")
    qm = quantize(path, rng.uniform(-1, 1, (16, 32)).astype(np.float32))
    compiled, report = _predict(qm)
    mm = next(x for x in compiled.layers if x.op == "Dense")
    assert mm.tiles == "4x2"
    # INPUT writes 4 words at 2..5 (share 6); tile 0 issues at 5 (its plane written at 2, + agen 3),
    # tile u >= 1 loads at 8u and issues at 8u + weight_latency: the last (u = 7) at 56 + weight_latency,
    # so the Dense ends a cycle later
    assert report.per_descriptor[0] == 6
    assert report.per_descriptor[mm.index] == 7 * 8 + compiled.config.weight_latency + 1 - 6


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 4), (16, 16)])
def test_shares_sum_to_total_on_other_arrays(digits_q, rows, cols):
    for name in ("digits_cnn", "digits_mlp"):
        _, report = _predict(digits_q[name], rows=rows, cols=cols)
        assert sum(report.per_descriptor) == report.total > 0


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_schedule_obeys_the_weight_rules(digits_q, name):
    """The tile schedule (what a testbench compares measured tile starts with), checked rule by rule
    against docs/engine.md's timing contract."""
    _, report = _predict(digits_q[name])
    rows = cols = 8
    ev = report.tiles
    assert ev
    for u, t in enumerate(ev):
        assert t.first >= t.load + EngineConfig(array=ArrayConfig(rows=8, cols=8)).weight_latency
        assert t.last >= t.first
        if u:
            assert t.load >= ev[u - 1].load + rows and t.first > ev[u - 1].last
        if u >= 2:
            assert t.load >= ev[u - 2].last + cols
    busy = sum(t.last - t.first + 1 for t in ev)
    assert busy * 64 >= report.macs                                  # every MAC issued in some beat


def test_dependence_counts_are_checked(digits_q):
    """The compiler's dependence counts let conv3 start on conv2's first plane (16 pooled writes of N
    tile 0); one write fewer is caught by the cycle model (a word conv3 reads would not be written)."""
    from dataclasses import replace

    from qhw.engine.isa import Descriptor

    qm = digits_q["digits_cnn"]
    cfg = engine_for(qm.graph)
    program = compile_model(qm, cfg).program
    mm = [i for i, d in enumerate(program.descriptors) if d.op == "MATMUL"]
    conv2, conv3 = (program.descriptors[i] for i in mm[1:3])
    before = 64 + 64                                      # INPUT's and conv1's writes
    assert (conv3["dep_base"], conv3["dep_step"]) == (before + 16, 16)
    assert (conv2["dep_base"], conv2["dep_step"]) == (before, 64)     # conv1's one plane: 64 writes
    descs = list(program.descriptors)
    descs[mm[2]] = Descriptor("MATMUL", {**conv3.fields, "dep_base": conv3["dep_base"] - 1})
    with pytest.raises(RuntimeError, match=r"dependence count 143 is too small"):
        predict(replace(program, descriptors=descs), cfg)
