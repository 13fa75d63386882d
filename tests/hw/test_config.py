"""ArrayConfig: validation messages (exact text), derived widths and latencies, manifest."""

import json
import re

import pytest

from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig, signed_bits


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
    assert c.acc_bits == acc_bits
    lo, hi = c.product_range
    assert -(1 << (c.sum_bits - 1)) <= lo * max_k and hi * max_k < 1 << (c.sum_bits - 1)


def test_signed_bits():
    assert signed_bits(-128, 127) == 8
    assert signed_bits(0, 128) == 9
    assert signed_bits(-129, 0) == 9


def test_rounding_string_is_accepted():
    assert ArrayConfig(rounding="tflite").rounding == ("tflite",)


def test_latency_formulas():
    c = ArrayConfig(rows=8, cols=8)
    assert c.mesh_latency == 15
    assert c.requant_latency == 19                  # with onnx; 14 without (test_requant.py)
    assert c.latency == 1 + 15 + 3 + 19 + 1
    t = ArrayConfig(rows=8, cols=8, tile_rows=2, tile_cols=4, tile_pipeline=2)
    assert t.tile_grid == (4, 2)
    assert t.mesh_latency == (4 + 2 - 2) * 2 + 1
    assert ArrayConfig(rows=4, cols=4, tile_pipeline=0).mesh_latency == 1
    assert c.peak_macs_per_cycle == 64


@pytest.mark.parametrize("pe, product, array, drain, min_m", [
    ("generic", 0, 15, 20, 30),
    ("ice40-dual", 0, 15, 20, 30),           # SB_MAC16 dual 8x8 is combinational
    ("ecp5-pipelined", 5, 20, 25, 35),       # MULT18X18D's 3 registers + 2 fabric registers
])
def test_latencies_per_pe(pe, product, array, drain, min_m):
    c = ArrayConfig(rows=8, cols=8, pe=pe)
    assert c.mesh_latency == 15
    assert (c.product_latency, c.array_latency) == (product, array)
    # requant_latency is the requantization lane's own (read, never a literal here)
    assert c.latency == 1 + array + c.accumulate_latency + c.requant_latency + 1
    assert (c.bank_drain_cycles, c.min_m_for_full_rate) == (drain, min_m)
    assert c.fifo_depth == c.latency + 4
    assert c.ideal_cycles(40, 24, 16) == ArrayConfig(rows=8, cols=8).ideal_cycles(40, 24, 16) + product


def test_product_latency_is_the_multipliers():
    """The config's constant agrees with the multiplier that builds it (``DspArray.latency`` against
    ``array_latency``: tests/fpga/test_fpga_dsp_array.py)."""
    from qhw.hw.pe_pipelined import PipelinedMul

    assert ArrayConfig(pe="ecp5-pipelined").product_latency == PipelinedMul.LATENCY + 2


def test_dsp_pe_allows_16_bit_on_ecp5():
    c = ArrayConfig(act_bits=16, weight_bits=16, pe="ecp5-pipelined")
    assert c.product_latency == 5


def test_manifest_is_json_and_complete():
    c = ArrayConfig(rows=4, cols=2, per_channel=False)
    m = json.loads(json.dumps(c.manifest()))
    assert set(m) == {"parameters", "derived", "latency", "peak_macs_per_cycle"}
    assert m["parameters"]["rows"] == 4 and m["parameters"]["per_channel"] is False
    assert m["parameters"]["rounding"] == ["single", "tflite", "onnx"]
    assert m["latency"]["latency"] == c.latency
    assert m["parameters"]["pe"] == "generic"
    assert m["latency"]["product_latency"] == 0 and m["latency"]["array_latency"] == c.mesh_latency
    assert m["derived"]["acc_bits"] == c.acc_bits
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
    m = json.loads(json.dumps(c.manifest()))
    assert m["parameters"]["pe"] == "ecp5-pipelined"
    lat = m["latency"]
    assert (lat["mesh_latency"], lat["product_latency"], lat["array_latency"]) == (5, 5, 10)
    assert lat["latency"] == c.latency == 1 + 10 + 3 + c.requant_latency + 1
    assert ArrayConfig(**{**m["parameters"], "rounding": tuple(m["parameters"]["rounding"])}) == c
