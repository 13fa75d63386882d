# amaranth: UnusedElaboratable=no
"""The hardware contract (``qhw.contract``): pure (no Amaranth), and its figures against the hardware
built from it, measured in the Amaranth simulator; a structure that disagrees raises ``ConfigError``."""

import gc
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module, Signal, signed, unsigned
from amaranth_sim import run_sim

from qhw import contract
from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig
from qhw.hw.dsp_array import DspArray
from qhw.hw.pe_pipelined import PipelinedMul
from qhw.hw.requant import RequantLane


@pytest.mark.parametrize("module", ["qhw.contract", "qhw.hw.config"])
def test_import_loads_no_amaranth(module):
    """In a fresh interpreter: the contract and ArrayConfig load no Amaranth module (so the runtime,
    the manifest reader and the FPGA flow's planning need no HDL), and no qhw.hw RTL module."""
    code = textwrap.dedent(f"""
        import sys
        import {module}
        bad = sorted(m for m in sys.modules if m.split(".")[0] == "amaranth"
                     or m in ("qhw.hw.wide_mul", "qhw.hw.pe_pipelined", "qhw.hw.requant"))
        print(",".join(bad))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_check_can_fail():
    """The subprocess check above sees Amaranth when it is imported (it is not vacuous)."""
    code = "import sys, qhw.hw.pe_pipelined; print('amaranth' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def _qhw_imports(path, module: str) -> set[str]:
    """Modules ``path`` imports (at module level or inside functions), as dotted names."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = module.split(".")[:-node.level] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first walk from each module (as module paths)."""
    def circle(node, path):
        if node in path:
            return path[path.index(node):] + [node]
        for dep in graph[node]:
            found = circle(dep, path + [node])
            if found:
                return found
        return None

    return [c for m in sorted(graph) if (c := circle(m, []))]


def test_hardware_modules_import_no_circle():
    """qhw.hw and the contract form no import circle, counting imports inside functions (where the old
    config -> wide_mul -> pe_pipelined -> config circle hid)."""
    from pathlib import Path

    root = Path(contract.__file__).resolve().parent
    files = {"qhw.contract": root / "contract.py"}
    files.update({f"qhw.hw.{f.stem}": f for f in (root / "hw").glob("*.py") if f.stem != "__init__"})
    graph = {m: sorted(d for d in _qhw_imports(f, m) if d in files and d != m) for m, f in files.items()}
    assert graph["qhw.hw.config"] == ["qhw.contract"] and graph["qhw.contract"] == []

    assert circles(graph) == []


def test_package_imports_no_circle():
    """The whole qhw package forms no import circle at module level (the import graph is a
    layering: contract/arith at the bottom, the command line at the top)."""
    import ast
    from pathlib import Path

    root = Path(contract.__file__).resolve().parent
    files = {}
    for f in root.rglob("*.py"):
        parts = ("qhw", *f.relative_to(root).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f

    def module_level(path, module):
        is_pkg = path.name == "__init__.py"
        out = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                base = module.split(".")[:len(module.split(".")) - node.level + is_pkg] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        return out

    graph = {m: sorted(d for d in module_level(f, m) if d in files and d != m and not m.startswith(d + "."))
             for m, f in files.items()}
    assert graph["qhw.ops_elementwise"] and "qhw.ops" not in graph["qhw.ops_elementwise"]

    assert circles(graph) == []


# --------------------------------------------------------------------------- formulas

@pytest.mark.parametrize("bits, signed_, chunks", [
    (17, False, 1), (18, False, 2), (18, True, 1), (19, True, 2), (24, False, 2), (33, True, 2),
    (35, True, 2), (36, True, 3), (44, True, 3), (31, False, 2), (51, False, 3), (52, False, 4),
])
def test_chunk_count(bits, signed_, chunks):
    """Chunks fit an 18-bit signed multiplier input: unsigned 17-bit ones, a signed top one of 18."""
    assert contract.chunk_count(bits, signed_) == chunks
    top = bits - contract.CHUNK * (chunks - 1)
    assert 0 < top <= (18 if signed_ else 17)


@pytest.mark.parametrize("terms, levels", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4)])
def test_tree_levels(terms, levels):
    assert contract.tree_levels(terms) == levels


def test_requant_latency_figures():
    """Hand count: int8 accumulators (33 bits -> 2 x 2 partial products + the addend: 3 levels) give a
    7-stage multiply, 3 + 2 (FIXED_SHIFT_STAGES) + 1 + 7 + 2 = 15; onnx's 24 x 24 mantissas (2 x 2: 2
    levels) 6, 11 + 6 + 2 = 19."""
    assert contract.product_latency(33, True, 31, addend=True) == 3 + 1 + 3
    assert contract.product_latency(24, False, 24, addend=False) == 3 + 1 + 2
    assert contract.FIXED_PATH_STAGES == 6
    assert contract.requant_latency(33, ("single", "tflite")) == 15
    assert contract.requant_latency(33, ("onnx",)) == 19
    assert contract.requant_latency(33, ("tflite", "onnx")) == 19
    assert contract.accelerator_latency(array_latency=15, share_latency=0, requant_latency=19) == 39


