"""Processing element: one weight-stationary multiply-accumulate with two weight banks."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError

__all__ = ["PE"]


class PE(wiring.Component):
    """``psum_out = psum_in + a_in * w[bank_in]``, combinational; activations pass through to the right.

    Two weight banks make the array double-buffered: the host writes the bank that
    the activations in flight do not select, and the bank bit travels with every
    activation, so a new tile takes effect in each PE exactly when its first
    wavefront arrives, with no idle cycle. Pipelining is the mesh's job (Gemmini
    ``PE``/``Tile``/``Mesh``), so this PE has no data registers.

    Parameters
    ----------
    act_shape:
        Shape of an activation element (signed or unsigned).
    weight_bits:
        Signed weight width.
    psum_bits:
        Width of the partial sums entering and leaving.
    """

    def __init__(self, *, act_shape, weight_bits: int, psum_bits: int):
        act_shape = Shape.cast(act_shape)
        for name, value in (("weight_bits", weight_bits), ("psum_bits", psum_bits)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ConfigError(f"{name} must be an integer of at least 2, not {value!r}")
        self.act_shape = act_shape
        self.weight_bits = weight_bits
        self.psum_bits = psum_bits
        super().__init__({
            "a_in": In(act_shape),
            "bank_in": In(1),
            "psum_in": In(signed(psum_bits)),
            "a_out": Out(act_shape),
            "bank_out": Out(1),
            "psum_out": Out(signed(psum_bits)),
            # Weight write port (synchronous): this PE's element of a broadcast weight row.
            "w_we": In(1),
            "w_bank": In(1),
            "w_data": In(signed(weight_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        banks = [Signal(signed(self.weight_bits), name=f"w{b}") for b in range(2)]
        with m.If(self.w_we):
            with m.If(self.w_bank):
                m.d.sync += banks[1].eq(self.w_data)
            with m.Else():
                m.d.sync += banks[0].eq(self.w_data)
        weight = Signal(signed(self.weight_bits))
        m.d.comb += [
            weight.eq(Mux(self.bank_in, banks[1], banks[0])),
            self.a_out.eq(self.a_in),
            self.bank_out.eq(self.bank_in),
            self.psum_out.eq(self.psum_in + self.a_in * weight),
        ]
        return m
