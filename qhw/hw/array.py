"""Skew, mesh and de-skew: a row vector in, one partial-sum row out ``mesh_latency`` cycles later."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import data, wiring

from ..errors import ConfigError
from .config import ArrayConfig, check_config
from .mesh import Mesh, act_shape, array_ports
from .skew import Skew

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """Weight-stationary systolic array with aligned input and output rows.

    ``a_in`` (``rows`` activations, all of the same GEMM row) and ``bank_in`` are
    sampled every cycle; ``psum_out[j] = sum_i a_in[i] * W_bank[i, j]`` for that
    row appears ``latency`` cycles later. Weight rows are written with
    ``w_we`` (one-hot row select), ``w_bank`` and ``w_data``; writes to a bank take
    effect for rows sampled after the write.
    """

    def __init__(self, *, config: ArrayConfig):
        check_config(config)
        if config.pe != "generic":     # config.array_latency must describe the array built
            raise ConfigError(f"SystolicArray builds generic PEs, not config.pe {config.pe!r} (that is DspArray)")
        self.config = config
        c = config
        super().__init__(array_ports(c))

    @property
    def latency(self) -> int:
        """``config.mesh_latency`` = ``(TR + TC - 2) * tile_pipeline + 1`` cycles."""
        return self.config.mesh_latency

    def elaborate(self, platform):
        m = Module()
        c = self.config
        p = c.tile_pipeline
        _, n_tc = c.tile_grid
        lane = data.StructLayout({"a": act_shape(c), "bank": 1})
        m.submodules.skew = skew = Skew(shape=lane, delays=[(i // c.tile_rows) * p for i in range(c.rows)])
        m.submodules.mesh = mesh = Mesh(config=c)
        m.submodules.deskew = deskew = Skew(
            shape=signed(c.psum_bits), delays=[(n_tc - 1 - j // c.tile_cols) * p for j in range(c.cols)])
        for i in range(c.rows):
            m.d.comb += [skew.i[i].a.eq(self.a_in[i]), skew.i[i].bank.eq(self.bank_in),
                         mesh.a_in[i].eq(skew.o[i].a), mesh.bank_in[i].eq(skew.o[i].bank)]
        m.d.comb += [mesh.w_we.eq(self.w_we), mesh.w_bank.eq(self.w_bank), mesh.w_data.eq(self.w_data),
                     deskew.i.eq(mesh.psum_out), self.psum_out.eq(deskew.o)]
        return m
