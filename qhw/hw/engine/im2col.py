"""``Im2colAgen``: the scratchpad word of every activation beat of a MATMUL descriptor, one per cycle.

docs/engine.md, "im2col address generation": the loop nest is ``mc`` (M chunks of ``m_chunk``
output pixels), ``nt`` (N tiles), ``kt`` (K tiles: channel word outer, then kernel row, then kernel
column; one per kernel row for a window-layout input), ``m`` (the chunk's pixels in raster order),
and the beat of ``(nt, kt, m)`` reads

    y = oy*sh + ky*dh - pt      x = ox*sw + kx*dw - pl      cw = in_cw0 + nt*cw_step + cwi
    word = in_base + (y*in_w + x)*in_pp + cw       (pad: y or x outside the input)

(window layout: ``word = in_base + y*in_w + ox``, only ``y`` checked). The hardware has no
multiplier in the loop: the products by ``in_w*in_pp`` are strides computed once when the descriptor
is accepted, and every counter moves by additions, so one address leaves per cycle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...engine.isa import FIELDS, IN_WINDOW
from ...errors import ConfigError
from ..logic_mul import logic_mul
from ..replica import replica_pair
from .fetch import ahead
from .layouts import descriptor_layout

__all__ = ["AGEN_LATENCY", "Im2colAgen", "beat_layout"]

ADDR_BITS = dict((n, w) for n, w, _ in FIELDS["MATMUL"])["in_base"]   # scratchpad word address
_OFF = ADDR_BITS + 3     # offsets wrap modulo 2**_OFF: a valid word's sum is exact in its low ADDR_BITS
AGEN_LATENCY = 1         # descriptor handshake to its first beat (the loop registers)
_COORD = signed(18)      # y, x: (4095 * 15 + 255 * 15) fits 17 bits + sign


def beat_layout() -> data.StructLayout:
    """One generated beat: the word, ``pad`` (inject the zero point ``zp``, the descriptor's ``in_zp``,
    instead of reading), the loop position the issuer and write-back need (``nt``, ``last_k``: the tile
    is the N tile's last K tile, ``last_nt``: the chunk's last N tile, a registered flag), ``tile_last``
    (last beat of its tile) and ``last`` (the descriptor's last beat)."""
    return data.StructLayout({
        "addr": unsigned(ADDR_BITS), "pad": 1, "zp": signed(16), "nt": unsigned(12),
        "last_k": 1, "tile_last": 1, "last": 1, "last_nt": 1,
    })


class Im2colAgen(wiring.Component):
    """Turns MATMUL descriptors (``desc`` stream, ``descriptor_layout("MATMUL")``) into ``beats``.

    A descriptor is accepted while idle or with the previous one's last beat, so consecutive
    descriptors' beats follow each other with no gap (the timing contract's back-to-back tiles).
    The ISA's field widths are built. ``settled``: every descriptor is offered at least a cycle before
    it is taken (``fetch.ahead``), so the accept forms one product of registers, not two chained.
    ``ready_copy``: ``desc.ready`` reads the consumer's copy of ``beats.ready`` (port ``ready_r``, formed
    from its replica registers and this unit's ``last_k_r``) instead of ``beats.ready`` itself.
    """

    def __init__(self, *, settled: bool = False, ready_copy: bool = False):
        for name, v in (("settled", settled), ("ready_copy", ready_copy)):
            if not isinstance(v, bool):
                raise ConfigError(f"{name} must be a bool, not {v!r}")
        self.settled, self.ready_copy = settled, ready_copy
        ports = {
            "desc": In(stream.Signature(descriptor_layout("MATMUL"))),
            "beats": Out(stream.Signature(beat_layout())),
            "busy": Out(1),
        }
        if ready_copy:
            # the consumer's own copy of ``beats.ready`` (from its replica registers) for ``desc.ready``
            # alone, and this unit's copy of ``beats.payload.last_k`` to form it: the step's fan-out and
            # the accept's start from different flip-flops
            ports.update({"ready_r": In(1), "last_k_r": Out(1)})
        super().__init__(ports)

    @property
    def latency(self) -> int:
        """Cycles from a descriptor's handshake to its first beat being valid: 1 (the loop registers;
        the address is their sum, combinational, registered by the scratchpad read that follows)."""
        return AGEN_LATENCY

    def elaborate(self, platform):
        m = Module()
        dp = self.desc.payload
        d = Signal.like(dp, name="d")               # the running descriptor
        off = signed(_OFF)

        # per-descriptor constants (strides), computed from the incoming descriptor at its handshake
        win = dp.in_kind == IN_WINDOW
        c_rs, c_dox, c_dkx, c_doy, c_dky = (Signal(off, name=n) for n in ("rs", "d_ox", "d_kx", "d_oy", "d_ky"))
        c_cwstep, c_x0 = Signal(off, name="cw_step_e"), Signal(_COORD, name="x0")
        c_m = Signal(unsigned(24), name="m_total")
        pp = Mux(win, 1, dp.in_pp)
        st = self.settled
        # the first level of products (a cycle ahead when settled), then one product each at the accept
        rs = ahead(m, logic_mul(dp.in_w, pp), settled=st, name="rs")
        m_all = ahead(m, logic_mul(dp.oh, dp.ow), settled=st, name="m_all")
        pad_cols = ahead(m, Mux(win, 0, logic_mul(dp.pl, dp.in_pp)), settled=st, name="pad_cols")
        on_desc = [
            c_rs.eq(rs), c_dox.eq(ahead(m, Mux(win, 1, logic_mul(dp.sw, dp.in_pp)), settled=st, name="d_ox")),
            c_dkx.eq(ahead(m, logic_mul(dp.dw, dp.in_pp), settled=st, name="d_kx")),
            c_doy.eq(logic_mul(dp.sh, rs)), c_dky.eq(logic_mul(dp.dh, rs)),
            c_cwstep.eq(Mux(win, 0, dp.cw_step)),
            c_x0.eq(Mux(win, 0, -dp.pl)), c_m.eq(m_all), d.eq(dp),
        ]
        xcheck = Signal(name="xcheck")               # window inputs hold horizontal padding in the words
        on_desc.append(xcheck.eq(~win))

        # pixel state (current beat) and its copy at the chunk start
        def pixel(prefix):
            return dict(m=Signal(unsigned(24), name=f"{prefix}m"), oy=Signal(unsigned(12), name=f"{prefix}oy"),
                        ox=Signal(unsigned(12), name=f"{prefix}ox"), yb=Signal(_COORD, name=f"{prefix}yb"),
                        xb=Signal(_COORD, name=f"{prefix}xb"), pix=Signal(off, name=f"{prefix}pix"),
                        pixrow=Signal(off, name=f"{prefix}pixrow"))
        cur, start = pixel("cur_"), pixel("chunk_")
        chunk_end = Signal(unsigned(24))
        # the terminal tests are flags, registered as their loops move (the step they decide enables every
        # loop register and, on a descriptor's last beat, the next descriptor's accept): each flag's value
        # after a step is an equality of registers with the bound minus two (``*_m2``), or the loop's
        # bound being one (``*_one``), formed beside the step, not behind it
        chunk_end_m2, nt_m2 = Signal(signed(26), name="chunk_end_m2"), Signal(signed(14), name="nt_m2")
        kw_m2, kh_m2, kcw_m2 = (Signal(signed(10), name=n) for n in ("kw_m2", "kh_m2", "kcw_m2"))
        kw_one, kh_one, kcw_one, nt_one = (Signal(name=n) for n in ("kw_one", "kh_one", "kcw_one", "nt_one"))
        m_one, c_m_m1 = Signal(name="m_chunk_one"), Signal(signed(25), name="m_total_m1")
        chunk_one = Signal(name="chunk_one")         # the current M chunk has one pixel
        # the terminal flags and their copies for ``desc.ready`` alone (``qhw.hw.replica``): the originals fan
        # out to every loop register, the copies only into the read side's accept
        pairs = {n: replica_pair(Signal(), name=n)
                 for n in ("last_m", "last_kx", "last_ky", "last_cwi", "last_nt", "last_chunk")}
        last_m, last_kx, last_ky, last_cwi, last_nt, last_chunk = (f for f, _ in pairs.values())
        copy = {n: c for n, (_, c) in pairs.items()}
        # tile state
        nt, cwi = Signal(unsigned(12)), Signal(unsigned(8))
        ky, kx = Signal(unsigned(8)), Signal(unsigned(8))
        kyd, kxd = Signal(_COORD), Signal(_COORD)
        # the tile's word offsets, kept as running sums so the beat's address is one addition (``pix + tb``):
        # nb = in_base + cwb (N tile), kb = nb + cwi (channel word), rb = kb + taprow (kernel row),
        # tb = rb + tap (kernel tap); each moves by one addition when its loop moves
        nb0, nb, kb, rb, tb = (Signal(off, name=n) for n in ("nb0", "nb", "kb", "rb", "tb"))

        run, run_r = replica_pair(Signal(), name="run")
        m.d.comb += self.busy.eq(run)

        def both(flag, value):
            return [flag.eq(value), copy[flag.name].eq(value)]
        y, x = Signal(_COORD), Signal(_COORD)
        m.d.comb += [y.eq(cur["yb"] + kyd), x.eq(cur["xb"] + kxd)]
        inside = (y >= 0) & (y < d.in_h) & (~xcheck | ((x >= 0) & (x < d.in_w)))
        addr = Signal(off)
        m.d.comb += addr.eq(cur["pix"] + tb)

        last_k = last_kx & last_ky & last_cwi
        last = last_m & last_k & last_nt & last_chunk
        b = self.beats.payload
        m.d.comb += [self.beats.valid.eq(run), b.addr.eq(addr[:ADDR_BITS]), b.pad.eq(~inside), b.zp.eq(d.in_zp),
                     b.nt.eq(nt),
                     b.last_k.eq(last_k), b.tile_last.eq(last_m), b.last.eq(last),
                     b.last_nt.eq(last_nt)]

        # the pixel after the current one (raster order)
        nxt = {k: Signal.like(v, name=f"next_{k}") for k, v in cur.items()}
        m.d.comb += [nxt[k].eq(v) for k, v in cur.items()]
        m.d.comb += nxt["m"].eq(cur["m"] + 1)
        with m.If(cur["ox"] + 1 == d.ow):
            m.d.comb += [nxt["ox"].eq(0), nxt["oy"].eq(cur["oy"] + 1), nxt["yb"].eq(cur["yb"] + d.sh),
                         nxt["xb"].eq(c_x0), nxt["pixrow"].eq(cur["pixrow"] + c_doy),
                         nxt["pix"].eq(cur["pixrow"] + c_doy)]
        with m.Else():
            m.d.comb += [nxt["ox"].eq(cur["ox"] + 1), nxt["xb"].eq(cur["xb"] + d.sw),
                         nxt["pix"].eq(cur["pix"] + c_dox)]

        step = self.beats.valid & self.beats.ready
        with m.If(step):
            with m.If(~last_m):
                m.d.sync += [cur[k].eq(nxt[k]) for k in cur]
                m.d.sync += both(last_m, cur["m"] == chunk_end_m2)
            with m.Else():
                m.d.sync += [cur[k].eq(start[k]) for k in cur]       # the next tile re-reads the chunk
                m.d.sync += both(last_m, chunk_one)
                with m.If(~last_kx):
                    m.d.sync += [kx.eq(kx + 1), kxd.eq(kxd + d.dw), tb.eq(tb + c_dkx), both(last_kx, kx == kw_m2)]
                with m.Else():
                    m.d.sync += [kx.eq(0), kxd.eq(0), both(last_kx, kw_one)]
                    with m.If(~last_ky):
                        m.d.sync += [ky.eq(ky + 1), kyd.eq(kyd + d.dh), rb.eq(rb + c_dky), tb.eq(rb + c_dky),
                                     both(last_ky, ky == kh_m2)]
                    with m.Else():
                        m.d.sync += [ky.eq(0), kyd.eq(0), both(last_ky, kh_one)]
                        with m.If(~last_cwi):
                            m.d.sync += [cwi.eq(cwi + 1), kb.eq(kb + 1), rb.eq(kb + 1), tb.eq(kb + 1),
                                         both(last_cwi, cwi == kcw_m2)]
                        with m.Else():
                            m.d.sync += [cwi.eq(0), both(last_cwi, kcw_one)]
                            with m.If(~last_nt):
                                m.d.sync += [nt.eq(nt + 1), both(last_nt, nt == nt_m2)]
                                m.d.sync += [r.eq(nb + c_cwstep) for r in (nb, kb, rb, tb)]
                            with m.Else():          # next M chunk (or the end)
                                m.d.sync += [nt.eq(0), both(last_nt, nt_one)] + [r.eq(nb0) for r in (nb, kb, rb, tb)]
                                m.d.sync += [cur[k].eq(nxt[k]) for k in cur]
                                m.d.sync += [start[k].eq(nxt[k]) for k in cur]
                                next_end = Mux(chunk_end + d.m_chunk > c_m, c_m, chunk_end + d.m_chunk)
                                # the next chunk holds min(m_chunk, m_total - chunk_end) pixels
                                one = m_one | (chunk_end == c_m_m1)
                                m.d.sync += [chunk_end.eq(next_end), chunk_end_m2.eq(next_end - 2),
                                             both(last_chunk, chunk_end + d.m_chunk >= c_m), both(last_m, one),
                                             chunk_one.eq(one)]
                                with m.If(last_chunk):
                                    m.d.sync += [run.eq(0), run_r.eq(0)]

        # a new descriptor: idle, or with the last beat of the running one
        last_r = (copy["last_m"] & copy["last_kx"] & copy["last_ky"] & copy["last_cwi"] & copy["last_nt"]
                  & copy["last_chunk"])
        ready = self.beats.ready
        if self.ready_copy:
            ready = self.ready_r
            m.d.comb += self.last_k_r.eq(copy["last_kx"] & copy["last_ky"] & copy["last_cwi"])
        m.d.comb += self.desc.ready.eq(~run_r | (ready & last_r))
        # the descriptor's constants load whenever one could be taken (idle, or the last beat), taken or not
        # (when not, ``run`` falls and nothing reads them), so their enable is ``desc.ready``, not the accept:
        # the accept's fan-out is the loop state's alone
        base0 = dp.in_base + Mux(win, 0, dp.in_cw0)
        kw1, kcw1 = win | (dp.kw == 1), win | (dp.kcw == 1)
        with m.If(self.desc.ready):
            m.d.sync += on_desc
            m.d.sync += [nb0.eq(base0), kw_m2.eq(Mux(win, -1, dp.kw - 2)), kh_m2.eq(dp.kh - 2),
                         kcw_m2.eq(Mux(win, -1, dp.kcw - 2)), nt_m2.eq(dp.n_tiles - 2), kw_one.eq(kw1),
                         kh_one.eq(dp.kh == 1), kcw_one.eq(kcw1), nt_one.eq(dp.n_tiles == 1), m_one.eq(dp.m_chunk == 1),
                         c_m_m1.eq(m_all - 1)]
        with m.If(self.desc.valid & self.desc.ready):
            yb0, xb0 = -dp.pt, Mux(win, 0, -dp.pl)
            pix0 = -logic_mul(dp.pt, rs) - pad_cols
            init = dict(m=0, oy=0, ox=0, yb=yb0, xb=xb0, pix=pix0, pixrow=pix0)
            m.d.sync += [cur[k].eq(v) for k, v in init.items()] + [start[k].eq(v) for k, v in init.items()]
            m.d.sync += [nt.eq(0), cwi.eq(0), ky.eq(0), kx.eq(0), kyd.eq(0), kxd.eq(0)]
            m.d.sync += [r.eq(base0) for r in (nb, kb, rb, tb)]
            first_end = Mux(dp.m_chunk > m_all, m_all, dp.m_chunk)
            one = (dp.m_chunk == 1) | (m_all == 1)
            m.d.sync += [chunk_end.eq(first_end), chunk_end_m2.eq(first_end - 2), run.eq(1), run_r.eq(1),
                         chunk_one.eq(one), both(last_m, one), both(last_kx, kw1), both(last_ky, dp.kh == 1),
                         both(last_cwi, kcw1), both(last_nt, dp.n_tiles == 1), both(last_chunk, dp.m_chunk >= m_all)]
        return m
