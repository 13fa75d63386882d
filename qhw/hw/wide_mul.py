"""A pipelined wide multiply: 18x18-sized partial products, registered, then a registered adder tree.

FPGA multipliers are 18x18 signed (ECP5 ``MULT18X18D``; iCE40's ``SB_MAC16`` is 16x16). A wider
product written as one ``*`` becomes several DSP blocks whose outputs Yosys sums in fabric within
the same cycle: that sum was the accelerator's critical path. Here each partial product is a
``PipelinedMul`` (on ECP5 a ``MULT18X18D`` with its own input, pipeline and output registers;
elsewhere the same registers around ``*``), then a fabric register beside the DSP, then one adder
level per cycle, so no stage holds more than one carry chain or more than a bare route.

``latency = MUL_LATENCY + 1 + tree_levels(terms)`` cycles, ``terms`` = partial products (+1 with
an addend).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value

from .skew import delayed

__all__ = ["CHUNK", "MUL_LATENCY", "chunk_count", "pipelined_product", "product_latency", "tree_levels"]

CHUNK = 17          # an unsigned 17-bit chunk fits an 18-bit signed multiplier input
MUL_LATENCY = 3     # ``PipelinedMul.LATENCY`` (checked when a product is built; no import cycle)


def chunk_count(bits: int, signed: bool) -> int:
    """Chunks of an operand: 17-bit unsigned ones from the bottom, a signed top chunk of up to 18 bits."""
    limit = CHUNK + 1 if signed else CHUNK
    n = 1
    while bits - CHUNK * (n - 1) > limit:
        n += 1
    return n


def tree_levels(terms: int) -> int:
    """Registered pairwise adder levels that reduce ``terms`` values to one."""
    levels = 0
    while terms > 1:
        terms = (terms + 1) // 2
        levels += 1
    return levels


def product_latency(a_bits: int, a_signed: bool, b_bits: int, *, addend: bool) -> int:
    """Cycles of ``pipelined_product`` for these operand widths (b is unsigned)."""
    terms = chunk_count(a_bits, a_signed) * chunk_count(b_bits, False) + int(addend)
    return MUL_LATENCY + 1 + tree_levels(terms)


def _chunks(value: Value) -> list[tuple[Value, int]]:
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


def pipelined_product(m: Module, a: Value, b: Value, *, addend: Value | None = None, name: str,
                      family: str | None = None) -> Signal:
    """``a * b (+ addend)``, exact, ``product_latency(...)`` cycles after ``a``, ``b`` and ``addend``.

    ``b`` must be unsigned. ``family="ecp5"`` instantiates ``MULT18X18D``; anything else builds the
    portable equivalent. Submodules are ``{name}_mul{i}{j}``, registers ``{name}_pp*`` and
    ``{name}_l{level}_*``.
    """
    # Imported here: pe_pipelined imports config, which imports this module.
    from .pe_pipelined import PipelinedMul
    assert PipelinedMul.LATENCY == MUL_LATENCY
    a, b = Value.cast(a), Value.cast(b)
    if b.shape().signed:
        raise TypeError(f"b must be unsigned, not {b.shape()!r}")
    terms = []
    for i, (ca, sa) in enumerate(_chunks(a)):
        for j, (cb, sb) in enumerate(_chunks(b)):
            mul = PipelinedMul(a_shape=ca.shape(), b_shape=cb.shape(), family="ecp5" if family == "ecp5" else None)
            m.submodules[f"{name}_mul{i}{j}"] = mul
            m.d.comb += [mul.a.eq(ca), mul.b.eq(cb)]
            # Two unsigned chunks: the product's bits are right, its sign bit is not a sign.
            p = mul.p if ca.shape().signed else mul.p.as_unsigned()
            pp = Signal(p.shape(), name=f"{name}_pp{i}{j}")       # fabric register beside the DSP
            m.d.sync += pp.eq(p)
            terms.append(pp if sa + sb == 0 else pp << (sa + sb))
    if addend is not None:
        terms.append(delayed(m, Value.cast(addend), MUL_LATENCY + 1, name=f"{name}_pp_add"))
    level = 0
    while len(terms) > 1:
        level += 1
        nxt = []
        for k in range(0, len(terms), 2):
            expr = terms[k] if k + 1 == len(terms) else terms[k] + terms[k + 1]
            s = Signal(expr.shape(), name=f"{name}_l{level}_{k // 2}")
            m.d.sync += s.eq(expr)
            nxt.append(s)
        terms = nxt
    return terms[0]
