"""The accelerator top: command, weight, parameter and activation streams in, result rows out.

A GEMM ``Y = requant(X @ W + bias)`` with X (M x K), W (K x N) runs as a
sequence of weight tiles ``W[k0:k0+rows, n0:n0+cols]``, N tiles outer, K tiles
inner. For each tile the host streams M activation beats ``X[m, k0:k0+rows]``.
Partial results of all but the last K tile are kept in an on-chip accumulator
memory; rows of the last K tile are requantized and written to the output FIFO.
See ``docs/hardware.md`` for the protocol.

Design choices:

* The datapath (skew, mesh, accumulate, requantize) never stalls; it is a
  fixed-latency pipeline with valid bits. Back-pressure is handled at its
  entry by credits: an activation beat whose row will produce an output is
  accepted only while its output row has a reserved FIFO slot, so a stalled
  consumer can never cause loss or duplication and no ``ready`` signal fans out
  across the array.
* Weights and requant parameters are double-buffered in two banks. The
  loader fills the bank not in use; the bank bit travels with each activation,
  so the next tile starts the cycle after the current one ends.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from .array import SystolicArray
from .config import MODE_CODES, PE_FAMILY, ArrayConfig
from .dsp_array import DspArray
from .layouts import GEMM_M_BITS, act_layout, command_layout, out_layout, params_layout, weights_layout
from .requant import RequantLane
from .skew import delayed

__all__ = ["Accelerator", "accelerator_signature"]


def accelerator_signature(config: ArrayConfig) -> wiring.Signature:
    """The top's ports; a function so the manifest can list them without building hardware."""
    return wiring.Signature({
        "cmd": In(stream.Signature(command_layout(config))),
        "weights": In(stream.Signature(weights_layout(config))),
        "params": In(stream.Signature(params_layout(config))),
        "act": In(stream.Signature(act_layout(config))),
        "out": Out(stream.Signature(out_layout(config))),
        "busy": Out(1),
        "error": Out(1),
    })


