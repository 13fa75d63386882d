"""``PoolAgen``: the taps of a standalone ``POOL`` descriptor, one scratchpad word per cycle.

docs/engine.md, "Pooling unit" and "Timing contract": a POOL reads its input one word per cycle,
output word by output word in the order the cycle model writes them (pixel ``(oy, ox)`` in raster
order, then channel word ``cw < cws``), each window's ``kh*kw`` taps in ONNX order (kernel row, then
column). Tap ``(ky, kx)`` of output ``(oy, ox, cw)`` reads

    y = oy*sh + ky - pt     x = ox*sw + kx - pl     word = in_base + (y*in_w + x)*in_pp + in_cw0 + cw

(``pad`` when outside: the pooling unit substitutes ``pool_qmin`` for a max and a zero for an
average), and the window's result goes to ``out_base + (oy*out_w + ox)*out_pp + out_cw0 + cw``. The
pools the compiler emits have no dilation (``dh = dw = 1``, as ``qhw.engine.model`` runs them).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...engine.isa import FIELDS
from ...errors import ConfigError
from ..logic_mul import logic_mul
from ..replica import replica_pair
from .fetch import ahead
from .layouts import descriptor_layout

__all__ = ["PoolAgen", "pool_tap_layout"]

ADDR_BITS = dict((n, w) for n, w, _ in FIELDS["POOL"])["in_base"]
_OFF = signed(ADDR_BITS + 3)
_POOL_K = dict((n, w) for n, w, _ in FIELDS["POOL"])["kh"]
_COORD = signed(18)


def pool_tap_layout() -> data.StructLayout:
    """One tap read: ``addr`` (or ``pad``), ``first``/``last`` of its window, ``count`` (the window's
    averaged taps so far, this one included: valid taps, or all with ``include_pad``; on the last tap
    it selects the pool table entry), the window's output word ``out_addr``, and ``done`` (the
    descriptor's last tap)."""
    return data.StructLayout({"addr": unsigned(ADDR_BITS), "pad": 1, "first": 1, "last": 1,
                              "count": unsigned(_POOL_K * 2), "out_addr": unsigned(ADDR_BITS), "done": 1})


