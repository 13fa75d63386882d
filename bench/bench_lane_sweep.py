"""Exhaustive lane sweep: every reachable ``acc`` through the requantization lane's Verilog
(Verilator, C++ driver) against ``qhw.arith`` for the (M0, shift), scale, bias and clamp corners of
``qhw.formal.lane_sweep.corner_cases``, then the lane's mutants (each must mismatch).

    python bench/bench_lane_sweep.py [--rows 2 --cols 2 --max-k 64] [--mutants-only] [--build DIR]

Prints one line per mode and per mutant; exit status 1 if the lane mismatches or a mutant does not.
Figures: ``bench/results.md`` ("Formal proofs").
"""

from __future__ import annotations

import argparse
import sys
import time

from qhw.formal.lane_sweep import acc_range, build_lane_sim, corner_cases
from qhw.formal.mutate import mutant
from qhw.hw import requant
from qhw.hw.config import ArrayConfig

# (name, old, new): a broken lane each; the sweep must find a mismatch in every one.
MUTANTS = (
    ("single round-half-down", "(Const(1, 62) << round_at)[:64]", "((Const(1, 62) << round_at) - 1)[:64]"),
    ("tflite round-half-down", "up.eq((q & mask) > Mux(q < 0, half1, half))",
     "up.eq((q & mask) > Mux(q < 0, half1, half1))"),
    ("clamp off by one", "Mux(y < qmin, qmin, Mux(y > qmax, qmax, y))",
     "Mux(y < qmin, qmin, Mux(y > qmax + 1, qmax, y))"),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2)
    p.add_argument("--cols", type=int, default=2)
    p.add_argument("--max-k", type=int, default=64)
    p.add_argument("--build", default="sim_build/lane_sweep")
    p.add_argument("--mutants-only", action="store_true")
    args = p.parse_args()
    config = ArrayConfig(rows=args.rows, cols=args.cols, max_k=args.max_k)
    lo, hi = acc_range(config)
    cases = corner_cases(config)
    print(f"config {args.rows}x{args.cols} int8 max_k {args.max_k}, rounding {config.rounding}, "
          f"accumulator_bits {config.accumulator_bits}; acc in [{lo}, {hi}] ({hi - lo + 1} values), "
          f"{len(cases)} cases", flush=True)
    ok = True
    if not args.mutants_only:
        t0 = time.monotonic()
        sim = build_lane_sim(config, args.build)
        print(f"build {time.monotonic() - t0:.1f} s", flush=True)
        for mode in config.rounding:
            t0 = time.monotonic()
            values = bad = 0
            first = None
            for case in (c for c in cases if c.mode == mode):
                r = sim.run(case)
                values += r.values
                bad += r.mismatches
                first = first or (r.first and (case, r.first))
            dt = time.monotonic() - t0
            ok &= bad == 0
            print(f"{mode}: {sum(c.mode == mode for c in cases)} cases, {values} values, {bad} mismatches "
                  f"({dt:.1f} s, {values / dt / 1e6:.2f} M values/s)" + (f"; first {first}" if first else ""),
                  flush=True)
        sim.close()
    # Mutants: the modes interleaved and M0 = 0 (output always the zero point) last, so that the
    # first mismatch comes early; the count is of cases run until then.
    by_mode = [[c for c in cases if c.mode == mode and (c.mode == "onnx" or c.m0 != 0)] for mode in config.rounding]
    order = [c for group in zip(*(g + [None] * (max(map(len, by_mode)) - len(g)) for g in by_mode))
             for c in group if c is not None]
    order += [c for c in cases if c not in order]
    for name, old, new in MUTANTS:
        t0 = time.monotonic()
        broken = mutant(requant.RequantLane, old, new)
        found = None
        with build_lane_sim(config, args.build, lane=broken) as sim:
            built = time.monotonic() - t0
            for i, case in enumerate(order):
                r = sim.run(case)
                if r.mismatches:
                    found = (i, r)
                    break
        ok &= found is not None
        if found:
            i, r = found
            print(f"mutant {name}: caught by case {i + 1} of {len(cases)} ({r.case}), {r.mismatches} mismatches, "
                  f"first (acc, lane, contract) {r.first}; build {built:.1f} s, "
                  f"total {time.monotonic() - t0:.1f} s", flush=True)
        else:
            print(f"mutant {name}: NOT caught", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
