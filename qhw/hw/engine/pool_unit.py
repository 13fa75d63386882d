"""``PoolUnit``: a standalone ``POOL`` descriptor, scratchpad to scratchpad (docs/engine.md, "Pooling unit").

``PoolAgen`` reads one word per cycle; the word (``SPAD_READ_LATENCY`` cycles later) is ``PoolReduce``d
by window; a max is written
``pool_max_latency`` (1) cycle after the window's last word arrives, an average enters ``rows``
``PoolLane``s with the pool table's entry for its tap count and is written ``pool_avg_latency``
(``1 + requant_latency``) cycles after it: the timing contract's "each output word ``kh*kw`` reads
plus its latency later". The table read is issued with the window's last word (its count comes from
the address generator, which knows the padding a cycle before the data), so it lands with the sum.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...contract import POOL_MAX_LATENCY, POOL_SUM_LATENCY, SPAD_READ_LATENCY
from ...engine.isa import POOL_MAX, RULE_CODES
from ..config import ArrayConfig, check_config
from ..skew import delayed
from .layouts import descriptor_layout
from .pool import PoolLane, PoolReduce, _family, check_avg_lane
from .pool_agen import ADDR_BITS, PoolAgen

__all__ = ["PoolUnit", "pool_unit_signature"]

PARAM_ADDR_BITS = 24      # the store's byte address (``pool_param`` field width)


def pool_unit_signature(rows: int) -> wiring.Signature:
    """``PoolUnit``'s ports for ``rows``-lane words (also an engine's stand-in without the unit)."""
    return wiring.Signature({
        "desc": In(stream.Signature(descriptor_layout("POOL"))),
        "r_addr": Out(ADDR_BITS), "r_en": Out(1), "r_data": In(data.ArrayLayout(signed(8), rows)),
        "p_addr": Out(PARAM_ADDR_BITS), "p_data": In(64),
        "w_en": Out(1), "w_addr": Out(ADDR_BITS), "w_data": Out(data.ArrayLayout(signed(8), rows)),
    })


class PoolUnit(wiring.Component):
    """POOL descriptors (``desc``) executed on the scratchpad's read and write ports.

    ``r_addr``/``r_en`` -> ``r_data`` ``SPAD_READ_LATENCY`` cycles later (``Scratchpad``); ``p_addr`` -> ``p_data`` one
    cycle later: the pool table entry at that store byte address, low 32 bits first (``(M0, shift)``
    for ``single``/``tflite``, the float32 ``scale`` for ``onnx_int``); ``w_en``/``w_addr``/``w_data``
    write whole words.

    Parameters
    ----------
    config:
        The array (``rows`` lanes per word; ``requant_latency``, ``sum_bits`` and rounding modes of the lanes).
    settled:
        The cycles every descriptor is offered before it is taken (0, 1 or 2: ``PoolAgen``'s ``settled``).
    """

    def __init__(self, *, config: ArrayConfig, family: str | None = None, avg_lane: bool = True,
                 settled: int = 0):
        self.config = check_config(config)
        self.agen = PoolAgen(settled=settled)        # checks ``settled``
        self.avg_lane = check_avg_lane(avg_lane)     # False: PoolLanes build the divider only
        R = config.rows
        _family(family)
        self.family = family
        super().__init__(pool_unit_signature(R))

    @property
    def max_latency(self) -> int:
        """A window's last word (read data) to its write, max: 1 (``EngineConfig.pool_max_latency``)."""
        return POOL_MAX_LATENCY

    @property
    def avg_latency(self) -> int:
        """The same for an average: ``1 + config.requant_latency`` (``EngineConfig.pool_avg_latency``)."""
        return POOL_SUM_LATENCY + self.config.requant_latency

    def elaborate(self, platform):
        m = Module()
        c = self.config
        R = c.rows
        m.submodules.agen = agen = self.agen
        m.submodules.reduce = red = PoolReduce(lanes=R, sum_bits=c.sum_bits)
        d = Signal(descriptor_layout("POOL"))
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += d.eq(self.desc.payload)
        m.d.comb += [agen.desc.valid.eq(self.desc.valid), agen.desc.payload.eq(self.desc.payload),
                     self.desc.ready.eq(agen.desc.ready), agen.taps.ready.eq(1)]
        t = agen.taps.payload
        m.d.comb += [self.r_addr.eq(t.addr), self.r_en.eq(agen.taps.valid)]
        # the tap's flags, aligned with its word (``SPAD_READ_LATENCY`` registers: the read)
        tv, pad, first, last, entry, out_addr = (Signal(name="tap_valid"), Signal(name="tap_pad"),
                                                 Signal(name="tap_first"), Signal(name="tap_last"),
                                                 Signal(PARAM_ADDR_BITS, name="tap_entry"),
                                                 Signal(ADDR_BITS, name="tap_out"))
        # the pool table entry of the tap's count (read with the window's last word), its address
        # registered with the tap rather than computed after it
        # (4 bytes an entry for onnx_int's scale, 8 for (M0, shift): a shift, no product)
        index = t.count - 1
        offset = Mux(d.rule == RULE_CODES["onnx_int"], index << 2, index << 3)
        m.d.sync += [tv.eq(agen.taps.valid), pad.eq(t.pad), first.eq(t.first), last.eq(t.last),
                     entry.eq(d.pool_param + offset), out_addr.eq(t.out_addr)]
        wait = SPAD_READ_LATENCY - 1
        tv, pad, first, last, entry, out_addr = (delayed(m, v, wait, name=v.name) for v in
                                                 (tv, pad, first, last, entry, out_addr))
        m.d.comb += [red.taps.valid.eq(tv), red.taps.payload.values.eq(self.r_data), red.taps.payload.pad.eq(pad),
                     red.taps.payload.first.eq(first), red.taps.payload.last.eq(last),
                     red.kind.eq(d.pool), red.zp_in.eq(d.pool_zp_in), red.pad_value.eq(d.pool_qmin),
                     red.include_pad.eq(d.include_pad)]
        m.d.comb += self.p_addr.eq(entry)
        w_addr = Signal(ADDR_BITS, name="window_out")
        m.d.sync += w_addr.eq(out_addr)
        is_max = d.pool == POOL_MAX
        done = red.windows.valid
        total = red.windows.payload.total
        lanes = [PoolLane(config=c, family=self.family, avg_lane=self.avg_lane) for _ in range(R)]
        for j, lane in enumerate(lanes):
            m.submodules[f"lane{j}"] = lane
            m.d.comb += [lane.i_valid.eq(done & ~is_max), lane.rule.eq(d.rule), lane.total.eq(total[j]),
                         lane.count.eq(red.windows.payload.count), lane.multiplier.eq(self.p_data[:32]),
                         lane.shift.eq(self.p_data[32:]), lane.scale.eq(self.p_data[:32]),
                         lane.zero_point.eq(d.pool_zp), lane.qmin.eq(d.pool_qmin), lane.qmax.eq(d.pool_qmax)]
        a_addr = delayed(m, w_addr, c.requant_latency, name="avg_out")
        with m.If(lanes[0].o_valid):
            m.d.comb += [self.w_en.eq(1), self.w_addr.eq(a_addr)]
            m.d.comb += [self.w_data[j].eq(lane.o) for j, lane in enumerate(lanes)]
        with m.Elif(done & is_max):
            m.d.comb += [self.w_en.eq(1), self.w_addr.eq(w_addr)]
            m.d.comb += [self.w_data[j].eq(total[j]) for j in range(R)]
        return m