class PoolAgen(wiring.Component):
    """POOL descriptors (``desc``) to ``taps``; a descriptor is accepted while idle or with the
    previous one's last tap. The ISA's field widths are built; ``settled``: the cycles (0, 1 or 2) every
    descriptor is offered before it is taken, as ``Im2colAgen``'s: with 1 the accept forms one product
    of registers, with 2 none (the pad rows' ``pt * (in_w*in_pp)`` and ``sh * (in_w*in_pp)`` ahead too)."""

    def __init__(self, *, settled: int = 0):
        if not isinstance(settled, int) or settled not in (0, 1, 2):
            raise ConfigError(f"settled must be 0, 1 or 2 (cycles), not {settled!r}")
        self.settled = settled
        super().__init__({
            "desc": In(stream.Signature(descriptor_layout("POOL"))),
            "taps": Out(stream.Signature(pool_tap_layout())),
            "busy": Out(1),
        })

    @property
    def latency(self) -> int:
        """Cycles from a descriptor's handshake to its first tap being valid: 1."""
        return 1

    def elaborate(self, platform):
        m = Module()
        dp = self.desc.payload
        d = Signal.like(dp, name="d")
        rs, d_oy, d_ox, d_opy = (Signal(_OFF, name=n) for n in ("rs", "d_oy", "d_ox", "d_opy"))
        oy, ox, cw, ky, kx = (Signal(unsigned(12), name=n) for n in ("oy", "ox", "cw", "ky", "kx"))
        yb, xb = Signal(_COORD), Signal(_COORD)         # window origin
        pixrow, pix = Signal(_OFF, name="pixrow"), Signal(_OFF, name="pix")
        orow, opix = Signal(_OFF), Signal(_OFF)         # output word of (oy, 0) and (oy, ox), cw 0
        # running sums, so each address is one addition: cb = in_base + in_cw0 + cw, rb = cb + taprow,
        # tb = cb + tap; ob = out_base + out_cw0 + cw (cb0, ob0: their values at cw 0)
        cb0, cb, rb, tb, ob0, ob = (Signal(_OFF, name=n) for n in ("cb0", "cb", "rb", "tb", "ob0", "ob"))

        y, x = yb + ky, xb + kx
        inside = (y >= 0) & (y < d.in_h) & (x >= 0) & (x < d.in_w)
        # the terminal tests are flags registered as the loops move (the descriptor's last tap is the read
        # side's ``ready``, so it decides the next descriptor's accept): a flag's value after a step is an
        # equality of registers with the bound minus two (``*_m2``) or the bound being one (``*_one``)
        names = ("kx", "ky", "cw", "ox", "oy")
        m2 = {n: Signal(signed(15), name=f"{n}_bound_m2") for n in names}
        one = {n: Signal(name=f"{n}_bound_one") for n in names}
        # the flags and ``busy`` with their copies for ``desc.ready`` alone (``qhw.hw.replica``): the originals
        # fan out to every loop register, the copies only into the read side's accept
        pairs = {n: replica_pair(Signal(), name=f"last_{n}") for n in names}
        lf, lf_r = ({n: p[i] for n, p in pairs.items()} for i in (0, 1))
        last_kx, last_ky, last_cw, last_ox, last_oy = (lf[n] for n in names)
        busy, busy_r = replica_pair(Signal(), name="busy")
        m.d.comb += self.busy.eq(busy)
        last_tap = last_kx & last_ky
        done = last_tap & last_cw & last_ox & last_oy
        t = self.taps.payload
        cnt = Signal(unsigned(_POOL_K * 2))          # taps averaged before this one in its window
        count = Mux((kx == 0) & (ky == 0), 0, cnt) + (inside | d.include_pad)
        m.d.comb += t.count.eq(count)
        m.d.comb += [self.taps.valid.eq(busy), t.addr.eq((pix + tb)[:ADDR_BITS]),
                     t.pad.eq(~inside), t.first.eq((kx == 0) & (ky == 0)), t.last.eq(last_tap),
                     t.out_addr.eq((opix + ob)[:ADDR_BITS]), t.done.eq(done)]

        def moves(n, v):            # loop ``n`` steps from ``v`` (to v + 1)
            return [lf[n].eq(v == m2[n]), lf_r[n].eq(v == m2[n])]

        def wraps(n):               # loop ``n`` back to 0
            return [lf[n].eq(one[n]), lf_r[n].eq(one[n])]
        with m.If(self.taps.valid & self.taps.ready):
            m.d.sync += cnt.eq(count)
            with m.If(~last_kx):
                m.d.sync += [kx.eq(kx + 1), tb.eq(tb + d.in_pp), moves("kx", kx)]
            with m.Elif(~last_ky):
                m.d.sync += [kx.eq(0), ky.eq(ky + 1), rb.eq(rb + rs), tb.eq(rb + rs), wraps("kx"), moves("ky", ky)]
            with m.Else():
                m.d.sync += [kx.eq(0), ky.eq(0), wraps("kx"), wraps("ky")]
                with m.If(~last_cw):
                    m.d.sync += [cw.eq(cw + 1), ob.eq(ob + 1), moves("cw", cw)] + [r.eq(cb + 1) for r in (cb, rb, tb)]
                with m.Else():
                    m.d.sync += [cw.eq(0), ob.eq(ob0), wraps("cw")] + [r.eq(cb0) for r in (cb, rb, tb)]
                    with m.If(~last_ox):
                        m.d.sync += [ox.eq(ox + 1), xb.eq(xb + d.sw), pix.eq(pix + d_ox), opix.eq(opix + d.out_pp),
                                     moves("ox", ox)]
                    with m.Else():
                        m.d.sync += [ox.eq(0), oy.eq(oy + 1), yb.eq(yb + d.sh), xb.eq(-d.pl), wraps("ox"),
                                     moves("oy", oy),
                                     pixrow.eq(pixrow + d_oy), pix.eq(pixrow + d_oy),
                                     orow.eq(orow + d_opy), opix.eq(orow + d_opy)]
                        with m.If(last_oy):
                            m.d.sync += [busy.eq(0), busy_r.eq(0)]

        done_r = lf_r["kx"] & lf_r["ky"] & lf_r["cw"] & lf_r["ox"] & lf_r["oy"]
        m.d.comb += self.desc.ready.eq(~busy_r | (self.taps.ready & done_r))
        st = self.settled
        r = ahead(m, logic_mul(dp.in_w, dp.in_pp, m=m, name="row"), settled=st >= 1, name="row")
        pad_cols = ahead(m, logic_mul(dp.pl, dp.in_pp, m=m, name="pad_cols"), settled=st >= 1, name="pad_cols")
        a_ox = ahead(m, logic_mul(dp.sw, dp.in_pp, m=m, name="d_ox"), settled=st >= 1, name="d_ox")
        a_opy = ahead(m, logic_mul(dp.out_w, dp.out_pp, m=m, name="d_opy"), settled=st >= 1, name="d_opy")
        pad_rows = ahead(m, logic_mul(dp.pt, r, m=m, name="pad_rows"), settled=st >= 2, name="pad_rows")
        a_oy = ahead(m, logic_mul(dp.sh, r, m=m, name="d_oy"), settled=st >= 2, name="d_oy")
        with m.If(self.desc.valid & self.desc.ready):
            pix0 = -pad_rows - pad_cols
            m.d.sync += [d.eq(dp), rs.eq(r), d_oy.eq(a_oy),
                         d_ox.eq(a_ox), d_opy.eq(a_opy),
                         oy.eq(0), ox.eq(0), cw.eq(0), ky.eq(0), kx.eq(0),
                         yb.eq(-dp.pt), xb.eq(-dp.pl), pixrow.eq(pix0), pix.eq(pix0),
                         orow.eq(0), opix.eq(0), busy.eq(1), busy_r.eq(1)]
            for n, bound in zip(names, (dp.kw, dp.kh, dp.cws, dp.ow, dp.oh)):
                m.d.sync += [m2[n].eq(bound - 2), one[n].eq(bound == 1), lf[n].eq(bound == 1), lf_r[n].eq(bound == 1)]
            m.d.sync += [r.eq(dp.in_base + dp.in_cw0) for r in (cb0, cb, rb, tb)]
            m.d.sync += [r.eq(dp.out_base + dp.out_cw0) for r in (ob0, ob)]
        return m
