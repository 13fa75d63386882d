"""The result path of a MATMUL: requantization (``RequantStage``), then placement and fused pooling
(``WritebackUnit``), to the scratchpad's write port (docs/engine.md, "Write-back", "Pooling unit").

``RequantStage``: ``cols`` ``RequantLane``s take each accumulated row with the parameters of its
bank; the descriptor's zero point and clamp travel beside the row (the lane samples them late), so
consecutive rows of different descriptors never mix. ``WritebackUnit``: the row's destination from
``WritebackAgen``, two registers (the table's read, ``TABLE_READ_LATENCY``: the row is written
``writeback_latency`` after its beat's issue), then either the write itself or ``FusedPool`` (its window
written ``pool_*_latency`` later).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...contract import MULTIPLIER_BITS, SCALE_BITS, SHIFT_BITS, TABLE_READ_LATENCY
from ...engine.isa import POOL_NONE, RULE_CODES
from ..accumulator import row_layout
from ..config import ArrayConfig, check_config
from ..logic_mul import logic_mul
from ..requant import RequantLane
from ..skew import delayed
from .add_unit import TableUnit, check_table_read_latency
from .layouts import descriptor_layout
from .loader import param_bank_layout
from .pool import COUNT_BITS, FusedPool, check_avg_lane
from .writeback import WritebackAgen

__all__ = ["RequantStage", "WritebackUnit", "lane_write_layout"]


def lane_write_layout(rows: int, cols: int, addr_bits: int) -> data.StructLayout:
    """A result-row write: ``addr``, first lane ``lane``, ``cols`` values."""
    return data.StructLayout({"addr": unsigned(addr_bits), "lane": range(rows),
                              "data": data.ArrayLayout(signed(8), cols)})


class RequantStage(wiring.Component):
    """Accumulated rows (``row``: sums and parameter bank) to requantized rows (``out``, ``cols`` int8)."""

    def __init__(self, *, config: ArrayConfig, family: str | None = None):
        self.config = check_config(config)
        self.family = family
        C = config.cols
        super().__init__({
            "row": In(stream.Signature(row_layout(config), always_ready=True)),
            "banks": In(data.ArrayLayout(param_bank_layout(config), 2)),
            "out": Out(stream.Signature(data.ArrayLayout(signed(8), C), always_ready=True)),
        })

    @property
    def latency(self) -> int:
        """``row`` to ``out``: ``config.requant_latency``."""
        return self.config.requant_latency

    def elaborate(self, platform):
        m = Module()
        c = self.config
        L = c.requant_latency
        bank = Signal(param_bank_layout(c))
        m.d.comb += bank.eq(Mux(self.row.payload.bank, self.banks[1].as_value(), self.banks[0].as_value()))
        zp = delayed(m, bank.zp, L - 3, name="zp")          # the lane registers it, then adds it
        qmin = delayed(m, bank.qmin, L - 2, name="qmin")    # ... and clamps a cycle later
        qmax = delayed(m, bank.qmax, L - 2, name="qmax")
        lanes = []
        for j in range(c.cols):
            lane = RequantLane(config=c, family=self.family)
            m.submodules[f"requant_{j}"] = lane
            m.d.comb += [lane.i_valid.eq(self.row.valid), lane.acc.eq(self.row.payload.sum[j]),
                         lane.bias.eq(bank.bias[j]), lane.multiplier.eq(bank.multiplier[j]),
                         lane.shift.eq(bank.shift[j]), lane.scale.eq(bank.scale[j] if "onnx" in c.rounding else 0),
                         lane.mode.eq(bank.mode), lane.zero_point.eq(zp), lane.qmin.eq(qmin), lane.qmax.eq(qmax)]
            lanes.append(lane)
        m.d.comb += [self.out.valid.eq(lanes[0].o_valid)] + [self.out.payload[j].eq(lane.o)
                                                              for j, lane in enumerate(lanes)]
        return m


def _pool_consts(tables: int = 1) -> data.StructLayout:
    return data.StructLayout({"tab_en": 1, "tab_sel": range(tables), "kind": 2, "rule": 3, "zp_in": signed(16),
                              "count": unsigned(COUNT_BITS),
                              "multiplier": unsigned(MULTIPLIER_BITS), "shift": signed(SHIFT_BITS),
                              "scale": unsigned(SCALE_BITS), "zp": signed(16), "qmin": signed(16),
                              "qmax": signed(16)})


class WritebackUnit(wiring.Component):
    """MATMUL descriptors (``desc``) and requantized rows (``row``) to lane writes (``w``, valid = enable).

    ``p_addr`` -> ``p_data`` (a cycle later): the 64-bit pool-table entry at that image byte address
    (a fused average's ``(M0, shift)`` or float32 scale for ``n = pkh*pkw``). A descriptor with a
    ``table`` looks its rows up in ``TableUnit`` slot ``t_slot`` (given with the offered descriptor)
    from the cycle a row arrives: the table's read and its register are the unit's two registers
    (``TABLE_READ_LATENCY``), so the fused pool and the write take a register; ``load_*`` fill it.
    ``settled``: every descriptor is offered a cycle before it is taken (``WritebackAgen``'s).
    """

    def __init__(self, *, config: ArrayConfig, pool_line: int, addr_bits: int, family: str | None = None,
                 tables: int = 1, table_init=None, avg_lane: bool = True, settled: bool = False):
        self.config = check_config(config)
        check_table_read_latency()
        self.agen = WritebackAgen(rows=config.rows, cols=config.cols, settled=settled)   # checks ``settled``
        self.avg_lane = check_avg_lane(avg_lane)     # False: FusedPool's lanes build the divider only
        self.pool_line, self.addr_bits, self.family = pool_line, addr_bits, family
        self.tables, self.table_init = tables, table_init
        R, C = config.rows, config.cols
        super().__init__({
            "desc": In(stream.Signature(descriptor_layout("MATMUL"))),
            "row": In(stream.Signature(data.ArrayLayout(signed(8), C), always_ready=True)),
            "p_addr": Out(24), "p_data": In(64),
            "w": Out(stream.Signature(lane_write_layout(R, C, addr_bits), always_ready=True)),
            "busy": Out(1),
            "t_slot": In(range(tables)),
            "load_en": In(1), "load_slot": In(range(tables)), "load_index": In(8), "load_data": In(signed(8)),
        })

    @property
    def latency(self) -> int:
        """A requantized row to its write (no pool): 2 registers, the table's read
        (``TABLE_READ_LATENCY``; ``EngineConfig.writeback_latency`` adds it)."""
        return TABLE_READ_LATENCY

    def elaborate(self, platform):
        m = Module()
        c = self.config
        R, C = c.rows, c.cols
        m.submodules.agen = agen = self.agen
        m.submodules.pool = fp = FusedPool(config=c, pool_line=self.pool_line, family=self.family,
                                                avg_lane=self.avg_lane)
        m.d.comb += [agen.desc.valid.eq(self.desc.valid), agen.desc.payload.eq(self.desc.payload),
                     self.desc.ready.eq(agen.desc.ready), agen.dest.ready.eq(self.row.valid)]
        # the accepted descriptor's pool constants; its table entry's address is registered at the accept
        # and the entry arrives two cycles after it (``entry_pending``), so a row that came in the cycle
        # after the accept gets the entry on its way from s1 to s2 (the lanes take it after s2)
        T = self.tables
        nd = Signal(_pool_consts(T))
        p_addr = Signal.like(self.p_addr)
        addr_pending, entry_pending = Signal(), Signal()
        dp = self.desc.payload
        n = logic_mul(dp.pkh, dp.pkw)
        m.d.comb += self.p_addr.eq(p_addr)
        m.d.sync += [addr_pending.eq(0), entry_pending.eq(addr_pending)]
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += [nd.tab_en.eq(dp.table != 0), nd.tab_sel.eq(self.t_slot), nd.kind.eq(dp.pool),
                         nd.rule.eq(dp.rule), nd.zp_in.eq(dp.pool_zp_in), nd.count.eq(n),
                         nd.zp.eq(dp.pool_zp), nd.qmin.eq(dp.pool_qmin), nd.qmax.eq(dp.pool_qmax),
                         p_addr.eq(dp.pool_param + logic_mul(Mux(dp.rule == RULE_CODES["onnx_int"], 4, 8), n - 1)),
                         addr_pending.eq(1)]
        with m.If(entry_pending):
            m.d.sync += [nd.multiplier.eq(self.p_data[:32]), nd.shift.eq(self.p_data[32:]),
                         nd.scale.eq(self.p_data[:32])]
        cur = Signal(_pool_consts(T))
        m.d.comb += cur.eq(nd)
        with m.If(entry_pending):
            m.d.comb += [cur.multiplier.eq(self.p_data[:32]), cur.shift.eq(self.p_data[32:]),
                         cur.scale.eq(self.p_data[:32])]

        # the row's values go through the table (its read and register: s1, s2), the rest beside them
        stage = data.StructLayout({"valid": 1, "addr": unsigned(20),
                                   "lane": range(R), "keep": 1, "px": unsigned(12), "win_first": 1, "win_last": 1,
                                   "first": 1, "pool": _pool_consts(T)})
        s1, s2 = Signal(stage), Signal(stage)
        first = Signal(init=1)              # the next row is its descriptor's first
        dst = agen.dest.payload
        with m.If(self.row.valid):
            m.d.sync += first.eq(dst.last)
        m.d.sync += [s1.valid.eq(self.row.valid), s1.addr.eq(dst.addr),
                     s1.lane.eq(dst.lane), s1.keep.eq(dst.keep), s1.px.eq(dst.px), s1.win_first.eq(dst.win_first),
                     s1.win_last.eq(dst.win_last), s1.first.eq(first), s1.pool.eq(cur), s2.eq(s1)]
        with m.If(entry_pending):
            m.d.sync += [s2.pool.multiplier.eq(self.p_data[:32]), s2.pool.shift.eq(self.p_data[32:]),
                         s2.pool.scale.eq(self.p_data[:32])]
        # the pool's constants: held from a descriptor's first row (the previous one's windows are out)
        pc = Signal(_pool_consts(T))
        k = Signal(_pool_consts(T))
        m.d.comb += k.eq(Mux(s2.valid & s2.first, s2.pool.as_value(), pc.as_value()))
        # the table: the arriving row looked up with its descriptor's constants (those s1 takes), out with s2
        m.submodules.table = table = TableUnit(lanes=C, tables=T, init=self.table_init)
        m.d.comb += [table.i_valid.eq(self.row.valid), table.i.eq(self.row.payload), table.enable.eq(cur.tab_en),
                     table.select.eq(cur.tab_sel), table.load_en.eq(self.load_en), table.load_slot.eq(self.load_slot),
                     table.load_index.eq(self.load_index), table.load_data.eq(self.load_data)]
        values = table.o
        with m.If(s2.valid & s2.first):
            m.d.sync += pc.eq(s2.pool)
        pooled = k.kind != POOL_NONE
        m.d.comb += [fp.i_valid.eq(s2.valid & pooled), fp.values.eq(values), fp.px.eq(s2.px), fp.px_next.eq(s1.px),
                     fp.win_first.eq(s2.win_first), fp.win_last.eq(s2.win_last), fp.keep.eq(s2.keep),
                     fp.addr.eq(s2.addr), fp.lane.eq(s2.lane), fp.kind.eq(k.kind), fp.rule.eq(k.rule),
                     fp.zp_in.eq(k.zp_in), fp.count.eq(k.count), fp.multiplier.eq(k.multiplier),
                     fp.shift.eq(k.shift), fp.scale.eq(k.scale), fp.zero_point.eq(k.zp), fp.qmin.eq(k.qmin),
                     fp.qmax.eq(k.qmax)]
        w = self.w.payload
        with m.If(s2.valid & ~pooled & s2.keep):
            m.d.comb += [self.w.valid.eq(1), w.addr.eq(s2.addr), w.lane.eq(s2.lane), w.data.eq(values)]
        with m.Elif(fp.o_valid):
            m.d.comb += [self.w.valid.eq(1), w.addr.eq(fp.o_addr), w.lane.eq(fp.o_lane), w.data.eq(fp.o)]
        m.d.comb += self.busy.eq(agen.busy | s1.valid | s2.valid)
        return m
