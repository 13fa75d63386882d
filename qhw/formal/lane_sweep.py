"""Exhaustive simulation of a requantization lane against the arithmetic contract.

Where the solver cannot finish (the lane's full-width product, see ``docs/verification.md``), every
accumulator value a configuration can produce is run through the lane's Verilog at C++ speed
(Verilator, a small C++ driver: one ``acc`` per cycle, no Python in the clock loop) and every output
is compared with ``qhw.arith.Requant.apply`` (the contract itself: ``single``, ``tflite`` and
``onnx``'s float32 rule in NumPy). One *case* is a mode, a parameter set (M0 and shift, or the
float32 scale), a bias, a zero point and a clamp range; the lane sees every ``acc`` of
``config.product_range * max_k`` (the reachable range) once.

``build_lane_sim`` builds the driver once per lane Verilog (cached by its hash); ``LaneSim.run``
sweeps one case and returns the mismatch count and the first mismatch.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from ..arith import Requant
from ..contract import MODE_CODES
from ..errors import ConfigError
from ..hw.config import ArrayConfig, check_config
from ..hw.requant import RequantLane
from ..verilator_tool import MAKE_VARIABLES, require_verilator, verilator_env

__all__ = ["LaneCase", "LaneSim", "SweepResult", "acc_range", "build_lane_sim", "corner_cases"]

_TOP = "lane"

# The driver: reads one case per line on stdin, "mode m0 shift scale zp qmin qmax bias lo hi", and
# writes the lane's output for every acc in [lo, hi] as int16 (little-endian) on stdout.
_MAIN = r"""
#include "Vlane.h"
#include "verilated.h"
#include <cstdio>
#include <cstdint>
#include <vector>

static void tick(Vlane *t) { t->clk = 0; t->eval(); t->clk = 1; t->eval(); }

