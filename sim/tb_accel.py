"""cocotb testbench: random GEMMs on the generated accelerator, checked against qhw's golden model.

Launched by ``tests/sim/test_cocotb.py`` (``cocotb_tools.runner``); the case comes in through
``QHW_CASE`` (a JSON file: manifest path, GEMM shapes, rounding modes, seed, stall rates).
Each rounding mode runs twice (``cocotb.parametrize``):

* ``stalls=False``: streams never idle and ``out`` is always ready, and every GEMM's cycle count
  must equal the manifest's analytical model (``ideal_cycles``) wherever that model is exact;
* ``stalls=True``: random input gaps and output back-pressure (rates and seed from the case),
  outputs must still be bit-exact.

Drivers, monitor and checker are ``qhw.sim.bench``; the model is ``qhw.runtime.GoldenBackend``
(via ``qhw.sim.backend.SimBackend``); nothing here computes a result itself. The outcome of each
test is also written to ``QHW_CASE``'s ``results`` JSON for the pytest side's messages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import numpy as np

from qhw.sim.backend import SimBackend
from qhw.sim.bench import AccelBench
from qhw.sim.gemm import random_gemm
from qhw.sim.manifest import load_hardware

CASE = json.loads(Path(os.environ["QHW_CASE"]).read_text()) if "QHW_CASE" in os.environ else {
    "modes": ["single"], "shapes": [[4, 4, 4]]}


def _record(name: str, result: dict) -> None:
    path = Path(CASE["results"])
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = result
    path.write_text(json.dumps(data, indent=1))


@cocotb.test()
@cocotb.parametrize(mode=CASE["modes"], stalls=[False, True])
async def random_gemms(dut, mode: str, stalls: bool):
    hw = load_hardware(CASE["rtl"])
    seed = int(CASE.get("seed", 0)) + 1000 * CASE["modes"].index(mode) + int(stalls)
    dut._log.info(f"seed {seed} (QHW_SIM_SEED), mode {mode}, stalls {stalls}")
    rng = np.random.default_rng(seed)
    calls = [random_gemm(hw.config, m, k, n, mode=mode, rng=rng, layer=f"gemm {m}x{k}x{n} {mode}")
             for m, k, n in CASE["shapes"]]
    bench = AccelBench(dut, hw, seed=seed)
    if stalls:
        bench.set_stalls(in_gap=CASE.get("in_gap", 0.2), out_stall=CASE.get("out_stall", 0.3))
    await bench.start()
    backend = SimBackend(bench, check_cycles=not stalls)
    half = (len(calls) + 1) // 2            # two runs back to back: the bench keeps going between them
    await backend.run(calls[:half])
    await backend.run(calls[half:])
    layers = [lc.to_json() for lc in backend.layers.values()]
    cycle_errors = [e for lc in layers for e in lc["cycle_errors"]]
    result = {"seed": seed, "mode": mode, "stalls": stalls, "layers": layers,
              "first_mismatch": None if backend.first is None else str(backend.first),
              "cycle_errors": cycle_errors, "cycles": bench.stats.cycles, "wall": bench.stats.wall}
    _record(f"{mode}-{'stalls' if stalls else 'nostall'}", result)
    assert backend.first is None, f"seed {seed}: {backend.first}"
    assert not cycle_errors, f"seed {seed}: cycle counts differ from the manifest's model: {cycle_errors}"
    if not stalls:
        assert sum(lc["cycle_checks"] for lc in layers) > 0, "no GEMM had an exact analytical cycle count"
