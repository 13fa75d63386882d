"""``WritebackAgen``: where each result row of a MATMUL descriptor lands in the scratchpad.

docs/engine.md, "Write-back": result rows come in the issue order of the last K tiles (M chunk, N
tile, pixel in raster order); the row of pixel ``(oy, ox)``, N tile ``nt`` goes to

    word = out_base + (py*out_w + px)*out_pp + out_cw0 + (nt*cols) // rows,   lanes (nt*cols) % rows ...

with ``(py, px) = (oy // pkh, ox // pkw)`` under a fused pool (``(oy, ox)`` without one). Rows of a
pool's partial last window are dropped (``keep`` low); a fused pool writes only on its window's last
row (``win_last``) and starts its line-buffer entry ``px`` on the first (``win_first``). As the
im2col generator, only additions in the loop.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...engine.isa import FIELDS, POOL_NONE
from ...errors import ConfigError
from ..logic_mul import logic_mul
from ..replica import replica_pair
from .fetch import ahead
from .layouts import descriptor_layout

__all__ = ["WritebackAgen", "row_layout"]

ADDR_BITS = dict((n, w) for n, w, _ in FIELDS["MATMUL"])["out_base"]
_OFF = ADDR_BITS + 3          # offsets wrap modulo 2**_OFF; kept words are exact in the low ADDR_BITS


def row_layout(rows: int) -> data.StructLayout:
    """One result row's destination: word ``addr``, first lane ``lane``, ``keep`` (written at all),
    the fused pool's line-buffer entry ``px`` and window flags, and ``last`` (the descriptor's last row)."""
    return data.StructLayout({"addr": unsigned(ADDR_BITS), "lane": range(rows), "keep": 1, "px": unsigned(12),
                              "win_first": 1, "win_last": 1, "last": 1})


class WritebackAgen(wiring.Component):
    """MATMUL descriptors (``desc``) to one ``dest`` per result row, one per cycle.

    Parameters
    ----------
    rows, cols:
        The array: a scratchpad word has ``rows`` lanes, a result row ``cols`` (``cols`` divides ``rows``).
    settled:
        Every descriptor is offered a cycle before it is taken: its products are formed a cycle ahead
        (``fetch.ahead``).
    """

    def __init__(self, *, rows: int, cols: int, settled: bool = False):
        if not isinstance(settled, bool):
            raise ConfigError(f"settled must be a bool, not {settled!r}")
        self.settled = settled
        for name, v in (("rows", rows), ("cols", cols)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, not {v!r}")
        if rows % cols:
            raise ConfigError(f"cols must divide rows, not {rows}x{cols}")
        self.rows, self.cols = rows, cols
        super().__init__({
            "desc": In(stream.Signature(descriptor_layout("MATMUL"))),
            "dest": Out(stream.Signature(row_layout(rows))),
            "busy": Out(1),
        })

    @property
    def latency(self) -> int:
        """Cycles from a descriptor's handshake to its first ``dest`` being valid: 1."""
        return 1

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        dp = self.desc.payload
        d = Signal.like(dp, name="d")
        off = unsigned(_OFF)
        pooled = dp.pool != POOL_NONE
        d_py = Signal(off)                        # out_w * out_pp: one pooled row
        m_total = Signal(unsigned(24))

        def pixel(prefix):
            return dict(m=Signal(unsigned(24), name=f"{prefix}m"), oy=Signal(unsigned(12), name=f"{prefix}oy"),
                        ox=Signal(unsigned(12), name=f"{prefix}ox"), ry=Signal(unsigned(8), name=f"{prefix}ry"),
                        rx=Signal(unsigned(8), name=f"{prefix}rx"), py=Signal(unsigned(12), name=f"{prefix}py"),
                        px=Signal(unsigned(12), name=f"{prefix}px"), pix=Signal(off, name=f"{prefix}pix"),
                        prow=Signal(off, name=f"{prefix}prow"))
        cur, start = pixel("cur_"), pixel("chunk_")
        chunk_end = Signal(unsigned(24))
        nt = Signal(unsigned(12))
        # bounds minus one: the pixel's terminal tests are equalities of registers, no adder in front of ``step``
        ow_m1 = Signal(signed(13))
        pkh_m1, pkw_m1 = Signal(signed(9)), Signal(signed(9))
        # the chunk's and the N tiles' terminal tests are flags registered as the loops move (the last row's
        # step is the write-back's ``ready``, into the next accept), as in ``Im2colAgen``
        chunk_end_m2, nt_m2 = Signal(signed(26), name="chunk_end_m2"), Signal(signed(14), name="nt_m2")
        nt_one, m_one, chunk_one = Signal(name="nt_one"), Signal(name="m_chunk_one"), Signal(name="chunk_one")
        m_total_m1 = Signal(signed(25), name="m_total_m1")
        # the flags and their copies for ``desc.ready`` alone (``qhw.hw.replica``), as in ``Im2colAgen``
        pairs = {n: replica_pair(Signal(), name=n) for n in ("last_m", "last_nt", "last_chunk")}
        last_m, last_nt, last_chunk = (f for f, _ in pairs.values())
        copy = {n: c for n, (_, c) in pairs.items()}
        lane = Signal(range(R))
        woff = Signal(off)                        # (nt * cols) // rows

        run, run_r = replica_pair(Signal(), name="run")
        m.d.comb += self.busy.eq(run)

        def both(flag, value):
            return [flag.eq(value), copy[flag.name].eq(value)]
        keep = (cur["py"] < d.out_h) & (cur["px"] < d.out_w)
        last = last_m & last_nt & last_chunk
        o = self.dest.payload
        m.d.comb += [self.dest.valid.eq(run), o.addr.eq((cur["pix"] + woff)[:ADDR_BITS]), o.lane.eq(lane),
                     o.keep.eq(keep), o.px.eq(cur["px"]), o.win_first.eq((cur["ry"] == 0) & (cur["rx"] == 0)),
                     o.win_last.eq((cur["ry"] == pkh_m1) & (cur["rx"] == pkw_m1)), o.last.eq(last)]

        nxt = {k: Signal.like(v, name=f"next_{k}") for k, v in cur.items()}
        m.d.comb += [nxt[k].eq(v) for k, v in cur.items()] + [nxt["m"].eq(cur["m"] + 1)]
        with m.If(cur["ox"] == ow_m1):              # next output row: back to column 0
            m.d.comb += [nxt["ox"].eq(0), nxt["rx"].eq(0), nxt["px"].eq(0), nxt["oy"].eq(cur["oy"] + 1)]
            with m.If(cur["ry"] == pkh_m1):         # next pooled row
                m.d.comb += [nxt["ry"].eq(0), nxt["py"].eq(cur["py"] + 1), nxt["prow"].eq(cur["prow"] + d_py),
                             nxt["pix"].eq(cur["prow"] + d_py)]
            with m.Else():
                m.d.comb += [nxt["ry"].eq(cur["ry"] + 1), nxt["pix"].eq(cur["prow"])]
        with m.Else():
            m.d.comb += nxt["ox"].eq(cur["ox"] + 1)
            with m.If(cur["rx"] == pkw_m1):
                m.d.comb += [nxt["rx"].eq(0), nxt["px"].eq(cur["px"] + 1), nxt["pix"].eq(cur["pix"] + d.out_pp)]
            with m.Else():
                m.d.comb += nxt["rx"].eq(cur["rx"] + 1)

        step = self.dest.valid & self.dest.ready
        with m.If(step):
            with m.If(~last_m):
                m.d.sync += [cur[k].eq(nxt[k]) for k in cur]
                m.d.sync += both(last_m, cur["m"] == chunk_end_m2)
            with m.Elif(~last_nt):                   # the next N tile re-writes the chunk's pixels
                m.d.sync += [cur[k].eq(start[k]) for k in cur]
                m.d.sync += [nt.eq(nt + 1), both(last_nt, nt == nt_m2), both(last_m, chunk_one)]
                if C == R:
                    m.d.sync += woff.eq(woff + 1)
                else:
                    with m.If(lane + C == R):
                        m.d.sync += [lane.eq(0), woff.eq(woff + 1)]
                    with m.Else():
                        m.d.sync += lane.eq(lane + C)
            with m.Else():                           # the next M chunk, or the end
                m.d.sync += [cur[k].eq(nxt[k]) for k in cur] + [start[k].eq(nxt[k]) for k in cur]
                next_end = Mux(chunk_end + d.m_chunk > m_total, m_total, chunk_end + d.m_chunk)
                one = m_one | (chunk_end == m_total_m1)     # the next chunk: min(m_chunk, m_total - chunk_end)
                m.d.sync += [nt.eq(0), lane.eq(0), woff.eq(0), chunk_end.eq(next_end), chunk_end_m2.eq(next_end - 2),
                             both(last_nt, nt_one), both(last_m, one), chunk_one.eq(one),
                             both(last_chunk, chunk_end + d.m_chunk >= m_total)]
                with m.If(last_chunk):
                    m.d.sync += [run.eq(0), run_r.eq(0)]

        last_r = copy["last_m"] & copy["last_nt"] & copy["last_chunk"]
        m.d.comb += self.desc.ready.eq(~run_r | (self.dest.ready & last_r))
        m_all = ahead(m, logic_mul(dp.oh, dp.ow), settled=self.settled, name="m_all")
        a_py = ahead(m, logic_mul(dp.out_w, dp.out_pp), settled=self.settled, name="d_py")
        with m.If(self.desc.valid & self.desc.ready):
            base = dp.out_base + dp.out_cw0
            init = dict(m=0, oy=0, ox=0, ry=0, rx=0, py=0, px=0, pix=base, prow=base)
            m.d.sync += [cur[k].eq(v) for k, v in init.items()] + [start[k].eq(v) for k, v in init.items()]
            first_end = Mux(dp.m_chunk > m_all, m_all, dp.m_chunk)
            one = (dp.m_chunk == 1) | (m_all == 1)
            m.d.sync += [d.eq(dp), d_py.eq(a_py), m_total.eq(m_all), nt.eq(0), lane.eq(0),
                         woff.eq(0), chunk_end.eq(first_end), chunk_end_m2.eq(first_end - 2), run.eq(1), run_r.eq(1),
                         nt_m2.eq(dp.n_tiles - 2), nt_one.eq(dp.n_tiles == 1), both(last_nt, dp.n_tiles == 1),
                         m_one.eq(dp.m_chunk == 1), m_total_m1.eq(m_all - 1), chunk_one.eq(one), both(last_m, one),
                         both(last_chunk, dp.m_chunk >= m_all), ow_m1.eq(dp.ow - 1),
                         pkh_m1.eq(Mux(pooled, dp.pkh - 1, 0)), pkw_m1.eq(Mux(pooled, dp.pkw - 1, 0))]
        return m
