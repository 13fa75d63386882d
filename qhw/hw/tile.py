"""A combinational tile of PEs (Gemmini ``Tile``): activations chain right, partial sums chain down."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from .pe import PE

__all__ = ["Tile"]


class Tile(wiring.Component):
    """``tile_rows`` x ``tile_cols`` PEs with no registers inside.

    Row ``i`` takes ``a_in[i]``/``bank_in[i]`` at its left edge; column ``j`` takes
    ``psum_in[j]`` at its top edge and returns ``psum_out[j]`` at its bottom edge.
    Weight rows are written by ``w_we[i]`` (one-hot), ``w_bank`` and ``w_data``.
    """

    def __init__(self, *, tile_rows: int, tile_cols: int, act_shape, weight_bits: int, psum_bits: int):
        for name, value in (("tile_rows", tile_rows), ("tile_cols", tile_cols)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value!r}")
        self.tile_rows, self.tile_cols = tile_rows, tile_cols
        self.act_shape = Shape.cast(act_shape)
        self.weight_bits, self.psum_bits = weight_bits, psum_bits
        super().__init__({
            "a_in": In(data.ArrayLayout(act_shape, tile_rows)),
            "bank_in": In(tile_rows),
            "psum_in": In(data.ArrayLayout(signed(psum_bits), tile_cols)),
            "a_out": Out(data.ArrayLayout(act_shape, tile_rows)),
            "bank_out": Out(tile_rows),
            "psum_out": Out(data.ArrayLayout(signed(psum_bits), tile_cols)),
            "w_we": In(tile_rows),
            "w_bank": In(1),
            "w_data": In(data.ArrayLayout(signed(weight_bits), tile_cols)),
        })

    def elaborate(self, platform):
        m = Module()
        # Carry the previous PE's outputs into the next one (Gemmini's foldLeft).
        psum = [self.psum_in[j] for j in range(self.tile_cols)]
        for i in range(self.tile_rows):
            a, bank = self.a_in[i], self.bank_in[i]
            for j in range(self.tile_cols):
                pe = PE(act_shape=self.act_shape, weight_bits=self.weight_bits, psum_bits=self.psum_bits)
                m.submodules[f"pe_{i}_{j}"] = pe
                m.d.comb += [
                    pe.a_in.eq(a), pe.bank_in.eq(bank), pe.psum_in.eq(psum[j]),
                    pe.w_we.eq(self.w_we[i]), pe.w_bank.eq(self.w_bank), pe.w_data.eq(self.w_data[j]),
                ]
                a, bank, psum[j] = pe.a_out, pe.bank_out, pe.psum_out
            m.d.comb += [self.a_out[i].eq(a), self.bank_out[i].eq(bank)]
        for j in range(self.tile_cols):
            m.d.comb += self.psum_out[j].eq(psum[j])
        return m
