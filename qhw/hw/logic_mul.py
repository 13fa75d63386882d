"""``logic_mul``: a product built in logic (shifted partial products, a balanced adder tree), not a DSP.

Yosys's ECP5 and iCE40 flows map every ``$mul`` of 2x2 bits or more to a hard multiplier
(``MULT18X18D``, ``SB_MAC16``), and no pass turns an adder tree back into a ``$mul``. The network
engine's address generators form small products of descriptor geometry (``in_w * in_pp``,
``oh * ow``, ...) once per descriptor; each took a whole DSP that the PE and lane multipliers need.
``logic_mul(a, b)`` has exactly the value of ``a * b`` and is combinational like it, so the units'
cycles do not change; it costs one partial product per bit of the narrower operand.
"""

from __future__ import annotations

from amaranth.hdl import Mux, Value

__all__ = ["logic_mul"]


def logic_mul(a, b) -> Value:
    """``a * b`` (same value and shape) as shifted partial products summed by a balanced adder tree.
    The partial products are selected by the bits of the narrower operand; a signed operand's top bit
    has weight ``-2**(width-1)``."""
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
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k] for k in range(0, len(terms), 2)]
    total = terms[0]
    out = total[:wa + wb]
    return out.as_signed() if signed else out
