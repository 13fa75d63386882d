"""ArrayConfig: validation messages (exact text), derived widths and latencies, replace(), the manifest
(``to_manifest`` / ``from_manifest`` / ``read_manifest``)."""

import copy
import json
import re
from dataclasses import replace

import pytest

from qhw.contract import MANIFEST_FORMAT_VERSION, MAX_GEMM_M, signed_bits
from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig, read_manifest


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 0}, "rows must be a positive integer, not 0"),
    ({"rows": 2.0}, "rows must be a positive integer, not 2.0"),
    ({"cols": True}, "cols must be a positive integer, not True"),
    ({"act_bits": 6}, "act_bits must be one of 4, 8, 16, not 6"),
    ({"weight_bits": "8"}, "weight_bits must be one of 4, 8, 16, not '8'"),
    ({"act_signed": 1}, "act_signed must be a bool, not 1"),
    ({"per_channel": None}, "per_channel must be a bool, not None"),
    ({"max_k": -4}, "max_k must be a positive integer, not -4"),
    ({"acc_depth": 0}, "acc_depth must be a positive integer, not 0"),
    ({"rows": 8, "tile_rows": 3}, "tile_rows must divide rows (8), not 3"),
    ({"cols": 6, "tile_cols": 4}, "tile_cols must divide cols (6), not 4"),
    ({"tile_pipeline": 5}, "tile_pipeline must be an integer from 0 to 4, not 5"),
    ({"rounding": ()}, "rounding must be a non-empty tuple of distinct modes from single, tflite, onnx, not ()"),
    ({"rounding": ("single", "single")},
     "rounding must be a non-empty tuple of distinct modes from single, tflite, onnx, not ('single', 'single')"),
    ({"rounding": ("gemmlowp",)},
     "rounding must be a non-empty tuple of distinct modes from single, tflite, onnx, not ('gemmlowp',)"),
    ({"acc_bits": 20}, "acc_bits must be an integer from 33 (bit growth of max_k=4096) to 48, not 20"),
    ({"acc_bits": 49}, "acc_bits must be an integer from 33 (bit growth of max_k=4096) to 48, not 49"),
    ({"act_bits": 16, "weight_bits": 16, "max_k": 1 << 20},
     "max_k is too large for a 48-bit accumulator (52 bits needed), not 1048576"),
    ({"pe": "dsp"}, "pe must be one of generic, ice40-dual, ecp5-pipelined, not 'dsp'"),
    ({"pe": None}, "pe must be one of generic, ice40-dual, ecp5-pipelined, not None"),
    ({"pe": ["generic"]}, "pe must be one of generic, ice40-dual, ecp5-pipelined, not ['generic']"),
    ({"pe": "ice40-dual", "act_bits": 16}, "ice40-dual PEs need 8-bit activations and weights, not 16/8"),
    ({"pe": "ice40-dual", "weight_bits": 4}, "ice40-dual PEs need 8-bit activations and weights, not 8/4"),
    ({"pe": "ecp5-pipelined", "tile_cols": 2},
     "ecp5-pipelined PEs need 1x1 tiles with tile_pipeline 1, not tiles 1x2 with tile_pipeline 1"),
    ({"pe": "ice40-dual", "tile_pipeline": 0},
     "ice40-dual PEs need 1x1 tiles with tile_pipeline 1, not tiles 1x1 with tile_pipeline 0"),
])
def test_validation_message(kwargs, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        ArrayConfig(**kwargs)


def test_positional_arguments_rejected():
    with pytest.raises(TypeError):
        ArrayConfig(8, 8)


def test_frozen():
    with pytest.raises(AttributeError):
        ArrayConfig().rows = 4


@pytest.mark.parametrize("act_bits, weight_bits, act_signed, max_k, acc_bits", [
    (8, 8, True, 4096, 33),       # 4096 * 2**14 = 2**26 < 2**31: the bias dominates
    (8, 8, True, 1 << 18, 34),    # 2**32 + 2**31 needs 34 bits
    (16, 16, True, 4096, 44),     # 4096 * 2**30 = 2**42, plus the bias
    (8, 8, False, 16, 33),
    (4, 4, True, 1, 33),
])
def test_accumulator_width(act_bits, weight_bits, act_signed, max_k, acc_bits):
    c = ArrayConfig(act_bits=act_bits, weight_bits=weight_bits, act_signed=act_signed, max_k=max_k)
    assert c.acc_bits is None and c.accumulator_bits == acc_bits
    lo, hi = c.product_range
    assert -(1 << (c.sum_bits - 1)) <= lo * max_k and hi * max_k < 1 << (c.sum_bits - 1)


def test_signed_bits():
    assert signed_bits(-128, 127) == 8
    assert signed_bits(0, 128) == 9
    assert signed_bits(-129, 0) == 9


def test_rounding_string_is_accepted():
    assert ArrayConfig(rounding="tflite").rounding == ("tflite",)


def test_latency_formulas():
    """Hand-counted figures (the lanes' own are measured in tests/hw/test_requant.py, the multipliers'
    in tests/test_contract.py)."""
    c = ArrayConfig(rows=8, cols=8)
    assert c.mesh_latency == 15
    assert c.requant_latency == 19                  # with onnx; 15 without (test_requant.py)
    assert c.latency == 1 + 15 + 3 + 19 + 1
    t = ArrayConfig(rows=8, cols=8, tile_rows=2, tile_cols=4, tile_pipeline=2)
    assert t.tile_grid == (4, 2)
    assert t.mesh_latency == (4 + 2 - 2) * 2 + 1
    assert ArrayConfig(rows=4, cols=4, tile_pipeline=0).mesh_latency == 1
    assert c.peak_macs_per_cycle == 64


@pytest.mark.parametrize("pe, product, array, latency, drain, min_m", [
    ("generic", 0, 15, 39, 20, 30),
    ("ice40-dual", 0, 15, 39, 20, 30),           # SB_MAC16 dual 8x8 is combinational
    ("ecp5-pipelined", 5, 20, 44, 25, 35),       # MULT18X18D's 3 registers + 2 fabric registers
])
def test_latencies_per_pe(pe, product, array, latency, drain, min_m):
    """Literal figures for 8x8 int8 with all modes (the 44 of ecp5 is docs/hardware.md's); the
    accelerator's cycle-exact tests measure ``latency`` and ``ideal_cycles`` for each kind."""
    c = ArrayConfig(rows=8, cols=8, pe=pe)
    assert (c.mesh_latency, c.product_latency, c.array_latency, c.latency) == (15, product, array, latency)
    assert (c.bank_drain_cycles, c.min_m_for_full_rate, c.fifo_depth) == (drain, min_m, latency + 4)
    assert c.ideal_cycles(40, 24, 16) == 1 + 8 + 3 * 2 * 40 + latency


def test_dsp_pe_allows_16_bit_on_ecp5():
    c = ArrayConfig(act_bits=16, weight_bits=16, pe="ecp5-pipelined")
    assert c.product_latency == 5


def test_manifest_is_json_and_complete():
    c = ArrayConfig(rows=4, cols=2, per_channel=False)
    m = json.loads(json.dumps(c.to_manifest()))
    assert set(m) == {"format_version", "parameters", "derived", "latency", "peak_macs_per_cycle"}
    assert m["format_version"] == MANIFEST_FORMAT_VERSION == 1
    assert m["parameters"]["rows"] == 4 and m["parameters"]["per_channel"] is False
    assert m["parameters"]["rounding"] == ["single", "tflite", "onnx"]
    assert m["latency"]["latency"] == c.latency
    assert m["parameters"]["pe"] == "generic"
    assert m["latency"]["product_latency"] == 0 and m["latency"]["array_latency"] == c.mesh_latency
    # The width built, under both existing keys, although the field itself is None (derived).
    assert m["derived"]["acc_bits"] == m["parameters"]["acc_bits"] == 33 and c.acc_bits is None
    assert m["derived"]["max_m"] == MAX_GEMM_M == 65535 and m["derived"]["max_n"] == 65535
    assert m["peak_macs_per_cycle"] == 8


@pytest.mark.parametrize("lanes", [0, 3, 2.0, -4])
def test_requant_lanes_must_divide_cols(lanes):
    with pytest.raises(ConfigError, match=re.escape(f"requant_lanes must be a positive divisor of cols (8), "
                                                    f"not {lanes!r}") + "$"):
        ArrayConfig(requant_lanes=lanes)


def test_default_lanes_follow_cols_through_replace():
    """``requant_lanes=None`` means one lane per column, also after ``dataclasses.replace`` (sweeps do that)."""
    from dataclasses import replace
    small = replace(ArrayConfig(), rows=2, cols=2)
    assert small.requant_lane_count == 2 and small.requant_passes == 1
    assert replace(ArrayConfig(requant_lanes=2), cols=4).requant_passes == 2


def test_manifest_pe_and_latencies():
    c = ArrayConfig(rows=4, cols=2, pe="ecp5-pipelined")
    m = json.loads(json.dumps(c.to_manifest()))
    assert m["parameters"]["pe"] == "ecp5-pipelined"
    lat = m["latency"]
    assert (lat["mesh_latency"], lat["product_latency"], lat["array_latency"]) == (5, 5, 10)
    assert lat["latency"] == c.latency == 1 + 10 + 3 + 19 + 1
    assert ArrayConfig.from_manifest(m) == c


# --------------------------------------------------------------------------- replace()

def test_replace_rederives_the_accumulator():
    """``acc_bits=None`` stays None: replace() with a larger max_k or wider elements re-derives the width
    (it used to carry the stale 33 bits and fail)."""
    c = ArrayConfig()
    assert replace(c, max_k=1 << 18).accumulator_bits == 34
    assert replace(c, act_bits=16).accumulator_bits == 36          # 4096 * 2**22 + 2**31 < 2**35
    assert replace(c, act_bits=16, weight_bits=16).accumulator_bits == 44
    assert replace(replace(c, max_k=1 << 18), max_k=4096) == c


def test_replace_keeps_a_given_width():
    c = ArrayConfig(acc_bits=40)
    assert replace(c, rows=4).accumulator_bits == 40
    with pytest.raises(ConfigError, match=re.escape("acc_bits must be an integer from 44 (bit growth of "
                                                    "max_k=4096) to 48, not 40") + "$"):
        replace(c, act_bits=16, weight_bits=16)


def test_replace_pe():
    c = ArrayConfig(rows=4, cols=4)
    d = replace(c, pe="ecp5-pipelined")
    assert d.array_latency == c.array_latency + 5 and replace(d, pe="generic") == c
    with pytest.raises(ConfigError, match="^ice40-dual PEs need 8-bit activations and weights, not 16/8$"):
        replace(c, act_bits=16, pe="ice40-dual")


# --------------------------------------------------------------------------- from_manifest

CONFIGS = [
    ArrayConfig(),
    ArrayConfig(rows=4, cols=2, per_channel=False, rounding=("tflite",), act_signed=False),
    ArrayConfig(rows=2, cols=4, max_k=16, acc_depth=8, acc_bits=48, requant_lanes=2, pe="ecp5-pipelined"),
    ArrayConfig(rows=4, cols=4, tile_rows=2, tile_cols=4, tile_pipeline=2, act_bits=16, weight_bits=4),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_manifest_round_trip(config):
    doc = json.loads(json.dumps(config.to_manifest()))
    assert ArrayConfig.from_manifest(doc, source="x.json") == config


def manifest_with(change):
    doc = json.loads(json.dumps(ArrayConfig(rows=4, cols=2).to_manifest()))
    change(doc)
    return doc


def _set(path, value):
    def change(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        doc[last] = value
    return change


def _del(path):
    def change(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        del doc[last]
    return change


@pytest.mark.parametrize("change, message", [
    (_set(["format_version"], 2), "field 'format_version' is 2, newer than this qhw reads (1); update qhw or "
                                  "regenerate the manifest with this one"),
    (_del(["format_version"]), "field 'format_version' is missing (a manifest from before versioned manifests: "
                               "regenerate it with qhw generate)"),
    (_set(["format_version"], "1"), "field 'format_version' must be a positive integer, not '1'"),
    (_del(["parameters"]), "field 'parameters' is missing"),
    (_set(["parameters"], [4, 2]), "field 'parameters' must be an object, not [4, 2]"),
    (_set(["parameters", "rows"], "x"), "field 'parameters.rows' must be a positive integer, not 'x'"),
    (_set(["parameters", "cols"], 0), "field 'parameters.cols' must be a positive integer, not 0"),
    (_del(["parameters", "pe"]), "field 'parameters.pe' is missing"),
    (_del(["parameters", "acc_depth"]), "field 'parameters.acc_depth' is missing"),
    (_set(["parameters", "pe"], "dsp"), "field 'parameters.pe' must be one of generic, ice40-dual, "
                                        "ecp5-pipelined, not 'dsp'"),
    (_set(["parameters", "act_bits"], 12), "field 'parameters.act_bits' must be one of 4, 8, 16, not 12"),
    (_set(["parameters", "act_signed"], 1), "field 'parameters.act_signed' must be a bool, not 1"),
    (_set(["parameters", "rounding"], "single"), "field 'parameters.rounding' must be a list of modes, not 'single'"),
    (_set(["parameters", "rounding"], ["gemmlowp"]), "field 'parameters.rounding' must be a non-empty tuple of "
                                                     "distinct modes from single, tflite, onnx, not ('gemmlowp',)"),
    (_set(["parameters", "acc_bits"], 20), "field 'parameters.acc_bits' must be an integer from 33 (bit growth of "
                                           "max_k=4096) to 48, not 20"),
    (_set(["parameters", "max_k"], 1 << 40), "field 'parameters.max_k' is too large for a 48-bit accumulator "
                                             "(56 bits needed), not 1099511627776"),
    (_set(["parameters", "requant_lanes"], 3), "field 'parameters.requant_lanes' must be a positive divisor of "
                                               "cols (2), not 3"),
    (_set(["parameters", "tile_cols"], 3), "field 'parameters.tile_cols' must divide cols (2), not 3"),
    (_set(["parameters", "tile_pipeline"], 9), "field 'parameters.tile_pipeline' must be an integer from 0 to 4, "
                                               "not 9"),
    # Valid parameters that no longer match the derived figures written beside them.
    (_set(["parameters", "tile_cols"], 2), "field 'derived.tile_grid' is [4, 2], but these parameters give [4, 1] "
                                           "(written by another qhw version; regenerate with qhw generate)"),
    (_set(["parameters", "wide"], True), "field 'parameters.wide' is not an ArrayConfig parameter "
                                         "(a manifest from a newer qhw?)"),
    (_del(["latency"]), "field 'latency' is missing"),
    (_del(["latency", "requant_latency"]), "field 'latency.requant_latency' is missing"),
    (_set(["latency", "latency"], 30), "field 'latency.latency' is 30, but these parameters give 29 (written by "
                                       "another qhw version; regenerate with qhw generate)"),
    (_del(["derived", "max_m"]), "field 'derived.max_m' is missing"),
    (_set(["derived", "acc_bits"], 34), "field 'derived.acc_bits' is 34, but these parameters give 33 (written by "
                                        "another qhw version; regenerate with qhw generate)"),
    (_set(["peak_macs_per_cycle"], 9), "field 'peak_macs_per_cycle' must be 8 for these parameters, not 9"),
])
def test_manifest_field_refused(change, message):
    doc = manifest_with(change)
    with pytest.raises(ConfigError, match="^" + re.escape("NAME.json: " + message) + "$"):
        ArrayConfig.from_manifest(doc, source="NAME.json")


def test_manifest_pe_kind_conflict_names_the_field():
    doc = manifest_with(_set(["parameters", "act_bits"], 16))
    doc["parameters"]["pe"] = "ice40-dual"
    with pytest.raises(ConfigError, match="^" + re.escape("NAME.json: field 'parameters.pe' is invalid: ice40-dual "
                                                          "PEs need 8-bit activations and weights, not 16/8") + "$"):
        ArrayConfig.from_manifest(doc, source="NAME.json")


def test_manifest_not_an_object():
    with pytest.raises(ConfigError, match=r"^m\.json: not a qhw manifest \(a JSON object expected, not list\)$"):
        ArrayConfig.from_manifest([], source="m.json")


def test_manifest_acc_bits_reads_back_derived():
    """The manifest writes the resolved width; equal to the derived one it reads back as None, so a
    replace() on the loaded config keeps deriving."""
    doc = json.loads(json.dumps(ArrayConfig(acc_bits=33).to_manifest()))
    loaded = ArrayConfig.from_manifest(doc)
    assert loaded.acc_bits is None and loaded == ArrayConfig()
    assert replace(loaded, max_k=1 << 18).accumulator_bits == 34


def test_read_manifest_file_errors(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(ConfigError, match="^" + re.escape(f"{missing}: no such manifest (qhw generate writes "
                                                          f"NAME.json beside NAME.v)") + "$"):
        read_manifest(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{bad}: not a qhw manifest (JSONDecodeError: ")):
        read_manifest(bad)
    doc = {"format_version": 1, "name": "t", "top": "t", **copy.deepcopy(ArrayConfig().to_manifest())}
    good = tmp_path / "t.json"
    good.write_text(json.dumps(doc))
    assert read_manifest(good) == (ArrayConfig(), doc)
    del doc["top"]                      # absent: an accel manifest
    good.write_text(json.dumps(doc))
    assert read_manifest(good) == (ArrayConfig(), doc)
    doc["top"] = 3
    good.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="^" + re.escape(f"{good}: field 'top' must be a module name, not 3")
                       + "$"):
        read_manifest(good)
