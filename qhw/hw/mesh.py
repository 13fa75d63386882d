"""Grid of tiles with pipeline registers between them (Gemmini ``Mesh``)."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ArrayConfig, check_config
from .skew import delayed
from .tile import Tile

__all__ = ["Mesh", "act_shape"]


def act_shape(config: ArrayConfig):
    """Shape of an activation (and output) element."""
    return signed(config.act_bits) if config.act_signed else config.act_bits


def array_ports(c: ArrayConfig, *, bank_width: int = 1) -> dict:
    """The interface shared by the arrays and the mesh: activations and bank bits in, one
    psum row out, weight-row writes (``bank_width`` is ``rows`` for the mesh, whose rows
    receive their bank bits already skewed)."""
    return {
        "a_in": In(data.ArrayLayout(act_shape(c), c.rows)),
        "bank_in": In(bank_width),
        "psum_out": Out(data.ArrayLayout(signed(c.psum_bits), c.cols)),
        "w_we": In(c.rows),
        "w_bank": In(1),
        "w_data": In(data.ArrayLayout(signed(c.weight_bits), c.cols)),
    }


class Mesh(wiring.Component):
    """``config.rows`` x ``config.cols`` PEs grouped in tiles, weight-stationary.

    Activations enter row ``i`` at the left edge (already skewed by the caller:
    tile row ``ti`` expects its data ``ti * tile_pipeline`` cycles late) and move
    right; partial sums start at zero on top and move down; ``psum_out`` is the
    bottom edge, registered once. Between neighbouring tiles ``tile_pipeline``
    registers carry activations, bank bits and partial sums, so tile timing can
    be tuned without touching the PE.
    """

    def __init__(self, *, config: ArrayConfig):
        check_config(config)
        self.config = config
        c = config
        super().__init__(array_ports(c, bank_width=c.rows))

    def elaborate(self, platform):
        m = Module()
        c = self.config
        tr, tc = c.tile_rows, c.tile_cols
        n_tr, n_tc = c.tile_grid
        p = c.tile_pipeline
        # Left edge of each tile row, carried right tile by tile.
        a_edge = [[self.a_in[ti * tr + i] for i in range(tr)] for ti in range(n_tr)]
        b_edge = [[self.bank_in[ti * tr + i] for i in range(tr)] for ti in range(n_tr)]
        # Top edge of each tile column, carried down tile by tile.
        top = [[0] * tc for _ in range(n_tc)]
        for ti in range(n_tr):
            for tj in range(n_tc):
                tile = Tile(tile_rows=tr, tile_cols=tc, act_shape=act_shape(c),
                            weight_bits=c.weight_bits, psum_bits=c.psum_bits)
                m.submodules[f"tile_{ti}_{tj}"] = tile
                for i in range(tr):
                    row = ti * tr + i
                    m.d.comb += [tile.a_in[i].eq(a_edge[ti][i]), tile.bank_in[i].eq(b_edge[ti][i]),
                                 tile.w_we[i].eq(self.w_we[row])]
                for j in range(tc):
                    m.d.comb += [tile.psum_in[j].eq(top[tj][j]),
                                 tile.w_data[j].eq(self.w_data[tj * tc + j])]
                m.d.comb += tile.w_bank.eq(self.w_bank)
                name = f"t{ti}_{tj}"
                a_edge[ti] = [delayed(m, tile.a_out[i], p, name=f"{name}_a{i}") for i in range(tr)]
                b_edge[ti] = [delayed(m, tile.bank_out[i], p, name=f"{name}_b{i}") for i in range(tr)]
                last_row = ti == n_tr - 1
                # The bottom edge gets exactly one register whatever tile_pipeline is.
                top[tj] = [delayed(m, tile.psum_out[j], 1 if last_row else p, name=f"{name}_s{j}")
                           for j in range(tc)]
        for tj in range(n_tc):
            for j in range(tc):
                m.d.comb += self.psum_out[tj * tc + j].eq(top[tj][j])
        return m
