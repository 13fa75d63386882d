"""The pooling unit's arithmetic: window reduction (``PoolReduce``) and the average's rule (``PoolLane``).

docs/engine.md, "Pooling unit": a window's taps (``pad`` taps hold ``pool_qmin`` for a max and are
real zeros for an average) are reduced to the max, or to ``S`` = the sum of ``q - pool_zp_in`` and
``n`` = the taps it averages (the valid taps, or the kernel area with ``include_pad``); then the rule
(``qhw.engine.isa.RULES``, chosen by the compiler as ``qhw.ops._average_i`` chooses it) turns
``(S, n)`` into a code:

* ``div``: ``round_half_away(S / n) + zp`` clamped: a pipelined restoring divider (9 quotient bits:
  ``|S| <= 255 n`` for int8 taps, so ``(|S| + n//2) // n <= 255``);
* ``single``/``tflite``/``onnx_int``: the requantization lane (``qhw.hw.requant.RequantLane``, no
  bias) with the ``(M0, shift)`` or float32 ``scale`` of this ``n`` (looked up by the caller in the
  pool table at ``pool_param``).

``onnx_float`` (ONNX Runtime's QLinearAveragePool: float32 taps summed in order, a float32 division)
is not built yet (docs/engine.md, "Hardware notes").
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...contract import (
    MODE_BITS,
    MODE_CODES,
    MULTIPLIER_BITS,
    POOL_MAX_LATENCY,
    POOL_SUM_LATENCY,
    SCALE_BITS,
    SHIFT_BITS,
)
from ...engine.isa import FIELDS, RULE_CODES
from ...errors import ConfigError
from ..config import ArrayConfig, check_config
from ..requant import RequantLane
from ..skew import delayed

__all__ = ["COUNT_BITS", "check_avg_lane", "FusedPool", "PoolLane", "PoolReduce", "QUOTIENT_BITS", "tap_layout"]

_POOL = {n: w for n, w, _ in FIELDS["POOL"]}
COUNT_BITS = _POOL["kh"] + _POOL["kw"]      # n <= kh * kw
QUOTIENT_BITS = 9                           # (|S| + n//2) // n <= 255 for int8 taps, one spare bit
_DIV_STAGES = 1 + QUOTIENT_BITS + 2         # |S| + n//2; one stage per quotient bit; + zp; clamp
_ZP = signed(16)                            # the descriptor's zero point and clamp fields


def check_avg_lane(avg_lane) -> bool:
    """``PoolLane``'s ``avg_lane`` check (a bool), for the units that pass it on, before any lane is built."""
    if not isinstance(avg_lane, bool):
        raise ConfigError(f"avg_lane must be a bool, not {avg_lane!r}")
    return avg_lane


def _family(family) -> None:
    """The requantization lane's ``family`` check (``RequantLane``), before any lane is built."""
    if family not in (None, "ice40", "ecp5"):
        raise ConfigError(f"family must be None, 'ice40' or 'ecp5', not {family!r}")


