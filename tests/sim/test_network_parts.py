"""The network top's plumbing without a simulator: its manifest (``EngineConfig.to_manifest`` /
``from_manifest``, ``top``), ``qhw generate --top network`` refusals, and the bench's parts
(``qhw.sim.network``): input/output stream encoding, the expected write trace, the write checker
naming the first wrong layer, and the per-descriptor cycle measurement against the cycle model.

The trace port is a stand-in whose value is packed from the manifest's ``trace`` fields, so these
run in seconds.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

from qhw.cli import main
from qhw.engine.compiler import compile_model
from qhw.engine.config import EngineConfig, manifest_top
from qhw.engine.cycles import descriptor_end
from qhw.engine.load import input_beats, output_tensors
from qhw.engine.run import run_engine
from qhw.engine.trace import write_trace
from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig
from qhw.hw.generate import manifest as accel_manifest
from qhw.hw.generate import network_manifest
from qhw.runtime import config_for_model
from qhw.sim.network import (
    NetworkExpect,
    TraceTap,
    WriteChecker,
    descriptor_shares,
    output_streams,
)


@pytest.fixture(scope="module")
def digits_q(cnn_path, digits):
    from qhw.api import quantize_model
    from qhw.quantize import QuantConfig

    return {"digits_cnn": quantize_model(cnn_path, QuantConfig(), calib_x=digits["calib_x"], log=lambda m: None)}


@pytest.fixture(scope="module")
def cnn(digits_q):
    qm = digits_q["digits_cnn"]
    engine = EngineConfig(array=config_for_model(qm.graph, rows=8, cols=8))
    compiled = compile_model(qm, engine, source="cnn")
    return qm, engine, compiled


# ----------------------------------------------------------------------------- manifest

def test_engine_manifest_round_trip_and_refusals():
    eng = EngineConfig(array=ArrayConfig(rows=4, cols=4, max_k=64), weight_kib=3, act_kib=2, program_words=48)
    doc = network_manifest(eng, name="net")
    assert doc["top"] == "network" and manifest_top(doc) == "network"
    assert {k: doc["engine"][k] for k in ("weight_kib", "act_kib", "program_words", "pool_line")} == \
        {"weight_kib": 3, "act_kib": 2, "program_words": 48, "pool_line": 64}
    assert EngineConfig.from_manifest(json.loads(json.dumps(doc)), source="n.json") == eng
    ports = {p["name"] for p in doc["ports"]}
    assert {"load__payload", "i__payload", "o__payload", "busy", "error", "loaded", "trace"} <= ports
    assert [f["name"] for f in doc["streams"]["trace"]["fields"]] == ["issue", "desc", "we", "addr", "mask", "data"]
    bad = copy.deepcopy(doc)
    bad["engine"]["act_kib"] = 0
    with pytest.raises(ConfigError, match=r"^n.json: field 'engine.act_kib' must be a positive integer, not 0$"):
        EngineConfig.from_manifest(bad, source="n.json")
    bad = copy.deepcopy(doc)
    bad["engine"]["latency"]["agen_latency"] += 1      # a manifest from another qhw
    with pytest.raises(ConfigError, match=r"^n.json: field 'engine.latency' is \{.*regenerate with qhw generate\)$"):
        EngineConfig.from_manifest(bad, source="n.json")
    div = network_manifest(replace(eng, pool_avg="div"), name="net")
    assert div["engine"]["pool_avg"] == "div" and doc["engine"]["pool_avg"] == "lane"
    assert EngineConfig.from_manifest(json.loads(json.dumps(div)), source="n.json").pool_avg == "div"
    bad = copy.deepcopy(doc)
    bad["engine"]["pool_avg"] = "float"
    with pytest.raises(ConfigError, match=r"^n.json: field 'engine.pool_avg' must be one of lane, div, not 'float'$"):
        EngineConfig.from_manifest(bad, source="n.json")
    assert doc["engine"]["units"] == ["add", "pool"]
    lean = network_manifest(replace(eng, units=("pool",)), name="net")
    assert EngineConfig.from_manifest(json.loads(json.dumps(lean)), source="n.json").units == ("pool",)
    old = copy.deepcopy(doc)
    del old["engine"]["units"]                      # manifests written before units existed: every unit
    assert EngineConfig.from_manifest(old, source="n.json").units == ("add", "pool")
    bad = copy.deepcopy(doc)
    bad["engine"]["units"] = ["add", "concat"]
    with pytest.raises(ConfigError, match=r"^n.json: field 'engine.units' must be a list of add, pool, "
                                          r"not \['add', 'concat'\]$"):
        EngineConfig.from_manifest(bad, source="n.json")
    with pytest.raises(ConfigError, match=r"^units must be a tuple of add, pool in that order, not \('pool', 'add'\)$"):
        replace(eng, units=("pool", "add"))
    bad = copy.deepcopy(doc)
    bad["engine"]["banks"] = 2
    with pytest.raises(ConfigError, match=r"^n.json: field 'engine.banks' is not an engine parameter"):
        EngineConfig.from_manifest(bad, source="n.json")
    # accel manifests: top "accel", or the module name (older manifests), or none
    acc = accel_manifest(ArrayConfig(rows=4, cols=4), name="acc")
    assert acc["top"] == "accel" and manifest_top(acc) == "accel"
    assert manifest_top({**acc, "top": "acc"}) == "accel" and manifest_top({k: v for k, v in acc.items()
                                                                            if k != "top"}) == "accel"


def test_generate_network_refusals_are_one_line(tmp_path, capsys, digits_q):
    from qhw.qmodel import save_qmodel

    q = tmp_path / "cnn.qhw"
    save_qmodel(digits_q["digits_cnn"], q)
    cases = [
        (["--for", str(q), "--weight-kib", "4"], "cnn.qhw: does not fit the engine: weight/parameter store needs "
                                                 "7616 bytes but has 4096; smallest that fits: --weight-kib 8"),
        (["--embed"], "--embed needs --for MODEL.qhw"),
        (["--rows", "8", "--cols", "3"], "the network engine needs cols dividing rows, not 8x3"),
    ]
    for flags, text in cases:
        assert main(["generate", "--top", "network", *flags, "--name", "net", "-o", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and text in err, err
        assert not (tmp_path / "o").exists()
    assert main(["generate", "--weight-kib", "4", "--name", "net", "-o", str(tmp_path / "o")]) == 2
    assert "--weight-kib configures the network engine; add --top network" in capsys.readouterr().err


# ----------------------------------------------------------------------------- streams and model

def test_stream_encoding_round_trip(cnn, digits):
    qm, engine, compiled = cnn
    prog = compiled.program
    x = digits["test_x"][:1]
    from qhw.engine.run import segment_steps

    call = next(segment_steps(prog, qm.graph, x))[0]
    beats = input_beats(prog, {k: v[0] for k, v in call.inputs.items()})
    img = np.asarray(call.inputs[prog.tensors[0].name]).reshape(-1)
    assert len(beats) == 8 and beats[0] == int.from_bytes(img[:8].astype(np.int8).tobytes(), "little")
    # the OUTPUT words as the reference model holds them decode to the model's output codes
    expect = NetworkExpect(prog, engine, {})
    outs, writes = expect.run(0, call.inputs)
    [(i, t, n)] = output_streams(prog, 0)
    dense = np.concatenate([np.asarray(outs[t.name]).reshape(-1), [0] * (-t.c % 8)]).astype(np.int8)
    raws = [int.from_bytes(w.tobytes(), "little") for w in dense.reshape(-1, 8)]
    assert n == 2 and t.c == 10 and np.array_equal(output_tensors(prog, raws)[t.name], outs[t.name][0])
    _, codes = run_engine(prog, qm.graph, x)
    assert np.array_equal(outs[t.name], codes[t.name])
    # the expected writes are write_trace's
    ref = write_trace(prog, engine, call.inputs)
    assert [(w.cycle, w.descriptor, w.word, w.lane, w.values) for w in writes] == \
        [(w.cycle, w.descriptor, w.word, w.lane, w.values) for w in ref]


class _Sig:
    def __init__(self, width):
        self.value, self.width = 0, width

    def __len__(self):
        return self.width


def _tap(manifest, writes, shift=None, issues=()):
    """A TraceTap fed the expected writes (optionally changed by ``shift``) and read issues."""
    fields = manifest["streams"]["trace"]["fields"]
    f = {x["name"]: x["offset"] for x in fields}

    class Dut:
        trace = _Sig(manifest["streams"]["trace"]["payload_bits"])

    tap = TraceTap(Dut, fields)
    events = {}
    for w in writes:
        cycle, word, values = (shift(w) if shift else (w.cycle, w.word, w.values))
        mask = ((1 << len(values)) - 1) << w.lane
        data = bytearray(8)
        data[w.lane:w.lane + len(values)] = np.asarray(values, np.int8).tobytes()
        events.setdefault(cycle, 0)
        events[cycle] |= (1 << f["we"]) | (word << f["addr"]) | (mask << f["mask"]) | \
            (int.from_bytes(bytes(data), "little") << f["data"])
    for cycle, desc in issues:
        events.setdefault(cycle, 0)
        events[cycle] |= (1 << f["issue"]) | (desc << f["desc"])
    for t in range(max(events) + 1):
        Dut.trace.value = events.get(t, 0)
        tap.step(t + 5)          # the segment's first input beat was at falling edge 5
    return tap


def test_checker_names_the_first_wrong_layer_and_cycle(cnn, digits):
    qm, engine, compiled = cnn
    prog = compiled.program
    names = {x.index: (x.name, x.op) for x in compiled.layers}
    from qhw.engine.run import segment_steps

    call = next(segment_steps(prog, qm.graph, digits["test_x"][3:4]))[0]
    expect = NetworkExpect(prog, engine, names)
    _, writes = expect.run(0, call.inputs)
    doc = network_manifest(engine, name="net")
    tiles = {}
    for e in expect.report.tiles:
        tiles[e.descriptor] = e.last
    ok = WriteChecker(expect, 8)
    last = ok.check(_tap(doc, writes, issues=[(c, d) for d, c in tiles.items()]), writes, 5, cycles=True)
    assert ok.bad == 0 and ok.first is None and ok.cycle_errors == []
    # ends -> shares as the cycle model counts them: the tiles' last beats issue ``read_latency`` after their
    # read (descriptor_end), INPUT ends after its last write, OUTPUT after its last beat (from the model's share)
    ends = {i: descriptor_end(d.op, engine, last_read=tiles[i] - engine.read_latency)
            for i, d in enumerate(prog.descriptors)
            if d.op == "MATMUL"}
    ends[0] = descriptor_end("INPUT", engine, last_write=last[0])
    out = next(i for i, d in enumerate(prog.descriptors) if d.op == "OUTPUT")
    ends[out] = sum(expect.report.per_descriptor[:out + 1])
    assert descriptor_shares(prog, ends) == expect.report.per_descriptor
    # one wrong value in conv2's 10th write: named, with its pixel, channels and cycle
    conv2 = next(x.index for x in compiled.layers if x.name == "/conv2/Conv")
    mine = [w for w in writes if w.descriptor == conv2]
    target = mine[9]

    def wrong(w):
        return (w.cycle, w.word, (w.values[0] + 1, *w.values[1:]) if w is target else w.values)
    bad = WriteChecker(expect, 8)
    bad.check(_tap(doc, writes, wrong), writes, 5, cycles=True)
    assert bad.bad == 1
    assert bad.first.startswith(f"first mismatch: layer '/conv2/Conv' (Conv+MaxPool, descriptor {conv2}), word "
                                f"{target.word} = pixel (")
    assert f"cycle {target.cycle}: position 0 (lane {target.lane}): hardware {target.values[0] + 1}, golden model " \
           f"{target.values[0]}" in bad.first
    # a write one cycle late: a cycle error naming the layer
    late = WriteChecker(expect, 8)
    late.check(_tap(doc, writes, lambda w: (w.cycle + (w is target), w.word, w.values)), writes, 5, cycles=True)
    assert late.bad == 0 and late.cycle_errors[0].endswith(f"written at cycle {target.cycle + 1}, cycle model "
                                                           f"{target.cycle}")
    assert "'/conv2/Conv'" in late.cycle_errors[0]


def test_junit_of_a_network_report_fails_the_layer_whose_cycles_differ(tmp_path):
    from qhw.sim.run import write_junit

    rep = {"top": "network", "cycles_equal": False, "samples": 2, "bit_exact": True, "mismatches": 0,
           "gemm_cycles": 100, "layers": [{"name": "x", "op": "input", "predicted_cycles": 66, "measured_cycles": 66},
                                          {"name": "c", "op": "Conv", "predicted_cycles": 6, "measured_cycles": 7}]}
    write_junit(tmp_path / "j.xml", rep)
    text = (tmp_path / "j.xml").read_text()
    assert 'tests="3" failures="1"' in text and '<failure message="measured 7 cycles, predicted 6"/>' in text


def test_functional_bins_of_a_residual_model(digits):
    """The Add, average-pool and high-saturation bins (``qhw.sim.netcov``) on the built-in
    ``digits_resnet`` (one ADD, a standalone average POOL, no max pool, no table) over one image on
    the reference model: exactly one ADD run, some of its outputs clamped, average ties counted,
    and nothing counted for what the model does not have."""
    from qhw.api import quantize_model
    from qhw.datasets import builtin_model_path
    from qhw.engine.compiler import fit_engine
    from qhw.engine.run import segment_steps
    from qhw.executor import check_input
    from qhw.quantize import QuantConfig
    from qhw.sim.netcov import CoverageModel, NetworkCoverage

    qm = quantize_model(builtin_model_path("digits_resnet"), QuantConfig(), calib_x=digits["calib_x"][:200],
                        log=lambda m: None)
    engine = fit_engine(qm, ArrayConfig(rows=4, cols=4, max_k=4096, rounding=("single",)))
    program = compile_model(qm, engine).program
    cov = NetworkCoverage(("single",))
    model = CoverageModel(program, act_words=engine.act_words, coverage=cov)
    x = check_input(qm.graph, digits["test_x"][:1], "test")
    calls = next(segment_steps(program, qm.graph, x))
    model.run_segment(calls[0].segment, calls[0].inputs)
    b = cov.bins
    assert [d.op for d in program.descriptors].count("ADD") == 1 and b["add/run"] == 1
    assert b["add/saturate"] > 0 and b["pool/avg_tie"] > 0 and b["pool/max_tie"] == 0
    assert b["table/lookup"] == 0 and b["k_tiles/1"] == 0