int main(int argc, char **argv) {
    VerilatedContext ctx;
    Vlane *t = new Vlane(&ctx);
    t->rst = 1; t->i_valid = 0;
    for (int i = 0; i < 4; i++) tick(t);
    t->rst = 0;
    int mode; unsigned m0; int shift; unsigned scale; int zp, qmin, qmax; long long bias, lo, hi;
    std::vector<int16_t> out;
    while (scanf("%d %u %d %u %d %d %d %lld %lld %lld", &mode, &m0, &shift, &scale, &zp, &qmin, &qmax,
                 &bias, &lo, &hi) == 10) {
        t->mode = mode; t->multiplier = m0; t->shift = shift & 0x3f; t->scale = scale; t->bias = (uint32_t)bias;
        t->zero_point = zp & ZMASK; t->qmin = qmin & ZMASK; t->qmax = qmax & ZMASK;
        t->i_valid = 0;
        for (int i = 0; i < 4; i++) tick(t);             // the lane registers zp/qmin/qmax once
        out.clear();
        out.reserve(hi - lo + 1);
        long long next = lo;
        while ((long long)out.size() < hi - lo + 1) {
            t->i_valid = next <= hi;
            t->acc = (uint32_t)(next <= hi ? next : 0) & AMASK;
            if (next <= hi) next++;
            t->clk = 0; t->eval();
            if (t->o_valid) {
                int v = t->o & ZMASK;
                if (v & ZSIGN) v -= 2 * ZSIGN;
                out.push_back((int16_t)v);
            }
            t->clk = 1; t->eval();
        }
        fwrite(out.data(), 2, out.size(), stdout);
        fflush(stdout);
    }
    delete t;
    return 0;
}
"""


def acc_range(config: ArrayConfig) -> tuple[int, int]:
    """Every accumulator value the array can produce: ``max_k`` products of the extreme sign."""
    lo, hi = config.product_range
    return lo * config.max_k, hi * config.max_k


@dataclass(frozen=True)
class LaneCase:
    """One sweep: ``mode`` with M0/shift (``single``, ``tflite``) or the float32 ``scale`` (``onnx``)."""

    mode: str
    m0: int = 0
    shift: int = 0
    scale: float = 0.0
    bias: int = 0
    zero_point: int = 0
    qmin: int = -128
    qmax: int = 127

    def requant(self) -> Requant:
        return Requant(mode=self.mode, multiplier=np.array([self.m0]), shift=np.array([self.shift]),
                       scale=np.array([self.scale], dtype=np.float32), zero_point=self.zero_point,
                       qmin=self.qmin, qmax=self.qmax)

    def line(self, lo: int, hi: int) -> str:
        scale_bits = int(np.array(self.scale, dtype=np.float32).view(np.uint32))
        return (f"{MODE_CODES[self.mode]} {self.m0} {self.shift} {scale_bits} {self.zero_point} {self.qmin} "
                f"{self.qmax} {self.bias} {lo} {hi}\n")


@dataclass(frozen=True)
class SweepResult:
    case: LaneCase
    values: int
    mismatches: int
    first: tuple[int, int, int] | None      # (acc, lane, contract)


class LaneSim:
    """A running driver process for one built lane; ``run(case)`` sweeps every acc in the range."""

    def __init__(self, exe: Path, config: ArrayConfig):
        self.config = config
        self.lo, self.hi = acc_range(config)
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, case: LaneCase) -> SweepResult:
        if case.mode not in self.config.rounding:
            raise ConfigError(f"mode {case.mode!r} is not built in this lane ({self.config.rounding})")
        lo, hi = self.lo, self.hi
        self.proc.stdin.write(case.line(lo, hi).encode())
        self.proc.stdin.flush()
        n = hi - lo + 1
        raw = self.proc.stdout.read(2 * n)
        if len(raw) != 2 * n:
            raise ConfigError(f"lane simulation stopped after {len(raw) // 2} of {n} values")
        got = np.frombuffer(raw, dtype="<i2").astype(np.int64)
        acc = np.arange(lo, hi + 1, dtype=np.int64)
        want = case.requant().apply(acc + case.bias)
        bad = np.flatnonzero(got != want)
        first = None if bad.size == 0 else (int(acc[bad[0]]), int(got[bad[0]]), int(want[bad[0]]))
        return SweepResult(case, n, int(bad.size), first)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_lane_sim(config: ArrayConfig, build_root, *, lane=RequantLane, opt: str = "-O2") -> LaneSim:
    """Build (or reuse) the Verilator driver of ``lane(config=config)`` and start it."""
    check_config(config)
    if config.act_bits > 16:
        raise ConfigError(f"the lane sweep writes 16-bit outputs; act_bits {config.act_bits} is wider")
    if config.sum_bits > 32:
        raise ConfigError(f"the lane sweep drives acc as 32 bits; sum_bits {config.sum_bits} is wider")
    dut = lane(config=config)
    ports = [v for _, _, v in dut.signature.flatten(dut)]
    text = verilog.convert(dut, name=_TOP, ports=ports, emit_src=False)
    defines = (f"#define ZMASK {(1 << config.act_bits) - 1}\n#define ZSIGN {1 << (config.act_bits - 1)}\n"
               f"#define AMASK {(1 << config.sum_bits) - 1}u\n")
    main = defines + _MAIN
    key = hashlib.sha256((text + main + opt).encode()).hexdigest()[:12]
    bdir = Path(build_root) / f"lane-{key}"
    exe = bdir / "obj" / "Vlane"
    if not (bdir / "stamp").is_file():
        shutil.rmtree(bdir, ignore_errors=True)
        bdir.mkdir(parents=True)
        (bdir / "lane.v").write_text(text)
        (bdir / "main.cpp").write_text(main)
        env = verilator_env()
        env["MAKEFLAGS"] = " ".join([*MAKE_VARIABLES, f"OPT_FAST={opt}", "OPT_SLOW=-O0"])
        cmd = [str(require_verilator()), "--cc", "--exe", "--build", "-Wno-fatal", "-Wno-lint", "-Wno-style",
               "--top-module", _TOP, "--Mdir", "obj", "-j", "1", "lane.v", "main.cpp"]
        done = subprocess.run(cmd, cwd=bdir, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not exe.is_file():
            tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise ConfigError(f"lane simulation build failed in {bdir}: {tail}")
        (bdir / "stamp").write_text("ok\n")
    return LaneSim(exe, config)


def corner_cases(config: ArrayConfig) -> list[LaneCase]:
    """The (M0, shift), scale, bias and clamp corners swept for each built mode.

    M0: 0, 1, the smallest and largest normalised multipliers (2**30, 2**31 - 1), one with every
    17-bit chunk of the product busy, 2**30 + 1; shift: both ends of [-31, 30] and around 0,
    where the rounding bit moves across the 31-bit boundary; biases that put ``acc + bias`` at both
    ends of the int32 range (``tflite`` saturates it) and beyond; clamps of the full element range
    and a fused ReLU with a non-zero zero point. ``onnx``: scales from zero and subnormal through
    ties (0.5) to ones that saturate everything.
    """
    lo_q, hi_q = -(1 << (config.act_bits - 1)), (1 << (config.act_bits - 1)) - 1
    clamps = [(0, lo_q, hi_q), (min(3, hi_q), min(3, hi_q), hi_q)]
    biases = [0, 12345, -(1 << 31), (1 << 31) - 1]
    cases = []
    m0s = [0, 1, 1 << 30, (1 << 31) - 1, 0x5DC3B1A7, (1 << 30) + 1]
    shifts = [-31, -17, -8, -1, 0, 1, 30]
    for mode in ("single", "tflite"):
        if mode not in config.rounding:
            continue
        for m0 in m0s:
            for shift in shifts:
                for i, bias in enumerate(biases):
                    zp, qmin, qmax = clamps[(i + shift) % 2]
                    cases.append(LaneCase(mode, m0=m0, shift=shift, bias=bias, zero_point=zp, qmin=qmin, qmax=qmax))
    if "onnx" in config.rounding:
        tiny = float(np.array(1, dtype=np.uint32).view(np.float32))        # the smallest subnormal
        scales = [0.0, tiny, 2.0 ** -126, 1e-9, 3.0517578125e-05, 0.0123456, 0.5, 1.0, 1.5, 2.0 ** 20]
        for scale in scales:
            for i, bias in enumerate(biases):
                zp, qmin, qmax = clamps[i % 2]
                cases.append(LaneCase("onnx", scale=scale, bias=bias, zero_point=zp, qmin=qmin, qmax=qmax))
    return cases

