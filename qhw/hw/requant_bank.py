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
    per column the row goes straight in. With fewer (``requant_groups = cols / lanes``), or with
    serial lanes (an input every ``requant_interval`` cycles), the row and its parameters are held in
    a staging register and fed ``lanes`` columns every ``requant_interval`` cycles; the outputs of
    earlier groups wait in registers and the row leaves with the last group. A new row may come at
    most every ``requant_passes = requant_groups * requant_interval`` cycles (the issuer spaces them).

    ``param_banks`` is the loader's (a bank is not reloaded before ``config.bank_drain_cycles``, which
    covers the cycle it is read here). With a lane per column, each lane's parameters are selected
    a cycle early (``next_bank``, the bank of the coming row) into the lane's own registers, so the
    bank bit's fan-out to every lane and its multiplexer are not in front of the bias adder; shared
    lanes register them in the staging register instead (serial lanes only the bank bit).
    ``mode``, ``zero_point``, ``qmin`` and ``qmax`` come from the running command.
    ``family`` picks the lanes' multipliers (``RequantLane``).
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
        L, G, I = c.requant_lane_count, c.requant_groups, c.requant_interval
        P = G * I       # c.requant_passes
        if P > 1:
            # Shared (or serial) lanes: hold the row and its parameters, feed ``L`` columns every
            # ``I`` cycles; ``group`` is the columns' group, ``tick`` the cycle within its interval.
            stage_total = Signal.like(self.row.payload.sum)
            group = Signal(range(G))
            tick = Signal(range(I))
            feeding = Signal()
            if I > 1:
                # Serial lanes read the parameters in place, from the row's bank (the loader keeps it
                # until they are done: ``config.bank_drain_cycles``); only the bank bit is staged.
                stage_bank = Signal()
                stage_params = data.View(params_layout(c), Mux(stage_bank, banks[1].as_value(), banks[0].as_value()))
                stage_load = stage_bank.eq(self.row.payload.bank)
            else:
                stage_params = Signal(params_layout(c))
                stage_load = stage_params.eq(params)
            with m.If(self.row.valid):
                m.d.sync += [stage_total.eq(self.row.payload.sum), stage_load, group.eq(0), tick.eq(0), feeding.eq(1)]
            with m.Elif(feeding):
                if I > 1:
                    m.d.sync += tick.eq(tick + 1)
                    with m.If(tick == I - 1):
                        m.d.sync += [tick.eq(0), group.eq(group + 1)]
                        with m.If(group == G - 1):
                            m.d.sync += feeding.eq(0)
                else:
                    m.d.sync += group.eq(group + 1)
                    with m.If(group == G - 1):
                        m.d.sync += feeding.eq(0)
            src_total, src_params = stage_total, stage_params
            lane_valid = feeding & (tick == 0) if I > 1 else feeding
        else:
            # Each lane's own parameter registers, selected by the bank of the row coming next cycle.
            early = data.View(params_layout(c), Mux(self.next_bank, banks[1].as_value(), banks[0].as_value()))
            src_params = Signal(params_layout(c), name="lane_params", reset_less=True)
            m.d.sync += src_params.eq(early)
            src_total, lane_valid, group = self.row.payload.sum, self.row.valid, Const(0)

        def column(array_view, lane):
            """Element ``group * L + lane`` of a per-column array (a mux over the groups)."""
            return Array(array_view[q * L + lane] for q in range(G))[group] if G > 1 else array_view[lane]

        lanes = []
        for j in range(L):
            lane = RequantLane(config=c, family=self.family, steady_constants=True)     # the command's
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
        if G > 1:
            # Reassemble the row: earlier groups into registers, the last one straight through.
            if I > 1:
                # Sparse results: count them (a row always yields G) instead of a long delay line.
                out_phase = Signal(range(G), name="out_phase")
                with m.If(lanes[0].o_valid):
                    m.d.sync += out_phase.eq(Mux(out_phase == G - 1, 0, out_phase + 1))
            else:
                out_phase = delayed(m, group, c.requant_latency, name="out_phase")
            held = Signal(out_layout(c))
            for q in range(G):
                for j in range(L):
                    col = q * L + j
                    if q < G - 1:
                        with m.If(lanes[0].o_valid & (out_phase == q)):
                            m.d.sync += held[col].eq(lanes[j].o)
                        m.d.comb += out[col].eq(held[col])
                    else:
                        m.d.comb += out[col].eq(lanes[j].o)
            m.d.comb += self.out.valid.eq(lanes[0].o_valid & (out_phase == G - 1))
        else:
            m.d.comb += [out[j].eq(lanes[j].o) for j in range(c.cols)]
            m.d.comb += self.out.valid.eq(lanes[0].o_valid)
        return m
