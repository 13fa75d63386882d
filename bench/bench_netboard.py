"""The network board top's bitstream: the smallest useful network engine behind the UART link.

    nice -n 10 python bench/bench_netboard.py                        # ULX3S-85F, seed 1
    nice -n 10 python bench/bench_netboard.py --boards ulx3s-85f,icebreaker --seeds 1,2

The engine is the smallest ``qhw generate --top network`` builds (4x4: a load word is 4 bytes, so
``cols`` >= 4, and ``cols`` divides ``rows``), with the board options (``--rounding single
--pool-avg div --units none``) and small memories (1 KiB weights, 1 KiB scratchpad, 128 program
words: 8 descriptors, enough for a few Dense or small convolution layers). Each board runs ``qhw synth
--top board`` (the oscillator clock: 25 MHz ULX3S, 12 MHz iCEBreaker) and prints a Markdown row
for ``bench/results.md``: resources, Fmax against the clock, the critical path, and the wall and CPU
time of each step (``times_s``; the CPU time of the whole command, Yosys and nextpnr run in this
process's children). A design that does not fit prints the one-line reason (the iCE40 UP5K).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import time
from pathlib import Path

from qhw.engine.config import EngineConfig
from qhw.errors import QhwError
from qhw.fpga.flow import synth
from qhw.hw.config import ArrayConfig

# the smallest useful network engine (module docstring); the CI test builds the same one
ENGINE = EngineConfig(array=ArrayConfig(rows=4, cols=4, max_k=64, acc_depth=64, rounding=("single",)),
                      weight_kib=1, act_kib=1, program_words=128, pool_avg="div", units=())
GENERATE = ("qhw generate --top network --rows 4 --cols 4 --max-k 64 --acc-depth 64 --rounding single "
            "--pool-avg div --units none --weight-kib 1 --act-kib 1 --program-words 128 --name net4 -o rtl")


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return sum(r.ru_utime + r.ru_stime for r in ru)


def run(board: str, seed: int, out: Path) -> dict:
    t0, c0 = time.monotonic(), _cpu()
    build = out / f"{board}_s{seed}"
    try:
        r = synth(ENGINE, board=board, top="board", seed=seed, out_dir=str(build))
    except QhwError as e:
        r = {"board": board, "seed": seed, "error": str(e), "utilization": _utilization(build / "logs")}
    r["wall_s"], r["cpu_s"] = round(time.monotonic() - t0, 1), round(_cpu() - c0, 1)
    return r


def _utilization(logs: Path) -> str:
    """What nextpnr's log says the design needs of each resource (a run that stopped for a misfit)."""
    tim = logs / "qhw_top.tim"
    if not tim.exists():
        return ""
    lines = [ln.split("Info:", 1)[-1].strip() for ln in tim.read_text(errors="replace").splitlines()]
    want = ("ICESTORM_LC", "ICESTORM_RAM", "SB_MAC16", "ICESTORM_DSP", "ICESTORM_SPRAM", "TRELLIS_COMB",
            "TRELLIS_FF", "MULT18X18D", "DP16KD")
    return "; ".join(dict.fromkeys(ln for ln in lines if ln.split(":")[0].strip() in want))


def row(r: dict) -> str:
    if "error" in r:
        return (f"| {r['board']} | {r['seed']} | does not fit: {r['error']} ({r['utilization']}) | | | | | | | "
                f"{r['wall_s']} s wall, {r['cpu_s']} s CPU |")
    cp = r.get("critical_path") or {}
    t = r["times_s"]
    return (f"| {r['board']} | {r['seed']} | {r['luts']} / {r['luts_available']} | {r['ffs']} | "
            f"{r['dsps']} ({', '.join(f'{k} {v}' for k, v in r['dsp_use'].items())}) | {r['brams']} | "
            f"{r['fmax_mhz']:.2f} MHz (clock {r['target_mhz']:g}, met: {r['timing_met']}) | "
            f"{cp.get('delay_ns')} ns: {cp.get('from', '')} -> {cp.get('to', '')} | "
            f"Yosys {t['synthesis']} s, P&R {t['place_and_route']} s, bitstream {t['bitstream']} s | "
            f"{r['wall_s']} s wall, {r['cpu_s']} s CPU |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", default="ulx3s-85f")
    p.add_argument("--seeds", default="1")
    p.add_argument("-o", "--out-dir", default="bench/netboard_out")
    args = p.parse_args(argv)
    cmd = "python bench/bench_netboard.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                 else sys.argv[1:]))
    rows = [run(b, int(s), Path(args.out_dir)) for b in args.boards.split(",") for s in args.seeds.split(",")]
    print(f"`{cmd.strip()}` (engine: `{GENERATE}`, then `qhw synth --top board --board BOARD --rtl rtl/net4.json`)\n")
    print("| board | seed | LUTs | FFs | DSPs (where) | BRAM | Fmax | critical path | steps | whole run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(row(r))
    print("\n" + json.dumps(rows, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