class PoolLane(wiring.Component):
    """One channel's average: ``(total, count)`` of a window to its output code, per ``rule``.

    ``rule`` is a ``RULE_CODES`` value (``div``, ``single``, ``tflite``, ``onnx_int``);
    ``multiplier``/``shift`` (``single``, ``tflite``) or ``scale`` (``onnx_int``, float32 bits) are
    the pool table's entry for ``count``. ``zero_point``, ``qmin``, ``qmax`` are the descriptor's
    ``pool_zp``, ``pool_qmin``, ``pool_qmax``, held steady from a cycle before the first input (as
    the requantization lane's). ``total`` must be a window sum of int8 taps (``|total| <= 255 count``)
    within ``config.sum_bits``.

    ``avg_lane=False`` (``EngineConfig.pool_avg == "div"``) builds the divider only: no requantization
    lane (4 ``MULT18X18D`` on ECP5), the same latency; every rule then gives the ``div`` result, so
    ``qhw.engine.compiler.check_hardware`` refuses programs with another average rule.
    """

    def __init__(self, *, config: ArrayConfig, family: str | None = None, avg_lane: bool = True):
        self.config = check_config(config)
        self.avg_lane = check_avg_lane(avg_lane)
        if config.requant_latency < _DIV_STAGES:
            raise ConfigError(f"the pooling divider needs {_DIV_STAGES} stages, more than the lane's "
                              f"requant_latency {config.requant_latency}")
        _family(family)
        self.family = family
        super().__init__({
            "i_valid": In(1),
            "rule": In(unsigned(_POOL["rule"])),
            "total": In(signed(config.sum_bits)),
            "count": In(unsigned(COUNT_BITS)),
            "multiplier": In(unsigned(MULTIPLIER_BITS)),
            "shift": In(signed(SHIFT_BITS)),
            "scale": In(unsigned(SCALE_BITS)),
            "zero_point": In(_ZP),
            "qmin": In(_ZP),
            "qmax": In(_ZP),
            "o_valid": Out(1),
            "o": Out(_ZP),
        })

    @property
    def latency(self) -> int:
        """Input to output, in cycles: the requantization lane's, ``config.requant_latency`` (the
        divider, ``1 + QUOTIENT_BITS + 2`` stages, is delayed to it)."""
        return self.config.requant_latency

    def elaborate(self, platform):
        m = Module()
        c = self.config
        out = self._divider(m)
        if not self.avg_lane:
            m.d.comb += [self.o.eq(out),
                         self.o_valid.eq(delayed(m, self.i_valid, c.requant_latency, name="div_valid"))]
            return m
        lane = self._lane(m)
        is_div = delayed(m, self.rule == RULE_CODES["div"], c.requant_latency, name="is_div")
        m.d.comb += [self.o.eq(Mux(is_div, out, lane.o)), self.o_valid.eq(lane.o_valid)]
        return m

    def _lane(self, m):
        c = self.config
        m.submodules.lane = lane = RequantLane(config=c, family=self.family)
        mode = Signal(MODE_BITS)
        with m.Switch(self.rule):
            for rule, name in (("tflite", "tflite"), ("onnx_int", "onnx")):
                if name in c.rounding:
                    with m.Case(RULE_CODES[rule]):
                        m.d.comb += mode.eq(MODE_CODES[name])
            with m.Default():
                m.d.comb += mode.eq(MODE_CODES["single"] if "single" in c.rounding else 0)
        m.d.comb += [lane.i_valid.eq(self.i_valid), lane.acc.eq(self.total), lane.bias.eq(0),
                     lane.multiplier.eq(self.multiplier), lane.shift.eq(self.shift), lane.scale.eq(self.scale),
                     lane.mode.eq(mode), lane.zero_point.eq(self.zero_point),
                     lane.qmin.eq(self.qmin), lane.qmax.eq(self.qmax)]
        return lane

    def _divider(self, m):
        c = self.config
        # div: sign(S) * ((|S| + n//2) // n), restoring division, one quotient bit per stage. The
        # quotient fits QUOTIENT_BITS, so before the stage of bit i the remainder is below n << (i + 1):
        # the stage compares only its bits from i up (below 2n, COUNT_BITS + 1 bits) with n, one
        # subtraction whose borrow is the comparison, and the remainder narrows by a bit per stage.
        N = COUNT_BITS
        rem = Signal(unsigned(N + QUOTIENT_BITS), name="div_rem0")
        neg = Signal(name="div_neg0")
        n = Signal(unsigned(N), name="div_n0")
        m.d.sync += [rem.eq(Mux(self.total < 0, -self.total, self.total) + (self.count >> 1)),
                     neg.eq(self.total < 0), n.eq(self.count)]
        q = Signal(unsigned(QUOTIENT_BITS), name="div_q0")
        for i in reversed(range(QUOTIENT_BITS)):
            step = QUOTIENT_BITS - i
            rem2, q2 = Signal(unsigned(N + i), name=f"div_rem{step}"), Signal.like(q, name=f"div_q{step}")
            neg2, n2 = Signal(name=f"div_neg{step}"), Signal.like(n, name=f"div_n{step}")
            hi = rem[i:]
            diff = Signal(signed(N + 2), name=f"div_diff{step}")
            m.d.comb += diff.eq(hi - n)
            fits = ~diff[-1]
            m.d.sync += [rem2.eq(Cat(rem[:i], Mux(fits, diff[:N], hi[:N]))), q2.eq(q | (fits << i)),
                         neg2.eq(neg), n2.eq(n)]
            rem, q, neg, n = rem2, q2, neg2, n2
        zp, qmin, qmax = (Signal(_ZP, name=f"div_{k}") for k in ("zp", "qmin", "qmax"))
        m.d.sync += [zp.eq(self.zero_point), qmin.eq(self.qmin), qmax.eq(self.qmax)]
        y = Signal(signed(_ZP.width + 2), name="div_y")        # zp +- q, q < 2**QUOTIENT_BITS <= 2**16
        m.d.sync += y.eq(Mux(neg, zp - q, zp + q))
        out = Signal(_ZP, name="div_out")
        m.d.sync += out.eq(Mux(y < qmin, qmin, Mux(y > qmax, qmax, y)))
        out = delayed(m, out, c.requant_latency - _DIV_STAGES, name="div_align")
        return out


