"""``NetworkEngine``: the ``--top network`` hardware (docs/engine.md, "Hardware").

The top only joins its units; ``network_signature`` is its port contract (the Verilog generator,
the manifest and the cocotb testbench build against it).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ...contract import ADD_MODES
from ...engine.config import EngineConfig
from ...engine.isa import DESCRIPTOR_BITS, DESCRIPTOR_WORDS, OP_BITS, OPCODES
from ...engine.load import program_tables
from ...engine.program import Program
from ...errors import ConfigError
from ..accumulator import Accumulator
from ..array import SystolicArray
from ..dsp_array import DspArray
from ..skew import delayed
from .absent import AbsentUnit
from .add_unit import AddUnit, add_unit_signature
from .fetch import INDEX_BITS, DescriptorFetch
from .input_unit import InputUnit
from .issue import COUNT_BITS, MatmulIssue
from .layouts import descriptor_layout
from .load_unit import LoadUnit
from .loader import ParamFetch, WeightLoader
from .memories import Scratchpad, WeightStore
from .output_unit import OutputUnit
from .pool_unit import PoolUnit, pool_unit_signature
from .wb_unit import RequantStage, WritebackUnit

__all__ = ["NetworkEngine", "network_signature", "output_layout", "trace_layout"]


def _act_addr_bits(engine: EngineConfig) -> int:
    return max(1, ceil_log2(engine.act_words))


def trace_layout(engine: EngineConfig) -> data.StructLayout:
    """The debug tap, every cycle: ``issue`` (the scratchpad read port is used by a MATMUL beat, a POOL
    read or an OUTPUT read), ``desc`` (that read's descriptor index), and the scratchpad write port:
    ``we``, ``addr``, ``mask`` (lanes written), ``data`` (``8*rows`` bits, lane j in bits 8j..8j+7)."""
    R = engine.array.rows
    return data.StructLayout({"issue": 1, "desc": 8, "we": 1, "addr": unsigned(_act_addr_bits(engine)),
                              "mask": unsigned(R), "data": unsigned(8 * R)})


def output_layout(engine: EngineConfig) -> data.StructLayout:
    """One output beat: ``rows`` dense int8 bytes (byte j in bits 8j..8j+7) and ``last`` (a tensor's final beat)."""
    return data.StructLayout({"data": unsigned(8 * engine.array.rows), "last": 1})


def network_signature(engine: EngineConfig) -> wiring.Signature:
    """The top's ports (fixed contract): ``load`` (model words, ``qhw.engine.load.load_words``), ``i``
    (input beats of ``rows`` dense int8 bytes), ``o`` (output beats), ``busy``, ``error``, ``loaded``,
    ``trace`` (``trace_layout``)."""
    if not isinstance(engine, EngineConfig):
        raise ConfigError(f"engine must be an EngineConfig, not {engine!r}")
    R = engine.array.rows
    return wiring.Signature({
        "load": In(stream.Signature(unsigned(32))),
        "i": In(stream.Signature(unsigned(8 * R))),
        "o": Out(stream.Signature(output_layout(engine))),
        "busy": Out(1),
        "error": Out(1),
        "loaded": Out(1),
        "trace": Out(trace_layout(engine)),
    })


def _check_engine(engine: EngineConfig) -> None:
    a = engine.array
    if a.requant_passes != 1:
        raise ConfigError(f"the network engine needs one requantization lane per column, not {a.requant_lanes}")
    for name, v in (("rows", a.rows), ("cols", a.cols)):
        if v & (v - 1):
            raise ConfigError(f"the network engine needs {name} a power of two, not {v}")
    if a.cols < 4:
        raise ConfigError(f"the network engine needs at least 4 columns (4-byte load words), not {a.cols}")
    if engine.program_words // DESCRIPTOR_WORDS > 1 << INDEX_BITS:
        raise ConfigError(f"program_words must hold at most {1 << INDEX_BITS} descriptors, not "
                          f"{engine.program_words // DESCRIPTOR_WORDS}")


def _image_init(engine: EngineConfig, image: bytes):
    """The memories' initial contents for an embedded ``.qbin`` (``Program.from_bytes``)."""
    prog = Program.from_bytes(image, "image")
    a = engine.array
    if (prog.rows, prog.cols) != (a.rows, a.cols):
        raise ConfigError(f"image: compiled for a {prog.rows}x{prog.cols} array, not {a.rows}x{a.cols}")
    C = a.cols
    descs = [int.from_bytes(b"".join(w.to_bytes(4, "little") for w in d.to_words()), "little")
             for d in prog.descriptors]
    wbytes = np.frombuffer(prog.image[:prog.params_offset], np.int8)
    wbytes = np.concatenate([wbytes, np.zeros(-wbytes.size % C, np.int8)])
    params = np.frombuffer(prog.image[prog.params_offset:], "<i4")
    wide = np.concatenate([params, np.zeros(-params.size % (4 * C), np.int32)]).reshape(-1, 4 * C)
    if engine.weight_ram == "spram":
        raise ConfigError("image: weight_ram spram cannot be embedded (SPRAM has no initial contents); "
                          "load the model through the load stream")
    tables = program_tables(prog)
    if (len(descs) > engine.program_words // DESCRIPTOR_WORDS or wbytes.size > engine.weight_bytes
            or params.size > engine.weight_bytes // 4 or len(tables) > engine.tables):
        raise ConfigError("image: does not fit the engine's memories (qhw compile names the sizes)")
    tags = [tag for tag, _ in tables] + [0] * (engine.tables - len(tables))
    entries = [v for _, e in tables for v in e] + [0] * (256 * (engine.tables - len(tables)))
    return (descs, wbytes.reshape(-1, C).tolist(), params.tolist(), wide.tolist(), prog.params_offset // 4,
            tags, entries)


class NetworkEngine(wiring.Component):
    """The network engine: model words in (``load``), input beats in (``i``), output beats out (``o``).

    The top joins its units (docs/engine.md, "Hardware"): ``LoadUnit`` -> program store, weight store,
    parameter stores; one ``DescriptorFetch`` per unit; ``InputUnit``; the read side in program order
    (``MatmulIssue`` -> array -> ``Accumulator`` -> ``RequantStage`` -> ``WritebackUnit``, ``PoolUnit``,
    ``OutputUnit``); ``WeightLoader`` and ``ParamFetch`` ahead of the array; one scratchpad write port
    whose writes are counted (the dependence counter). ``image``: an embedded ``.qbin`` (``loaded``
    starts high). ``family``: the lanes' multipliers (``RequantLane``), the DSP PEs of ``pe`` other than
    ``generic`` (``DspArray``) and, on ``"ice40"``, ``SB_SPRAM256KA`` for ``weight_ram`` ``spram``.
    """

    def __init__(self, *, engine: EngineConfig, family: str | None = None, image: bytes | None = None):
        if not isinstance(engine, EngineConfig):
            raise ConfigError(f"engine must be an EngineConfig, not {engine!r}")
        if family not in (None, "ice40", "ecp5"):
            raise ConfigError(f"family must be None, 'ice40' or 'ecp5', not {family!r}")
        _check_engine(engine)
        self.engine, self.family = engine, family
        self._init = _image_init(engine, bytes(image)) if image is not None else None
        super().__init__(network_signature(engine))

    @property
    def latency(self) -> int:
        """A last-K-tile beat's issue to its result row's write: ``EngineConfig.writeback_latency``."""
        return self.engine.writeback_latency

    def elaborate(self, platform):
        m = Module()
        e = self.engine
        c = e.array
        R, C = c.rows, c.cols
        entries = e.program_words // DESCRIPTOR_WORDS
        weight_rows = e.weight_bytes // C
        param_words = e.weight_bytes // 4
        param_entries = max(1, param_words // (4 * C))
        aw = _act_addr_bits(e)
        T = e.tables
        init = self._init or ([], [], [], [], 0, [0] * T, None)

        # memories
        m.submodules.program = program = Memory(shape=unsigned(DESCRIPTOR_BITS), depth=entries, init=init[0])
        m.submodules.scratch = scratch = Scratchpad(rows=R, cols=C, words=e.act_words)
        m.submodules.weights = weights = WeightStore(cols=C, depth=weight_rows, init=init[1], ram=e.weight_ram,
                                                     family=self.family if self.family == "ice40" else None)
        m.submodules.pnarrow = pnarrow = Memory(shape=signed(32), depth=param_words, init=init[2])
        m.submodules.pwide = pwide = Memory(shape=data.ArrayLayout(signed(32), 4 * C), depth=param_entries,
                                            init=init[3])

        # model loading
        m.submodules.load = load = LoadUnit(cols=C, programs=entries, weight_rows=weight_rows,
                                            param_words=param_words, param_entries=param_entries, tables=T)
        # table slots: each slot's tag (the ``table`` field naming it), the entries in the TableUnits
        # the loaded model's state is reset-less, like the memories it describes: a reset (the board
        # link's reset frame) aborts an inference without losing the model
        tags = Signal(data.ArrayLayout(unsigned(24), T), init=init[5], reset_less=True)
        with m.If(load.tag.en):
            m.d.sync += tags[load.tag.slot].eq(load.tag.data)

        def table_slot(field):
            slot = Signal(range(T))
            for k in range(T):
                with m.If(tags[k] == field):
                    m.d.comb += slot.eq(k)
            return slot
        running = Signal()
        wiring.connect(m, wiring.flipped(self.load), load.load)
        pw_prog, pw_n, pw_w = program.write_port(), pnarrow.write_port(), pwide.write_port()
        m.d.comb += [load.running.eq(running),
                     pw_prog.en.eq(load.prog.en), pw_prog.addr.eq(load.prog.addr), pw_prog.data.eq(load.prog.data),
                     weights.w_en.eq(load.wt.en), weights.w_addr.eq(load.wt.addr), weights.w_data.eq(load.wt.data),
                     pw_n.en.eq(load.pn.en), pw_n.addr.eq(load.pn.addr), pw_n.data.eq(load.pn.data),
                     pw_w.en.eq(load.pw.en), pw_w.addr.eq(load.pw.addr), pw_w.data.eq(load.pw.data)]
        poff = Signal(24, init=init[4], reset_less=True)
        poff_m1 = Signal(24, init=(init[4] - 1) % (1 << 24), reset_less=True)   # poff - 1: a pool entry's second word
        loaded = Signal(init=int(self._init is not None), reset_less=True)
        error = Signal()
        with m.If(load.begin):
            m.d.sync += [loaded.eq(0), error.eq(0)]
        with m.If(load.done):
            m.d.sync += [poff.eq(load.poff), poff_m1.eq(load.poff - 1), loaded.eq(~load.failed),
                         error.eq(load.failed)]
        with m.Elif(load.error):
            m.d.sync += error.eq(1)
        restart = Signal()

        # one fetch per unit
        def fetch(name, ops):
            f = DescriptorFetch(ops=ops, entries=entries)
            m.submodules[f"fetch_{name}"] = f
            rp = program.read_port()
            m.d.comb += [rp.addr.eq(f.r_addr), rp.en.eq(f.r_en), f.r_data.eq(rp.data), f.restart.eq(restart)]
            return f
        f_in = fetch("input", ("INPUT",))
        f_issue = fetch("issue", ("MATMUL", "POOL", "OUTPUT", "ADD"))
        f_load = fetch("loader", ("MATMUL",))
        f_param = fetch("params", ("MATMUL",))
        f_wb = fetch("writeback", ("MATMUL",))

        def fields(bits, op):       # ``op``'s fields in a fetched descriptor's bits
            return data.View(descriptor_layout(op), bits[OP_BITS:OP_BITS + descriptor_layout(op).size])

        def view(f, op):
            return fields(f.desc.payload.bits, op)

        # input: the first beat is taken once every unit holds its first descriptor (the timing contract
        # counts from that beat, with every unit ready)
        seen = [Signal(name=f"primed_{n}") for n in range(4)]
        for flag, f in zip(seen, (f_issue, f_load, f_param, f_wb)):
            with m.If(restart):
                m.d.sync += flag.eq(0)
            with m.Elif(f.desc.valid | f.at_end):
                m.d.sync += flag.eq(1)
        primed = Signal()
        m.d.sync += primed.eq(seen[0] & seen[1] & seen[2] & seen[3] & ~restart)
        m.submodules.input = inp = InputUnit(rows=R, addr_bits=aw)
        m.d.comb += [inp.desc.valid.eq(f_in.desc.valid), inp.desc.payload.eq(view(f_in, "INPUT")),
                     f_in.desc.ready.eq(inp.desc.ready)]
        # before the first beat the input register is empty, so ``i.ready`` is the unit's registered
        # ``idle_ready``: ``go`` (which every loader register sees) does not wait for the unit's byte logic
        i_ready = Mux(running, inp.i.ready, primed & inp.idle_ready)
        m.d.comb += [inp.i.valid.eq(self.i.valid & (running | primed)), inp.i.payload.eq(self.i.payload),
                     self.i.ready.eq(i_ready)]
        first_beat = self.i.valid & primed & inp.idle_ready & ~running
        go = running | first_beat
        with m.If(first_beat):
            m.d.sync += running.eq(1)

        # the read side, in program order
        m.submodules.issue = issue = MatmulIssue(config=c, settled=True)
        # the optional units (``EngineConfig.units``), or their stand-ins that flag any descriptor they take
        if "pool" in e.units:
            pool = PoolUnit(config=c, family=self.family, avg_lane=e.pool_avg == "lane", settled=2)
        else:
            pool = AbsentUnit(signature=pool_unit_signature(R))
        if "add" in e.units:
            # no ADD mode among the engine's: no ADD compiles for it, the lanes' rule does not matter
            add_modes = tuple(mode for mode in c.rounding if mode in ADD_MODES) or ADD_MODES[:1]
            add = AddUnit(rows=R, tables=T, init=init[6], modes=add_modes)
        else:
            add = AbsentUnit(signature=add_unit_signature(R, T))
        m.submodules.pool, m.submodules.add = pool, add
        for unit in (pool, add):
            if isinstance(unit, AbsentUnit):
                with m.If(unit.taken):
                    m.d.sync += error.eq(1)
        m.submodules.output = out = OutputUnit(rows=R, addr_bits=aw)
        wcount = Signal(COUNT_BITS)
        op = f_issue.desc.payload.bits[:OP_BITS]
        is_mm, is_pool, is_out = (op == OPCODES["MATMUL"]), (op == OPCODES["POOL"]), (op == OPCODES["OUTPUT"])
        is_add = op == OPCODES["ADD"]
        # every read-side unit idle or finishing (an ADD: in its last write's cycle)
        free = issue.desc.ready & pool.desc.ready & out.desc.ready & add.desc.ready
        # a MATMUL or POOL is taken from its second offered cycle on (the fetch's register is then a cycle
        # old), so the generators form their descriptor products a cycle ahead (``fetch.ahead``); the
        # read side's next descriptor is fetched while the current one runs, so no cycle moves
        settled = Signal()
        m.d.sync += settled.eq(f_issue.desc.valid & ~f_issue.desc.ready & ~restart)
        settled2 = Signal()           # a POOL from its third: its generator's products are all ahead
        # a POOL's dependence test, registered: ``wcount >= dep_base`` from the counter's next value and the
        # offered descriptor, exact once ``settled2`` holds (the fetch's payload is then a cycle old)
        pool_dep, wcount_nx = Signal(name="pool_dep"), Signal(COUNT_BITS, name="wcount_nx")
        m.d.sync += settled2.eq(settled & f_issue.desc.valid & ~f_issue.desc.ready & ~restart)
        # an OUTPUT's and an ADD's dependence tests (taken in their first offered cycle): registers equal
        # to ``wcount >= dep_base`` of the offered descriptor in every cycle, formed from both next values
        # (the counter's ``wcount_nx``, the fetch's ``bits_nx``: the word read in its LOOK), so the accept
        # is not behind a carry chain; 1 at reset (a zero count and a zero payload)
        out_dep, add_dep = Signal(init=1, name="out_dep"), Signal(init=1, name="add_dep")
        pool_d, out_d, add_d = view(f_issue, "POOL"), view(f_issue, "OUTPUT"), view(f_issue, "ADD")
        m.d.comb += [issue.desc.payload.d.eq(view(f_issue, "MATMUL")),
                     issue.desc.payload.index.eq(f_issue.desc.payload.index),
                     issue.desc.valid.eq(f_issue.desc.valid & settled & is_mm & free),
                     pool.desc.payload.eq(pool_d),
                     pool.desc.valid.eq(f_issue.desc.valid & settled2 & is_pool & free & pool_dep),
                     out.desc.payload.eq(out_d),
                     out.desc.valid.eq(f_issue.desc.valid & is_out & free & out_dep),
                     add.desc.payload.eq(add_d), add.t_slot.eq(table_slot(add_d.table)),
                     add.desc.valid.eq(f_issue.desc.valid & is_add & free & add_dep),
                     f_issue.desc.ready.eq((issue.desc.valid & issue.desc.ready) | (pool.desc.valid & pool.desc.ready)
                                           | (out.desc.valid & out.desc.ready) | (add.desc.valid & add.desc.ready))]
        index = Signal(INDEX_BITS)                 # the POOL, OUTPUT or ADD running (for the trace)
        with m.If((pool.desc.valid & pool.desc.ready) | (out.desc.valid & out.desc.ready)
                  | (add.desc.valid & add.desc.ready)):
            m.d.sync += index.eq(f_issue.desc.payload.index)
        # one reader per cycle (the read-side units run one at a time; a unit starts in its predecessor's
        # last read's cycle + 1), so the address is an AND-OR of the four, not a priority chain
        readers = ((issue.r_en, issue.r_addr), (pool.r_en, pool.r_addr), (add.r_en, add.r_addr), (out.r_en, out.r_addr))
        r_addr = 0
        for en, addr in readers:
            r_addr = r_addr | Mux(en, addr[:aw], 0)
        m.d.comb += [scratch.r_en.eq(issue.r_en | pool.r_en | out.r_en | add.r_en),
                     scratch.r_addr.eq(r_addr),
                     issue.r_data.eq(scratch.r_data), pool.r_data.eq(scratch.r_data), out.r_data.eq(scratch.r_data),
                     add.r_data.eq(scratch.r_data)]
        wiring.connect(m, out.o, wiring.flipped(self.o))

        # weights and parameters ahead of the array
        m.submodules.loader = loader = WeightLoader(config=c, depth_bits=max(1, ceil_log2(weight_rows)))
        m.submodules.params = params = ParamFetch(config=c, depth_bits=max(1, ceil_log2(param_entries)))
        for f, unit in ((f_load, loader), (f_param, params)):
            m.d.comb += [unit.desc.valid.eq(f.desc.valid), unit.desc.payload.eq(view(f, "MATMUL")),
                         f.desc.ready.eq(unit.desc.ready)]
        # the issue counts a load as started ``weight_write_lag`` cycles late when the array shifts its
        # weight write down the rows (the contract's ``weight_latency``); a restart drops those in flight
        load_start = delayed(m, loader.start, c.weight_write_lag, name="load_start", clear=restart)
        m.d.comb += [weights.r_addr.eq(loader.r_addr), weights.r_en.eq(loader.r_en), loader.r_data.eq(weights.r_data),
                     loader.tile_done.eq(issue.tile_done), loader.go.eq(go), loader.restart.eq(restart),
                     issue.load_start.eq(load_start), issue.wcount.eq(wcount), issue.restart.eq(restart)]
        rp_w = pwide.read_port()
        m.d.comb += [rp_w.addr.eq(params.r_addr), rp_w.en.eq(params.r_en), params.r_data.eq(rp_w.data),
                     params.poff.eq(poff), params.group_done.eq(issue.group_done), params.restart.eq(restart)]

        # the array, the accumulator, the lanes, the write-back
        if c.pe == "generic":
            m.submodules.array = array = SystolicArray(config=c)
        else:       # DSP-mapped PEs (pe ice40-dual: two MACs per SB_MAC16), same ports and timing contract
            m.submodules.array = array = DspArray(config=c, family=self.family)
        m.submodules.accumulator = acc = Accumulator(config=c)
        m.submodules.requant = rq = RequantStage(config=c, family=self.family)
        m.submodules.writeback = wb = WritebackUnit(config=c, pool_line=e.pool_line, addr_bits=aw, family=self.family,
                                                    tables=T, table_init=init[6], avg_lane=e.pool_avg == "lane",
                                                    settled=True)
        m.d.comb += [array.a_in.eq(issue.a_in), array.bank_in.eq(issue.bank_in), array.w_we.eq(loader.w_we),
                     array.w_bank.eq(loader.w_bank), array.w_data.eq(loader.w_data), acc.psum.eq(array.psum_out),
                     rq.banks.eq(params.banks)]
        wiring.connect(m, issue.tag, acc.tag)
        wiring.connect(m, acc.row, rq.row)
        wiring.connect(m, rq.out, wb.row)
        wb_settled = Signal()         # as ``settled``: the write-back's products a cycle ahead
        m.d.sync += wb_settled.eq(f_wb.desc.valid & ~(wb.desc.valid & wb.desc.ready) & ~restart)
        m.d.comb += [wb.desc.valid.eq(f_wb.desc.valid & wb_settled), wb.desc.payload.eq(view(f_wb, "MATMUL")),
                     f_wb.desc.ready.eq(wb.desc.valid & wb.desc.ready),
                     wb.t_slot.eq(table_slot(view(f_wb, "MATMUL").table))]
        for unit in (wb, add):          # the tables, loaded with the model
            m.d.comb += [unit.load_en.eq(load.tab.en), unit.load_slot.eq(load.tab.slot),
                         unit.load_index.eq(load.tab.index), unit.load_data.eq(load.tab.data)]

        # pool-table reads: the write-back's entry and the POOL unit's, 64 bits each (two narrow ports)
        for unit in (wb, pool) if "pool" in e.units else (wb,):
            lo, hi = pnarrow.read_port(), pnarrow.read_port()
            byte_word = unit.p_addr >> 2
            m.d.comb += [lo.addr.eq(byte_word - poff), hi.addr.eq(byte_word - poff_m1),
                         unit.p_data.eq(Cat(lo.data, hi.data))]

        # the one write port, and its counter
        we, w_full = Signal(), Signal()
        w_addr, w_lane = Signal(aw), Signal(range(R))
        w_data = Signal(data.ArrayLayout(signed(8), R))
        with m.If(inp.w.valid):
            m.d.comb += [we.eq(1), w_full.eq(1), w_addr.eq(inp.w.payload.addr), w_data.eq(inp.w.payload.data)]
        with m.Elif(wb.w.valid):
            m.d.comb += [we.eq(1), w_addr.eq(wb.w.payload.addr), w_lane.eq(wb.w.payload.lane)]
            m.d.comb += [w_data[j].eq(wb.w.payload.data[j]) for j in range(C)]
        with m.Elif(pool.w_en):
            m.d.comb += [we.eq(1), w_full.eq(1), w_addr.eq(pool.w_addr), w_data.eq(pool.w_data)]
        with m.Elif(add.w_en):
            m.d.comb += [we.eq(1), w_full.eq(1), w_addr.eq(add.w_addr), w_data.eq(add.w_data)]
        collide = (inp.w.valid.as_unsigned() + wb.w.valid + pool.w_en + add.w_en) > 1
        with m.If(collide):
            m.d.sync += error.eq(1)
        m.d.comb += [scratch.w_en.eq(we), scratch.w_full.eq(w_full), scratch.w_addr.eq(w_addr),
                     scratch.w_lane.eq(w_lane), scratch.w_data.eq(w_data)]

        # the end of an inference: the issue side read END and everything has drained, registered (a cycle
        # after the units drained; the next inference counts from its own first beat), so the restart that
        # every fetch and unit sees leaves a register, not the units' terminal compares
        done = Signal()
        m.d.sync += done.eq(running & f_issue.at_end & ~f_issue.desc.valid & issue.desc.ready & ~issue.busy
                            & pool.desc.ready & out.idle & ~wb.busy & add.desc.ready & ~done)
        m.d.comb += restart.eq(done | load.done)
        with m.If(done):
            m.d.sync += running.eq(0)
        m.d.comb += wcount_nx.eq(Mux(done, 0, Mux(we, wcount + 1, wcount)))
        m.d.sync += [wcount.eq(wcount_nx), pool_dep.eq(wcount_nx >= pool_d.dep_base),
                     out_dep.eq(wcount_nx >= fields(f_issue.bits_nx, "OUTPUT").dep_base),
                     add_dep.eq(wcount_nx >= fields(f_issue.bits_nx, "ADD").dep_base)]
        # the counter's next step and value, for the issuer
        m.d.comb += [issue.w_inc.eq(we), issue.w_clear.eq(done), issue.wcount_nx.eq(wcount_nx)]

        # ports
        t = self.trace
        m.d.comb += [self.busy.eq(running), self.error.eq(error), self.loaded.eq(loaded),
                     t.issue.eq(scratch.r_en), t.desc.eq(Mux(issue.r_en, issue.index, index)),
                     t.we.eq(we), t.addr.eq(w_addr)]
        for j in range(R):
            lane_on = w_full | ((j >= w_lane) & (j < w_lane + C))
            value = Mux(w_full, w_data[j], Mux(j >= w_lane, w_data.as_value().word_select((j - w_lane)[:8], 8), 0))
            m.d.comb += [t.mask[j].eq(we & lane_on), t.data[8 * j:8 * j + 8].eq(Mux(we & lane_on, value, 0))]
        return m
