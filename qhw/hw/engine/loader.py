"""The weight loader and the parameter fetch: the array's weight banks and the lanes' parameter banks,
filled ahead of the tiles that use them (docs/engine.md, "Timing contract").

``WeightLoader`` walks the MATMUL tiles in issue order (M chunk, N tile, K tile; tile ``j`` of a chunk
is rows ``w_base/cols + j*rows ...`` of the weight store) and starts tile ``u`` at the first cycle
``L`` with: the previous tile's ``rows`` cycles done, tile ``u-2`` (same bank) issued and its last
beat ``cols`` cycles old (``L >= T_last(u-2) + cols``), and the inference running (``go``). Row ``i``
is read at ``L + i``, registered at ``L + i + 1`` and written into bank ``u % 2`` at ``L + i + 2``.

``ParamFetch`` reads each N tile's parameter block (one wide entry: bias, M0, shift, scale of ``cols``
columns) into parameter bank ``g % 2`` (``g``: the inference's N-tile groups in issue order), with the
descriptor's mode, zero point and clamp, once group ``g-2``'s last row has passed the lanes' input.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ...contract import BIAS_BITS, MODE_BITS, MULTIPLIER_BITS, SCALE_BITS, SHIFT_BITS
from ...engine.isa import IN_WINDOW
from ..config import ArrayConfig, check_config
from ..logic_mul import logic_mul
from ..skew import delayed
from .layouts import descriptor_layout

__all__ = ["ParamFetch", "WeightLoader", "param_bank_layout"]


class WeightLoader(wiring.Component):
    """MATMUL descriptors (``desc``) to weight-bank writes (``w_we`` one-hot row, ``w_bank``, ``w_data``)."""

    def __init__(self, *, config: ArrayConfig, depth_bits: int):
        self.config = check_config(config)
        R, C = config.rows, config.cols
        super().__init__({
            "desc": In(stream.Signature(descriptor_layout("MATMUL"))),
            "r_addr": Out(depth_bits), "r_en": Out(1), "r_data": In(data.ArrayLayout(signed(8), C)),
            "w_we": Out(R), "w_bank": Out(1), "w_data": Out(data.ArrayLayout(signed(8), C)),
            "tile_done": In(1), "go": In(1), "restart": In(1),
            "start": Out(1),
        })

    @property
    def latency(self) -> int:
        """A tile's load start to its last row written: ``rows + 1`` (one row per cycle, written two cycles
        after its read: the read, the data register)."""
        return self.config.rows + 1

    def elaborate(self, platform):
        m = Module()
        R, C = self.config.rows, self.config.cols
        lgc = exact_log2(C)
        d_valid = Signal()
        kt_count, n_tiles, m_total, m_chunk = (Signal(unsigned(24), name=n) for n in ("kt_count", "n_tiles",
                                                                                   "m_total", "m_chunk"))
        kt, nt = Signal(unsigned(24)), Signal(unsigned(12))
        m_end = Signal(unsigned(25), name="m_end")                 # the chunk's end: m0 + m_chunk, kept
        rb0 = Signal(unsigned(24), name="rb0")                     # the chunk's first row
        rb = Signal(unsigned(24), name="rb")                       # the next tile's first row
        u = Signal()                                               # tiles started, modulo 2 (the bank)
        tdone = Signal()                                           # tiles issued, modulo 2
        ahead = Signal(range(4))                                   # tiles started and not yet issued (<= 2)
        drain = [Signal(range(C + 1), name=f"drain{b}") for b in range(2)]
        row, active, cur = Signal(range(R + 1), name="row"), Signal(name="active"), Signal(unsigned(24), name="cur")
        kk, kwr, multi_k = Signal(unsigned(16)), Signal(unsigned(8)), Signal()     # K-tile count factors

        for b in range(2):
            with m.If(drain[b] != 0):
                m.d.sync += drain[b].eq(drain[b] - 1)
        with m.If(self.tile_done):
            m.d.sync += tdone.eq(~tdone)
            for b in range(2):
                with m.If(tdone == b):
                    m.d.sync += drain[b].eq(C)

        bank = u
        # the bank's previous tile (u - 2) issued: at most one other tile started and not issued
        free = (ahead <= 1) & (Mux(bank, drain[1], drain[0]) == 0)
        start = self.start
        m.d.comb += start.eq(self.go & d_valid & ~active & free)
        # the tile walk's K and N tests are flags registered a cycle ahead, so the start (which enables
        # the walk's counters) is not behind their carry chains: a start is at least two cycles after the
        # previous one (``active``), so a test of this cycle's registers, registered, holds at the next
        # start; a descriptor's first cycle takes them from the descriptor (its accept may be the cycle
        # before a start), ``kt_zero`` picks ``multi_k`` (whose ``kt_count`` is not formed yet). The last
        # chunk's test stays a compare of registers at the chunk's last start, beside the start's logic:
        # as a flag its first value is ``m_chunk >= oh*ow`` in the accept cycle, a second consumer of the
        # descriptor's LUT product (+900 LUT4 on the 4x4 engine, session 17)
        kt_zero = Signal(init=1, name="kt_zero")
        k_more, n_more = Signal(name="k_more"), Signal(name="n_more")
        accept = self.desc.valid & self.desc.ready
        dp = self.desc.payload
        m.d.sync += [k_more.eq(kt + 1 < kt_count),
                     n_more.eq(Mux(accept, dp.n_tiles > 1, nt + 1 < n_tiles))]
        with m.If(start):
            m.d.comb += [self.r_addr.eq(rb), self.r_en.eq(1)]
            m.d.sync += [cur.eq(rb), row.eq(1), active.eq(1), u.eq(~u)]
            last_tile = Signal()
            with m.If(Mux(kt_zero, multi_k, k_more)):
                m.d.sync += [kt.eq(kt + 1), kt_zero.eq(0), rb.eq(rb + R)]
            with m.Elif(n_more):
                m.d.sync += [kt.eq(0), kt_zero.eq(1), nt.eq(nt + 1), rb.eq(rb + R)]
            with m.Else():
                m.d.sync += [kt.eq(0), kt_zero.eq(1), nt.eq(0), m_end.eq(m_end + m_chunk), rb.eq(rb0)]
                m.d.comb += last_tile.eq(m_end >= m_total)
                with m.If(last_tile):
                    m.d.sync += d_valid.eq(0)
            m.d.comb += self.desc.ready.eq(last_tile)
        with m.Elif(active):
            m.d.comb += [self.r_addr.eq(cur + row), self.r_en.eq(1)]
            m.d.sync += [row.eq(row + 1), active.eq(row + 1 < R)]
        with m.If(~d_valid):
            m.d.comb += self.desc.ready.eq(1)

        # the row read this cycle is registered out of the block RAM the next (its data fans out to a
        # whole column of PEs) and written into its bank the cycle after
        we, we2 = Signal(R), Signal(R)
        wbank, wbank2 = Signal(), Signal()
        wdata = Signal.like(self.r_data, reset_less=True)
        m.d.sync += [we.eq(Mux(start, 1, Mux(active, 1 << row, 0))), wbank.eq(Mux(start, bank, ~u)),
                     we2.eq(we), wbank2.eq(wbank), wdata.eq(self.r_data)]
        m.d.comb += [self.w_we.eq(we2), self.w_bank.eq(wbank2), self.w_data.eq(wdata)]

        # K tiles per N tile: two products, the second a cycle after the accept (a tile's first start, at
        # kt 0, asks only ``multi_k``: more than one K tile; the next start is at least 2 cycles later)
        m.d.sync += kt_count.eq(logic_mul(kk, kwr))
        m.d.sync += ahead.eq(ahead + start - self.tile_done)
        with m.If(accept):
            mt = logic_mul(dp.oh, dp.ow)
            win = dp.in_kind == IN_WINDOW
            nz = (dp.kcw != 0) & (dp.kh != 0) & (dp.kw != 0)
            m.d.sync += [kk.eq(Mux(win, dp.kh, logic_mul(dp.kcw, dp.kh))), kwr.eq(Mux(win, 1, dp.kw)),
                         multi_k.eq(Mux(win, dp.kh > 1, nz & ((dp.kcw > 1) | (dp.kh > 1) | (dp.kw > 1))))]
            m.d.sync += [d_valid.eq(1), n_tiles.eq(dp.n_tiles), m_total.eq(mt),
                         m_chunk.eq(dp.m_chunk), kt.eq(0), kt_zero.eq(1), nt.eq(0), m_end.eq(dp.m_chunk),
                         rb0.eq(dp.w_base >> lgc), rb.eq(dp.w_base >> lgc)]
        with m.If(self.restart):
            m.d.sync += [u.eq(0), tdone.eq(0), ahead.eq(0), drain[0].eq(0), drain[1].eq(0)]
        return m


def param_bank_layout(config: ArrayConfig) -> data.StructLayout:
    """One N tile's requantization parameters (per column) and its descriptor's mode, zero point, clamp."""
    C = config.cols
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(BIAS_BITS), C), "multiplier": data.ArrayLayout(unsigned(MULTIPLIER_BITS), C),
        "shift": data.ArrayLayout(signed(SHIFT_BITS), C), "scale": data.ArrayLayout(unsigned(SCALE_BITS), C),
        "mode": unsigned(MODE_BITS), "zp": signed(9), "qmin": signed(9), "qmax": signed(9),
    })


class ParamFetch(wiring.Component):
    """MATMUL descriptors (``desc``) to the two parameter banks (``banks``), one N tile group at a time.

    ``r_addr``/``r_en`` -> ``r_data``: the wide parameter store (``4*cols`` int32 per entry); ``poff``:
    the parameters' offset in the image, in words; ``group_done``: the issue of a group's last beat.
    """

    def __init__(self, *, config: ArrayConfig, depth_bits: int):
        self.config = check_config(config)
        C = config.cols
        super().__init__({
            "desc": In(stream.Signature(descriptor_layout("MATMUL"))),
            "r_addr": Out(depth_bits), "r_en": Out(1), "r_data": In(data.ArrayLayout(signed(32), 4 * C)),
            "poff": In(24), "group_done": In(1), "restart": In(1),
            "banks": Out(data.ArrayLayout(param_bank_layout(config), 2)),
        })

    @property
    def release_delay(self) -> int:
        """A group's last beat (its read) to its bank being free: ``array_latency + 2``; its last row meets
        the lanes ``array_latency + 4`` cycles after that read, the next fetch writes a cycle later."""
        return self.config.array_latency + 2

    def elaborate(self, platform):
        m = Module()
        c = self.config
        C = c.cols
        lge = exact_log2(4 * C)
        d_valid = Signal()
        mode, zp, qmin, qmax = Signal(MODE_BITS), Signal(signed(9)), Signal(signed(9)), Signal(signed(9))
        entry0 = Signal(unsigned(24))
        n_tiles, m_total, m_chunk = (Signal(unsigned(24), name=n) for n in ("n_tiles", "m_total", "m_chunk"))
        m_end = Signal(unsigned(25), name="m_end")        # the chunk's end: m0 + m_chunk, kept
        nt = Signal(unsigned(12))
        g = Signal()                                      # groups fetched, modulo 2 (the bank)
        held = Signal(range(-4, 4))                       # groups fetched and not yet released (<= 2)
        rel = delayed(m, self.group_done, self.release_delay, name="release")
        start = Signal()
        m.d.comb += start.eq(d_valid & (held < 2) & ~self.restart)
        m.d.sync += held.eq(held + start - rel)
        pending, pbank = Signal(), Signal()
        snap = Signal(data.StructLayout({"mode": MODE_BITS, "zp": signed(9), "qmin": signed(9), "qmax": signed(9)}))
        # the N test is a flag for the state after each step (starts may be back to back), set from the
        # descriptor at its accept, so the start is not behind its carry chain; the last chunk's test
        # stays a compare of registers (as ``WeightLoader``'s)
        n_more = Signal(name="n_more")
        with m.If(start):
            m.d.comb += [self.r_addr.eq(entry0 + nt), self.r_en.eq(1)]
            m.d.sync += [g.eq(~g), pending.eq(1), pbank.eq(g), snap.mode.eq(mode), snap.zp.eq(zp),
                         snap.qmin.eq(qmin), snap.qmax.eq(qmax)]
            last = Signal()
            with m.If(n_more):
                m.d.sync += [nt.eq(nt + 1), n_more.eq(nt + 2 < n_tiles)]
            with m.Else():
                m.d.sync += [nt.eq(0), n_more.eq(n_tiles > 1), m_end.eq(m_end + m_chunk)]
                m.d.comb += last.eq(m_end >= m_total)
                with m.If(last):
                    m.d.sync += d_valid.eq(0)
            m.d.comb += self.desc.ready.eq(last)
        with m.Else():
            m.d.sync += pending.eq(0)
        with m.If(~d_valid):
            m.d.comb += self.desc.ready.eq(1)
        with m.If(pending):
            for b in range(2):
                with m.If(pbank == b):
                    bk = self.banks[b]
                    m.d.sync += [bk.mode.eq(snap.mode), bk.zp.eq(snap.zp), bk.qmin.eq(snap.qmin), bk.qmax.eq(snap.qmax)]
                    for j in range(C):
                        m.d.sync += [bk.bias[j].eq(self.r_data[j]), bk.multiplier[j].eq(self.r_data[C + j]),
                                     bk.shift[j].eq(self.r_data[2 * C + j]), bk.scale[j].eq(self.r_data[3 * C + j])]
        with m.If(self.desc.valid & self.desc.ready):
            dp = self.desc.payload
            mt = logic_mul(dp.oh, dp.ow)
            m.d.sync += [d_valid.eq(1), mode.eq(dp.mode), zp.eq(dp.zp), qmin.eq(dp.qmin), qmax.eq(dp.qmax),
                         entry0.eq(((dp.p_base >> 2) - self.poff) >> lge), n_tiles.eq(dp.n_tiles), m_total.eq(mt),
                         m_chunk.eq(dp.m_chunk), nt.eq(0), m_end.eq(dp.m_chunk),
                         n_more.eq(dp.n_tiles > 1)]
        with m.If(self.restart):
            m.d.sync += [g.eq(0), held.eq(0), d_valid.eq(0)]
        return m
