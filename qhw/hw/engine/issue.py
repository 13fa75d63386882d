"""``MatmulIssue``: a MATMUL's activation beats into the array, one per cycle, each tile held at its
first beat until the timing contract lets it go (docs/engine.md, "Timing contract").

``Im2colAgen`` offers a beat's word; the tile's first beat waits until (1) ``wcount`` (scratchpad
writes done before this cycle) reaches the plane's dependence count ``dep_base + p*dep_step``
(``p = nt*cw_step + cwi``; ``agen_latency`` after the write), (2) the weight loader has started this
tile's load in an earlier cycle (a tile started and not yet issued, counted here from ``load_start``:
the contract's ``weight_latency``), (3) for the descriptor's first result-producing tile, the previous
result beat's pool latency has passed (writes stay in order).
The three tests are registered flags (``wait_ok``, ``k_ok``), formed a cycle ahead from the write
counter's next step (``w_inc``, ``w_clear``; its next value ``wcount_nx``, formed once by the counter's
owner) and the loop's next state.
The word is read (the address is this cycle: the trace's ``issue``; the word comes ``SPAD_READ_LATENCY``
cycles later, the beat's handshake in the timing contract), the zero point replaces padding
beats, and the issue register drives the array (``a_in``, the tile's weight bank ``bank_in``) and the
accumulator's ``tag`` (beat ``m`` of the tile, first/last K tile, the N tile's parameter bank).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...contract import POOL_MAX_LATENCY, POOL_SUM_LATENCY, SPAD_READ_LATENCY
from ...engine.isa import IN_WINDOW, POOL_AVG, POOL_MAX
from ..config import ArrayConfig, check_config
from ..issuer import tag_layout
from ..logic_mul import logic_mul
from ..replica import replica_pair
from ..skew import delayed
from .fetch import INDEX_BITS, ahead
from .im2col import ADDR_BITS, Im2colAgen
from .layouts import descriptor_layout

__all__ = ["COUNT_BITS", "MatmulIssue", "matmul_desc_layout"]

COUNT_BITS = 24          # write and tile counters (``dep_base`` is 24 bits)


def matmul_desc_layout() -> data.StructLayout:
    return data.StructLayout({"d": descriptor_layout("MATMUL"), "index": unsigned(INDEX_BITS)})


class MatmulIssue(wiring.Component):
    """MATMUL descriptors (``desc``, with their program index) to the array's issue register.

    Parameters
    ----------
    config:
        The array (``rows`` lanes per beat, ``requant_latency`` for the average pool's latency).
    settled:
        Every descriptor is offered a cycle before it is taken (``fetch.ahead``): the accept's products
        (here and in ``Im2colAgen``) are formed a cycle ahead.
    """

    def __init__(self, *, config: ArrayConfig, settled: bool = False):
        self.config = check_config(config)
        self.agen = Im2colAgen(settled=settled, ready_copy=True)      # checks ``settled``
        self.settled = settled
        R = config.rows
        super().__init__({
            "desc": In(stream.Signature(matmul_desc_layout())),
            "r_addr": Out(ADDR_BITS), "r_en": Out(1), "r_data": In(data.ArrayLayout(signed(8), R)),
            "wcount": In(COUNT_BITS), "w_inc": In(1), "w_clear": In(1), "wcount_nx": In(COUNT_BITS),
            "load_start": In(1), "restart": In(1),
            "a_in": Out(data.ArrayLayout(signed(8), R)), "bank_in": Out(1),
            "tag": Out(stream.Signature(tag_layout(), always_ready=True)),
            "tile_done": Out(1), "group_done": Out(1), "finishing": Out(1), "busy": Out(1),
            "index": Out(INDEX_BITS),
        })

    @property
    def latency(self) -> int:
        """The first beat's read (address) to ``a_in``/``tag``: ``SPAD_READ_LATENCY`` + 1 (the read, the
        issue register); a beat's handshake in the timing contract is the cycle its word arrives, the
        read latency after its address (``tile_done``/``group_done`` are delayed to it)."""
        return SPAD_READ_LATENCY + 1

    def elaborate(self, platform):
        m = Module()
        c = self.config
        R = c.rows
        m.submodules.agen = agen = self.agen
        dp = self.desc.payload.d
        m.d.comb += [agen.desc.payload.eq(dp), agen.desc.valid.eq(self.desc.valid),
                     self.desc.ready.eq(agen.desc.ready)]
        accept = self.desc.valid & self.desc.ready

        # per-descriptor constants
        dep_base, dep_step, nt_step = (Signal(unsigned(COUNT_BITS), name=n)
                                       for n in ("dep_base", "dep_step", "nt_step"))
        taps_k, kcw_k = Signal(unsigned(16)), Signal(unsigned(8))
        lat = Signal(range(POOL_SUM_LATENCY + c.requant_latency + 1))
        # loop state of the tile being issued
        tap, cwi = Signal(unsigned(16)), Signal(unsigned(8))
        tap_more, cwi_more = Signal(name="tap_more"), Signal(name="cwi_more")    # tap + 1 < taps_k, cwi + 1 < kcw_k
        taps_gt1, kcw_gt1 = Signal(name="taps_gt1"), Signal(name="kcw_gt1")      # taps_k > 1, kcw_k > 1
        need, nt_need = Signal(unsigned(COUNT_BITS)), Signal(unsigned(COUNT_BITS))
        tile_first, tile_first_r = replica_pair(Signal(init=1), name="tile_first")
        kt_first, produced = Signal(init=1), Signal()
        tpar, gpar = Signal(), Signal()            # weight bank (tile parity), parameter bank (group parity)
        mrow = Signal(unsigned(16))                # beat of the tile (the accumulator row)
        order = Signal(range(POOL_SUM_LATENCY + c.requant_latency + 1))   # cycles until the order rule holds

        # tiles the loader started that are not issued yet (at most 2: the loader runs one tile ahead of
        # the bank it overwrites), so "loaded" is a flag, not a compare of two tile counters
        started = Signal(range(4))
        b = agen.beats.payload
        # the tile's first beat waits on two flags registered from the next cycle's values, ``wait_ok`` =
        # ``(wcount >= need) & (started != 0)`` and ``k_ok`` = ``produced | (order == 0)``, so the accept and
        # the step (which enable every loop register) are one LUT of flip-flops, not behind the dependence
        # compare's carry chain
        # (``*_r``: copies for the generator's ``desc.ready``, below; ``qhw.hw.replica``)
        wait_ok, wait_ok_r = replica_pair(Signal(), name="wait_ok")
        k_ok, k_ok_r = replica_pair(Signal(init=1), name="k_ok")
        ok = wait_ok & (~b.last_k | k_ok)
        m.d.comb += agen.beats.ready.eq(~tile_first | ok)
        # the same gate from the replica registers for the generator's ``desc.ready`` (the read side's
        # accept): the originals fan out to the step's loop registers only
        m.d.comb += agen.ready_r.eq(~tile_first_r | (wait_ok_r & (~agen.last_k_r | k_ok_r)))
        step = agen.beats.valid & agen.beats.ready

        # ``wcount`` next cycle is ``wcount + w_inc`` (0 on ``w_clear``): each candidate for the next ``need``
        # is compared with both, a cycle ahead, beside the step that picks it
        wc1 = Signal(unsigned(COUNT_BITS), name="wcount_p1")
        m.d.comb += wc1.eq(self.wcount + 1)

        def dep_next(n):
            return Mux(self.w_clear, n == 0, Mux(self.w_inc, wc1 >= n, self.wcount >= n))
        need_step, need_nt = Signal(unsigned(COUNT_BITS)), Signal(unsigned(COUNT_BITS))
        m.d.comb += [need_step.eq(need + dep_step), need_nt.eq(nt_need + nt_step)]
        dep_nx, produced_nx = Signal(name="dep_nx"), Signal(name="produced_nx")     # next cycle's
        m.d.comb += [dep_nx.eq(dep_next(need)), produced_nx.eq(produced)]
        # the loader and the parameter fetch see a tile pass at its handshake, the word's arrival (the
        # weight bank rules of the timing contract count from there)
        m.d.comb += [self.r_addr.eq(b.addr), self.r_en.eq(step), self.finishing.eq(step & b.last),
                     self.tile_done.eq(delayed(m, step & b.tile_last, SPAD_READ_LATENCY - 1, name="tile_done")),
                     self.group_done.eq(delayed(m, step & b.tile_last & b.last_k, SPAD_READ_LATENCY - 1,
                                                name="group_done"))]

        order_nx, started_nx = Signal.like(order, name="order_nx"), Signal.like(started, name="started_nx")
        m.d.comb += [order_nx.eq(Mux(self.restart, 0, Mux(step & b.last_k, lat, Mux(order != 0, order - 1, 0)))),
                     started_nx.eq(Mux(self.restart, 0, started + self.load_start - (step & b.tile_last)))]
        m.d.sync += [order.eq(order_nx), started.eq(started_nx), produced.eq(produced_nx)]
        m.d.sync += [f.eq(dep_nx & (started_nx != 0)) for f in (wait_ok, wait_ok_r)]
        m.d.sync += [f.eq(produced_nx | (order_nx == 0)) for f in (k_ok, k_ok_r)]
        with m.If(step):
            m.d.sync += [tile_first.eq(b.tile_last), tile_first_r.eq(b.tile_last),
                         mrow.eq(Mux(b.tile_last, 0, mrow + 1))]
            with m.If(b.last_k):
                m.d.comb += produced_nx.eq(1)
            with m.If(b.tile_last):
                m.d.sync += [tpar.eq(~tpar), kt_first.eq(b.last_k)]
                with m.If(b.last_k):
                    m.d.sync += gpar.eq(~gpar)
                with m.If(tap_more):
                    m.d.sync += tap.eq(tap + 1)
                with m.Else():
                    m.d.sync += tap.eq(0)
                    with m.If(cwi_more):
                        m.d.sync += [cwi.eq(cwi + 1), need.eq(need_step)]
                        m.d.comb += dep_nx.eq(dep_next(need_step))
                    with m.Elif(b.last_nt):         # the generator's flag (``b.nt + 1 == n_tiles``)
                        m.d.sync += [cwi.eq(0), need.eq(dep_base), nt_need.eq(dep_base)]
                        m.d.comb += dep_nx.eq(dep_next(dep_base))
                    with m.Else():
                        m.d.sync += [cwi.eq(0), need.eq(need_nt), nt_need.eq(need_nt)]
                        m.d.comb += dep_nx.eq(dep_next(need_nt))

        # the read (address this cycle, word ``SPAD_READ_LATENCY`` cycles later), then the issue register
        s0 = Signal(data.StructLayout({"valid": 1, "pad": 1, "zp": signed(16), "m": unsigned(16), "first": 1,
                                       "last": 1, "gbank": 1, "tbank": 1}))
        m.d.sync += [s0.valid.eq(step), s0.pad.eq(b.pad), s0.zp.eq(b.zp), s0.m.eq(mrow), s0.first.eq(kt_first),
                     s0.last.eq(b.last_k), s0.gbank.eq(gpar), s0.tbank.eq(tpar)]
        stages = [s0]
        for k in range(SPAD_READ_LATENCY - 1):
            stages.append(delayed(m, stages[-1], 1, name=f"s{k + 1}"))
        s1 = stages[-1]
        m.d.comb += self.busy.eq(agen.busy | (sum(st.valid for st in stages[:-1]) != 0))
        t = self.tag.payload
        m.d.sync += [self.tag.valid.eq(s1.valid), t.m.eq(s1.m), t.first.eq(s1.first), t.last.eq(s1.last),
                     t.bank.eq(s1.gbank), self.bank_in.eq(s1.tbank)]
        for i in range(R):
            m.d.sync += self.a_in[i].eq(Mux(s1.pad, s1.zp, self.r_data[i]))

        a_nt_step = ahead(m, logic_mul(dp.cw_step, dp.dep_step), settled=self.settled, name="nt_step")
        a_taps = ahead(m, Mux(dp.in_kind == IN_WINDOW, dp.kh, logic_mul(dp.kh, dp.kw)), settled=self.settled,
                       name="taps")
        # the tap and channel-word loops' tests, ``tap + 1 < taps_k`` and ``cwi + 1 < kcw_k``, are flags
        # registered from the loops' next values (as the generator's terminal flags), so the step's choice
        # of the next ``need`` (and ``wait_ok``, which reads it) is not behind their carry chains: both loops
        # restart whenever a descriptor could be taken (``desc.ready``: idle, where they are already 0, or the
        # running descriptor's last beat, where they wrap to 0), so their next value is then 0 and the
        # flag the new bound's ``> 1``; a step past a tile moves a loop by one (a compare of registers,
        # ``+ 2``) or wraps it (``taps_gt1``/``kcw_gt1``, the bound's ``> 1``, registered with the bound)
        a_kcw = Mux(dp.in_kind == IN_WINDOW, 1, dp.kcw)
        tap_wrap = step & b.tile_last
        tap_more_nx = Mux(self.desc.ready, a_taps > 1,
                          Mux(tap_wrap, Mux(tap_more, tap + 2 < taps_k, taps_gt1), tap_more))
        cwi_more_nx = Mux(self.desc.ready, a_kcw > 1,
                          Mux(tap_wrap & ~tap_more, Mux(cwi_more, cwi + 2 < kcw_k, kcw_gt1), cwi_more))
        m.d.sync += [tap_more.eq(tap_more_nx), cwi_more.eq(cwi_more_nx)]

        # the descriptor's constants load whenever one could be taken, taken or not (as ``Im2colAgen``'s):
        # the accept enables the loop state only
        d = dp
        with m.If(self.desc.ready):
            m.d.sync += [dep_base.eq(d.dep_base), dep_step.eq(d.dep_step), nt_step.eq(a_nt_step),
                         taps_k.eq(a_taps), kcw_k.eq(a_kcw),
                         taps_gt1.eq(a_taps > 1), kcw_gt1.eq(a_kcw > 1),
                         self.index.eq(self.desc.payload.index),
                         lat.eq(Mux(d.pool == POOL_MAX, POOL_MAX_LATENCY,
                                    Mux(d.pool == POOL_AVG, POOL_SUM_LATENCY + c.requant_latency, 0)))]
        # the accept's dependence test: settled, the three cases of the counter's step (as ``dep_next``) are
        # registers a cycle ahead (the offered descriptor and ``wcount`` are then this cycle's), so the
        # accept only selects (Yosys's ``opt_share`` turns compares under a mux into one compare of muxed
        # operands, which put the accept in front of a carry chain)
        if self.settled:
            base_zero, base_ge0, base_ge1 = (Signal(name=n) for n in ("base_zero", "base_ge0", "base_ge1"))
            # ``wcount' + 1 >= dep_base`` by the counter's step, each case a compare of registers (not the
            # step's sum, then a second carry chain)
            ge1, ge2 = Signal(name="wcount_p1_ge"), Signal(name="wcount_p2_ge")
            m.d.comb += [ge1.eq(wc1 >= d.dep_base), ge2.eq((self.wcount + 2)[:COUNT_BITS] >= d.dep_base)]
            m.d.sync += [base_zero.eq(d.dep_base == 0), base_ge0.eq(self.wcount_nx >= d.dep_base),
                         base_ge1.eq(Mux(self.w_clear, d.dep_base <= 1, Mux(self.w_inc, ge2, ge1)))]
            acc_dep = Mux(self.w_clear, base_zero, Mux(self.w_inc, base_ge1, base_ge0))
        else:
            acc_dep = dep_next(d.dep_base)
        with m.If(self.desc.ready):           # the loops restart (see ``tap_more``)
            m.d.sync += [tap.eq(0), cwi.eq(0)]
        with m.If(accept):
            m.d.sync += [need.eq(d.dep_base), nt_need.eq(d.dep_base),
                         tile_first.eq(1), tile_first_r.eq(1), kt_first.eq(1), mrow.eq(0)]
            m.d.comb += [dep_nx.eq(acc_dep), produced_nx.eq(0)]
        with m.If(self.restart):
            m.d.sync += [tpar.eq(0), gpar.eq(0)]
        return m
