"""Formal harnesses around the whole network engine (``NetworkEngine``, ``--top network``).

The engine runs an embedded program (``image``: a ``.qbin``, the memories initialised with it, as
``qhw generate --top network --embed`` builds it); the host side is free. Two harnesses:

* ``EngineSafety``: from reset, the host's ``i`` beats arrive when the solver chooses (``valid`` and
  the payload free, the stream rule assumed) and ``o.ready`` is free; ``load`` is idle (the image is
  embedded). Asserted on every cycle: every memory access is inside its memory (the program store
  read by each ``DescriptorFetch``, the scratchpad's reads and writes by every unit, the weight store,
  the wide parameter store), and ``o`` keeps ``valid`` and its payload until ``ready``. Bounded
  (``mode bmc``).
* ``EngineTermination``: from reset, the host offers input beats on every cycle (free payloads) and
  is always ready for output; asserted: ``busy`` rises with the first input beat and falls within
  ``bound`` cycles of it (the cycle model's ``predict(...).total`` plus ``ENGINE_BUSY_FALL``).

The components are unchanged: the harness reads their ports (the units are the engine's named
submodules) and asserts on them.
"""

from __future__ import annotations

from amaranth.hdl import Assert, Assume, Cat, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import data

from ..engine.config import EngineConfig
from ..engine.isa import DESCRIPTOR_WORDS
from ..errors import ConfigError
from ..hw.engine.layouts import descriptor_layout
from .harness import _internal

__all__ = ["ENGINE_BUSY_FALL", "EngineSafety", "EngineTermination", "address_checks"]

# ``busy`` after the last output beat's handshake (the cycle model's ``total`` counts to that beat):
# the output unit drains its pipeline and FIFO, then ``done`` lowers ``running`` on the next edge.
ENGINE_BUSY_FALL = 2


def _engine(config: EngineConfig, image: bytes, engine):
    from ..hw.engine.engine import NetworkEngine

    if not isinstance(config, EngineConfig):
        raise ConfigError(f"config must be an EngineConfig, not {config!r}")
    if not isinstance(image, (bytes, bytearray)) or not image:
        raise ConfigError("the engine proofs need a program image (.qbin bytes) to embed")
    return (NetworkEngine if engine is None else engine)(engine=config, image=bytes(image))