def tap_layout(lanes: int) -> data.StructLayout:
    """One tap of ``lanes`` channels: the int8 values, ``pad`` (outside the input), ``first`` and
    ``last`` (the window's first and last tap)."""
    return data.StructLayout({"values": data.ArrayLayout(signed(8), lanes), "pad": 1, "first": 1, "last": 1})


class PoolReduce(wiring.Component):
    """Reduces a window's taps, ``lanes`` channels at once, one tap per cycle (the standalone POOL's
    one word per cycle). ``kind`` is the descriptor's ``pool`` (``POOL_MAX`` or ``POOL_AVG``);
    ``zp_in``, ``pad_value`` (``pool_qmin``) and ``include_pad`` are held for the descriptor.

    On a window's ``last`` tap, ``windows`` carries each lane's max (as ``total``) or sum ``S`` of
    ``q - zp_in``, and ``count`` (the taps averaged; the taps seen for a max), one cycle later.

    Parameters
    ----------
    lanes:
        Channels per tap (the scratchpad word, ``config.rows``).
    sum_bits:
        Width of a window sum (``config.sum_bits`` when it feeds a ``PoolLane``).
    """

    def __init__(self, *, lanes: int, sum_bits: int):
        for name, v in (("lanes", lanes), ("sum_bits", sum_bits)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, not {v!r}")
        if sum_bits < 10:
            raise ConfigError(f"sum_bits must be at least 10 (a window of two int8 taps), not {sum_bits}")
        self.lanes, self.sum_bits = lanes, sum_bits
        super().__init__({
            "taps": In(stream.Signature(tap_layout(lanes), always_ready=True)),
            "kind": In(unsigned(_POOL["pool"])),
            "zp_in": In(_ZP),
            "pad_value": In(_ZP),
            "include_pad": In(1),
            "windows": Out(stream.Signature(data.StructLayout({
                "total": data.ArrayLayout(signed(sum_bits), lanes), "count": unsigned(COUNT_BITS)}),
                always_ready=True)),
        })

    @property
    def latency(self) -> int:
        """A window's last tap to its result: 1 (the running max/sum register)."""
        return 1

    def elaborate(self, platform):
        from ...engine.isa import POOL_MAX
        m = Module()
        t = self.taps.payload
        acc = self.windows.payload.total
        count = self.windows.payload.count
        is_max = self.kind == POOL_MAX
        counted = ~t.pad | self.include_pad | is_max
        with m.If(self.taps.valid):
            m.d.sync += count.eq(Mux(t.first, 0, count) + counted)
            for i in range(self.lanes):
                # a max window holds tap values only (16-bit ``pad_value`` or int8 codes): compare those bits,
                # of the tap itself (the average's ``- zp_in`` is not in front of the compare)
                mx = Mux(t.pad, self.pad_value, t.values[i])
                sm = Mux(t.pad, 0, t.values[i] - self.zp_in)
                w = self.pad_value.shape().width
                more = mx > acc[i][:w].as_signed()
                m.d.sync += acc[i].eq(Mux(is_max, Mux(t.first | more, mx, acc[i]), Mux(t.first, sm, acc[i] + sm)))
        m.d.sync += self.windows.valid.eq(self.taps.valid & t.last)
        return m


class FusedPool(wiring.Component):
    """The pool fused into a MATMUL's write-back (docs/engine.md, "Pooling unit", *fused*).

    Result rows (``cols`` codes) arrive in raster order with their ``WritebackAgen`` destination; the
    line buffer (``pool_line`` entries of ``cols`` running maxima or sums, one per pooled pixel of the
    current pooled row) starts entry ``px`` on a window's first row and emits the window on its last:
    a max ``pool_max_latency`` = 1 cycle after that row, an average (``n = pkh*pkw``: a fused window
    never pads, so ``count`` and the table entry ``multiplier``/``shift``/``scale`` are constants of the
    descriptor) ``pool_avg_latency`` = ``1 + config.requant_latency`` after it. ``addr``/``lane`` travel
    with the window to ``o_addr``/``o_lane``. Rows with ``keep`` low (a partial last window) are dropped.

    The line buffer is read asynchronously (LUT RAM; on iCE40, flip-flops) a cycle ahead, at
    ``px_next`` (the next cycle's ``px``), into a register, so the update's adder and compare start at
    registers, not behind the LUT RAM's read (on ECP5 the 4x4 engine's next path after the table's
    block RAM: read, add, write, 17.2 ns). A row may update the entry the previous row wrote
    (``pkw >= 2``): that write is forwarded from a register beside it.
    """

    def __init__(self, *, config: ArrayConfig, pool_line: int, family: str | None = None, avg_lane: bool = True):
        self.config = check_config(config)
        self.avg_lane = check_avg_lane(avg_lane)
        if not isinstance(pool_line, int) or isinstance(pool_line, bool) or pool_line < 1:
            raise ConfigError(f"pool_line must be a positive integer, not {pool_line!r}")
        _family(family)
        self.pool_line, self.family = pool_line, family
        C = config.cols
        super().__init__({
            "i_valid": In(1),
            "values": In(data.ArrayLayout(signed(8), C)),
            "px": In(unsigned(12)), "px_next": In(unsigned(12)), "win_first": In(1), "win_last": In(1), "keep": In(1),
            "addr": In(unsigned(20)), "lane": In(range(config.rows)),
            "kind": In(unsigned(_POOL["pool"])), "rule": In(unsigned(_POOL["rule"])), "zp_in": In(_ZP),
            "count": In(unsigned(COUNT_BITS)), "multiplier": In(unsigned(MULTIPLIER_BITS)),
            "shift": In(signed(SHIFT_BITS)), "scale": In(unsigned(SCALE_BITS)),
            "zero_point": In(_ZP), "qmin": In(_ZP), "qmax": In(_ZP),
            "o_valid": Out(1), "o": Out(data.ArrayLayout(signed(8), C)),
            "o_addr": Out(unsigned(20)), "o_lane": Out(range(config.rows)),
        })

    @property
    def max_latency(self) -> int:
        """A window's last row to its max: 1 (``EngineConfig.pool_max_latency``)."""
        return POOL_MAX_LATENCY

    @property
    def avg_latency(self) -> int:
        """A window's last row to its average: ``1 + config.requant_latency`` (``pool_avg_latency``)."""
        return POOL_SUM_LATENCY + self.config.requant_latency

    def elaborate(self, platform):
        from amaranth.lib.memory import Memory

        from ...engine.isa import POOL_MAX
        m = Module()
        c = self.config
        C = c.cols
        sb = c.sum_bits
        # on ECP5 LUT RAM: Yosys folds the register after the read (``line_ahead``) into a synchronous read
        # port, which it would map to a DP16KD (its 5.8 ns clock-to-out back in front of the adder); on
        # iCE40 (no LUT RAM) that read may take an EBR instead of flip-flops
        attrs = {"ram_style": "distributed"} if self.family == "ecp5" else None
        m.submodules.line = line = Memory(shape=data.ArrayLayout(signed(sb), C), depth=self.pool_line, init=[],
                                          attrs=attrs)
        rd = line.read_port(domain="comb")
        wr = line.write_port()
        is_max = self.kind == POOL_MAX
        upd = Signal(data.ArrayLayout(signed(sb), C))
        write = self.i_valid & self.keep
        m.d.comb += [rd.addr.eq(self.px_next), wr.addr.eq(self.px), wr.data.eq(upd), wr.en.eq(write)]
        # the entry of the next cycle's row, read now; the write of this cycle forwarded when it is that entry
        ahead = Signal.like(upd, name="line_ahead", reset_less=True)
        fwd = Signal(name="line_fwd")
        fwd_data = Signal.like(upd, name="line_fwd_data", reset_less=True)
        m.d.sync += [ahead.eq(rd.data), fwd.eq(write & (self.px == self.px_next)), fwd_data.eq(upd)]
        for j in range(C):
            v = Mux(is_max, self.values[j], self.values[j] - self.zp_in)
            prev = Mux(fwd, fwd_data[j], ahead[j])
            # a max window's entry holds int8 codes only (its first row overwrites it): compare 8 bits
            more = self.values[j] > prev[:8].as_signed()
            m.d.comb += upd[j].eq(Mux(self.win_first, v, Mux(is_max, Mux(more, v, prev), prev + v)))
        # the window's result, registered: a max is written from here, an average enters the lanes
        done = Signal()
        res = Signal.like(upd)
        addr, lane = Signal.like(self.addr), Signal.like(self.lane)
        window = self.i_valid & self.keep & self.win_last
        m.d.sync += done.eq(window)
        with m.If(window):          # held otherwise: idle lanes see no toggling inputs (simulation speed)
            m.d.sync += [res.eq(upd), addr.eq(self.addr), lane.eq(self.lane)]
        avg_valid = Signal()
        lanes = [PoolLane(config=c, family=self.family, avg_lane=self.avg_lane) for _ in range(C)]
        for j, pl in enumerate(lanes):
            m.submodules[f"lane{j}"] = pl
            m.d.comb += [pl.i_valid.eq(done & ~is_max), pl.rule.eq(self.rule), pl.total.eq(res[j]),
                         pl.count.eq(self.count), pl.multiplier.eq(self.multiplier), pl.shift.eq(self.shift),
                         pl.scale.eq(self.scale), pl.zero_point.eq(self.zero_point), pl.qmin.eq(self.qmin),
                         pl.qmax.eq(self.qmax)]
        m.d.comb += avg_valid.eq(lanes[0].o_valid)
        a_addr = delayed(m, addr, c.requant_latency, name="avg_addr")
        a_lane = delayed(m, lane, c.requant_latency, name="avg_lane")
        with m.If(avg_valid):
            m.d.comb += [self.o_valid.eq(1), self.o_addr.eq(a_addr), self.o_lane.eq(a_lane)]
            m.d.comb += [self.o[j].eq(pl.o) for j, pl in enumerate(lanes)]
        with m.Elif(done & is_max):
            m.d.comb += [self.o_valid.eq(1), self.o_addr.eq(addr), self.o_lane.eq(lane)]
            m.d.comb += [self.o[j].eq(res[j]) for j in range(C)]
        return m
