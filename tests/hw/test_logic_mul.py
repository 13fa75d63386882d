"""``qhw.hw.logic_mul``: the adder-tree product equals ``*`` (signed and unsigned operands, random
pairs with a stated seed, plus the extremes), and Yosys builds it without a ``$mul`` cell."""

import random

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth_sim import run_sim

from qhw.hw.logic_mul import logic_mul

SHAPES = [(unsigned(12), unsigned(8)), (unsigned(4), unsigned(20)), (signed(9), unsigned(5)),
          (unsigned(6), signed(7)), (signed(8), signed(8)), (unsigned(1), unsigned(3))]


def _values(shape, rng, n):
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
    return [lo, hi, 0] + [rng.randint(lo, hi) for _ in range(n)]


@pytest.mark.parametrize("kept", [False, True], ids=["merged", "kept"])
@pytest.mark.parametrize("sa,sb", SHAPES)
def test_logic_mul_equals_product(sa, sb, kept):
    """``kept``: the tree's sums as kept signals of the module (``m``), carry chains in synthesis."""
    rng = random.Random(11)        # seed 11
    a, b = Signal(sa), Signal(sb)
    m = Module()
    y = logic_mul(a, b, m=m if kept else None)
    ref = Signal((a * b).shape())
    got = Signal(ref.shape())
    m.d.comb += [ref.eq(a * b), got.eq(y)]
    pairs = [(x, z) for x in _values(sa, rng, 6) for z in _values(sb, rng, 6)]

    async def bench(ctx):
        for x, z in pairs:
            ctx.set(a, x)
            ctx.set(b, z)
            assert ctx.get(got) == ctx.get(ref) == x * z, (x, z)
    run_sim(m, bench, clock=False)


def test_logic_mul_has_no_mul_cell():
    m = Module()
    a, b, y = Signal(12), Signal(8), Signal(20)
    m.d.comb += y.eq(logic_mul(a, b))
    text = rtlil.convert(m, ports=[a, b, y])
    assert "$mul" not in text and "$add" in text and "keep" not in text
    m = Module()
    m.d.comb += y.eq(logic_mul(a, b, m=m, name="p"))
    text = rtlil.convert(m, ports=[a, b, y])
    assert "$mul" not in text and text.count("attribute \\keep 1") == 7     # 8 partial products, 7 sums
