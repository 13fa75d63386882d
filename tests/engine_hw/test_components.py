# amaranth: UnusedElaboratable=no
"""Parameter checks (one ``ConfigError`` line each, before any signal exists) and documented latencies
of the engine's components."""

from __future__ import annotations

import pytest

from qhw.engine.config import EngineConfig
from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig
from qhw.hw.engine.add_unit import AddLane, AddUnit, TableUnit
from qhw.hw.engine.im2col import Im2colAgen
from qhw.hw.engine.layouts import descriptor_layout
from qhw.hw.engine.memories import WeightStore
from qhw.hw.engine.pool import FusedPool, PoolLane, PoolReduce
from qhw.hw.engine.pool_agen import PoolAgen
from qhw.hw.engine.pool_unit import PoolUnit
from qhw.hw.engine.writeback import WritebackAgen


@pytest.mark.parametrize("make,message", [
    (lambda: WritebackAgen(rows=8, cols=3), "cols must divide rows, not 8x3"),
    (lambda: WritebackAgen(rows=0, cols=1), "rows must be a positive integer, not 0"),
    (lambda: WritebackAgen(rows=4, cols=2, settled=1), "settled must be a bool, not 1"),
    (lambda: Im2colAgen(settled="yes"), "settled must be a bool, not 'yes'"),
    (lambda: PoolAgen(settled=3), "settled must be 0, 1 or 2 (cycles), not 3"),
    (lambda: PoolLane(config="8x8"), "config must be an ArrayConfig, not '8x8'"),
    (lambda: PoolUnit(config=None), "config must be an ArrayConfig, not None"),
    (lambda: PoolReduce(lanes=8, sum_bits=9), "sum_bits must be at least 10 (a window of two int8 taps), not 9"),
    (lambda: PoolReduce(lanes=True, sum_bits=20), "lanes must be a positive integer, not True"),
    (lambda: FusedPool(config=ArrayConfig(rows=4, cols=4), pool_line=0), "pool_line must be a positive integer, not 0"),
    (lambda: WeightStore(cols=4, depth=1, init=[[1, 2, 3]]), "init must be at most 1 rows of 4 weights"),
    (lambda: descriptor_layout("NOP"), "unknown engine opcode 'NOP'"),
    (lambda: AddUnit(rows=0), "rows must be a positive integer, not 0"),
    (lambda: TableUnit(lanes=False), "lanes must be a positive integer, not False"),
    (lambda: TableUnit(lanes=2, tables=0), "tables must be a positive integer, not 0"),
    (lambda: TableUnit(lanes=2, tables=2, init=[0] * 256), "init must hold 512 table entries, not 256"),
    (lambda: AddUnit(rows=2, tables=-1), "tables must be a positive integer, not -1"),
    (lambda: AddUnit(rows=2, modes=("onnx",)),
     "modes must be distinct rounding modes of ('single', 'tflite'), not ('onnx',)"),
    (lambda: AddLane(modes=()), "modes must be distinct rounding modes of ('single', 'tflite'), not ()"),
])
def test_parameters_are_checked(make, message):
    with pytest.raises(ConfigError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        make()


@pytest.mark.parametrize("rounding", [("single",), ("single", "tflite", "onnx")])
def test_pool_latencies_are_the_contracts(rounding):
    """The pooling components' documented latencies are EngineConfig's pool latencies."""
    cfg = EngineConfig(array=ArrayConfig(rows=8, cols=8, rounding=rounding))
    fused = FusedPool(config=cfg.array, pool_line=cfg.pool_line)
    unit = PoolUnit(config=cfg.array)
    assert (fused.max_latency, fused.avg_latency) == (cfg.pool_max_latency, cfg.pool_avg_latency)
    assert (unit.max_latency, unit.avg_latency) == (cfg.pool_max_latency, cfg.pool_avg_latency)
    assert PoolLane(config=cfg.array).latency == cfg.array.requant_latency


def test_add_latencies_are_the_contracts():
    """AddUnit's documented latency is the cycle model's ``add_latency``: the read, the lane, the table."""
    cfg = EngineConfig(array=ArrayConfig(rows=8, cols=8))
    assert AddUnit(rows=8).latency == cfg.add_latency == \
        cfg.read_latency + AddLane().latency + TableUnit(lanes=8).latency


@pytest.mark.parametrize("latency", [1, 2, 3])
def test_table_users_agree_on_the_table_read_latency(monkeypatch, latency):
    """``TableUnit`` and the write-back (whose stage registers carry the table's read) accept the same
    ``TABLE_READ_LATENCY`` and refuse any other with the same message: one check for both."""
    from qhw.hw.engine import add_unit, wb_unit

    for module in (add_unit, wb_unit):
        monkeypatch.setattr(module, "TABLE_READ_LATENCY", latency, raising=False)
    outcomes = []
    for make in (lambda: TableUnit(lanes=2),
                 lambda: wb_unit.WritebackUnit(config=ArrayConfig(rows=2, cols=2), pool_line=4, addr_bits=8)):
        try:
            make()
            outcomes.append(None)
        except ConfigError as e:
            outcomes.append(str(e))
    message = (None if latency == 2 else
               f"TABLE_READ_LATENCY must be 2 (the table's read and its register, which the write-back's two "
               f"stage registers carry), not {latency}")
    assert outcomes == [message, message]


def test_components_convert_to_verilog():
    """Every component elaborates to Verilog (memories, asynchronous line-buffer read, lanes) on a
    small array, so a synthesis flow can take it."""
    from amaranth.back import verilog

    from qhw.hw.engine.memories import Scratchpad
    from qhw.hw.engine.reader import ActivationReader

    small = ArrayConfig(rows=2, cols=2, rounding=("single",))
    for name, dut in [("im2col", Im2colAgen()), ("writeback", WritebackAgen(rows=4, cols=2)),
                      ("pool_agen", PoolAgen()), ("reader", ActivationReader(rows=4)),
                      ("scratchpad", Scratchpad(rows=4, cols=2, words=64)),
                      ("weights", WeightStore(cols=2, depth=32)),
                      ("fused_pool", FusedPool(config=small, pool_line=4)), ("pool_unit", PoolUnit(config=small)),
                      ("add_unit", AddUnit(rows=2)), ("table_unit", TableUnit(lanes=2))]:
        text = verilog.convert(dut, name=name)
        assert f"module {name}" in text
