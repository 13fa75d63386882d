"""``DescriptorFetch``: one unit's view of the program store, the descriptors of its opcodes in order.

Each unit of the engine (input, issue, weight loader, parameter fetch, write-back) walks the program
with its own fetch pointer and read port (docs/engine.md, "Hardware"), so a unit prefetches its next
descriptor while it runs the current one and no unit waits for another's queue: the units stay in step
through the dependence counters, not through a shared dispatcher. ``HALT`` and the opcodes not asked
for are skipped (two cycles each); ``END`` stops the walk until ``restart``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ...engine.isa import DESCRIPTOR_BITS, OP_BITS, OPCODES
from ...errors import ConfigError

__all__ = ["DescriptorFetch", "INDEX_BITS", "ahead", "fetched_layout"]

INDEX_BITS = 8          # the trace's descriptor index


def ahead(m: Module, value, *, settled: bool, name: str):
    """``value`` (a function of an offered descriptor's fields) for use in the descriptor's accept cycle.

    ``settled``: the descriptor is offered (stable) at least one cycle before it is taken (the engine
    gates its fetch's ``valid`` so; ``NetworkEngine``), so ``value`` is registered every cycle and the
    accept reads the register: a product of descriptor fields leaves the accept cycle's path. Otherwise
    ``value`` itself (a unit driven directly, as in its testbench and proofs)."""
    if not settled:
        return value
    r = Signal(Value.cast(value).shape(), name=f"ahead_{name}")
    m.d.sync += r.eq(value)
    return r


def fetched_layout() -> data.StructLayout:
    """A fetched descriptor: its ``DESCRIPTOR_BITS`` (opcode in the low ``OP_BITS``) and program index."""
    return data.StructLayout({"bits": unsigned(DESCRIPTOR_BITS), "index": unsigned(INDEX_BITS)})


class DescriptorFetch(wiring.Component):
    """Fetches the descriptors whose opcode is in ``ops`` from a program store of ``entries`` descriptors.

    ``r_addr``/``r_en`` -> ``r_data`` (one cycle, a synchronous read port of the store); ``desc`` offers
    each match until taken; ``at_end`` is high once ``END`` was read; ``restart`` goes back to entry 0.
    ``bits_nx``: the payload's bits in the next cycle (the word read, in a LOOK), so a test of the offered
    descriptor can be a register that holds in the descriptor's first offered cycle.
    """

    def __init__(self, *, ops, entries: int):
        ops = tuple(ops)
        if not ops or any(op not in OPCODES or op in ("END", "HALT") for op in ops):
            raise ConfigError(f"ops must be opcodes other than END and HALT, not {ops!r}")
        if not isinstance(entries, int) or isinstance(entries, bool) or entries < 1:
            raise ConfigError(f"entries must be a positive integer, not {entries!r}")
        self.ops, self.entries = ops, entries
        super().__init__({
            "r_addr": Out(max(1, ceil_log2(entries))), "r_en": Out(1), "r_data": In(DESCRIPTOR_BITS),
            "desc": Out(stream.Signature(fetched_layout())), "bits_nx": Out(DESCRIPTOR_BITS),
            "at_end": Out(1), "restart": In(1),
        })

    @property
    def latency(self) -> int:
        """Cycles per program entry looked at: 2 (address, then the synchronous read's data)."""
        return 2

    def elaborate(self, platform):
        m = Module()
        ptr = Signal(range(self.entries + 1))
        op = self.r_data[:OP_BITS]
        match = 0
        for name in self.ops:
            match = match | (op == OPCODES[name])
        m.d.comb += self.r_addr.eq(ptr)
        state = Signal(range(4))          # 0 READ, 1 LOOK, 2 HOLD, 3 STOP
        with m.If(self.restart):
            m.d.sync += [ptr.eq(0), self.desc.valid.eq(0), self.at_end.eq(0), state.eq(0)]
        with m.Elif(state == 0):
            m.d.comb += self.r_en.eq(1)
            m.d.sync += state.eq(1)
        with m.Elif(state == 1):
            with m.If(match):
                m.d.sync += [self.desc.valid.eq(1), ptr.eq(ptr + 1), state.eq(2)]
            with m.Elif(op == OPCODES["END"]):
                m.d.sync += [self.at_end.eq(1), state.eq(3)]
            with m.Else():
                m.d.sync += [ptr.eq(ptr + 1), state.eq(0)]
        with m.Elif(state == 2), m.If(self.desc.ready):
            m.d.sync += [self.desc.valid.eq(0), state.eq(0)]
        # the word is taken in every LOOK (``valid`` is low then; a match raises it), so the program
        # store's unregistered read meets only a register's data input: the opcode compare that decides
        # the match does not fan out to the wide payload register's enables
        with m.If(state == 1):
            m.d.sync += [self.desc.payload.bits.eq(self.r_data), self.desc.payload.index.eq(ptr)]
        m.d.comb += self.bits_nx.eq(Mux(state == 1, self.r_data, self.desc.payload.bits))
        return m
