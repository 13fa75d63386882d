"""A multiplier with the ECP5 DSP's input, pipeline and output registers (``MULT18X18D``).

``PipelinedMul`` computes ``p = a * b`` with a fixed latency of ``LATENCY`` cycles, the hardware
contract's ``PIPELINED_MUL_LATENCY`` (3): the register stages of ``MULT18X18D`` that it enables
(``_DSP_STAGES``: input, pipeline, output). For ``family="ecp5"`` it instantiates ``MULT18X18D``
with those registers, so they sit inside the DSP block and no fabric route lies between a
register and the multiplier; otherwise (simulation, generic Verilog) the same stages are plain
Amaranth registers around ``*``, so the two are cycle-for-cycle identical. The constructor
raises ``ConfigError`` if the stages and the contract disagree. Used by ``qhw.hw.dsp_array.DspArray``
and ``qhw.hw.wide_mul``; the generic ``PE`` is untouched.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..contract import PIPELINED_MUL_LATENCY
from ..errors import ConfigError

__all__ = ["PipelinedMul"]

# MULT18X18D register stages enabled, in order, with the primitive's parameters that enable each.
_DSP_STAGES = (("in", ("INPUTA", "INPUTB")), ("pipe", ("PIPELINE",)), ("out", ("OUTPUT",)))


class PipelinedMul(wiring.Component):
    """``p`` = ``a * b`` from ``LATENCY`` cycles earlier; operands of at most 18 signed bits.

    Parameters
    ----------
    a_shape, b_shape:
        Operand shapes (signed or unsigned); each must fit a signed 18-bit value.
    family:
        ``"ecp5"`` to instantiate ``MULT18X18D``; ``None`` for portable logic.
    """

    LATENCY = PIPELINED_MUL_LATENCY

    def __init__(self, *, a_shape, b_shape, family: str | None = None):
        if len(_DSP_STAGES) != self.LATENCY:
            raise ConfigError(f"PipelinedMul builds {len(_DSP_STAGES)} register stages, but the hardware "
                              f"contract (PIPELINED_MUL_LATENCY) says {self.LATENCY}")
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        for name, shape in (("a_shape", a_shape), ("b_shape", b_shape)):
            if shape.width + (0 if shape.signed else 1) > 18:
                raise ConfigError(f"{name} must fit a signed 18-bit operand, not {shape!r}")
        if family not in (None, "ecp5"):
            raise ConfigError(f"family must be None or 'ecp5', not {family!r}")
        self.family = family
        self.p_bits = a_shape.width + b_shape.width + (0 if a_shape.signed == b_shape.signed else 1)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "p": Out(signed(self.p_bits))})

    @property
    def latency(self) -> int:
        return self.LATENCY

    def elaborate(self, platform):
        m = Module()
        if self.family == "ecp5":
            a18, b18, p36 = Signal(signed(18)), Signal(signed(18)), Signal(signed(36))
            m.d.comb += [a18.eq(self.a), b18.eq(self.b), self.p.eq(p36[:self.p_bits])]
            ports = {f"i_A{k}": a18[k] for k in range(18)}
            ports.update({f"i_B{k}": b18[k] for k in range(18)})
            ports.update({f"i_C{k}": Const(0, 1) for k in range(18)})
            ports.update({f"o_P{k}": p36[k] for k in range(36)})
            regs = {}
            for _, registers in _DSP_STAGES:
                for reg in registers:
                    regs[f"p_REG_{reg}_CLK"] = "CLK0"
                    regs[f"p_REG_{reg}_CE"] = "CE0"
                    regs[f"p_REG_{reg}_RST"] = "RST0"
            m.submodules.dsp = Instance(
                "MULT18X18D",
                **regs,
                p_REG_INPUTC_CLK="NONE",
                p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED", p_CLK3_DIV="ENABLED",
                p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED", p_CAS_MATCH_REG="FALSE",
                p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC",
                i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
                i_CLK0=ClockSignal(), i_CLK1=Const(0, 1), i_CLK2=Const(0, 1), i_CLK3=Const(0, 1),
                i_CE0=Const(1, 1), i_CE1=Const(0, 1), i_CE2=Const(0, 1), i_CE3=Const(0, 1),
                i_RST0=Const(0, 1), i_RST1=Const(0, 1), i_RST2=Const(0, 1), i_RST3=Const(0, 1),
                **ports,
            )
        else:
            # One register per stage: the operands (input), the product (pipeline), then output.
            a_r, b_r = Signal.like(self.a, name="a_r"), Signal.like(self.b, name="b_r")
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b)]
            p = a_r * b_r
            for stage, _ in _DSP_STAGES[1:]:
                r = Signal(signed(self.p_bits), name=f"p_{stage}")
                m.d.sync += r.eq(p)
                p = r
            m.d.comb += self.p.eq(p)
        return m
