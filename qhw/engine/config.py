"""One frozen description of a network engine: the array it is built around and its memory sizes.

The array's own parameters and latencies stay in ``qhw.hw.config.ArrayConfig``; this adds the
engine's memories and the few latencies of the blocks around the array (``docs/engine.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..contract import (
    ADD_LATENCY,
    FIFO_LATENCY,
    POOL_MAX_LATENCY,
    POOL_SUM_LATENCY,
    SPAD_READ_LATENCY,
    TABLE_READ_LATENCY,
)
from ..errors import ConfigError
from ..hw.config import ArrayConfig

__all__ = ["DEFAULT_ACT_KIB", "DEFAULT_PROGRAM_WORDS", "DEFAULT_WEIGHT_KIB", "ENGINE_SIZES", "OPTIONAL_UNITS",
           "POOL_AVG", "WEIGHT_RAMS", "EngineConfig", "manifest_top"]

DEFAULT_WEIGHT_KIB = 32       # weight/parameter store (int8 weights, int32 bias/M0/shift/scale)
DEFAULT_ACT_KIB = 8           # activation scratchpad
DEFAULT_PROGRAM_WORDS = 1024  # program store, 32-bit words (64 descriptors of 16 words)
DEFAULT_POOL_LINE = 64        # fused-pool line buffer entries (one per pooled pixel of a row, C lanes each)
POOL_AVG = ("lane", "div")       # EngineConfig.pool_avg
ENGINE_SIZES = ("weight_kib", "act_kib", "program_words", "pool_line", "tables")   # the manifest's ``engine`` section
WEIGHT_RAMS = ("block", "spram")   # what the weight store is built from (``EngineConfig.weight_ram``)
SPRAM_WEIGHT_KIB = 64              # the UP5K's four SB_SPRAM256KA (16 K words of 16 bits each)
# units an engine may leave out (``EngineConfig.units``) and the opcode each one runs
OPTIONAL_UNITS = {"add": "ADD", "pool": "POOL"}


def manifest_top(doc: dict) -> str:
    """``"network"`` for a ``qhw generate --top network`` manifest, else ``"accel"`` (``top`` is
    ``"accel"``, or the module name in manifests written before network tops existed)."""
    return "network" if isinstance(doc, dict) and doc.get("top") == "network" else "accel"


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """A ``--top network`` engine: ``array`` plus its memories.

    Parameters
    ----------
    array:
        The weight-stationary array, accumulator and requantization lanes (1x1 tiles, ``tile_pipeline`` 1,
        ``cols`` a divisor of ``rows``: a result row then lands inside one scratchpad word).
    weight_kib:
        Weight/parameter store size in KiB.
    act_kib:
        Activation scratchpad size in KiB; its word is ``rows`` bytes (one activation beat).
    program_words:
        Program store size in 32-bit words.
    pool_line:
        Entries of the fused-pool line buffer (pooled pixels of one output row, ``cols`` int32 lanes each).
    tables:
        Table-activation slots (256 int8 entries each, one copy per lane of the MATMUL write-back's and
        the ADD unit's ``TableUnit``): the distinct tables a program may use.
    weight_ram:
        What the weight store is built from: ``"block"`` (an Amaranth memory: block RAM; default) or
        ``"spram"`` (single-port RAM, ``qhw.hw.spram.Spram``: ``SB_SPRAM256KA`` on the iCE40 UP5K, its
        behavioural model elsewhere; ``cols`` of 4 or 8, at most 64 KiB, no embedded image). The store
        is written only while a model loads and read only while an inference runs, so one port with
        the address muxed serves both; the read timing is the same, so no latency changes.
    pool_avg:
        How the pooling units average: ``"lane"`` (default) builds, per pool lane, the divider (rule
        ``div``) and a requantization lane (rules ``single``/``tflite``/``onnx_int``: a pool that
        rescales, as QDQ models' may); ``"div"`` the divider only, without the requantization lanes
        (on ECP5, 4 ``MULT18X18D`` per lane, 2 ``rows`` lanes per engine): qhw's own quantizer keeps a
        pool's scale, so its models average with ``div``. Latencies are the same either way.
    units:
        The optional units built (``OPTIONAL_UNITS``): ``"add"`` (``AddUnit``: ADD descriptors, residual
        adds and table passes; on an 8x8 ECP5 engine a quarter of the logic) and ``"pool"`` (``PoolUnit``:
        standalone POOL descriptors; pools fused into a convolution's write-back need neither). An
        engine without one runs every program without that opcode at the same cycles; the compiler
        refuses a program that needs it, naming the layer (``qhw generate --units``).
    """

    array: ArrayConfig
    weight_kib: int = DEFAULT_WEIGHT_KIB
    act_kib: int = DEFAULT_ACT_KIB
    program_words: int = DEFAULT_PROGRAM_WORDS
    pool_line: int = DEFAULT_POOL_LINE
    tables: int = 1
    weight_ram: str = "block"
    pool_avg: str = "lane"
    units: tuple = tuple(OPTIONAL_UNITS)

    def __post_init__(self):
        if (not isinstance(self.units, tuple) or any(u not in OPTIONAL_UNITS for u in self.units)
                or list(self.units) != [u for u in OPTIONAL_UNITS if u in self.units]):
            raise ConfigError(f"units must be a tuple of {', '.join(OPTIONAL_UNITS)} in that order, not {self.units!r}")
        if not isinstance(self.array, ArrayConfig):
            raise ConfigError(f"array must be an ArrayConfig, not {type(self.array).__name__}")
        for name in ("weight_kib", "act_kib", "program_words", "pool_line", "tables"):
            _positive(name, getattr(self, name))
        if self.pool_avg not in POOL_AVG:
            raise ConfigError(f"pool_avg must be one of {', '.join(POOL_AVG)}, not {self.pool_avg!r}")
        a = self.array
        if (a.tile_rows, a.tile_cols, a.tile_pipeline) != (1, 1, 1):
            raise ConfigError(f"the network engine needs 1x1 tiles with tile_pipeline 1, not tiles "
                              f"{a.tile_rows}x{a.tile_cols} with tile_pipeline {a.tile_pipeline}")
        if a.rows < 2:
            raise ConfigError(f"the network engine needs at least 2 rows (a lane fetches an N tile's parameters "
                              f"in 2 cycles), not {a.rows}")
        if a.rows % a.cols:
            raise ConfigError(f"the network engine needs cols dividing rows, not {a.rows}x{a.cols}")
        if a.act_bits != 8 or not a.act_signed:
            raise ConfigError(f"the network engine stores int8 activations, not "
                              f"{'' if a.act_signed else 'u'}int{a.act_bits}")
        if a.weight_bits != 8:
            raise ConfigError(f"the network engine stores int8 weights, not int{a.weight_bits}")
        if self.act_bytes % a.rows:
            raise ConfigError(f"act_kib must hold whole {a.rows}-byte words, not {self.act_kib}")
        if self.weight_ram not in WEIGHT_RAMS:
            raise ConfigError(f"weight_ram must be one of {', '.join(WEIGHT_RAMS)}, not {self.weight_ram!r}")
        if self.weight_ram == "spram":
            if 8 * a.cols not in (32, 64):
                raise ConfigError(f"weight_ram spram needs cols 4 or 8 (a row of one or two 32-bit SPRAM pairs), "
                                  f"not {a.cols}")
            if self.weight_kib > SPRAM_WEIGHT_KIB:
                raise ConfigError(f"weight_ram spram holds at most {SPRAM_WEIGHT_KIB} KiB (the UP5K's four "
                                  f"SB_SPRAM256KA), not weight_kib {self.weight_kib}")

    @property
    def word_bytes(self) -> int:
        """Scratchpad word: one activation beat, ``rows`` int8 lanes."""
        return self.array.rows

    @property
    def act_bytes(self) -> int:
        return self.act_kib * 1024

    @property
    def act_words(self) -> int:
        return self.act_bytes // self.word_bytes

    @property
    def weight_bytes(self) -> int:
        return self.weight_kib * 1024

    @property
    def tile_bytes(self) -> int:
        """One weight tile: ``rows`` rows of ``cols`` int8."""
        return self.array.rows * self.array.cols

    # ------------------------------------------------------------ latencies of the blocks around the array

    @property
    def read_latency(self) -> int:
        """Scratchpad address (read enable) to its word on the read data: the synchronous read and the
        register after it (``qhw.contract.SPAD_READ_LATENCY``); every reader's latency below adds it."""
        return SPAD_READ_LATENCY

    @property
    def agen_latency(self) -> int:
        """Cycles from a scratchpad word being written to a beat read from it issuing: the write is
        counted the cycle after it (the address may go out then), then the read (``read_latency``)."""
        return 1 + self.read_latency

    @property
    def weight_latency(self) -> int:
        """Cycles from a weight tile's load start (its first row's read) to the earliest issue of its first
        beat: the issue waits for a load started in an earlier cycle (a registered flag, not the loader's
        start in the same cycle) before it reads the beat's word (``read_latency``); the loader reads row
        ``i`` at ``L + i``, registers it and writes it at ``L + i + 2``, before the beat reaches row ``i``;
        PEs whose weight write is shifted down the rows (``ecp5-pipelined``) land row ``i``'s ``i`` cycles
        later, so the first beat waits ``array.weight_write_lag`` (``rows - 1``) more."""
        return 1 + self.read_latency + self.array.weight_write_lag

    @property
    def writeback_latency(self) -> int:
        """Issue handshake of a last-K-tile beat to the cycle its result row is written to the scratchpad:
        the accelerator's ``latency`` with its output FIFO (``FIFO_LATENCY``) replaced by the write-back's
        two registers, the table's read (``TABLE_READ_LATENCY``: a row is looked up as it leaves the lanes)."""
        return self.array.latency - FIFO_LATENCY + TABLE_READ_LATENCY

    @property
    def pool_max_latency(self) -> int:
        """Fused max pool: compare with the line-buffer entry, then write (cycles after the row's write)."""
        return POOL_MAX_LATENCY

    @property
    def pool_avg_latency(self) -> int:
        """Fused average: the window sum is divided/requantized by a lane like the requant lanes."""
        return POOL_SUM_LATENCY + self.array.requant_latency

    @property
    def add_latency(self) -> int:
        """ADD: the read request of a word's second operand (``a`` for ``table_only``) to its write
        (read, the TFLite ADD lane, the table stage; ``qhw.hw.engine.add_unit``)."""
        return ADD_LATENCY

    @property
    def input_latency(self) -> int:
        """Host input beat to its word written (stream register, write)."""
        return 2

    @property
    def output_latency(self) -> int:
        """Scratchpad read to the output beat (``read_latency``, the packer's register, the FIFO's)."""
        return self.read_latency + 2

    # ------------------------------------------------------------ manifest

    def latencies(self) -> dict:
        """The engine's own latencies (the array's are in the array part of the manifest)."""
        return {name: getattr(self, name) for name in ("agen_latency", "weight_latency", "writeback_latency",
                                                      "pool_max_latency", "pool_avg_latency", "input_latency",
                                                      "output_latency")}

    def to_manifest(self) -> dict:
        """The array's manifest part (``ArrayConfig.to_manifest``) plus the ``engine`` section: the
        memory sizes (``weight_kib``, ``act_kib``, ``program_words``, ``pool_line``, ``tables``), derived word
        counts and the engine's latencies. ``from_manifest`` is the one reader."""
        doc = self.array.to_manifest()
        doc["engine"] = {**{k: getattr(self, k) for k in ENGINE_SIZES}, "weight_ram": self.weight_ram,
                         "pool_avg": self.pool_avg, "units": list(self.units),
                         "word_bytes": self.word_bytes, "act_words": self.act_words,
                         "latency": self.latencies()}
        return doc

    @classmethod
    def from_manifest(cls, doc, *, source: str = "manifest", array: ArrayConfig | None = None) -> EngineConfig:
        """The engine a manifest describes: its array (``ArrayConfig.from_manifest``, or ``array``
        when the caller has read it already) and the ``engine`` section's sizes. A size the section
        leaves out takes its default (a manifest written for ``qhw compile --rtl`` by hand); an
        unknown key, a bad value or latencies that differ from this qhw's are refused in one line."""
        if array is None:
            array = ArrayConfig.from_manifest(doc, source=source)
        section = doc.get("engine", {}) if isinstance(doc, dict) else {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: field 'engine' must be an object, not {section!r}")
        known = (*ENGINE_SIZES, "weight_ram", "pool_avg", "units", "word_bytes", "act_words", "latency", "embedded")
        for key in section:
            if key not in known:
                raise ConfigError(f"{source}: field 'engine.{key}' is not an engine parameter "
                                  f"(a manifest from a newer qhw?)")
        sizes = {k: section[k] for k in ENGINE_SIZES if k in section}
        for key, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{source}: field 'engine.{key}' must be a positive integer, not {value!r}")
        for key, choices in (("weight_ram", WEIGHT_RAMS), ("pool_avg", POOL_AVG)):
            if key in section:
                if section[key] not in choices:
                    raise ConfigError(f"{source}: field 'engine.{key}' must be one of {', '.join(choices)}, "
                                      f"not {section[key]!r}")
                sizes[key] = section[key]
        if "units" in section:          # left out (manifests before units existed): every unit
            units = section["units"]
            if not isinstance(units, list) or any(u not in OPTIONAL_UNITS for u in units):
                raise ConfigError(f"{source}: field 'engine.units' must be a list of {', '.join(OPTIONAL_UNITS)}, "
                                  f"not {units!r}")
            sizes["units"] = tuple(u for u in OPTIONAL_UNITS if u in units)
        try:
            config = cls(array=array, **sizes)
        except ConfigError as e:
            raise ConfigError(f"{source}: field 'engine': {e}") from None
        expected = config.to_manifest()["engine"]
        for key in ("word_bytes", "act_words", "latency"):
            if key in section and section[key] != expected[key]:
                raise ConfigError(f"{source}: field 'engine.{key}' is {section[key]!r}, but these parameters give "
                                  f"{expected[key]!r} (written by another qhw version; regenerate with qhw generate)")
        return config

    def describe(self) -> str:
        a = self.array
        return (f"{a.rows}x{a.cols} array, weight store {self.weight_kib} KiB, scratchpad {self.act_kib} KiB, "
                f"program {self.program_words} words{', weights in SPRAM' if self.weight_ram == 'spram' else ''}"
                + (", pool averages div only" if self.pool_avg == "div" else "")
                + ("" if self.units == tuple(OPTIONAL_UNITS) else f", units {','.join(self.units) or 'none'}"))
