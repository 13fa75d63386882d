"""The property set ``qhw prove`` runs on a ``--top network`` manifest (``qhw.engine.config.EngineConfig``).

Each property is a harness of ``qhw.formal.engine_harness`` sized by the manifest's memories: the
program store's descriptors, the scratchpad's words, the weight store's rows, the parameter blocks.
``Property`` and the report are ``qhw.formal.properties``'s; docs/verification.md ("The network
engine") says what each proves and why the bounded ones cover.
"""

from __future__ import annotations

from ..engine.config import EngineConfig
from ..engine.isa import DESCRIPTOR_WORDS
from ..fpga.payload import DEFAULT_FRAME_BYTES
from .board_harness import network_board_rules
from .engine_harness import (
    POOL_GEOMETRIES,
    WEIGHT_MAX_TILES,
    WRITEBACK_GEOMETRIES,
    AddBoundHarness,
    EngineStreamRules,
    FetchHarness,
    FusedWriteHarness,
    InputBoundHarness,
    OutputBoundHarness,
    ParamBoundHarness,
    PoolBoundHarness,
    WeightBoundHarness,
    WritebackBoundHarness,
)
from .engine_liveness import EngineLivenessHarness
from .harness import IM2COL_GEOMETRIES, Im2colBoundHarness
from .properties import Property

__all__ = ["ENGINE_PROPERTIES", "engine_sizes"]


def engine_sizes(config: EngineConfig) -> dict[str, int]:
    """The memories' sizes the engine builds (``NetworkEngine.elaborate``'s): descriptors in the program
    store, scratchpad words, weight-store rows, wide parameter blocks."""
    return {"entries": config.program_words // DESCRIPTOR_WORDS, "words": config.act_words,
            "weight_rows": config.weight_bytes // config.array.cols,
            "param_entries": max(1, config.weight_bytes // 4 // (4 * config.array.cols))}


def _im2col(geometry: str) -> Property:
    return Property(f"im2col_{geometry}", "Im2colAgen",
                    f"every activation read of a MATMUL of geometry {geometry} is inside the scratchpad (bounded)",
                    lambda c: Im2colBoundHarness(geometry=geometry, words=engine_sizes(c)["words"]),
                    lambda c: 10, mode="bmc")


def _writeback(geometry: str) -> Property:
    def build(c):
        return WritebackBoundHarness(rows=c.array.rows, cols=c.array.cols, geometry=geometry,
                                     words=engine_sizes(c)["words"])

    return Property(f"writeback_{geometry}", "WritebackAgen",
                    f"every kept result row of a MATMUL of geometry {geometry} is written inside the scratchpad "
                    "(bounded)", build, lambda c: WritebackBoundHarness.depth_for(geometry), mode="bmc")


def _pool(geometry: str) -> Property:
    def build(c):
        return PoolBoundHarness(geometry=geometry, words=engine_sizes(c)["words"])

    return Property(f"pool_{geometry}", "PoolAgen",
                    f"every tap read and window output word of a POOL of geometry {geometry} inside the scratchpad "
                    "(bounded)", build, lambda c: PoolBoundHarness.depth_for(geometry), mode="bmc")


ENGINE_PROPERTIES = (
    Property("engine_stream_rules", "NetworkEngine",
             "o holds valid and payload until ready, given load and i do (the whole top)",
             lambda c: EngineStreamRules(config=c), lambda c: 2),
    Property("board_stream_rules", "NetworkBoardTop",
             "the link's frames into the frame unpacker, its load words and input beats into the engine and the "
             "engine's output beats to the link hold valid and payload until ready (the board top, engine "
             "datapath cut)",
             lambda c: network_board_rules(c, frame_bytes=DEFAULT_FRAME_BYTES), lambda c: 2),
    Property("engine_liveness", "NetworkEngine",
             "from reset, with the smallest MATMUL program embedded, input offered and o ready: busy falls "
             "exactly when the cycle model (qhw.engine.cycles.predict) says, whatever the data (bounded)",
             lambda c: EngineLivenessHarness(config=c), EngineLivenessHarness.depth_for, mode="bmc"),
    Property("sequencer", "DescriptorFetch",
             "for every program with an END in the program store: reads stay in the store, the pointer never "
             "passes END, a ranking falls on every unstalled cycle (END within 3*entries+1 of them), desc "
             "follows the stream rule",
             lambda c: FetchHarness(entries=engine_sizes(c)["entries"]), lambda c: 2),
    Property("input_bounds", "InputUnit",
             "every scratchpad write of an INPUT inside the scratchpad, for descriptors that pass the compiler's "
             "check (h, w, wpos <= 4, pp <= 2)",
             lambda c: InputBoundHarness(rows=c.array.rows, words=engine_sizes(c)["words"]), lambda c: 2),
    Property("output_bounds", "OutputUnit",
             "every scratchpad read of an OUTPUT inside the scratchpad, for descriptors that pass the compiler's "
             "check (h, w <= 4, pp <= 2); o holds valid and payload until ready",
             lambda c: OutputBoundHarness(rows=c.array.rows, words=engine_sizes(c)["words"]), lambda c: 2),
    Property("add_bounds", "AddUnit",
             "every scratchpad read and write address of an ADD inside the scratchpad, for descriptors whose "
             "three tensors fit",
             lambda c: AddBoundHarness(rows=c.array.rows, words=engine_sizes(c)["words"], tables=c.tables),
             lambda c: 2),
    Property("fused_write", "WritebackUnit",
             "every write of a MATMUL's result path (plain, fused max or average pool) inside the scratchpad, "
             "given the write-back addresses are (writeback_<geometry>) and one row per destination",
             lambda c: FusedWriteHarness(config=c.array, words=engine_sizes(c)["words"], pool_line=c.pool_line),
             lambda c: 2),
    Property("param_bounds", "ParamFetch",
             "every parameter-store read inside the store, for MATMUL descriptors whose parameter blocks fit",
             lambda c: ParamBoundHarness(config=c.array, entries=engine_sizes(c)["param_entries"]), lambda c: 2),
    Property("weight_bounds", "WeightLoader",
             f"every weight-store read inside the store, for MATMUL descriptors whose tiles fit (bounded: "
             f"<= {WEIGHT_MAX_TILES} tiles per M chunk, <= 2 M chunks)",
             lambda c: WeightBoundHarness(config=c.array, rows_in_store=engine_sizes(c)["weight_rows"]),
             lambda c: WeightBoundHarness.depth_for(c.array),
             mode="bmc"),
    *(_im2col(g) for g in IM2COL_GEOMETRIES),
    *(_writeback(g) for g in WRITEBACK_GEOMETRIES),
    *(_pool(g) for g in POOL_GEOMETRIES),
)
