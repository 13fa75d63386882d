"""A pipelined wide multiply: 18x18-sized partial products, registered, then a registered adder tree.

FPGA multipliers are 18x18 signed (ECP5 ``MULT18X18D``; iCE40's ``SB_MAC16`` is 16x16). A wider
product written as one ``*`` becomes several DSP blocks whose outputs Yosys sums in fabric within
the same cycle: that sum was the accelerator's critical path. Here each partial product is a
``PipelinedMul`` (on ECP5 a ``MULT18X18D`` with its own input, pipeline and output registers;
elsewhere the same registers around ``*``), then a fabric register beside the DSP, then one adder
level per cycle, so no stage holds more than one carry chain or more than a bare route.

The latency is the contract's ``qhw.contract.product_latency`` (``PIPELINED_MUL_LATENCY +
PARTIAL_PRODUCT_STAGES + tree_levels(terms)``, ``terms`` = partial products, +1 with an addend);
``pipelined_product`` counts the stages it built and raises ``ConfigError`` if they differ.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Shape, Signal, Value, signed, unsigned

from ..contract import CHUNK, PARTIAL_PRODUCT_STAGES, chunk_count, product_latency
from ..errors import ConfigError
from .pe_pipelined import PipelinedMul
from .skew import delayed

__all__ = ["operand_chunks", "pipelined_product"]


def operand_chunks(value: Value) -> list[tuple[Value, int]]:
    """(chunk, bit offset) pairs; every chunk but a signed operand's top one is unsigned."""
    shape = value.shape()
    n = chunk_count(shape.width, shape.signed)
    out = []
    for i in range(n):
        lo = CHUNK * i
        if i == n - 1:
            top = value[lo:]
            out.append((top.as_signed() if shape.signed else top, lo))
        else:
            out.append((value[lo:lo + CHUNK], lo))
    return out


def _bounds(shape: Shape) -> tuple[int, int]:
    """The least and greatest value of ``shape``."""
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def _fit(lo: int, hi: int) -> Shape:
    """The narrowest shape that holds every value from ``lo`` to ``hi``."""
    if lo < 0:
        return signed(max((-lo - 1).bit_length(), hi.bit_length()) + 1)
    return unsigned(max(hi.bit_length(), 1))


def _product_bounds(x: tuple[int, int], y: tuple[int, int]) -> tuple[int, int]:
    corners = [a * b for a in x for b in y]
    return min(corners), max(corners)


def _add(x: Value, wx: int, y: Value, wy: int) -> tuple[Value, int]:
    """``x * 2**wx + y * 2**wy`` as (value, weight). The low ``|wx - wy|`` bits of the sum are the
    lighter term's own bits: they bypass the adder, so its carry chain is only as long as the terms
    overlap (the tree's last level was the 8x8 accelerator's critical path, 157 carry steps)."""
    if wx > wy:
        x, wx, y, wy = y, wy, x, wx
    d = wy - wx
    if d == 0 or d >= len(x):
        return x + (y << d), wx
    hi = (x >> d) + y                       # arithmetic shift: x = (x >> d) * 2**d + x[:d]
    total = Cat(x[:d], hi)
    return (total.as_signed() if hi.shape().signed else total), wx


def pipelined_product(m: Module, a: Value, b: Value, *, addend: Value | None = None, name: str,
                      family: str | None = None) -> Signal:
    """``a * b (+ addend)``, exact, ``qhw.contract.product_latency(...)`` cycles after ``a``, ``b`` and
    ``addend``.

    ``b`` must be unsigned. ``family="ecp5"`` instantiates ``MULT18X18D``; anything else builds the
    portable equivalent. Submodules are ``{name}_mul{i}{j}``, registers ``{name}_pp*`` and
    ``{name}_l{level}_*``.
    """
    a, b = Value.cast(a), Value.cast(b)
    if b.shape().signed:
        raise TypeError(f"b must be unsigned, not {b.shape()!r}")
    terms = []
    mul_latency = None
    for i, (ca, sa) in enumerate(operand_chunks(a)):
        for j, (cb, sb) in enumerate(operand_chunks(b)):
            mul = PipelinedMul(a_shape=ca.shape(), b_shape=cb.shape(), family="ecp5" if family == "ecp5" else None)
            mul_latency = mul.latency
            m.submodules[f"{name}_mul{i}{j}"] = mul
            m.d.comb += [mul.a.eq(ca), mul.b.eq(cb)]
            # Two unsigned chunks: the product's bits are right, its sign bit is not a sign.
            p = mul.p if ca.shape().signed else mul.p.as_unsigned()
            pp = Signal(p.shape(), name=f"{name}_pp{i}{j}")       # fabric register beside the DSP
            m.d.sync += pp.eq(p)
            # (value, its weight: low zero bits not built, the value's least and greatest)
            terms.append((pp, sa + sb, _product_bounds(_bounds(ca.shape()), _bounds(cb.shape()))))
    stages = mul_latency + PARTIAL_PRODUCT_STAGES     # partial products registered
    if addend is not None:
        addend = Value.cast(addend)
        terms.append((delayed(m, addend, stages, name=f"{name}_pp_add"), 0, _bounds(addend.shape())))
    level = 0
    while len(terms) > 1:
        level += 1
        nxt = []
        for k in range(0, len(terms), 2):
            if k + 1 == len(terms):
                value, weight, (lo, hi) = terms[k]
            else:
                (x, wx, bx), (y, wy, by) = terms[k], terms[k + 1]
                value, weight = _add(x, wx, y, wy)
                lo = (bx[0] << (wx - weight)) + (by[0] << (wy - weight))
                hi = (bx[1] << (wx - weight)) + (by[1] << (wy - weight))
            # Each level's register is as wide as its sum can be, not as Amaranth's widths grow
            # (at the lanes' 33 x 31-bit product + addend: 66 bits, not 128, so the last carry
            # chain and everything after it are half as long).
            s = Signal(_fit(lo, hi), name=f"{name}_l{level}_{k // 2}")
            m.d.sync += s.eq(value)
            nxt.append((s, weight, (lo, hi)))
        terms = nxt
    built = stages + level
    expected = product_latency(a.shape().width, a.shape().signed, b.shape().width, addend=addend is not None)
    if built != expected:
        raise ConfigError(f"{name}: the wide product was built with {built} stages, but the hardware contract "
                          f"(qhw.contract.product_latency) says {expected}")
    value, weight, _ = terms[0]
    assert weight == 0          # the (0, 0) partial product has weight 0, and a sum the lighter weight
    return value
