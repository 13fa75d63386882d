"""MAC utilization of the systolic array and Verilog generation time, as a Markdown table.

Utilization = useful MACs / (rows * cols * cycles) for an M x K by K x N GEMM with
M = 256, K = N = 4 * rows, measured in Amaranth's simulator from the command
handshake to the last result (weight loading, pipeline fill and drain included),
with streams that never stall. Generation time is ``qhw.hw.generate.generate_verilog``
wall time (Amaranth elaboration + Yosys), after one warm-up run.

    python bench/bench_hw_util.py                 # 8x8 and 16x16 utilization, 4x4..32x32 generation
    python bench/bench_hw_util.py --util 4 --gen 4 8
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from qhw.arith import Requant
from qhw.hw.config import ArrayConfig
from qhw.hw.driver import fold_bias, plan_gemm
from qhw.hw.generate import generate_verilog
from qhw.hw.simulate import simulate
from qhw.kernels import matmul_exact


def utilization(size: int, m: int = 256) -> dict:
    k = n = 4 * size
    config = ArrayConfig(rows=size, cols=size, max_k=max(k, 64), acc_depth=max(m, 64))
    rng = np.random.default_rng(size)
    x = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    bias = rng.integers(-1000, 1000, n)
    requant = Requant.from_scales(mode="single", s_in=0.05, s_w=rng.uniform(0.001, 0.004, n), s_out=0.2,
                                  zero_point=3, qmin=-128, qmax=127)
    program = plan_gemm(config, x, w, fold_bias(bias, w, 0), requant)
    start = time.perf_counter()
    res = simulate(program)
    wall = time.perf_counter() - start
    exact = np.array_equal(res.outputs[0], requant.apply(matmul_exact(x, w) + bias))
    kt, nt = config.gemm_tiles(k, n)
    return {
        "array": f"{size}x{size}", "gemm": f"{m}x{k}x{n}", "cycles": res.cycles,
        "ideal": config.ideal_cycles(m, k, n),
        "util": m * k * n / (size * size * res.cycles),
        "steady": m * k * n / (size * size * kt * nt * m),
        "exact": exact, "sim_s": wall,
    }


def generation_time(size: int) -> float:
    config = ArrayConfig(rows=size, cols=size)
    start = time.perf_counter()
    generate_verilog(config, name=f"qhw_array_{size}x{size}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--util", type=int, nargs="*", default=[8, 16], help="array sizes for utilization")
    parser.add_argument("--gen", type=int, nargs="*", default=[4, 8, 16, 32], help="array sizes for generation")
    parser.add_argument("-m", type=int, default=256, help="GEMM M (default 256)")
    args = parser.parse_args(argv)
    command = " ".join(["python", "bench/bench_hw_util.py", *sys.argv[1:]])
    print(f"Command: `{command}`")
    print()
    if args.util:
        print("| array | GEMM M x K x N | cycles (measured) | cycles (ideal_cycles) | MAC utilization "
              "| steady state | bit-exact | sim wall s |")
        print("|---|---|---|---|---|---|---|---|")
        for size in args.util:
            r = utilization(size, args.m)
            print(f"| {r['array']} | {r['gemm']} | {r['cycles']} | {r['ideal']} | {100 * r['util']:.1f} % "
                  f"| {100 * r['steady']:.1f} % | {'yes' if r['exact'] else 'NO'} | {r['sim_s']:.1f} |", flush=True)
        print()
    if args.gen:
        generation_time(min(args.gen))   # warm-up: first Yosys call is slower
        print("| array | generate_verilog wall s |")
        print("|---|---|")
        for size in args.gen:
            print(f"| {size}x{size} | {generation_time(size):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
