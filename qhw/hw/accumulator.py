"""``Accumulator``: adds each K tile's partial-sum row into an on-chip memory row, one row per cycle."""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..contract import ACCUMULATE_LATENCY
from ..errors import ConfigError
from .config import ArrayConfig, check_config
from .issuer import tag_layout
from .replica import replica
from .skew import delayed

__all__ = ["Accumulator", "row_layout"]

# Registers from ``psum`` to ``row``: the psum with the memory row read a cycle early, then the sum.


def row_layout(config: ArrayConfig) -> data.StructLayout:
    """A finished row: ``cols`` sums over all K (``sum_bits`` each, no bias) and its parameter bank."""
    return data.StructLayout({"sum": data.ArrayLayout(signed(config.sum_bits), config.cols), "bank": 1})


class Accumulator(wiring.Component):
    """``sum[m] = psum`` on the first K tile, ``sum[m] += psum`` on later ones; rows of the last K tile
    leave on ``row`` (not written back).

    ``tag`` is the issue register's sideband: the array's ``psum`` row of that beat arrives
    ``config.array_latency`` cycles later. The memory (``acc_depth`` rows) is read-modify-written
    once per cycle with the block RAM's clock-to-out, the adder and the write in different cycles:
    the row is read one cycle early and its data registered, and the sum is written from a register
    a cycle after the add. The three writes younger than a row's read, of the three beats just before
    (M <= 3: the same row's K tiles back to back), are taken from the adder's output registers
    instead (forwarding); the third is the write in the read's own cycle, which the block RAM does
    not pass through (a transparent read port became soft logic behind the RAM's output).

    ``next_bank`` is the bank of the row ``row`` carries in the next cycle, so the lanes can select
    their parameters into registers a cycle early.

    ``family="ecp5"`` builds the memory (``acc_depth`` <= 512) as DP16KD instances whose output
    register holds the read row (same cycles as the portable ``Memory`` and its data register).
    """

    def __init__(self, *, config: ArrayConfig, family: str | None = None):
        check_config(config)
        if family not in (None, "ice40", "ecp5"):
            raise ConfigError(f"family must be None, 'ice40' or 'ecp5', not {family!r}")
        self.config, self.family = config, family
        c = config
        super().__init__({
            "tag": In(stream.Signature(tag_layout(), always_ready=True)),
            "psum": In(data.ArrayLayout(signed(c.psum_bits), c.cols)),
            "row": Out(stream.Signature(row_layout(c), always_ready=True)),
            "next_bank": Out(1),
        })

    @property
    def latency(self) -> int:
        """2: ``psum`` to ``row`` (the psum and the early-read memory row registered, then the sum)."""
        return ACCUMULATE_LATENCY

    def _narrow_tag(self, m):
        """The incoming tag with ``m`` cut to the memory's address: the delay lines carry only that
        (a row past ``acc_depth`` has one K tile, so it is neither read nor written nor forwarded),
        7 of 16 bits fewer per stage."""
        fields = {**dict(tag_layout().members), "m": range(self.config.acc_depth)}
        tag = Signal(data.StructLayout({"valid": 1, "tag": data.StructLayout(fields)}))
        m.d.comb += [tag.valid.eq(self.tag.valid),
                     *(getattr(tag.tag, n).eq(getattr(self.tag.payload, n)) for n in fields)]
        return tag

    def elaborate(self, platform):
        if self.config.area_first:
            return self._elaborate_area_first()
        m = Module()
        c = self.config
        C = c.cols
        # On ECP5 the memory is DP16KD instances with their output register (``_Dp16kdRows``):
        # the block RAM's 5.8 ns clock-to-out without it was the 8x8 accelerator's critical path.
        if self.family == "ecp5" and c.acc_depth <= _Dp16kdRows.DEPTH:
            m.submodules.acc_mem = mem = _Dp16kdRows(width=C * c.sum_bits, depth=c.acc_depth)
            wp = rp = mem
        else:
            mem = None
            m.submodules.acc_mem = mem_ = Memory(shape=data.ArrayLayout(signed(c.sum_bits), C),
                                                 depth=c.acc_depth, init=[])
            wp = mem_.write_port()
            rp = mem_.read_port()
        tag = self._narrow_tag(m)
        # The read address, a cycle early; ``tag_pp`` and ``tag_pre`` are the two registers before
        # it (the matches below are decided from them two cycles ahead).
        early = c.array_latency >= 3
        if early:
            tag_pp = delayed(m, tag, c.array_latency - 3, name="tag_r")
            tag_pre = Signal.like(tag, name=f"tag_r_d{c.array_latency - 2}")
            tag_r = Signal.like(tag, name=f"tag_r_d{c.array_latency - 1}")
            m.d.sync += [tag_pre.eq(tag_pp), tag_r.eq(tag_pre)]
        else:
            tag_r = delayed(m, tag, c.array_latency - 1, name="tag_r")
        m.d.comb += rp.addr.eq(tag_r.tag.m)
        tag_d1 = delayed(m, tag_r, 1, name="tag_rd")
        tag_d = delayed(m, tag_d1, 1, name="tag_add")                   # with psum_d and rd
        # Datapath registers without reset (the tags, which have one, qualify them).
        psum_d = Signal(data.ArrayLayout(signed(c.psum_bits), C), reset_less=True)
        rd = Signal(data.ArrayLayout(signed(c.sum_bits), C), reset_less=True)
        m.d.sync += psum_d.eq(self.psum)
        if mem is None:
            m.d.sync += rd.eq(rp.data)
        else:           # the block RAM's output register is ``rd``
            m.d.comb += rd.eq(mem.rd_data)
        total = Signal(data.ArrayLayout(signed(c.sum_bits), C))
        last_total = Signal.like(total, reset_less=True)    # the sum of the beat one cycle older, written from here
        last2 = Signal.like(total, reset_less=True)         # and of the beat two cycles older
        older = Signal.like(total, reset_less=True)         # the beat two or three cycles older, forwarded
        wrote = Signal()
        m.d.comb += wrote.eq(tag_d.valid & ~tag_d.tag.last)
        # The memory is written from registers a cycle after the add (the adder's carry chain and the
        # route to the block RAMs are not one cycle), so the three writes younger than a beat's read
        # are forwarded: the beat one cycle older from ``last_total``; two or three cycles older from
        # ``older``, that sum (``last2`` or the one before it) selected a cycle ahead. The matches are
        # decided ahead, so no row compare is in front of the adder and the multiplexer stays 3:1.
        # Rows are compared as the memory sees them, by its address bits (``m`` truncated): equal
        # addresses are the same memory row, and a 9-bit compare is one LUT level shorter than 16 bits.
        abits = Shape.cast(range(c.acc_depth)).width
        w_addr = Signal(abits, name="w_addr")
        w_en = Signal(name="w_en")
        m.d.sync += [last_total.eq(total), last2.eq(last_total), w_addr.eq(tag_d.tag.m[:abits]), w_en.eq(wrote)]
        same1 = wrote & (tag_d.tag.m[:abits] == tag_d1.tag.m[:abits])      # the beat at tag_d1
        # For the beat on the read address (tag_r): the beat two cycles older is adding now, the
        # one three cycles older is writing now.
        same2 = wrote & (tag_d.tag.m[:abits] == tag_r.tag.m[:abits])
        same3 = Signal(name="forward3_early")
        if early:
            # (ECP5) The write-match compare a cycle before ``w_addr`` and ``tag_r`` hold its operands,
            # as 2-bit equalities (one LUT each), ANDed into ``same3`` behind them: the 9-bit compare
            # and ``w_en`` in one cycle were the 8x8 accelerator's late ``forward3_early`` (6.45 ns).
            parts = []
            for lo in range(0, abits, 2):
                p = Signal(name=f"forward3_eq{lo // 2}")
                eq = tag_d.tag.m[lo:lo + 2] == tag_pre.tag.m[lo:lo + 2]
                m.d.sync += p.eq(eq & wrote if lo + 2 >= abits else eq)
                parts.append(p)
            m.d.sync += same3.eq(Cat(parts).all())
        else:
            m.d.sync += same3.eq(w_en & (w_addr == tag_r.tag.m[:abits]))
        if early:
            # (ECP5) The matches two cycles ahead into one register, copied into a register per
            # column, then into the column's select: no logic between the match and the columns
            # (the compare fanned out to the 8 columns' copies was the 8x8 accelerator's critical route).
            wrote2 = tag_r.valid & ~tag_r.tag.last
            match1, match2 = Signal(name="same1_early"), Signal(name="same2_early")
            m.d.sync += [match1.eq(wrote2 & (tag_r.tag.m[:abits] == tag_pre.tag.m[:abits])),
                         match2.eq(wrote2 & (tag_r.tag.m[:abits] == tag_pp.tag.m[:abits]))]
        for j in range(C):
            # Each column's own copies of the select bits: one register each would fan out to every
            # bit of every column's multiplexer (8 x 28 at 8x8) in front of the adder.
            first, forward1, forward2, forward_old = (replica(Signal(name=n), name=f"{n}_{j}")
                                                      for n in ("first", "forward1", "forward2", "forward_old"))
            if early:
                # A first K tile adds ``older`` set to 0 (selected and cleared a cycle ahead), so no
                # multiplexer sits behind the adder; ``first`` (the column's copy) is known a cycle
                # earlier than in the plain form.
                same1, same2 = (replica(Signal(name=n), name=f"{n}_{j}") for n in ("same1", "same2"))
                m.d.sync += [same1.eq(match1), same2.eq(match2), first.eq(tag_r.tag.first),
                             forward1.eq(same1 & ~first), forward2.eq(same2), forward_old.eq(forward2 | same3 | first),
                             older[j].eq(Mux(first, 0, Mux(forward2, last_total[j], last2[j])))]
                m.d.comb += total[j].eq(Mux(forward1, last_total[j], Mux(forward_old, older[j], rd[j])) + psum_d[j])
                continue
            m.d.sync += [first.eq(tag_d1.tag.first), forward1.eq(same1), forward2.eq(same2),
                         forward_old.eq(forward2 | same3), older[j].eq(Mux(forward2, last_total[j], last2[j]))]
            with m.If(first):
                m.d.comb += total[j].eq(psum_d[j])
            with m.Else():
                m.d.comb += total[j].eq(Mux(forward1, last_total[j], Mux(forward_old, older[j], rd[j])) + psum_d[j])
        if mem is None:
            m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(last_total), wp.en.eq(w_en)]
        else:
            m.d.comb += [mem.w_addr.eq(w_addr), mem.w_data.eq(last_total), mem.w_en.eq(w_en)]
        # A register between this add and the lanes' bias add keeps two carry chains out of one cycle.
        m.d.sync += [self.row.payload.sum.eq(total), self.row.payload.bank.eq(tag_d.tag.bank),
                     self.row.valid.eq(tag_d.valid & tag_d.tag.last)]
        m.d.comb += self.next_bank.eq(tag_d.tag.bank)
        return m

    def _elaborate_area_first(self):
        """The same cycles with fewer registers, for iCE40 (``config.area_first``), where each
        flip-flop takes a logic cell: the memory row and the two- and three-older forwards are selected
        a cycle ahead into one ``addend`` (0 on a first K tile), one multiplexer before the adder, and
        ``row`` carries the sum from ``last_total``, the register the memory is written from."""
        m = Module()
        c = self.config
        C = c.cols
        m.submodules.acc_mem = mem = Memory(shape=data.ArrayLayout(signed(c.sum_bits), C),
                                            depth=c.acc_depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        tag = self._narrow_tag(m)
        tag_r = delayed(m, tag, c.array_latency - 1, name="tag_r")     # read address, a cycle early
        m.d.comb += rp.addr.eq(tag_r.tag.m)
        tag_d1 = delayed(m, tag_r, 1, name="tag_rd")                    # with the memory row
        tag_d = delayed(m, tag_d1, 1, name="tag_add")                   # with psum_d and addend
        psum_d = Signal(data.ArrayLayout(signed(c.psum_bits), C), reset_less=True)
        m.d.sync += psum_d.eq(self.psum)
        total = Signal(data.ArrayLayout(signed(c.sum_bits), C))
        last_total = Signal.like(total, reset_less=True)    # the sum one cycle older, written from here
        last2 = Signal.like(total, reset_less=True)         # the sum two cycles older
        addend = Signal.like(total, reset_less=True)
        wrote = tag_d.valid & ~tag_d.tag.last
        abits = len(rp.addr)
        w_addr = Signal(abits, name="w_addr")
        w_en = Signal(name="w_en")
        # For the beat on the read address (tag_r), decided a cycle ahead: the beat two cycles older
        # (adding now, its sum in ``last_total`` next cycle) or three cycles older (writing now, a
        # write the read does not see: its sum in ``last2`` next cycle) wrote the same row.
        forward2, forward3 = Signal(name="forward2"), Signal(name="forward3")
        forward1 = Signal(name="forward1")                  # the one-older beat wrote this row (not first)
        m.d.sync += [last_total.eq(total), last2.eq(last_total), w_addr.eq(tag_d.tag.m[:abits]), w_en.eq(wrote),
                     forward2.eq(wrote & (tag_d.tag.m[:abits] == tag_r.tag.m[:abits])),
                     forward3.eq(w_en & (w_addr == tag_r.tag.m[:abits])),
                     forward1.eq(wrote & (tag_d.tag.m[:abits] == tag_d1.tag.m[:abits]) & ~tag_d1.tag.first)]
        for j in range(C):
            m.d.sync += addend[j].eq(Mux(tag_d1.tag.first, 0,
                                         Mux(forward2, last_total[j], Mux(forward3, last2[j], rp.data[j]))))
            m.d.comb += total[j].eq(Mux(forward1, last_total[j], addend[j]) + psum_d[j])
        m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(last_total), wp.en.eq(w_en)]
        m.d.comb += self.row.payload.sum.eq(last_total)
        m.d.sync += [self.row.payload.bank.eq(tag_d.tag.bank), self.row.valid.eq(tag_d.valid & tag_d.tag.last)]
        m.d.comb += self.next_bank.eq(tag_d.tag.bank)
        return m

