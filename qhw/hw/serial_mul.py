"""A bit-serial multiply in logic cells: ``a * b + addend``, one bit of ``b`` per cycle.

For FPGAs whose DSP blocks the array takes (iCE40 UP5K: 8 ``SB_MAC16``, all of them for 16 int8 MACs
in dual 8x8 mode). The requantization lane's ``(acc + bias) * M0`` is a 33..48 x 31-bit product; done
serially it costs one adder as wide as ``a`` instead of five ``SB_MAC16`` (or ~1000 logic cells as an
array multiplier), and the lane accepts a new element every ``serial_product_interval`` cycles.

Shift-add, least significant bit of ``b`` first. ``hi`` starts at 0 and ``lo`` at the addend's low
``n`` bits (``n`` = width of ``b``); step ``k`` (``k = 0 .. n-1``) computes
``s = hi + b_k * a + lo[0]`` (the addend's bit ``k`` as a carry-in: it reaches ``lo[0]`` after ``k``
shifts), then ``hi <- s >> 1`` and ``lo <- {s[0], lo >> 1}``. By induction
``hi * 2**k + (bits shifted into lo) == a * (b mod 2**k) + (addend mod 2**k)``, so after ``n`` steps
``{hi, lo} = a * b + (addend mod 2**n)``; the output register adds the addend's high part to ``hi``.
``|hi| <= |a|`` throughout, so ``hi`` is as wide as ``a`` and ``s`` one bit wider: one carry chain of
``width(a) + 2`` bits per cycle (the carry-in enters as the low bit of both operands).

Timing: operands sampled in cycle ``t`` with ``start`` high; the product is in the output register in
cycle ``t + serial_product_latency(n)`` (``n + 2``); the next ``start`` may come in cycle
``t + serial_product_interval(n)`` (``n + 1``) at the earliest. The unit steps every cycle and has no
counter: only ``start`` loads it, and the output register samples every cycle, so the caller reads it
at the fixed latency. ``tags`` (values that travel with the product) are held from ``t + 1`` to
``t + n + 1``: register what is needed from them in cycle ``t + n + 1`` to have it beside the product.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed

from ..contract import serial_product_interval, serial_product_latency
from ..errors import ConfigError

__all__ = ["serial_product"]


def serial_product(m: Module, a: Value, b: Value, *, addend: Value, start: Value, tags: dict | None = None,
                   name: str) -> tuple[Signal, dict]:
    """``(a * b + addend, held tags)``; see the module docstring for the timing. ``b`` and ``addend``
    unsigned, ``addend < 2**(width(a) + width(b) - 1)``."""
    a, b, addend, start = Value.cast(a), Value.cast(b), Value.cast(addend), Value.cast(start)
    if b.shape().signed or addend.shape().signed:
        raise TypeError(f"b and addend must be unsigned, not {b.shape()!r} and {addend.shape()!r}")
    n = len(b)
    w = len(a) + (0 if a.shape().signed else 1)
    if len(addend) > w + n - 1:
        raise ConfigError(f"{name}: the addend ({len(addend)} bits) must fit below the product's sign "
                          f"({w + n - 1} bits)")
    a_h = Signal(signed(w), name=f"{name}_a")
    b_sh = Signal(n, name=f"{name}_b")
    hi = Signal(signed(w), name=f"{name}_hi")
    lo = Signal(n, name=f"{name}_lo")
    add_hi = Signal(max(len(addend) - n, 1), name=f"{name}_add_hi")
    held = {k: Signal.like(v, name=f"{name}_tag_{k}") for k, v in (tags or {}).items()}

    # One step: s = hi + b_k * a + lo[0], as {hi, c} + {b_k ? a : 0, c} >> 1 (one carry chain).
    x = Mux(b_sh[0], a_h, 0)
    c = lo[0]
    s = Signal(signed(w + 1), name=f"{name}_s")
    m.d.comb += s.eq((Cat(c, hi).as_signed() + Cat(c, x).as_signed())[1:])
    with m.If(start):
        m.d.sync += [a_h.eq(a), b_sh.eq(b), hi.eq(0), lo.eq(addend[:n]), add_hi.eq(addend[n:])]
        m.d.sync += [held[k].eq(v) for k, v in tags.items()] if tags else []
    with m.Else():
        m.d.sync += [hi.eq(s[1:]), lo.eq(Cat(lo[1:], s[0])), b_sh.eq(b_sh[1:])]
    t = Signal(signed(w + n + 1), name=f"{name}_t")
    m.d.sync += t.eq(Cat(lo, hi + add_hi))
    latency, interval = serial_product_latency(n), serial_product_interval(n)
    if (latency, interval) != (n + 2, n + 1):
        raise ConfigError(f"{name}: the serial product was built with latency {n + 2} and interval {n + 1}, but "
                          f"the hardware contract says {latency} and {interval}")
    return t, held
