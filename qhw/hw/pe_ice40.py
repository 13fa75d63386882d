"""Two signed 8x8 multiplications in one iCE40 ``SB_MAC16`` (its dual 8x8 mode).

Yosys infers one 16x16 ``SB_MAC16`` per multiplication; the block can do two independent
8x8 products (``MODE_8x8``), which doubles the MACs an iCE40UP5K (8 blocks) holds. ``DualMul8``
instantiates it for ``family="ice40"`` and falls back to two ``*`` otherwise (simulation, generic
Verilog). Both are combinational, so swapping them changes no latency. Parameters as in Yosys's
``ice40/cells_sim.v``: ``MODE_8x8=1``, ``TOPOUTPUT_SELECT = BOTOUTPUT_SELECT = 2`` (the 8x8
products ``O[31:16] = A[15:8] * B[15:8]`` and ``O[15:0] = A[7:0] * B[7:0]``), ``A_SIGNED`` and
``B_SIGNED`` per operand type, no registers.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError

__all__ = ["DualMul8"]


class DualMul8(wiring.Component):
    """``p0 = a0 * b0`` and ``p1 = a1 * b1`` (combinational) for 8-bit operands.

    Parameters
    ----------
    a_shape, b_shape:
        8-bit operand shapes; ``b`` must be signed (weights), ``a`` signed or unsigned.
    family:
        ``"ice40"`` to instantiate ``SB_MAC16`` in dual 8x8 mode; ``None`` for portable logic.
    """

    def __init__(self, *, a_shape, b_shape, family: str | None = None):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        if a_shape.width != 8 or b_shape.width != 8:
            raise ConfigError(f"DualMul8 operands must be 8 bits wide, not {a_shape!r} and {b_shape!r}")
        if family not in (None, "ice40"):
            raise ConfigError(f"family must be None or 'ice40', not {family!r}")
        self.family = family
        self.a_shape, self.b_shape = a_shape, b_shape
        # The block's 8x8 product is 16 bits: int8*int8 and uint8*int8 both fit.
        super().__init__({
            "a0": In(a_shape), "b0": In(b_shape), "a1": In(a_shape), "b1": In(b_shape),
            "p0": Out(signed(16)), "p1": Out(signed(16)),
        })

    def elaborate(self, platform):
        m = Module()
        if self.family == "ice40":
            o = Signal(32)
            zero16 = Const(0, 16)
            m.submodules.mac = Instance(
                "SB_MAC16",
                p_NEG_TRIGGER=Const(0, 1), p_C_REG=Const(0, 1), p_A_REG=Const(0, 1), p_B_REG=Const(0, 1),
                p_D_REG=Const(0, 1), p_TOP_8x8_MULT_REG=Const(0, 1), p_BOT_8x8_MULT_REG=Const(0, 1),
                p_PIPELINE_16x16_MULT_REG1=Const(0, 1), p_PIPELINE_16x16_MULT_REG2=Const(0, 1),
                p_TOPOUTPUT_SELECT=Const(2, 2), p_TOPADDSUB_LOWERINPUT=Const(0, 2),
                p_TOPADDSUB_UPPERINPUT=Const(0, 1), p_TOPADDSUB_CARRYSELECT=Const(0, 2),
                p_BOTOUTPUT_SELECT=Const(2, 2), p_BOTADDSUB_LOWERINPUT=Const(0, 2),
                p_BOTADDSUB_UPPERINPUT=Const(0, 1), p_BOTADDSUB_CARRYSELECT=Const(0, 2),
                p_MODE_8x8=Const(1, 1), p_A_SIGNED=Const(int(self.a_shape.signed), 1),
                p_B_SIGNED=Const(int(self.b_shape.signed), 1),
                i_CLK=ClockSignal(), i_CE=Const(0, 1),
                i_A=Cat(self.a0, self.a1), i_B=Cat(self.b0, self.b1), i_C=zero16, i_D=zero16,
                i_AHOLD=Const(0, 1), i_BHOLD=Const(0, 1), i_CHOLD=Const(0, 1), i_DHOLD=Const(0, 1),
                i_IRSTTOP=Const(0, 1), i_IRSTBOT=Const(0, 1), i_ORSTTOP=Const(0, 1), i_ORSTBOT=Const(0, 1),
                i_OLOADTOP=Const(0, 1), i_OLOADBOT=Const(0, 1), i_ADDSUBTOP=Const(0, 1), i_ADDSUBBOT=Const(0, 1),
                i_OHOLDTOP=Const(0, 1), i_OHOLDBOT=Const(0, 1), i_CI=Const(0, 1), i_ACCUMCI=Const(0, 1),
                i_SIGNEXTIN=Const(0, 1),
                o_O=o,
            )
            m.d.comb += [self.p0.eq(o[:16].as_signed()), self.p1.eq(o[16:].as_signed())]
        else:
            m.d.comb += [self.p0.eq(self.a0 * self.b0), self.p1.eq(self.a1 * self.b1)]
        return m