def address_checks(dut, config: EngineConfig, m: Module) -> list[tuple[str, Value, Value, int]]:
    """``(name, enable, address, size)`` of every memory access of ``dut`` (an elaborated engine's
    ``Module`` ``m``): the address must be below ``size`` whenever ``enable`` is high. Addresses are the
    units' own, before the top narrows them to the memory's port."""
    entries = config.program_words // DESCRIPTOR_WORDS
    words = config.act_words
    weight_rows = config.weight_bytes // config.array.cols
    param_entries = max(1, config.weight_bytes // 4 // (4 * config.array.cols))
    sub = m.submodules
    checks = []
    for name in ("input", "issue", "loader", "params", "writeback"):
        f = sub[f"fetch_{name}"]
        checks.append((f"program[{name}]", f.r_en, f.r_addr, entries))
    issue, pool, out, add = sub["issue"], sub["pool"], sub["output"], sub["add"]
    inp, wb = sub["input"], sub["writeback"]
    checks += [
        ("scratchpad read[matmul]", issue.r_en, issue.r_addr, words),
        ("scratchpad read[pool]", pool.r_en, pool.r_addr, words),
        ("scratchpad read[add]", add.r_en, add.r_addr, words),
        ("scratchpad read[output]", out.r_en, out.r_addr, words),
        ("scratchpad write[input]", inp.w.valid, inp.w.payload.addr, words),
        ("scratchpad write[writeback]", wb.w.valid, wb.w.payload.addr, words),
        ("scratchpad write[pool]", pool.w_en, pool.w_addr, words),
        ("scratchpad write[add]", add.w_en, add.w_addr, words),
        ("weight store read", sub["loader"].r_en, sub["loader"].r_addr, weight_rows),
        ("parameter store read", sub["params"].r_en, sub["params"].r_addr, param_entries),
    ]
    return checks


class _EngineHarness(Elaboratable):
    def __init__(self, *, config: EngineConfig, image: bytes, engine=None, free_data: bool = False):
        self.config, self.free_data = config, free_data
        self.dut = _engine(config, image, engine)
        self.i_payload = Signal.like(self.dut.i.payload, name="host_i_payload")

    def _top(self, platform) -> tuple[Module, Module]:
        m = Module()
        em = self.dut.elaborate(platform)
        self.dut._MustUse__used = True       # elaborated here, so the harness can name its units
        m.submodules.dut = em
        m.d.comb += [self.dut.load.valid.eq(0), self.dut.load.payload.eq(0),
                     self.dut.i.payload.eq(self.i_payload if self.free_data else 0)]
        return m, em


class EngineSafety(_EngineHarness):
    """Memory bounds and the ``o`` stream rule, with the host free (``mode bmc``); ``engine`` is the
    class to build (a mutant in the tests)."""

    @property
    def ports(self) -> list:
        d = self.dut
        return [d.i.valid, *([self.i_payload] if self.free_data else []), d.o.ready, d.o.valid, Value.cast(d.o.payload), d.busy]

    def elaborate(self, platform):
        m, em = self._top(platform)
        d = self.dut
        # i: the host keeps an offered beat, unchanged, until taken
        waiting, last = Signal(name="i_waiting"), Signal.like(d.i.payload, name="i_last")
        m.d.sync += [waiting.eq(d.i.valid & ~d.i.ready), last.eq(d.i.payload)]
        m.d.comb += Assume(~waiting | (d.i.valid & (d.i.payload == last)))
        # o: the engine keeps an offered beat, unchanged, until taken
        o_payload = Value.cast(d.o.payload)
        o_waiting, o_last = Signal(name="o_waiting"), Signal.like(o_payload, name="o_last")
        m.d.sync += [o_waiting.eq(d.o.valid & ~d.o.ready), o_last.eq(o_payload)]
        m.d.comb += Assert(~o_waiting | (d.o.valid & (o_payload == o_last)))
        for name, enable, addr, size in address_checks(d, self.config, em):
            ok = Signal(name="in_range_" + "".join(ch if ch.isalnum() else "_" for ch in name))
            m.d.comb += [ok.eq(~enable | (addr < size)), Assert(ok)]
        return m


class EngineTermination(_EngineHarness):
    """``busy`` rises with the first input beat and falls within ``bound`` cycles (``mode bmc``), the
    host offering a beat on every cycle and always ready for output."""

    def __init__(self, *, config: EngineConfig, image: bytes, bound: int, engine=None):
        if not isinstance(bound, int) or bound < 1:
            raise ConfigError(f"bound must be a positive integer, not {bound!r}")
        super().__init__(config=config, image=image, engine=engine)
        self.bound = bound

    @property
    def depth(self) -> int:
        """BMC steps: reset, the units' first fetches before the first beat is taken (at most
        ``PRIME_CYCLES``), the bound, and the cycle that checks it."""
        return self.bound + PRIME_CYCLES + 3

    @property
    def ports(self) -> list:
        d = self.dut
        return [*([self.i_payload] if self.free_data else []), d.o.valid, Value.cast(d.o.payload), d.busy]

    def elaborate(self, platform):
        m, _ = self._top(platform)
        d = self.dut
        m.d.comb += [d.i.valid.eq(1), d.o.ready.eq(1)]
        started, fell = Signal(name="started"), Signal(name="fell")
        cycles = Signal(range(self.bound + 1), name="cycles")        # edges since the first beat, saturating
        first = d.i.valid & d.i.ready & ~started
        with m.If(first):
            m.d.sync += [started.eq(1), cycles.eq(1)]
        with m.Elif(started & (cycles < self.bound)):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(started & ~d.busy):
            m.d.sync += fell.eq(1)
        since_reset = Signal(range(PRIME_CYCLES + 2), name="since_reset")
        with m.If(since_reset <= PRIME_CYCLES):
            m.d.sync += since_reset.eq(since_reset + 1)
        m.d.comb += [
            Assert(~(since_reset > PRIME_CYCLES) | started),            # the first beat is taken in time
            Assert(~(started & (cycles >= self.bound)) | fell | ~d.busy),  # and busy is low by the bound
        ]
        return m


# Reset to the first input beat's handshake: every unit's fetch has looked at its first entries.
PRIME_CYCLES = 12


def _first_index(m: Module, hits: list, name: str) -> Signal:
    """The index of the first true value of ``hits`` (``len(hits)`` when none is)."""
    idx = Signal(range(len(hits) + 1), name=name)
    value = len(hits)
    for k in reversed(range(len(hits))):
        value = Mux(hits[k], k, value)
    m.d.comb += idx.eq(value)
    return idx


class FetchHarness(Elaboratable):
    """``DescriptorFetch`` over a program store of ``entries`` descriptors, every program the
    compiler can emit: each entry's opcode free (``AnyConst``, constant over time), with at least one
    ``END`` (the compiler ends every program with one and refuses a program that does not fit the
    store). The store is modelled as the engine's synchronous read port (an address outside the store
    reads a free value); ``desc.ready`` and ``restart`` are free on every cycle.

    Asserted, by k-induction (every reachable state, every program, every consumer):

    * every read (``r_en``) addresses an entry: ``r_addr < entries``, and the pointer never passes
      the first ``END`` (the lemma that closes the induction);
    * termination: a ranking ``3 * (first END - pointer) + phase`` (phase 2 read, 1 look, 3 hold, 0
      stopped) falls on every cycle that is neither a restart, nor a descriptor held for a consumer
      that is not ready, nor stopped; it starts at most at ``3 * entries + 3``, so ``at_end`` is high
      after at most that many such cycles (``FETCH_STEPS_PER_ENTRY`` cycles per entry);
    * ``desc`` keeps ``valid`` and its payload until ``ready`` or ``restart`` (the stream rule).

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

        from ..engine.isa import DESCRIPTOR_BITS, OP_BITS, OPCODES

        m = Module()
        fm = self.dut.elaborate(platform)
        self.dut._MustUse__used = True
        m.submodules.fetch = fm
        f, n = self.dut, self.entries
        program = [AnyConst(DESCRIPTOR_BITS) for _ in range(n)]
        ends = [p[:OP_BITS] == OPCODES["END"] for p in program]
        m.d.comb += Assume(Cat(*ends).any())                    # the compiler's check: the program ends
        first_end = _first_index(m, ends, "first_end")

        # the store's synchronous read port
        read = AnySeq(DESCRIPTOR_BITS)
        for k in reversed(range(n)):
            read = Mux(f.r_addr == k, program[k], read)
        r_data = Signal(DESCRIPTOR_BITS, name="r_data")
        with m.If(f.r_en):
            m.d.sync += r_data.eq(read)
        m.d.comb += f.r_data.eq(r_data)

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
        # (``restart`` withdraws an offered descriptor: the engine restarts only with every unit at END)
        m.d.sync += [waiting.eq(f.desc.valid & ~f.desc.ready & ~f.restart), last.eq(payload)]
        m.d.comb += [
            Assert(~f.r_en | (f.r_addr < n)),                              # reads inside the store
            Assert(ptr <= first_end),                                      # never past the END
            Assert(~progress | (rank < rank_last)),                        # termination
            Assert(~waiting | (f.desc.valid & (payload == last))),        # the stream rule
            # lemmas: the look phase sees the entry the pointer names; a held descriptor is valid
            Assert(~look | (r_data == selected)),
            Assert((state == 2) == f.desc.valid),
            Assert((state == 3) == f.at_end),
        ]
        return m


def _stream_assumed(m: Module, port, name: str) -> None:
    """The stream rule on an input stream of a unit: an offered payload stays until taken."""
    payload = Value.cast(port.payload)
    waiting, last = Signal(name=f"{name}_waiting"), Signal.like(payload, name=f"{name}_last")
    m.d.sync += [waiting.eq(port.valid & ~port.ready), last.eq(payload)]
    m.d.comb += Assume(~waiting | (port.valid & (payload == last)))


# The largest tensor dimensions of the unit bounds' descriptors (small programs, for the solver: the
# units multiply them); every base address stays free.
UNIT_MAX_DIM = 4


class OutputBoundHarness(Elaboratable):
    """``OutputUnit``: every scratchpad read is inside the scratchpad (``words`` words), for OUTPUT
    descriptors that pass the compiler's check: the tensor's ``h * w * pp`` words from ``in_base`` lie in
    the scratchpad (``in_base + h*w*pp <= words``), ``h``, ``w`` in [1, ``UNIT_MAX_DIM``], ``pp`` in [1, 2],
    ``c`` in [1, ``pp * rows``]. Descriptors arrive when the solver chooses (the stream rule assumed),
    ``o.ready`` and ``r_data`` are free. Asserted by k-induction, with the lemmas that close it: while the
    unit runs, its word counter is below the tensor's words and the tensor lies inside the scratchpad.
    ``unit`` is the class to build (a mutant in the tests)."""

    def __init__(self, *, rows: int = 4, words: int, unit=None):
        from ..hw.engine.output_unit import OutputUnit

        self._MustUse__silence = True
        if not isinstance(words, int) or words < 1:
            raise ConfigError(f"words must be a positive integer, not {words!r}")
        self.rows, self.words = rows, words
        self.dut = (OutputUnit if unit is None else unit)(rows=rows, addr_bits=max(1, (words - 1).bit_length()))
        self._MustUse__silence = False

    @property
    def ports(self) -> list:
        from .harness import component_ports
        return component_ports(self.dut)

    def elaborate(self, platform):
        m = Module()
        um = self.dut.elaborate(platform)
        self.dut._MustUse__used = True
        m.submodules.unit = um
        u, n = self.dut, UNIT_MAX_DIM
        dp = u.desc.payload
        _stream_assumed(m, u.desc, "desc")
        size = dp.h * dp.w * dp.pp
        m.d.comb += Assume(~u.desc.valid | ((dp.h >= 1) & (dp.h <= n) & (dp.w >= 1) & (dp.w <= n) & (dp.pp >= 1)
                                            & (dp.pp <= 2) & (dp.c >= 1) & (dp.c <= dp.pp * self.rows)
                                            & (dp.in_base + size <= self.words)))
        d, run = data.View(descriptor_layout("OUTPUT"), _internal(um, "d")), _internal(um, "run")
        i_word, n_words = _internal(um, "i_word"), _internal(um, "n_words")
        addr = d.in_base + i_word                                   # the unit's address, before the port
        m.d.comb += [
            Assert(~u.r_en | (addr < self.words)),
            Assert(~run | ((i_word < n_words) & (d.in_base + n_words <= self.words))),     # lemma
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
        um = self.dut.elaborate(platform)
        self.dut._MustUse__used = True
        m.submodules.unit = um
        u = self.dut
        block = 4 * self.config.cols
        poff = AnyConst(24)
        m.d.comb += u.poff.eq(poff)
        dp = u.desc.payload
        _stream_assumed(m, u.desc, "desc")
        word = dp.p_base >> 2
        first = (word - poff) // block
        m.d.comb += Assume(~u.desc.valid | ((dp.p_base[:2] == 0) & (word >= poff) & ((word - poff) % block == 0)
                                            & (dp.n_tiles >= 1) & (first + dp.n_tiles <= self.entries)))
        d_valid, entry0 = _internal(um, "d_valid"), _internal(um, "entry0")
        nt, n_tiles = _internal(um, "nt"), _internal(um, "n_tiles")
        m.d.comb += [
            Assert(~u.r_en | (entry0 + nt < self.entries)),
            Assert(~d_valid | ((entry0 + n_tiles <= self.entries) & (nt < n_tiles))),      # lemma
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

    @property
    def depth(self) -> int:
        """Reset, the descriptor, then every tile of the largest descriptor (``rows`` cycles each) plus slack."""
        return 2 * WEIGHT_MAX_TILES * (self.config.rows + 1) + 6

    @property
    def ports(self) -> list:
        from .harness import component_ports
        return component_ports(self.dut)

    def elaborate(self, platform):
        from ..engine.isa import IN_WINDOW

        m = Module()
        m.submodules.unit = u = self.dut
        c = self.config
        dp = u.desc.payload
        _stream_assumed(m, u.desc, "desc")
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
        m.d.comb += Assert(~u.r_en | (u.r_addr < self.rows_in_store))
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