class _Dp16kdRows(wiring.Component):
    """``depth`` (<= 512) rows of ``width`` bits in ECP5 DP16KD block RAMs, 36 bits each (the
    pseudo dual-port form), with the output register: ``rd_data`` is the row at ``addr`` two
    cycles after it (the read a cycle after the address, like a synchronous read port, then the
    block RAM's own register). A row written in the cycle of its read reads as undefined (the
    caller forwards that write). Yosys's memory mapping leaves the output register unused."""

    DEPTH, WORD = 512, 36

    def __init__(self, *, width: int, depth: int):
        self.width, self.depth = width, depth
        abits = Shape.cast(range(depth)).width
        super().__init__({"addr": In(abits), "rd_data": Out(width),
                          "w_addr": In(abits), "w_data": In(width), "w_en": In(1)})

    def elaborate(self, platform):
        m = Module()
        W = self.WORD
        blocks = -(-self.width // W)
        wdata = Cat(self.w_data, Const(0, blocks * W - self.width))
        rdata = Signal(blocks * W)

        def address(a):
            """ADx[13:5] is the 36-bit word's address; ADA[3:0] are its byte write enables."""
            return Cat(Const(0b1111, 4), Const(0, 1), a, Const(0, 14 - 5 - len(a)))

        ada, adb = address(self.w_addr), Cat(Const(0, 5), self.addr, Const(0, 14 - 5 - len(self.addr)))
        for b in range(blocks):
            word, out = wdata[b * W:(b + 1) * W], rdata[b * W:(b + 1) * W]
            ports = {"i_CLKA": ClockSignal("sync"), "i_CEA": self.w_en, "i_OCEA": 1, "i_WEA": 1, "i_RSTA": 0,
                     "i_CLKB": ClockSignal("sync"), "i_CEB": 1, "i_OCEB": 1, "i_WEB": 0, "i_RSTB": 0}
            for n in range(3):
                ports[f"i_CSA{n}"] = ports[f"i_CSB{n}"] = 0
            for n in range(14):
                ports[f"i_ADA{n}"], ports[f"i_ADB{n}"] = ada[n], adb[n]
            for n in range(18):
                ports[f"i_DIA{n}"], ports[f"i_DIB{n}"] = word[n], word[18 + n]
                ports[f"o_DOA{n}"], ports[f"o_DOB{n}"] = out[n], out[18 + n]
            m.submodules[f"bram{b}"] = Instance(
                "DP16KD", p_DATA_WIDTH_A=W, p_DATA_WIDTH_B=W, p_REGMODE_A="OUTREG", p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_GSR="AUTO", **ports)
        m.d.comb += self.rd_data.eq(rdata[:self.width])
        return m
