"""``RequantBank``: the requantization lanes of the accelerator, one per column or shared."""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from .accumulator import row_layout
from .command import gemm_signature
from .config import ArrayConfig, check_config
from .layouts import out_layout, params_layout
from .requant import RequantLane
from .skew import delayed

__all__ = ["RequantBank"]


class RequantBank(wiring.Component):
    """Requantizes each accumulated ``row`` with the parameters of its bank into one ``out`` row.

    ``config.requant_lane_count`` lanes (``RequantLane``, submodules ``requant_0`` ...). With one
    per column the row goes straight in. With fewer (``requant_passes = cols / lanes``), the row
    and its parameters are held in a staging register and fed ``lanes`` columns per cycle; the
    outputs of earlier passes wait in registers and the row leaves with the last pass. A new row
    may come at most every ``requant_passes`` cycles (the issuer spaces them).

    ``param_banks`` is the loader's (a bank is not reloaded before ``config.bank_drain_cycles``, which
    covers the cycle it is read here). With a lane per column, each lane's parameters are selected
    a cycle early (``next_bank``, the bank of the coming row) into the lane's own registers, so the
    bank bit's fan-out to every lane and its multiplexer are not in front of the bias adder; shared
    lanes register them in the staging register instead. ``mode``, ``zero_point``, ``qmin``
    and ``qmax`` come from the running command. ``family`` picks the lanes' multipliers
    (``RequantLane``).
    """

    def __init__(self, *, config: ArrayConfig, family: str | None = None):
        check_config(config)
        if family not in (None, "ice40", "ecp5"):
            raise ConfigError(f"family must be None, 'ice40' or 'ecp5', not {family!r}")
        self.config, self.family = config, family
        c = config
        super().__init__({
            "gemm": In(gemm_signature(c)),
            "param_banks": In(data.ArrayLayout(params_layout(c), 2)),
            "row": In(stream.Signature(row_layout(c), always_ready=True)),
            "next_bank": In(1),
            "out": Out(stream.Signature(out_layout(c), always_ready=True)),
        })

    @property
    def latency(self) -> int:
        """``row`` to ``out``: ``config.share_latency + config.requant_latency`` (the staging register
        and one cycle per further pass when lanes are shared, then the lane's pipeline)."""
        return self.config.share_latency + self.config.requant_latency

    def elaborate(self, platform):
        m = Module()
        c = self.config
        cmd = self.gemm.cmd
        banks = self.param_banks
        params = data.View(params_layout(c), Mux(self.row.payload.bank, banks[1].as_value(), banks[0].as_value()))
        L, P = c.requant_lane_count, c.requant_passes
        if P > 1:
            # Shared lanes: hold the row and its parameters, feed ``L`` columns per cycle.
            stage_total = Signal.like(self.row.payload.sum)
            stage_params = Signal(params_layout(c))
            phase = Signal(range(P))
            feeding = Signal()
            with m.If(self.row.valid):
                m.d.sync += [stage_total.eq(self.row.payload.sum), stage_params.eq(params), phase.eq(0),
                             feeding.eq(1)]
            with m.Elif(feeding):
                m.d.sync += phase.eq(phase + 1)
                with m.If(phase == P - 1):
                    m.d.sync += feeding.eq(0)
            src_total, src_params, lane_valid = stage_total, stage_params, feeding
        else:
            # Each lane's own parameter registers, selected by the bank of the row coming next cycle.
            early = data.View(params_layout(c), Mux(self.next_bank, banks[1].as_value(), banks[0].as_value()))
            src_params = Signal(params_layout(c), name="lane_params", reset_less=True)
            m.d.sync += src_params.eq(early)
            src_total, lane_valid, phase = self.row.payload.sum, self.row.valid, Const(0)

        def column(array_view, lane):
            """Element ``phase * L + lane`` of a per-column array (a mux over the passes)."""
            return Array(array_view[q * L + lane] for q in range(P))[phase] if P > 1 else array_view[lane]

        lanes = []
        for j in range(L):
            lane = RequantLane(config=c, family=self.family)
            m.submodules[f"requant_{j}"] = lane
            m.d.comb += [
                lane.i_valid.eq(lane_valid),
                lane.acc.eq(column(src_total, j)),
                lane.bias.eq(column(src_params.bias, j)),
                lane.multiplier.eq(column(src_params.multiplier, j) if c.per_channel else src_params.multiplier),
                lane.shift.eq(column(src_params.shift, j) if c.per_channel else src_params.shift),
                lane.scale.eq((column(src_params.scale, j) if c.per_channel else src_params.scale)
                              if "onnx" in c.rounding else 0),
                lane.mode.eq(cmd.mode), lane.zero_point.eq(cmd.zero_point),
                lane.qmin.eq(cmd.qmin), lane.qmax.eq(cmd.qmax),
            ]
            lanes.append(lane)

        out = self.out.payload
        if P > 1:
            # Reassemble the row: earlier passes into registers, the last one straight through.
            out_phase = delayed(m, phase, c.requant_latency, name="out_phase")
            held = Signal(out_layout(c))
            for q in range(P):
                for j in range(L):
                    col = q * L + j
                    if q < P - 1:
                        with m.If(lanes[0].o_valid & (out_phase == q)):
                            m.d.sync += held[col].eq(lanes[j].o)
                        m.d.comb += out[col].eq(held[col])
                    else:
                        m.d.comb += out[col].eq(lanes[j].o)
            m.d.comb += self.out.valid.eq(lanes[0].o_valid & (out_phase == P - 1))
        else:
            m.d.comb += [out[j].eq(lanes[j].o) for j in range(c.cols)]
            m.d.comb += self.out.valid.eq(lanes[0].o_valid)
        return m