# --------------------------------------------------------------------------- measured

def first_cycle(dut, drive, probe, expected, *, limit=20):
    """Drive inputs once (``drive(ctx)``), hold them, and return the first clock edge count after which
    ``probe`` reads ``expected``."""
    seen = []

    async def bench(ctx):
        drive(ctx)
        for t in range(1, limit + 1):
            await ctx.tick()
            if ctx.get(probe) == expected and not seen:
                seen.append(t)

    run_sim(dut, bench)
    return seen[0] if seen else None


def test_pipelined_mul_latency_is_measured():
    dut = PipelinedMul(a_shape=signed(18), b_shape=unsigned(17))

    def drive(ctx):
        ctx.set(dut.a, -123457)
        ctx.set(dut.b, 98765)

    assert first_cycle(dut, drive, dut.p, -123457 * 98765) == contract.PIPELINED_MUL_LATENCY == dut.latency == 3


def _wide_product(a_bits, a_signed, b_bits, addend):
    """A ``pipelined_product`` of the given operand shapes (a 62-bit signed addend if ``addend``):
    (module, a, b, addend, product, (a's least, a's greatest value))."""
    from qhw.hw.wide_mul import pipelined_product

    m = Module()
    a = Signal(signed(a_bits) if a_signed else unsigned(a_bits))
    b = Signal(unsigned(b_bits))
    c = Signal(signed(62))
    p = pipelined_product(m, a, b, addend=c if addend else None, name="t")
    lo = -(1 << (a_bits - 1)) if a_signed else 0
    hi = (1 << (a_bits - 1)) - 1 if a_signed else (1 << a_bits) - 1
    return m, a, b, c, p, (lo, hi)


@pytest.mark.parametrize("a_bits, a_signed, b_bits, addend", [
    (33, True, 31, True),       # int8 requantization multiply
    (44, True, 31, True),       # int16 (WIDE)
    (48, True, 31, True),       # the widest accumulator
    (24, False, 24, False),     # onnx mantissas
    (17, False, 17, False),     # one partial product
])
def test_wide_product_latency_is_measured(a_bits, a_signed, b_bits, addend):
    """``pipelined_product``'s result appears exactly ``contract.product_latency`` cycles after its operands."""
    rng = np.random.default_rng(a_bits + b_bits)    # seed: the widths
    m, a, b, c, p, (lo, hi) = _wide_product(a_bits, a_signed, b_bits, addend)
    va, vb = int(rng.integers(lo, hi, endpoint=True)), int(rng.integers(0, 1 << b_bits))
    vc = (1 << 30) if addend else 0

    def drive(ctx):
        ctx.set(a, va)
        ctx.set(b, vb)
        ctx.set(c, vc)

    expected = contract.product_latency(a_bits, a_signed, b_bits, addend=addend)
    assert first_cycle(m, drive, p, va * vb + vc) == expected


@pytest.mark.parametrize("a_bits, a_signed, b_bits, addend", [
    (33, True, 31, True), (48, True, 31, True), (24, False, 24, False), (40, False, 35, True)])
def test_wide_product_values_streamed(a_bits, a_signed, b_bits, addend):
    """``pipelined_product`` is exact on a stream of one operand set per cycle: the extremes of every
    operand and 300 random sets (seed: the widths). Its adder tree passes the low bits of the lighter
    term around the carry chain (``wide_mul._add``); these are the cases where that could go wrong."""
    rng = np.random.default_rng(1000 + a_bits + b_bits)
    m, a, b, c, p, (lo, hi) = _wide_product(a_bits, a_signed, b_bits, addend)
    cs = (-(1 << 61), (1 << 61) - 1, 0, -1) if addend else (0,)
    cases = [(x, y, z) for x in (lo, hi, -1 if a_signed else 1, 0) for y in (0, (1 << b_bits) - 1, 1) for z in cs]
    cases += [(int(rng.integers(lo, hi, endpoint=True)), int(rng.integers(0, 1 << b_bits)),
               int(rng.integers(-(1 << 61), 1 << 61)) if addend else 0) for _ in range(300)]
    latency = contract.product_latency(a_bits, a_signed, b_bits, addend=addend)
    got = []

    async def bench(ctx):
        for t in range(len(cases) + latency):
            if t < len(cases):
                ctx.set(a, cases[t][0])
                ctx.set(b, cases[t][1])
                ctx.set(c, cases[t][2])
            await ctx.tick()
            if t + 1 >= latency:
                got.append(ctx.get(p))

    run_sim(m, bench)
    assert got[:len(cases)] == [x * y + z for x, y, z in cases]


