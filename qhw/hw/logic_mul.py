"""``logic_mul``: a product built in logic (shifted partial products, a balanced adder tree), not a DSP.

Yosys's ECP5 and iCE40 flows map every ``$mul`` of 2x2 bits or more to a hard multiplier
(``MULT18X18D``, ``SB_MAC16``), and no pass turns an adder tree back into a ``$mul``. The network
engine's address generators form small products of descriptor geometry (``in_w * in_pp``,
``oh * ow``, ...) once per descriptor; each took a whole DSP that the PE and lane multipliers need.
``logic_mul(a, b)`` has exactly the value of ``a * b`` and is combinational like it, so the units'
cycles do not change; it costs one partial product per bit of the narrower operand.

Given the module (``m``), each sum of the tree is a kept signal: Yosys's ``alumacc`` would otherwise
merge the whole tree into one ``$macc``, which ``maccmap`` builds as a carry-save tree of full adders
in LUTs (two LUT4 per bit and level); kept, every sum stays a carry chain (one CCU2C per 2 bits on
ECP5). Measured (``bench/bench_logic_mul.py``: a 12x8 product times an 8-bit operand, registered):
1,200 LUT4 + 24 CCU2C merged, 257 LUT4 + 128 CCU2C kept, Fmax 61-63 MHz merged and 59-60 kept
(a single 12x8 product: 112 and 114 MHz).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value

__all__ = ["logic_mul"]


def logic_mul(a, b, *, m: Module | None = None, name: str = "logic_mul") -> Value:
    """``a * b`` (same value and shape) as shifted partial products summed by a balanced adder tree.
    The partial products are selected by the bits of the narrower operand; a signed operand's top bit
    has weight ``-2**(width-1)``. With ``m``, the tree's sums are kept signals of ``m``'s comb domain
    named after ``name`` (carry chains, not a carry-save tree: see the module's docstring)."""
    a, b = Value.cast(a), Value.cast(b)
    if len(b) > len(a):
        a, b = b, a
    wa, wb = a.shape().width, b.shape().width
    signed = a.shape().signed or b.shape().signed
    if wb == 0 or wa == 0:
        return Value.cast(0)
    terms = []
    for i in range(wb):
        term = Mux(b[i], a, 0) << i
        terms.append(-term if b.shape().signed and i == wb - 1 else term)
    level = 0
    while len(terms) > 1:
        sums = []
        for k in range(0, len(terms), 2):
            if k + 1 == len(terms):
                sums.append(terms[k])
                continue
            t = terms[k] + terms[k + 1]
            if m is not None:
                w = Signal(t.shape(), name=f"{name}_sum{level}_{k // 2}", attrs={"keep": 1})
                m.d.comb += w.eq(t)
                t = w
            sums.append(t)
        terms = sums
        level += 1
    total = terms[0]
    out = total[:wa + wb]
    return out.as_signed() if signed else out
