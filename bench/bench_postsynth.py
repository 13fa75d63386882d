"""Post-synthesis simulation at board sizes: the Yosys netlist of each family on the vendor models.

    python bench/bench_postsynth.py                                   # the default configurations
    python bench/bench_postsynth.py --configs ulx3s-85f:4x4 --limit 2

For each ``BOARD:RxC`` a manifest is generated with the family's DSP PEs (iCE40: one shared
requantization lane, as the UP5K holds), the digits MLP is quantized, and ``qhw simulate --post-synth
BOARD`` runs ``--limit`` images; prints one Markdown row per configuration for ``bench/results.md``
(Yosys, Verilator build and simulation times, cycles simulated per second, bit-exactness). Builds go
to ``--build-root`` (default ``build/bench_postsynth``); a rerun reuses the netlist and the build.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from qhw.fpga.boards import board_info
from qhw.hw.config import ArrayConfig
from qhw.hw.generate import write

PE = {"ice40": "ice40-dual", "ecp5": "ecp5-pipelined"}
# The UP5K holds a 2x2 accelerator (2 dual SB_MAC16 + one 5-block lane); the ECP5-85F the 8x8.
DEFAULT_CONFIGS = "icebreaker:2x2,ulx3s-85f:4x4,ulx3s-85f:8x8"


def config_for(board: str, rows: int, cols: int) -> ArrayConfig:
    """iCE40: one shared requantization lane, a LUT-RAM accumulator; ECP5: a lane per column and
    block-RAM accumulators (acc_depth 64 per row, DP16KD) as the 8x8 simulation tests build it."""
    if board_info(board).family == "ice40":
        return ArrayConfig(rows=rows, cols=cols, max_k=64, acc_depth=16, rounding=("single",), pe=PE["ice40"],
                           requant_lanes=1)
    return ArrayConfig(rows=rows, cols=cols, max_k=max(64, 32 * rows), acc_depth=64 * rows, rounding=("single",),
                       pe=PE["ecp5"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="BOARD:RxC[,BOARD:RxC...]")
    ap.add_argument("--limit", type=int, default=1, help="images per configuration (default 1)")
    ap.add_argument("--opt", default="-O0", help="C++ optimization of the Verilator build (default -O0)")
    ap.add_argument("--build-root", default="build/bench_postsynth")
    args = ap.parse_args()

    from qhw.api import quantize_model
    from qhw.datasets import builtin_model_path, write_digits_npz
    from qhw.fpga.postsynth import post_synth_hardware
    from qhw.qmodel import save_qmodel
    from qhw.quantize import QuantConfig
    from qhw.sim.manifest import load_hardware
    from qhw.sim.run import simulate_model

    root = Path(args.build_root).resolve()
    files = write_digits_npz(root / "digits")
    import numpy as np

    with np.load(files["calib"]) as c:
        calib = c["x"][:300]
    model = root / "mlp.qhw"
    save_qmodel(quantize_model(builtin_model_path("digits_mlp"), QuantConfig(), calib_x=calib, log=lambda *_: None),
                model)
    os.environ["QHW_VERILATOR_OPT"] = args.opt
    print("| board | array | netlist | cells (DSP) | Yosys (s) | Verilator build (s) | simulation (s) "
          "| cycles/s | images | bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for item in args.configs.split(","):
        board, size = item.split(":")
        rows, cols = (int(v) for v in size.split("x"))
        family = board_info(board).family
        name = f"qhw_bps_{family}_{rows}x{cols}"
        _, rtl = write(config_for(board, rows, cols), name=name, out_dir=root / "rtl" / name)
        t0 = time.perf_counter()
        try:
            post_synth_hardware(load_hardware(rtl), board=board, build_root=root)      # Yosys, timed alone
            yosys = time.perf_counter() - t0
            rep, _ = simulate_model(model, files["test"], rtl, limit=args.limit, batch=args.limit,
                                    build_root=root, post_synth=board,
                                    log=lambda m: print(f"  [{time.perf_counter() - t0:6.1f}s] {m}", flush=True))
        except Exception as e:         # a refused netlist (no model for a cell) is a result too
            print(f"| {board} | {size} | post-synth {family} | – | – | – | – | – | – | refused: {e} |")
            continue
        t = rep["time"]
        netlist = next((root / "postsynth").glob(f"{name}-{family}-*/{name}.netlist.v"))
        text = netlist.read_text()
        dsp = "SB_MAC16" if family == "ice40" else "MULT18X18D"
        cells = text.count(" #(") + sum(1 for line in text.splitlines() if line.startswith("  SB_DFF")
                                       or line.startswith("  SB_CARRY "))
        print(f"| {board} | {size} | {rep['netlist']} | ~{cells} ({text.count(dsp + ' #(')} {dsp}) "
              f"| {yosys:.0f} | {t['build_s']:.0f} | {t['clock_loop_s']:.1f} "
              f"| {t['cycles_per_s'] or 0:.0f} | {rep['samples']} | {rep['bit_exact']} |", flush=True)


if __name__ == "__main__":
    main()
