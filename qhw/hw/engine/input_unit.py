"""``InputUnit``: an INPUT descriptor's host beats (``rows`` dense int8 bytes, channels fastest) into
scratchpad words, one word per cycle (docs/engine.md, "Activation scratchpad" and "Timing contract").

Word ``i`` goes to ``out_base + i``. Its lane ``l`` takes stream byte ``s + off[l]`` (or the zero
point): standard layout, word ``k`` of pixel ``p``: ``s = p*c + k*rows``, ``off[l] = l``, valid while
``k*rows + l < c``; window layout, word ``j`` of row ``y``: ``x0 = j*sw - pl``, ``s = (y*w + x0)*c``,
lane ``l = g*cp + ch`` has ``off[l] = g*c + ch``, valid while ``ch < c`` and ``0 <= x0 + g < w``. The
unit keeps the last three beats it took and the one in its input register, so a word (at most
``rows`` bytes) is always inside them; it takes a beat when a word needs it (so the host is never
asked ahead) and, after the last word, the tensor's unused trailing beats.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ...engine.isa import IN_WINDOW
from ...errors import ConfigError
from ..logic_mul import logic_mul
from ..replica import replica
from .layouts import descriptor_layout

__all__ = ["InputUnit", "word_write_layout"]

_S = signed(32)
PREP_CYCLES = 3          # accept -> d, h*w; -> the products; -> beats_total's rounding; -> running


def word_write_layout(rows: int, addr_bits: int) -> data.StructLayout:
    """A whole-word scratchpad write: ``addr`` and ``rows`` int8 lanes."""
    return data.StructLayout({"addr": unsigned(addr_bits), "data": data.ArrayLayout(signed(8), rows)})


class InputUnit(wiring.Component):
    """INPUT descriptors (``desc``) and host beats (``i``) to whole-word writes (``w``, valid = enable).

    ``idle_ready``: ``i.ready`` while no beat is held (``setup`` and an empty input register), a register
    term; the engine takes an inference's first beat on it, so that beat's ``go`` stays shallow.

    Parameters
    ----------
    rows:
        Bytes per beat and lanes per word (a power of two).
    addr_bits:
        Scratchpad word address width.
    """

    def __init__(self, *, rows: int, addr_bits: int):
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 2 or rows & (rows - 1):
            raise ConfigError(f"rows must be a power of two of at least 2, not {rows!r}")
        self.rows, self.addr_bits = rows, addr_bits
        super().__init__({
            "desc": In(stream.Signature(descriptor_layout("INPUT"))),
            "i": In(stream.Signature(unsigned(8 * rows))),
            "w": Out(stream.Signature(word_write_layout(rows, addr_bits), always_ready=True)),
            "busy": Out(1), "idle_ready": Out(1),
        })

    @property
    def latency(self) -> int:
        """A beat's handshake to the first word it completes being written: 2 (``input_latency``)."""
        return 2

    def elaborate(self, platform):
        m = Module()
        R = self.rows
        lg = exact_log2(R)
        d = Signal(descriptor_layout("INPUT"))
        # the layout, registered at the accept (not decoded from ``d.kind`` where it is used): one copy for
        # the word plan's lanes, one for the rest (``qhw.hw.replica``: Yosys would merge equal registers)
        win, win_plan = replica(Signal(), name="win"), replica(Signal(), name="win_plan")
        off = [Signal(_S, name=f"off{lane}") for lane in range(R)]      # per-lane byte offset (standard: lane)
        grp = [Signal(unsigned(8), name=f"g{lane}") for lane in range(R)]
        chv = [Signal(name=f"chv{lane}") for lane in range(R)]           # ch < c
        rowc, wc, swc = Signal(_S), Signal(_S), Signal(_S)                # y*w*c, w*c, sw*c
        s = Signal(_S)
        # per lane: its column ``x0 + g`` (window) and, standard layout, ``c - k*rows`` (channels from word k
        # on): kept as registers moving with ``x0`` and ``k``, so a lane's valid test has no adder
        xg = [Signal(_S, name=f"xg{lane}") for lane in range(R)]
        cleft = Signal(signed(18), name="cleft")
        # and each lane's valid test on them, registered with them: ``0 <= xg < w`` (window), ``cleft > lane``
        xin = [Signal(name=f"xin{lane}") for lane in range(R)]
        cgt = [Signal(name=f"cgt{lane}") for lane in range(R)]
        j, k = Signal(unsigned(16)), Signal(unsigned(16))                 # word in row / pixel, pixel or row
        j_last, k_last = Signal(name="j_last"), Signal(name="k_last")     # j + 1 == wpos, k + 1 == pp
        i_word, n_words = Signal(unsigned(32), name="i_word"), Signal(unsigned(32), name="n_words")
        beats_total = Signal(unsigned(32))
        nb = Signal(unsigned(32))                                         # beats taken into buf
        left = Signal(signed(34), name="left")                            # beats_total - nb
        hw = Signal(unsigned(24), name="hw")                              # h*w, from the offered fields
        hwc = Signal(unsigned(40), name="hwc")                            # h*w*c (bytes in the tensor)
        hwpos = Signal(unsigned(24), name="hwpos")                        # h*wpos (window: words per tensor)
        plc = Signal(unsigned(24), name="plc")
        bbase = Signal(_S)                                                # byte index of buf[0] = (nb-3)*R
        buf = Signal(unsigned(8 * 3 * R))
        ib, ib_valid = Signal(unsigned(8 * R)), Signal()
        run, drain = Signal(name="run"), Signal(name="drain")
        setup = Signal()
        prep = Signal(range(PREP_CYCLES + 1))
        prep_last = Signal(name="prep_last")                              # prep == 1

        # The position registers (s, xg, cleft, j, k, rowc) run one word ahead of the word being written
        # (i_word): the next word's plan (lane sources, valid lanes, the last beat it needs, and that beat
        # against nb) is formed from them and registered when a word is written, so the handshake and the
        # unit's control read flags, not the byte arithmetic (a lane column, a priority tree and a 32-bit
        # compare in series were the engine's critical path, docs/fpga.md).
        src = [Signal(_S, name=f"src{lane}") for lane in range(R)]
        valid = [Signal(name=f"lv{lane}") for lane in range(R)]
        for lane in range(R):
            m.d.comb += [src[lane].eq(s + off[lane]),
                         valid[lane].eq(Mux(win_plan, chv[lane] & xin[lane], cgt[lane]))]
        # the last beat the word needs: the highest valid lane's (a lane's source byte grows with the lane
        # among the valid ones), -1 if none; a balanced priority tree, not a chain of compares
        def highest(lanes):
            if len(lanes) == 1:
                return valid[lanes[0]], src[lanes[0]] >> lg
            half = len(lanes) // 2
            (lo_any, lo), (hi_any, hi) = highest(lanes[:half]), highest(lanes[half:])
            return lo_any | hi_any, Mux(hi_any, hi, lo)
        need = Signal(_S)
        any_valid, top = highest(list(range(R)))
        m.d.comb += need.eq(Mux(any_valid, top, -1))
        # the word being written: its plan, registered
        cur_rel = [Signal(lg + 2, name=f"cur_src{lane}") for lane in range(R)]   # source byte mod 4R
        cur_valid = [Signal(name=f"cur_lv{lane}") for lane in range(R)]
        need_r = Signal(_S, name="need_r")
        need_lt, need_eq = Signal(name="need_lt"), Signal(name="need_eq")  # need_r < nb, need_r == nb
        last_word = Signal(name="last_word")                              # i_word + 1 == n_words
        gt = [Signal(name=f"left_gt{v}") for v in range(3)]               # left > 0, 1, 2

        window = Cat(buf, ib)                                             # bytes bbase .. bbase + 4R - 1
        take = Signal()
        produce = Signal()
        nbs = Signal(_S)
        m.d.comb += nbs.eq(nb)
        with m.If(run & ~drain):
            with m.If(need_lt):
                m.d.comb += produce.eq(1)
            with m.Elif(ib_valid):
                m.d.comb += take.eq(1)
                m.d.comb += produce.eq(need_eq)
        more_after = Mux(take, gt[1], gt[0])                              # nb + take < beats_total
        with m.If(drain & ib_valid & gt[0]):
            m.d.comb += take.eq(1)
        # no beat past the tensor's: a host offering the next image's first beat early would otherwise have
        # it taken here, and the next inference would never see its first beat (found by the liveness
        # proof, docs/verification.md); a registered flag, off the ready path
        # (beats accepted = nb + ib_valid = beats_total - left + ib_valid: after an accept the new beat sits
        # in the input register and nb has grown by take, so more beats remain iff left - take > 1)
        more = Signal(name="more_beats")                                  # beats accepted < beats_total
        m.d.comb += self.i.ready.eq(setup & more & (~ib_valid | take))
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += more.eq(1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [ib.eq(self.i.payload), ib_valid.eq(1), more.eq(Mux(take, gt[2], gt[1]))]
        with m.Elif(take):
            m.d.sync += ib_valid.eq(0)
        with m.If(take):
            m.d.sync += [buf.eq(Cat(buf[8 * R:], ib)), nb.eq(nb + 1), left.eq(left - 1), bbase.eq(bbase + R),
                         gt[0].eq(gt[1]), gt[1].eq(gt[2]), gt[2].eq(left > 3)]

        # the next word's plan moves in when a word is written (and once before the first, ``prep == 1``)
        shift = Signal()
        m.d.comb += shift.eq(produce | prep_last)
        with m.If(shift):
            m.d.sync += [need_r.eq(need), need_lt.eq(Mux(take, need <= nbs, need < nbs)),
                         need_eq.eq(Mux(take, need == nbs + 1, need == nbs))]
            m.d.sync += [cur_rel[lane].eq(src[lane][:lg + 2]) for lane in range(R)]
            m.d.sync += [cur_valid[lane].eq(valid[lane]) for lane in range(R)]
        with m.Elif(take):
            m.d.sync += [need_lt.eq(need_lt | need_eq), need_eq.eq(need_r == nbs + 1)]

        # the word, registered: written the next cycle
        wr = self.w.payload
        m.d.sync += self.w.valid.eq(produce)
        with m.If(produce):
            m.d.sync += wr.addr.eq(d.out_base + i_word)
            for lane in range(R):
                rel = (cur_rel[lane] - bbase[:lg + 2])[:lg + 2]
                byte = window.word_select(rel, 8)
                m.d.sync += wr.data[lane].eq(Mux(cur_valid[lane], byte.as_signed(), d.zp))
            m.d.sync += [i_word.eq(i_word + 1), last_word.eq(i_word + 2 == n_words)]
            with m.If(last_word):
                with m.If(more_after):
                    m.d.sync += drain.eq(1)
                with m.Else():
                    m.d.sync += [run.eq(0), setup.eq(0)]
        with m.If(shift):                                                 # the position one word further
            with m.If(win):                                               # next output column, or row
                def column(lane, v):
                    return [xg[lane].eq(v), xin[lane].eq((v >= 0) & (v < d.w))]
                with m.If(j_last):
                    m.d.sync += [j.eq(0), j_last.eq(d.wpos == 1), rowc.eq(rowc + wc), s.eq(rowc + wc - plc)]
                    m.d.sync += [a for lane in range(R) for a in column(lane, grp[lane] - d.pl)]
                with m.Else():
                    m.d.sync += [j.eq(j + 1), j_last.eq(j + 2 == d.wpos), s.eq(s + swc)]
                    m.d.sync += [a for lane in range(R) for a in column(lane, xg[lane] + d.sw)]
            with m.Else():                                                # next word of the pixel, or pixel
                with m.If(k_last):
                    m.d.sync += [k.eq(0), k_last.eq(d.pp == 1), rowc.eq(rowc + d.c), s.eq(rowc + d.c), cleft.eq(d.c)]
                    m.d.sync += [cgt[lane].eq(d.c > lane) for lane in range(R)]
                with m.Else():
                    m.d.sync += [k.eq(k + 1), k_last.eq(k + 2 == d.pp), s.eq(s + R), cleft.eq(cleft - R)]
                    m.d.sync += [cgt[lane].eq(cleft > lane + R) for lane in range(R)]
        with m.If(drain & ~more_after):
            m.d.sync += [drain.eq(0), run.eq(0), setup.eq(0)]

        # a descriptor: registered, then its constants, one product per cycle (``PREP_CYCLES``; the unit
        # starts only after them, and the first beat is the contract's cycle 0, so they add no cycle to an
        # inference), then beats. ``h*w`` is taken at the accept from the offered fields (the fetch's
        # payload register), so the product of products ``h*w*c`` has its own cycle and the rounding's
        # carry chain (``beats_total``) the next, from registers: a product, then a carry chain, in one
        # cycle was the 4x4 engine's critical path (session 18)
        m.d.comb += [self.desc.ready.eq(~run & (prep == 0)), self.busy.eq(run | (prep != 0)),
                     self.idle_ready.eq(setup & more & ~ib_valid)]
        m.d.sync += [plc.eq(logic_mul(d.pl, d.c)),
                     wc.eq(logic_mul(d.w, d.c)), swc.eq(logic_mul(d.sw, d.c)),
                     hwpos.eq(logic_mul(d.h, d.wpos)), n_words.eq(Mux(win, hwpos, logic_mul(hw, d.pp))),
                     hwc.eq(logic_mul(hw, d.c)), beats_total.eq((hwc + R - 1) >> lg)]
        with m.If(prep != 0):
            m.d.sync += prep.eq(prep - 1)
        with m.If(prep == 2):                                            # the first word's position
            m.d.sync += [s.eq(Mux(win, -plc, 0)), cleft.eq(d.c), j_last.eq(d.wpos == 1), k_last.eq(d.pp == 1)]
            m.d.sync += [cgt[lane].eq(d.c > lane) for lane in range(R)]
            m.d.sync += [xin[lane].eq((xg[lane] >= 0) & (xg[lane] < d.w)) for lane in range(R)]
        m.d.comb += prep_last.eq(prep == 1)
        with m.If(prep_last):                                             # its plan moves in (``shift``)
            m.d.sync += [run.eq(1), setup.eq(1), left.eq(beats_total), last_word.eq(n_words == 1)]
            m.d.sync += [gt[v].eq(beats_total > v) for v in range(3)]
        with m.If(self.desc.valid & self.desc.ready):
            dp = self.desc.payload
            m.d.sync += [win.eq(dp.kind == IN_WINDOW), win_plan.eq(dp.kind == IN_WINDOW)]
            m.d.sync += [d.eq(dp), hw.eq(logic_mul(dp.h, dp.w)), prep.eq(PREP_CYCLES), drain.eq(0), i_word.eq(0),
                         j.eq(0), k.eq(0), nb.eq(0), bbase.eq(-3 * R), rowc.eq(0)]
            m.d.sync += [xg[lane].eq(Mux(dp.kind == IN_WINDOW, -dp.pl, 0) + grp[lane]) for lane in range(R)]
            m.d.sync += [off[lane].eq(lane) for lane in range(R)]
            for cp_log in range(lg + 1):
                with m.If(dp.cp == (1 << cp_log)):
                    for lane in range(R):
                        g, ch = lane >> cp_log, lane & ((1 << cp_log) - 1)
                        m.d.sync += [off[lane].eq(Mux(dp.kind == IN_WINDOW, logic_mul(dp.c, g) + ch, lane)),
                                     grp[lane].eq(g), chv[lane].eq(ch < dp.c),
                                     xg[lane].eq(Mux(dp.kind == IN_WINDOW, g - dp.pl, g))]
        return m