@pytest.mark.parametrize("kind", ["ice40-dual", "ecp5-pipelined"])
def test_dsp_product_latency_is_measured(kind):
    """One weight, one activation: the product leaves a 1x1 DspArray after ``array_latency`` cycles,
    i.e. ``mesh_latency`` (1) + the contract's ``PE_PRODUCT_LATENCY``."""
    config = ArrayConfig(rows=1, cols=1, max_k=4, acc_depth=2, pe=kind)
    dut = DspArray(config=config)
    seen = []

    async def bench(ctx):
        ctx.set(dut.w_we, 1)
        ctx.set(dut.w_data, [-7])
        await ctx.tick()
        ctx.set(dut.w_we, 0)
        ctx.set(dut.a_in, [13])
        for t in range(1, 12):
            await ctx.tick()
            if ctx.get(dut.psum_out[0]) == -91 and not seen:
                seen.append(t)

    run_sim(dut, bench)
    assert seen == [1 + contract.PE_PRODUCT_LATENCY[kind]] == [config.array_latency]


# --------------------------------------------------------------------------- structure checks

@pytest.fixture
def half_built():
    """A build that stops half way leaves the submodules it made unelaborated, on purpose: collect
    them at teardown without their UnusedElaboratable warnings."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()


def test_pipelined_mul_refuses_a_contract_it_does_not_build(half_built, monkeypatch):
    monkeypatch.setattr(PipelinedMul, "LATENCY", 4)
    with pytest.raises(ConfigError, match=r"^PipelinedMul builds 3 register stages, but the hardware contract "
                                          r"\(PIPELINED_MUL_LATENCY\) says 4$"):
        PipelinedMul(a_shape=8, b_shape=8)


def test_wide_product_refuses_a_contract_it_does_not_build(half_built, monkeypatch):
    import qhw.hw.wide_mul as wide_mul

    monkeypatch.setattr(wide_mul, "product_latency", lambda *a, **k: contract.product_latency(*a, **k) + 1)
    m = Module()
    with pytest.raises(ConfigError, match=r"^t: the wide product was built with 7 stages, but the hardware "
                                          r"contract \(qhw.contract.product_latency\) says 8$"):
        wide_mul.pipelined_product(m, Signal(signed(33)), Signal(unsigned(31)), addend=Signal(62), name="t")


@pytest.mark.parametrize("name, value, what", [
    ("ONNX_PATH_STAGES", 12, "the onnx path was built with 17 stages, but the hardware contract (qhw.contract) "
                             "says 18"),
    ("fixed_path_stages", lambda *a: contract.fixed_path_stages(*a) - 1,
     "the fixed-point path was built with 13 stages, but the hardware contract (qhw.contract) says 12"),
    ("requant_latency", lambda *a: contract.requant_latency(*a) + 1,
     "the lane was built with 19 stages, but the hardware contract (qhw.contract) says 20"),
])
def test_requant_lane_refuses_a_contract_it_does_not_build(half_built, monkeypatch, name, value, what):
    import qhw.hw.config as config
    import qhw.hw.requant as requant

    monkeypatch.setattr(config if name == "requant_latency" else requant, name, value)
    with pytest.raises(ConfigError, match="^RequantLane: " + what.replace("(", r"\(").replace(")", r"\)") + "$"):
        Fragment.get(RequantLane(config=ArrayConfig(rows=2, cols=2)), None)


def test_dsp_array_refuses_a_contract_it_does_not_build(half_built, monkeypatch):
    import qhw.hw.dsp_array as dsp_array

    monkeypatch.setattr(dsp_array, "PE_PRODUCT_LATENCY", {**contract.PE_PRODUCT_LATENCY, "ecp5-pipelined": 4})
    config = ArrayConfig(rows=2, cols=2, pe="ecp5-pipelined")
    with pytest.raises(ConfigError, match=r"^DspArray: ecp5-pipelined products were built 5 cycles late, but the "
                                          r"hardware contract \(PE_PRODUCT_LATENCY\) says 4$"):
        Fragment.get(DspArray(config=config), None)


def test_arrays_build_config_pe_only(half_built):
    """The PE kind has one source, ``config.pe``: each array refuses a config of another kind."""
    from qhw.hw.array import SystolicArray

    with pytest.raises(ConfigError, match=r"^SystolicArray builds generic PEs, not config.pe 'ecp5-pipelined' "
                                          r"\(that is DspArray\)$"):
        SystolicArray(config=ArrayConfig(rows=2, cols=2, pe="ecp5-pipelined"))
    with pytest.raises(ConfigError, match=r"^DspArray needs config.pe one of ice40-dual, ecp5-pipelined, "
                                          r"not 'generic'$"):
        DspArray(config=ArrayConfig(rows=2, cols=2))
    with pytest.raises(ConfigError, match=r"^ice40-dual PEs need family 'ice40' or None, not 'ecp5'$"):
        DspArray(config=replace(ArrayConfig(rows=2, cols=2), pe="ice40-dual"), family="ecp5")
