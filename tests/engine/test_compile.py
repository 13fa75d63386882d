"""Compiler refusals (one line: memory, needed, available, smallest fit), engine config, ``qhw compile``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qhw.cli import main
from qhw.engine.compiler import compile_model
from qhw.engine.config import EngineConfig
from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig
from qhw.hw.generate import manifest as manifest_of
from qhw.qmodel import save_qmodel

from .conftest import engine_for


@pytest.fixture(scope="module")
def cnn_file(digits_q, tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "cnn.qhw"
    save_qmodel(digits_q["digits_cnn"], path)
    return path


def test_refusals_name_memory_need_have_and_fit(digits_q):
    qm = digits_q["digits_cnn"]
    full = compile_model(qm, engine_for(qm.graph)).program
    need_w, need_a, need_p = len(full.image), full.act_bytes_used, full.words
    assert (need_w, need_a, need_p) == (7616, 1024, 112)
    with pytest.raises(ConfigError, match=rf"^m: does not fit the engine: weight/parameter store needs {need_w} "
                                          rf"bytes but has 4096; smallest that fits: --weight-kib 8 "
                                          rf"\(qhw compile, qhw generate --top network\)$"):
        compile_model(qm, engine_for(qm.graph, weight_kib=4), source="m")
    with pytest.raises(ConfigError, match=r"^m: does not fit the engine: weight/parameter store needs 7616 bytes but "
                                          r"has 1024; program store needs 112 words but has 64; smallest that fits: "
                                          r"--weight-kib 8 --program-words 112 "):
        compile_model(qm, EngineConfig(array=engine_for(qm.graph).array, weight_kib=1, program_words=64), source="m")
    compile_model(qm, engine_for(qm.graph, weight_kib=8, act_kib=1, program_words=112))   # the smallest fit works


def test_act_refusal(digits_q):
    qm = digits_q["digits_cnn"]
    array = ArrayConfig(rows=16, cols=16, rounding=("single",), max_k=288)
    with pytest.raises(ConfigError, match=r"^m: does not fit the engine: activation scratchpad needs \d+ bytes but "
                                          r"has 1024; smallest that fits: --act-kib 2 "):
        compile_model(qm, EngineConfig(array=array, act_kib=1), source="m")


def test_array_refusal_says_what_to_regenerate(digits_q):
    qm = digits_q["digits_cnn"]
    array = ArrayConfig(rows=8, cols=8, rounding=("tflite",))
    with pytest.raises(ConfigError, match=r"uses rounding 'single' but the array has tflite; regenerate with "
                                          r"qhw generate --rounding tflite,single$"):
        compile_model(qm, EngineConfig(array=array), source="m")


@pytest.mark.parametrize("kwargs,message", [
    ({"weight_kib": 0}, r"^weight_kib must be a positive integer, not 0$"),
    ({"act_kib": True}, r"^act_kib must be a positive integer, not True$"),
    ({"tables": 0}, r"^tables must be a positive integer, not 0$"),
    ({"array": ArrayConfig(rows=8, cols=3)}, r"^the network engine needs cols dividing rows, not 8x3$"),
    ({"array": ArrayConfig(tile_rows=2)}, r"^the network engine needs 1x1 tiles with tile_pipeline 1, not tiles 2x1 "
                                          r"with tile_pipeline 1$"),
    ({"array": ArrayConfig(act_bits=16)}, r"^the network engine stores int8 activations, not int16$"),
    ({"array": ArrayConfig(rows=1, cols=1)}, r"^the network engine needs at least 2 rows \(a lane fetches"),
    ({"weight_ram": "lut"}, r"^weight_ram must be one of block, spram, not 'lut'$"),
    ({"weight_ram": "spram", "array": ArrayConfig(rows=4, cols=2)}, r"^weight_ram spram needs cols 4 or 8"),
    ({"weight_ram": "spram", "weight_kib": 65}, r"^weight_ram spram holds at most 64 KiB"),
])
def test_engine_config_validation(kwargs, message):
    kwargs.setdefault("array", ArrayConfig())
    with pytest.raises(ConfigError, match=message):
        EngineConfig(**kwargs)


def test_weight_ram_in_the_manifest():
    """``weight_ram`` goes through the manifest; a manifest without it (older qhw) means block RAM;
    a bad value is one line naming the field."""
    cfg = EngineConfig(array=ArrayConfig(rows=4, cols=4, pe="ice40-dual"), weight_kib=8, weight_ram="spram")
    doc = cfg.to_manifest()
    assert doc["engine"]["weight_ram"] == "spram" and EngineConfig.from_manifest(doc) == cfg
    del doc["engine"]["weight_ram"]
    assert EngineConfig.from_manifest(doc).weight_ram == "block"
    doc["engine"]["weight_ram"] = "bram"
    with pytest.raises(ConfigError, match=r"^m.json: field 'engine.weight_ram' must be one of block, spram, "
                                          r"not 'bram'$"):
        EngineConfig.from_manifest(doc, source="m.json")


def test_cli_generate_weight_ram_refusals(tmp_path, capsys):
    """``qhw generate --weight-ram``: one line, nothing written, for a non-network top and for columns
    the SPRAM pair cannot hold."""
    out = tmp_path / "g"
    assert main(["generate", "--weight-ram", "spram", "--name", "n", "-o", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["generate", "--top", "network", "--rows", "4", "--cols", "2", "--weight-ram", "spram",
                 "--name", "n", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weight_ram spram needs cols 4 or 8" in err and not out.exists()


def test_cli_compile_writes_program_and_table(cnn_file, tmp_path, capsys):
    out = tmp_path / "cnn.qbin"
    assert main(["compile", str(cnn_file), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and out.read_bytes()[:4] == b"QHWE"
    rows = [ln.split() for ln in text.splitlines()]
    assert rows[1][:6] == ["#", "layer", "op", "shape", "tiles", "cycles"]
    conv2 = next(r for r in rows if "/conv2/Conv" in r)
    assert conv2[2:3] == ["Conv+MaxPool"] and "9x2" in conv2
    assert "total 2724 cycles per inference; ideal MACs/(R*C) 2381; MAC utilization 87.4 %" in text
    assert main(["disasm", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("; qhw engine program v2: 8x8 array")


def test_cli_compile_with_manifest_and_refusal(cnn_file, tmp_path, capsys):
    manifest = tmp_path / "net.json"
    doc = manifest_of(ArrayConfig(rounding=("single",), max_k=288), name="net")
    doc["engine"] = {"weight_kib": 4, "act_kib": 2}
    manifest.write_text(json.dumps(doc))
    (tmp_path / "net.v").write_text("// placeholder\n")
    out = tmp_path / "x.qbin"
    assert main(["compile", str(cnn_file), "--rtl", str(manifest), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weight/parameter store needs 7616 bytes but has 4096" in err
    assert not out.exists()
    assert main(["compile", str(cnn_file), "--rtl", str(manifest), "--weight-kib", "8", "-o", str(out)]) == 0
    assert "weight store 8 KiB, scratchpad 2 KiB" in capsys.readouterr().out


def test_cli_compile_json(cnn_file, tmp_path, capsys):
    assert main(["compile", str(cnn_file), "-o", str(tmp_path / "c.qbin"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [x["predicted_cycles"] for x in doc["layers"]] == [66, 194, 1189, 1152, 81, 42]
    assert sum(x["predicted_cycles"] for x in doc["layers"]) == doc["cycles_per_inference"] == 2724
    assert doc["ideal_cycles"] == 2381 and doc["memory"]["weight_bytes"] == 7616


def test_symbolic_input_shape_is_refused(digits_q):
    import copy

    from qhw.graph import TensorInfo

    qm = copy.deepcopy(digits_q["digits_cnn"])
    qm.graph.inputs[0] = TensorInfo("x", ("batch", 1, "H", 8))
    with pytest.raises(ConfigError, match=r"^m: input 'x' has shape \(batch, 1, H, 8\); an engine program needs "
                                          r"every dimension but the batch fixed$"):
        compile_model(qm, engine_for(digits_q["digits_cnn"].graph), source="m")


def test_hardware_refuses_rules_it_does_not_build(tmp_path):
    """The reference model runs onnx's QLinearAveragePool rule; NetworkEngine does not build it, so
    `qhw generate --for` / `qhw simulate` on a network top refuse it in one line naming the layer,
    and accept the same model in `single` rounding."""
    from qhw.engine.compiler import check_hardware, compile_model
    from qhw.errors import ConfigError

    from .conftest import engine_for, own_scale_pools

    qm, _ = own_scale_pools(tmp_path, "onnx")
    compiled = compile_model(qm, engine_for(qm.graph), source="pools.qhw")
    with pytest.raises(ConfigError, match=r"^pools\.qhw: layer '.*': the onnx_float average-pool rule .* not built"):
        check_hardware(compiled, source="pools.qhw")
    qs, _ = own_scale_pools(tmp_path, "single")
    check_hardware(compile_model(qs, engine_for(qs.graph), source="pools.qhw"), source="pools.qhw")


def test_pool_avg_div_engine_refuses_rescaling_pools(tmp_path, digits_q):
    """`--pool-avg div` builds no pool requantization lanes: a pool that rescales (rule single) is
    refused in one line naming the layer; the digits CNN (its pools keep their scale: rule div) is not."""
    from qhw.engine.compiler import check_hardware, compile_model

    from .conftest import engine_for, own_scale_pools

    qs, _ = own_scale_pools(tmp_path, "single")
    check_hardware(compile_model(qs, engine_for(qs.graph), source="pools.qhw"), source="pools.qhw")
    compiled = compile_model(qs, engine_for(qs.graph, pool_avg="div"), source="pools.qhw")
    with pytest.raises(ConfigError, match=r"^pools\.qhw: layer '.*': the single average-pool rule .* needs the pool "
                                          r"requantization lanes; this engine was generated with --pool-avg div"):
        check_hardware(compiled, source="pools.qhw")
    cnn = digits_q["digits_cnn"]
    check_hardware(compile_model(cnn, engine_for(cnn.graph, pool_avg="div"), source="cnn.qhw"), source="cnn.qhw")


def test_units_left_out_are_refused_by_layer(tmp_path, capsys, digits_q):
    """``EngineConfig.units`` / ``qhw generate --units``: the digits CNN needs neither optional unit (its
    pools are fused), so ``--units used`` builds none and the model compiles for it; a model with an Add
    (digits_resnet, its ADD and standalone POOL) is refused in one line naming the layer and the flag."""
    from dataclasses import replace

    from qhw.api import quantize_model
    from qhw.cli import main
    from qhw.datasets import builtin_model_path
    from qhw.engine.compiler import compile_model, units_used
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig

    from .conftest import engine_for

    cnn = digits_q["digits_cnn"]
    assert units_used(compile_model(cnn, engine_for(cnn.graph)).program) == ()
    compile_model(cnn, engine_for(cnn.graph, units=()))
    x = np.random.default_rng(3).uniform(0, 16, (8, 1, 8, 8)).astype(np.float32)       # seed 3: calibration
    res = quantize_model(builtin_model_path("digits_resnet"), QuantConfig(), calib_x=x, log=lambda m: None)
    assert units_used(compile_model(res, engine_for(res.graph)).program) == ("add", "pool")
    with pytest.raises(ConfigError, match=r"^res\.qhw: layer 'add' needs the engine's add unit \(ADD\), but it "
                                          r"was generated with --units pool \(regenerate with --units add,pool\)$"):
        compile_model(res, engine_for(res.graph, units=("pool",)), source="res.qhw")
    with pytest.raises(ConfigError, match=r"^res\.qhw: layer 'pool' needs the engine's pool unit \(POOL\), but it "
                                          r"was generated with --units add \(regenerate with --units add,pool\)$"):
        compile_model(res, engine_for(res.graph, units=("add",)), source="res.qhw")
    # the CLI: --units used with --for picks none for the CNN (the flags' engine, without writing Verilog);
    # bad lists are one line, nothing written
    from qhw.cli import build_parser
    from qhw.hw.cli import engine_from_args

    save_qmodel(cnn, tmp_path / "cnn.qhw")
    args = build_parser().parse_args(["generate", "--top", "network", "--rows", "4", "--cols", "4", "--units",
                                      "used", "--for", str(tmp_path / "cnn.qhw"), "--name", "n", "-o", "x"])
    assert engine_from_args(args)[0].units == ()
    args = build_parser().parse_args(["generate", "--top", "network", "--units", "pool", "--name", "n", "-o", "x"])
    assert engine_from_args(args)[0].units == ("pool",)
    for argv, message in (
            (["--top", "network", "--units", "add,conv"], "--units: 'conv' is not an optional unit (expected a "
                                                           "comma-separated list of add, pool, or none, or used)"),
            (["--top", "network", "--units", "used"], "--units used needs --for MODEL.qhw (the model whose units "
                                                      "to build)"),
            (["--units", "none"], "--units configures the network engine; add --top network")):
        assert main(["generate", "--rows", "4", "--cols", "4", *argv, "--name", "m", "-o", str(tmp_path / "bad")]) == 2
        assert capsys.readouterr().err == f"qhw: error: {message}\n"
    assert not (tmp_path / "bad").exists()
    assert replace(engine_for(cnn.graph), units=("add",)).units == ("add",)
