"""cocotb side of the Verilog co-simulation (launched by test_verilog_cosim.py, not collected by pytest).

Driver: one coroutine per input stream, with seeded idle gaps. Monitor: the output
consumer, with seeded back-pressure. The model (qhw's golden model) and the
checker live in the pytest file; this module only moves beats and records results.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


async def drive(dut, name, beats, rng, gap):
    valid, payload, ready = (getattr(dut, f"{name}__{s}") for s in ("valid", "payload", "ready"))
    for beat in beats:
        while gap and rng.random() < gap:
            await RisingEdge(dut.clk)
        valid.value = 1
        payload.value = beat
        while True:
            await ReadOnly()                 # sample ready as the coming edge will see it
            accepted = int(ready.value)
            await RisingEdge(dut.clk)
            if accepted:
                break
        valid.value = 0


async def monitor(dut, count, rng, stall, rows):
    while len(rows) < count:
        ready = not (stall and rng.random() < stall)
        dut.out__ready.value = int(ready)
        await ReadOnly()
        if ready and int(dut.out__valid.value):
            rows.append(int(dut.out__payload.value.to_unsigned()))
        await RisingEdge(dut.clk)
    dut.out__ready.value = 0


@cocotb.test()
async def run_program(dut):
    with open(os.environ["QHW_COSIM_IN"]) as f:
        spec = json.load(f)
    rng = random.Random(spec["seed"])
    for name in ("cmd", "weights", "params", "act", "out"):
        getattr(dut, f"{name}__{'ready' if name == 'out' else 'valid'}").value = 0
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    for name, beats in spec["beats"].items():
        gap = 0.0 if name == "cmd" else spec["in_gap"]
        cocotb.start_soon(drive(dut, name, beats, random.Random(rng.random()), gap))
    rows = []
    await monitor(dut, spec["out_beats"], random.Random(rng.random()), spec["out_stall"], rows)
    for _ in range(spec["latency"] + 4):      # nothing more may come out
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert not int(dut.out__valid.value), "more results than the GEMM has"
    with open(os.environ["QHW_COSIM_OUT"], "w") as f:
        json.dump(rows, f)