class Accelerator(wiring.Component):
    """Weight-stationary INT GEMM accelerator with on-chip K accumulation and requantization.

    Streams (``amaranth.lib.stream``, valid/ready):

    ``cmd``
        One beat per GEMM (``command_layout``); accepted only when idle.
        Requires 1 <= M, 1 <= K <= ``max_k``, 1 <= N, M <= ``acc_depth`` when K > ``rows``,
        and a built ``mode``.
    ``weights``
        Per tile: ``min(rows, K - k0)`` weight rows (rows past K are zero-filled in hardware).
    ``params``
        Per N tile: one beat of bias, multiplier, shift and (``onnx`` built) float32 scale
        (``params_layout``), consumed before that N tile's last weight tile.
    ``act``
        Per tile: M beats ``X[m, k0:k0+rows]`` (elements past K are ignored).
    ``out``
        Per N tile: M beats ``Y[m, n0:n0+cols]`` (columns past N are padding).

    ``busy`` is high from the command handshake until the last result is taken. A command
    outside those limits (or with a ``mode`` that is not built) is accepted and dropped, and
    ``error`` is set until the next command.

    The array is ``SystolicArray`` for ``config.pe == "generic"``, else ``DspArray`` of that kind;
    ``family`` (``"ice40"``/``"ecp5"``, the FPGA flow) selects its vendor DSP primitive, ``None``
    (simulation, ``qhw generate``) the portable equivalent.
    """

    def __init__(self, *, config: ArrayConfig, family: str | None = None):
        if not isinstance(config, ArrayConfig):
            raise ConfigError(f"config must be an ArrayConfig, not {config!r}")
        if family not in (None, "ice40", "ecp5"):
            raise ConfigError(f"family must be None, 'ice40' or 'ecp5', not {family!r}")
        if config.pe != "generic" and family not in (None, PE_FAMILY[config.pe]):
            raise ConfigError(f"pe {config.pe} needs family {PE_FAMILY[config.pe]!r} or None, not {family!r}")
        self.config, self.family = config, family
        super().__init__(accelerator_signature(config))

    @property
    def latency(self) -> int:
        """Activation handshake (last K tile) to its result on ``out`` (``config.latency``)."""
        return self.config.latency

    @property
    def throughput(self) -> int:
        """Activation beats accepted per cycle in steady state (1, for M >= ``config.min_m_for_full_rate``)."""
        return 1

    def elaborate(self, platform):
        m = Module()
        c = self.config
        R, C = c.rows, c.cols
        if c.pe == "generic":
            m.submodules.array = array = SystolicArray(config=c)
        else:
            m.submodules.array = array = DspArray(config=c, family=self.family)

        # ---------------------------------------------------------------- command registers
        cmd = Signal(command_layout(c))
        active = Signal()           # a command is being executed
        m.d.comb += self.cmd.ready.eq(~active)
        new = self.cmd.payload
        # A command the hardware cannot run would hang it (M = 0 never ends a tile) or alias
        # accumulator rows; it is dropped and flagged instead.
        bad = Signal()
        built = 0
        for mode in c.rounding:
            built = built | (new.mode == MODE_CODES[mode])
        m.d.comb += bad.eq((new.m == 0) | (new.k == 0) | (new.n == 0) | (new.k > c.max_k) | ~built
                           | ((new.k > R) & (new.m > c.acc_depth)))
        start = Signal()
        m.d.comb += start.eq(self.cmd.valid & self.cmd.ready & ~bad)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += self.error.eq(bad)
        with m.If(start):
            m.d.sync += [cmd.eq(new), active.eq(1)]
        m.d.comb += self.busy.eq(active)

        # ---------------------------------------------------------------- bank state
        full = Signal(2)            # bank holds a loaded tile not yet fully issued
        drain = Array(Signal(range(c.bank_drain_cycles + 1), name=f"drain{b}") for b in range(2))
        for b in range(2):
            with m.If(drain[b] != 0):
                m.d.sync += drain[b].eq(drain[b] - 1)
        pbank = [Signal(params_layout(c), name=f"pbank{b}") for b in range(2)]

        # ---------------------------------------------------------------- loader
        l_run = Signal()            # loader has tiles left in the current command
        l_bank = Signal()
        l_k0 = Signal(range(c.max_k + R + 1))
        l_n0 = Signal(unsigned(17))
        l_row = Signal(range(R))
        l_last_k = Signal()
        m.d.comb += l_last_k.eq(l_k0 + R >= cmd.k)
        with m.If(start):
            m.d.sync += [l_run.eq(1), l_k0.eq(0), l_n0.eq(0), l_row.eq(0)]
        w_write = Signal()
        w_zero = Signal()
        m.d.comb += [
            array.w_bank.eq(l_bank),
            array.w_we.eq(Const(0, R) | (w_write << l_row)),
        ]
        with m.If(~w_zero):
            m.d.comb += array.w_data.eq(self.weights.payload)
        with m.FSM(name="loader"):
            with m.State("WAIT"):
                # The bank is free once its last tile has been issued and has drained.
                bank_free = l_run & ~full.bit_select(l_bank, 1) & (drain[l_bank] == 0)
                with m.If(bank_free & l_last_k):
                    m.next = "PARAMS"
                with m.Elif(bank_free):
                    m.next = "ROWS"
            with m.State("PARAMS"):
                m.d.comb += self.params.ready.eq(1)
                with m.If(self.params.valid):
                    with m.If(l_bank):
                        m.d.sync += pbank[1].eq(self.params.payload)
                    with m.Else():
                        m.d.sync += pbank[0].eq(self.params.payload)
                    m.next = "ROWS"
            with m.State("ROWS"):
                with m.If(l_k0 + l_row < cmd.k):
                    m.d.comb += [self.weights.ready.eq(1), w_write.eq(self.weights.valid)]
                with m.Else():
                    m.d.comb += [w_zero.eq(1), w_write.eq(1)]   # zero-fill rows past K
                with m.If(w_write):
                    m.d.sync += l_row.eq(l_row + 1)
                    with m.If(l_row == R - 1):
                        m.d.sync += [l_row.eq(0), full.bit_select(l_bank, 1).eq(1), l_bank.eq(~l_bank)]
                        with m.If(l_last_k):
                            m.d.sync += [l_k0.eq(0), l_n0.eq(l_n0 + C)]
                            with m.If(l_n0 + C >= cmd.n):
                                m.d.sync += l_run.eq(0)
                        with m.Else():
                            m.d.sync += l_k0.eq(l_k0 + R)
                        m.next = "WAIT"

        # ---------------------------------------------------------------- issuer
        i_run = Signal()
        i_bank = Signal()
        i_k0 = Signal(range(c.max_k + R + 1))
        i_n0 = Signal(unsigned(17))
        i_m = Signal(unsigned(GEMM_M_BITS))
        i_last_k = Signal()
        m.d.comb += i_last_k.eq(i_k0 + R >= cmd.k)
        with m.If(start):
            m.d.sync += [i_run.eq(1), i_k0.eq(0), i_n0.eq(0), i_m.eq(0)]

        outstanding = Signal(range(c.fifo_depth + 1))   # result rows issued and not yet taken
        credit = Signal()
        m.d.comb += credit.eq(outstanding < c.fifo_depth)
        # Shared requantization lanes take ``requant_passes`` cycles per result row: space the
        # activation beats that produce one (those of a last K tile) as much.
        may_produce = credit
        if c.requant_passes > 1:
            last_gap = Signal(range(c.requant_passes))
            may_produce = credit & (last_gap == 0)
            with m.If(self.act.valid & self.act.ready & i_last_k):
                m.d.sync += last_gap.eq(c.requant_passes - 1)
            with m.Elif(last_gap != 0):
                m.d.sync += last_gap.eq(last_gap - 1)
        m.d.comb += self.act.ready.eq(i_run & full.bit_select(i_bank, 1) & (may_produce | ~i_last_k))
        issue = Signal()
        m.d.comb += issue.eq(self.act.valid & self.act.ready)

        meta_layout = data.StructLayout({"valid": 1, "m": unsigned(GEMM_M_BITS), "first": 1, "last": 1,
                                         "bank": 1})
        meta = Signal(meta_layout)  # the issue register's sideband
        a_reg = Signal(act_layout(c))
        m.d.sync += [
            meta.valid.eq(issue), meta.m.eq(i_m), meta.first.eq(i_k0 == 0), meta.last.eq(i_last_k),
            meta.bank.eq(i_bank), a_reg.eq(self.act.payload),
        ]
        m.d.comb += [array.a_in.eq(a_reg), array.bank_in.eq(meta.bank)]
        with m.If(issue):
            m.d.sync += i_m.eq(i_m + 1)
            with m.If(i_m == cmd.m - 1):
                m.d.sync += [i_m.eq(0), full.bit_select(i_bank, 1).eq(0), drain[i_bank].eq(c.bank_drain_cycles),
                             i_bank.eq(~i_bank)]
                with m.If(i_last_k):
                    m.d.sync += [i_k0.eq(0), i_n0.eq(i_n0 + C)]
                    with m.If(i_n0 + C >= cmd.n):
                        m.d.sync += i_run.eq(0)
                with m.Else():
                    m.d.sync += i_k0.eq(i_k0 + R)

        # ---------------------------------------------------------------- accumulate
        # One row read-modify-write per cycle, with the block RAM's clock-to-out and the adder in
        # different cycles: the row is read one cycle early and its data registered (``rd``). A
        # read sees every write at least one cycle older (the port is transparent for writes in
        # its own cycle); the one younger write, of the beat just before (M = 1: the same row's K
        # tiles back to back), is taken from the adder's output register instead (forwarding).
        m.submodules.acc_mem = mem = Memory(shape=data.ArrayLayout(signed(c.sum_bits), C),
                                            depth=c.acc_depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=(wp,))
        meta_r = delayed(m, meta, c.array_latency - 1, name="meta_r")
        m.d.comb += rp.addr.eq(meta_r.m)
        meta_d1 = delayed(m, meta_r, 1, name="meta_rd")
        meta_d = delayed(m, meta_d1, 1, name="meta_add")
        psum_d = Signal(data.ArrayLayout(signed(c.psum_bits), C))
        rd = Signal(data.ArrayLayout(signed(c.sum_bits), C))
        m.d.sync += [psum_d.eq(array.psum_out), rd.eq(rp.data)]
        total = Signal(data.ArrayLayout(signed(c.sum_bits), C))
        last_total = Signal.like(total)
        wrote = Signal()
        m.d.comb += wrote.eq(meta_d.valid & ~meta_d.last)
        # Decided a cycle ahead (this beat against the next one), so the row compare is not in
        # front of the adder.
        forward = Signal()
        m.d.sync += [last_total.eq(total), forward.eq(wrote & (meta_d.m == meta_d1.m))]
        for j in range(C):
            with m.If(meta_d.first):
                m.d.comb += total[j].eq(psum_d[j])
            with m.Else():
                m.d.comb += total[j].eq(Mux(forward, last_total[j], rd[j]) + psum_d[j])
        m.d.comb += [wp.addr.eq(meta_d.m), wp.data.eq(total), wp.en.eq(wrote)]

        # ---------------------------------------------------------------- requantize
        # A register between the accumulator's add and the lanes' bias add keeps two carry chains
        # out of one cycle. The parameter banks need no copy: a bank is not reloaded before
        # ``bank_drain_cycles``, which counts this stage (``accumulate_latency``).
        acc_row = Signal.like(total)
        acc_bank = Signal()
        row_valid = Signal()
        m.d.sync += [acc_row.eq(total), acc_bank.eq(meta_d.bank), row_valid.eq(meta_d.valid & meta_d.last)]
        params = data.View(params_layout(c), Mux(acc_bank, pbank[1], pbank[0]))
        L, P = c.requant_lane_count, c.requant_passes
        if P > 1:
            # Shared lanes: hold the row and its parameters, feed ``L`` columns per cycle.
            stage_total = Signal.like(total)
            stage_params = Signal(params_layout(c))
            phase = Signal(range(P))
            feeding = Signal()
            with m.If(row_valid):
                m.d.sync += [stage_total.eq(acc_row), stage_params.eq(params), phase.eq(0), feeding.eq(1)]
            with m.Elif(feeding):
                m.d.sync += phase.eq(phase + 1)
                with m.If(phase == P - 1):
                    m.d.sync += feeding.eq(0)
            src_total, src_params, lane_valid = stage_total, stage_params, feeding
        else:
            src_total, src_params, lane_valid, phase = acc_row, params, row_valid, Const(0)

        def column(array_view, lane):
            """Element ``phase * L + lane`` of a per-column array (a mux over the passes)."""
            return Array(array_view[q * L + lane] for q in range(P))[phase] if P > 1 else array_view[lane]

        lane_out = []
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
            lane_out.append(lane)

        # ---------------------------------------------------------------- output FIFO
        out_row = Signal(out_layout(c))
        if P > 1:
            # Reassemble the row: earlier passes into registers, the last one straight through.
            out_phase = delayed(m, phase, c.requant_latency, name="out_phase")
            held = Signal(out_layout(c))
            for q in range(P):
                for j in range(L):
                    col = q * L + j
                    if q < P - 1:
                        with m.If(lane_out[0].o_valid & (out_phase == q)):
                            m.d.sync += held[col].eq(lane_out[j].o)
                        m.d.comb += out_row[col].eq(held[col])
                    else:
                        m.d.comb += out_row[col].eq(lane_out[j].o)
            row_done = lane_out[0].o_valid & (out_phase == P - 1)
        else:
            for j in range(C):
                m.d.comb += out_row[j].eq(lane_out[j].o)
            row_done = lane_out[0].o_valid
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=len(out_row.as_value()), depth=c.fifo_depth)
        m.d.comb += [
            fifo.w_en.eq(row_done), fifo.w_data.eq(out_row),
            self.out.valid.eq(fifo.r_rdy), self.out.payload.eq(fifo.r_data), fifo.r_en.eq(self.out.ready),
        ]
        pop = self.out.valid & self.out.ready
        push = issue & i_last_k
        with m.If(push & ~pop):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(pop & ~push):
            m.d.sync += outstanding.eq(outstanding - 1)

        # Idle again once every result of the command has been taken.
        with m.If(active & ~i_run & ~l_run & (outstanding == 0) & ~(push & ~pop)):
            m.d.sync += active.eq(0)
        return m
