"""One frozen description of a systolic array: parameters, validation, derived widths and latencies.

Everything that software needs to know about a generated accelerator (widths, latencies, peak
throughput) is derived here from the hardware contract (``qhw.contract``), and
``ArrayConfig.to_manifest()`` writes it next to the Verilog so host code cannot drift from the
hardware (Gemmini's ``GemminiConfigs.generateHeader``); ``ArrayConfig.from_manifest()`` is the one
reader. Pure Python like the contract: importing it loads no Amaranth.

Validation happens in ``__post_init__``, before any signal exists; every message is one line,
names the parameter and shows the rejected value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..arith import ROUNDING_MODES
from ..contract import (
    ACC_MAX_BITS,
    BIAS_BITS,
    ELEMENT_BITS,
    FIFO_LATENCY,
    ISSUE_LATENCY,
    MANIFEST_FORMAT_VERSION,
    MAX_GEMM_M,
    MAX_GEMM_N,
    MAX_TILE_PIPELINE,
    MODE_CODES,
    MULTIPLIER_BITS,
    PARAMS_READ_LATENCY,
    PE_FAMILY,
    PE_KINDS,
    PE_PRODUCT_LATENCY,
    PE_WEIGHT_WRITE_SKEW,
    REQUANT_MULS,
    SHIFT_BITS,
    accelerator_latency,
    mesh_latency,
    requant_interval,
    requant_latency,
    signed_bits,
)
from ..contract import ACCUMULATE_LATENCY as _ACCUMULATE_LATENCY
from ..errors import ConfigError

__all__ = [
    "check_config",
    "MODE_CODES",       # re-exported from qhw.contract for existing imports
    "PE_FAMILY",
    "PE_KINDS",
    "ArrayConfig",
    "check_pe",
    "read_manifest",
    "signed_bits",
]


def _invalid(field: str, message: str) -> ConfigError:
    """A one-line ``ConfigError`` about parameter ``field``; ``from_manifest`` names the field from it."""
    error = ConfigError(message)
    error.field = field
    return error


def check_pe(pe: str, *, tile_rows: int, tile_cols: int, tile_pipeline: int, act_bits: int,
             weight_bits: int) -> None:
    """Raise ``ConfigError`` (one line) unless PEs of kind ``pe`` can build an array with these parameters
    (the DSP kinds are ``qhw.hw.dsp_array.DspArray``: 1x1 tiles, one register between PEs)."""
    if pe == "generic":
        return
    if (tile_rows, tile_cols, tile_pipeline) != (1, 1, 1):
        raise _invalid("pe", f"{pe} PEs need 1x1 tiles with tile_pipeline 1, not tiles "
                             f"{tile_rows}x{tile_cols} with tile_pipeline {tile_pipeline}")
    if pe == "ice40-dual" and (act_bits, weight_bits) != (8, 8):
        raise _invalid("pe", f"ice40-dual PEs need 8-bit activations and weights, not {act_bits}/{weight_bits}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(name: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise _invalid(name, f"{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class ArrayConfig:
    """A weight-stationary ``rows`` x ``cols`` INT array with accumulators and requantization.

    Parameters
    ----------
    rows, cols:
        PE grid. ``rows`` is the K extent of one weight tile, ``cols`` the N extent.
    act_bits, act_signed:
        Activation (and output) element type: 4, 8 or 16 bits, signed (int8) or unsigned (uint8).
    weight_bits:
        Signed weight width, 4, 8 or 16 (weights are symmetric, zero point 0).
    max_k:
        Largest reduction length a command may use; sizes the accumulator.
    acc_bits:
        Accumulator width including the int32 bias. ``None`` derives the exact bit growth
        from ``max_k``; a given value must be at least that and at most 48 (the
        arithmetic contract's ``|acc| < 2**47``). Kept as given; ``accumulator_bits`` is the
        width built.
    acc_depth:
        Accumulator rows on chip: the largest M of a GEMM with more than one K tile.
    per_channel:
        Per-output-channel multiplier and shift (else one pair per GEMM tile).
    rounding:
        Requantization rules built in, a subset of ``qhw.arith.ROUNDING_MODES``.
    tile_rows, tile_cols:
        PEs per tile. Inside a tile PEs are chained combinationally (Gemmini ``Tile``).
    tile_pipeline:
        Register stages between neighbouring tiles (0 makes the whole mesh combinational).
    requant_lanes:
        Requantization lanes (each one multiplier, i.e. DSP blocks). ``None`` builds one per column;
        fewer lanes (a divisor of ``cols``) are shared: a result row then takes
        ``cols / requant_lanes`` cycles and result-producing activation beats are spaced as much.
    pe:
        PE kind: ``"generic"`` (``SystolicArray``), or a DSP-mapped ``DspArray``: ``"ice40-dual"``
        (two 8x8 MACs per iCE40 ``SB_MAC16``, 8-bit only) or ``"ecp5-pipelined"`` (registered ECP5
        ``MULT18X18D``, ``product_latency`` 5). DSP kinds need 1x1 tiles with ``tile_pipeline`` 1.
        Simulation and ``qhw generate`` build a portable equivalent; the FPGA flow the vendor primitive.
    requant_mul:
        How each requantization lane multiplies (``qhw.contract.REQUANT_MULS``): ``"parallel"`` (DSP
        partial products, ``qhw.hw.wide_mul``; a lane takes an element every cycle) or ``"serial"``
        (one bit of M0 per cycle in logic cells, ``qhw.hw.serial_mul``: no DSP block, an element every
        ``requant_interval`` = 32 cycles, so a result row takes ``requant_passes = cols / lanes * 32``
        cycles; ``single``/``tflite`` only). ``serial`` is for the iCE40 UP5K, whose 8 ``SB_MAC16`` the
        array takes.
    """

    rows: int = 8
    cols: int = 8
    act_bits: int = 8
    act_signed: bool = True
    weight_bits: int = 8
    max_k: int = 4096
    acc_bits: int | None = None
    acc_depth: int = 512
    per_channel: bool = True
    rounding: tuple[str, ...] = ROUNDING_MODES
    tile_rows: int = 1
    tile_cols: int = 1
    tile_pipeline: int = 1
    requant_lanes: int | None = None
    pe: str = "generic"
    requant_mul: str = "parallel"

    def __post_init__(self):
        _positive("rows", self.rows)
        _positive("cols", self.cols)
        for name in ("act_bits", "weight_bits"):
            value = getattr(self, name)
            if not _is_int(value) or value not in ELEMENT_BITS:
                raise _invalid(name, f"{name} must be one of {', '.join(map(str, ELEMENT_BITS))}, not {value!r}")
        for name in ("act_signed", "per_channel"):
            if not isinstance(getattr(self, name), bool):
                raise _invalid(name, f"{name} must be a bool, not {getattr(self, name)!r}")
        _positive("max_k", self.max_k)
        _positive("acc_depth", self.acc_depth)
        _positive("tile_rows", self.tile_rows)
        _positive("tile_cols", self.tile_cols)
        if self.rows % self.tile_rows:
            raise _invalid("tile_rows", f"tile_rows must divide rows ({self.rows}), not {self.tile_rows!r}")
        if self.cols % self.tile_cols:
            raise _invalid("tile_cols", f"tile_cols must divide cols ({self.cols}), not {self.tile_cols!r}")
        if not _is_int(self.tile_pipeline) or not 0 <= self.tile_pipeline <= MAX_TILE_PIPELINE:
            raise _invalid("tile_pipeline", f"tile_pipeline must be an integer from 0 to {MAX_TILE_PIPELINE}, "
                                            f"not {self.tile_pipeline!r}")
        if not isinstance(self.pe, str) or self.pe not in PE_KINDS:
            raise _invalid("pe", f"pe must be one of {', '.join(PE_KINDS)}, not {self.pe!r}")
        check_pe(self.pe, tile_rows=self.tile_rows, tile_cols=self.tile_cols, tile_pipeline=self.tile_pipeline,
                 act_bits=self.act_bits, weight_bits=self.weight_bits)
        self._check_rounding()
        if not isinstance(self.requant_mul, str) or self.requant_mul not in REQUANT_MULS:
            raise _invalid("requant_mul", f"requant_mul must be one of {', '.join(REQUANT_MULS)}, "
                                          f"not {self.requant_mul!r}")
        if self.requant_mul == "serial" and "onnx" in self.rounding:
            raise _invalid("requant_mul", "requant_mul serial builds the single and tflite modes only, not onnx "
                                          "(build with --rounding single or single,tflite)")
        if self.requant_lanes is not None and (not _is_int(self.requant_lanes) or self.requant_lanes < 1
                                               or self.cols % self.requant_lanes):
            raise _invalid("requant_lanes", f"requant_lanes must be a positive divisor of cols ({self.cols}), "
                                            f"not {self.requant_lanes!r}")
        need = self.required_acc_bits
        if need > ACC_MAX_BITS:
            raise _invalid("max_k", f"max_k is too large for a {ACC_MAX_BITS}-bit accumulator "
                                    f"({need} bits needed), not {self.max_k!r}")
        # ``acc_bits`` stays as given (None: derived by ``accumulator_bits``), so ``replace(config,
        # max_k=...)`` re-derives the width instead of carrying a stale one.
        if self.acc_bits is not None and (not _is_int(self.acc_bits) or not need <= self.acc_bits <= ACC_MAX_BITS):
            raise _invalid("acc_bits", f"acc_bits must be an integer from {need} (bit growth of max_k={self.max_k}) "
                                       f"to {ACC_MAX_BITS}, not {self.acc_bits!r}")

    def _check_rounding(self):
        rounding = self.rounding
        if isinstance(rounding, str):
            rounding = (rounding,)
            object.__setattr__(self, "rounding", rounding)
        if (not isinstance(rounding, tuple) or not rounding
                or any(r not in ROUNDING_MODES for r in rounding) or len(set(rounding)) != len(rounding)):
            raise _invalid("rounding", f"rounding must be a non-empty tuple of distinct modes from "
                                       f"{', '.join(ROUNDING_MODES)}, not {self.rounding!r}")

    # ----------------------------------------------------------------- element ranges and widths

    @property
    def area_first(self) -> bool:
        """True for iCE40 PEs (``ice40-dual``): on the UP5K a flip-flop takes one of its 5,280 logic
        cells, so registers that only shorten ECP5 routes (the loader's copy of the parameter beat) are
        left out. No cycle differs either way."""
        return self.pe == "ice40-dual"

    @property
    def act_range(self) -> tuple[int, int]:
        """Range of an activation (and output) element."""
        if self.act_signed:
            return -(1 << (self.act_bits - 1)), (1 << (self.act_bits - 1)) - 1
        return 0, (1 << self.act_bits) - 1

    @property
    def weight_range(self) -> tuple[int, int]:
        return -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1

    @property
    def product_range(self) -> tuple[int, int]:
        """Exact range of one activation x weight product."""
        corners = [a * w for a in self.act_range for w in self.weight_range]
        return min(corners), max(corners)

    @property
    def psum_bits(self) -> int:
        """Width of a partial sum inside the mesh: ``rows`` products."""
        lo, hi = self.product_range
        return signed_bits(lo * self.rows, hi * self.rows)

    @property
    def sum_bits(self) -> int:
        """Width of a stored accumulator (no bias): ``max_k`` products (padding rows hold zero weights)."""
        lo, hi = self.product_range
        return signed_bits(lo * self.max_k, hi * self.max_k)

    @property
    def required_acc_bits(self) -> int:
        """Width of ``sum + bias``: the exact bit growth of ``max_k`` products plus an int32."""
        lo, hi = self.product_range
        k = self.max_k
        return signed_bits(lo * k - (1 << (BIAS_BITS - 1)), hi * k + (1 << (BIAS_BITS - 1)) - 1)

    @property
    def accumulator_bits(self) -> int:
        """Width of ``acc + bias`` as built: ``acc_bits``, or ``required_acc_bits`` when it is ``None``."""
        return self.required_acc_bits if self.acc_bits is None else self.acc_bits

    @property
    def k_tiles_max(self) -> int:
        return -(-self.max_k // self.rows)

    # ----------------------------------------------------------------- latencies (cycles)

    @property
    def tile_grid(self) -> tuple[int, int]:
        """Tiles in the mesh, (TR, TC) = (rows / tile_rows, cols / tile_cols)."""
        return self.rows // self.tile_rows, self.cols // self.tile_cols

    @property
    def mesh_latency(self) -> int:
        """Issue register to de-skewed mesh output: ``(TR + TC - 2) * tile_pipeline + 1``.

        Tile row ``ti`` is skewed by ``ti * tile_pipeline`` cycles, psums cross
        ``TR - 1`` tile boundaries downwards, the bottom row is registered once and
        tile column ``tj`` is de-skewed by ``(TC - 1 - tj) * tile_pipeline``.
        """
        return mesh_latency(self.tile_grid, self.tile_pipeline)

    @property
    def product_latency(self) -> int:
        """Cycles a PE's product lags its operands (``qhw.contract.PE_PRODUCT_LATENCY``): 0 for ``generic``
        and ``ice40-dual`` (combinational), 5 for ``ecp5-pipelined`` (``PIPELINED_MUL_LATENCY + 2``)."""
        return PE_PRODUCT_LATENCY[self.pe]

    @property
    def weight_write_lag(self) -> int:
        """Cycles the last row's weight write lags the write port (``qhw.contract.PE_WEIGHT_WRITE_SKEW``):
        ``rows - 1`` for ``ecp5-pipelined`` (``DspArray`` shifts the write down the rows), else 0."""
        return (self.rows - 1) * PE_WEIGHT_WRITE_SKEW[self.pe]

    @property
    def array_latency(self) -> int:
        """Array input (``a_in``) to its partial-sum row (``psum_out``): ``mesh_latency + product_latency``.

        Every product of a DSP PE is equally late, so the wavefront stays aligned and only this shifts.
        """
        return self.mesh_latency + self.product_latency

    @property
    def accumulate_latency(self) -> int:
        """Array output to the accumulated row (``qhw.contract.ACCUMULATE_LATENCY``, 2): the psum and the
        accumulator row (read a cycle early) registered, then the sum registered."""
        return _ACCUMULATE_LATENCY

    @property
    def requant_latency(self) -> int:
        """Pipeline stages of one requantization lane (``qhw.contract.requant_latency`` for
        ``accumulator_bits`` and ``rounding``; ``qhw.hw.requant.RequantLane`` builds it): 14 for int8
        without ``onnx``, 19 with it."""
        return requant_latency(self.accumulator_bits, self.rounding, self.requant_mul)

    @property
    def requant_interval(self) -> int:
        """Cycles between two inputs of one lane (``qhw.contract.requant_interval``): 1 ``parallel``,
        32 ``serial``."""
        return requant_interval(self.requant_mul)

    @property
    def requant_lane_count(self) -> int:
        """Lanes built: ``requant_lanes``, or one per column when it is ``None`` (kept unresolved so
        ``dataclasses.replace(config, cols=...)`` keeps meaning "one per column")."""
        return self.cols if self.requant_lanes is None else self.requant_lanes

    @property
    def requant_groups(self) -> int:
        """Columns each lane takes in turn: ``cols / requant_lane_count``."""
        return self.cols // self.requant_lane_count

    @property
    def requant_passes(self) -> int:
        """Cycles one result row occupies the requantization lanes: ``requant_groups * requant_interval``
        (``cols / requant_lane_count`` with parallel lanes)."""
        return self.requant_groups * self.requant_interval

    @property
    def share_latency(self) -> int:
        """Extra cycles of shared (or serial) lanes: a staging register, then ``requant_interval`` per
        further group of columns (``0`` with one parallel lane per column, else
        ``1 + (requant_groups - 1) * requant_interval``: ``requant_passes`` for parallel lanes)."""
        return 0 if self.requant_passes == 1 else 1 + (self.requant_groups - 1) * self.requant_interval

    @property
    def fifo_latency(self) -> int:
        """A requantized row into the output queue to its ``out`` handshake when the queue is empty
        (``SyncFIFOBuffered``, ``qhw.contract.FIFO_LATENCY``, 2)."""
        return FIFO_LATENCY

    @property
    def latency(self) -> int:
        """Cycles from the handshake of an activation beat of the last K tile to its output row.

        ``1 (issue register) + array_latency + accumulate_latency + share_latency +
        requant_latency + fifo_latency``, with ``out.ready`` held high and the FIFO empty.
        """
        return accelerator_latency(array_latency=self.array_latency, share_latency=self.share_latency,
                                   requant_latency=self.requant_latency)

    @property
    def in_flight(self) -> int:
        """Rows that can be between an activation handshake and their ``out`` handshake with ``out``
        ready: one per cycle of ``latency``."""
        return self.latency

    @property
    def fifo_depth(self) -> int:
        """Output FIFO rows: every in-flight row has a reserved slot, plus slack for full rate."""
        return self.in_flight + 4

    @property
    def bank_drain_cycles(self) -> int:
        """Cycles after the last activation of a tile is accepted until its weight/param bank is reusable.

        The last wavefront must have left the mesh and read its requant parameters
        (``ISSUE_LATENCY + array_latency + accumulate_latency + PARAMS_READ_LATENCY``; the parameters
        are read after the products, so DSP product cycles count); one more cycle of margin. Serial
        lanes read the bank in place until their last group is fed: ``share_latency`` more.
        """
        in_place = self.share_latency if self.requant_interval > 1 else 0
        return ISSUE_LATENCY + self.array_latency + self.accumulate_latency + PARAMS_READ_LATENCY + 1 + in_place

    @property
    def weight_load_cycles(self) -> int:
        """Cycles to fill one weight bank: one row per cycle (``rows``), plus one for requant parameters."""
        return self.rows + 1

    @property
    def min_m_for_full_rate(self) -> int:
        """Smallest M at which the next tile's weights are loaded while the current tile runs.

        Bank ``b`` is reused two tiles later, so one tile's M cycles must cover the drain of
        the tile before it, one cycle for the loader to start, and the load:
        ``bank_drain_cycles + 1 + weight_load_cycles``.
        """
        return self.bank_drain_cycles + 1 + self.weight_load_cycles

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.rows * self.cols

    def gemm_tiles(self, k: int, n: int) -> tuple[int, int]:
        """(K tiles, N tiles) of a GEMM: ``ceil(K / rows)``, ``ceil(N / cols)``."""
        return -(-k // self.rows), -(-n // self.cols)

    def ideal_cycles(self, m: int, k: int, n: int) -> int:
        """Command handshake to last result handshake, for a single tile or M >= ``min_m_for_full_rate``,
        when no stream ever stalls.

        ``1 + rows + [K_tiles == 1] + K_tiles * N_tiles * M + latency``: one cycle to
        register the command, the first bank filled once (``rows`` weight rows, plus the
        parameter beat when that tile is also the last K tile), then one activation row
        accepted every cycle, and the last one's result after ``latency``.
        """
        kt, nt = self.gemm_tiles(k, n)
        return 1 + self.rows + (1 if kt == 1 else 0) + kt * nt * m + self.share_wait_cycles(m, kt, nt) + self.latency

    def share_wait_cycles(self, m: int, kt: int, nt: int) -> int:
        """Cycles shared requantization lanes add: activation beats of a last K tile are accepted
        at most one per ``requant_passes`` cycles (0 with one lane per column)."""
        p = self.requant_passes
        if p == 1:
            return 0
        if kt == 1:  # every beat produces a result row
            return (p - 1) * (m * nt - 1)
        between = (kt - 1) * m + 1  # spacing of the last row of one N tile and the first of the next
        return nt * (m - 1) * (p - 1) + (nt - 1) * max(0, p - between)

    # ----------------------------------------------------------------- manifest

    def to_manifest(self) -> dict:
        """Every parameter and derived constant, JSON-serializable: the manifest's config part (the
        sidecar next to the Verilog; ``qhw.hw.generate.manifest`` adds the name, ports and streams).

        ``parameters.acc_bits`` is the width built (``accumulator_bits``), as ``derived.acc_bits``.
        """
        params = {f.name: getattr(self, f.name) for f in fields(self)}
        params["rounding"] = list(self.rounding)
        params["acc_bits"] = self.accumulator_bits
        return {
            "format_version": MANIFEST_FORMAT_VERSION,
            "parameters": params,
            "derived": {
                "act_range": list(self.act_range),
                "weight_range": list(self.weight_range),
                "psum_bits": self.psum_bits,
                "sum_bits": self.sum_bits,
                "acc_bits": self.accumulator_bits,
                "bias_bits": BIAS_BITS,
                "multiplier_bits": MULTIPLIER_BITS,
                "shift_bits": SHIFT_BITS,
                "tile_grid": list(self.tile_grid),
                "requant_lane_count": self.requant_lane_count,
                "requant_interval": self.requant_interval,
                "fifo_depth": self.fifo_depth,
                "mode_codes": dict(MODE_CODES),
                "max_n": MAX_GEMM_N,
                "max_m": MAX_GEMM_M,
            },
            "latency": {
                "latency": self.latency,
                "mesh_latency": self.mesh_latency,
                "product_latency": self.product_latency,
                "array_latency": self.array_latency,
                "accumulate_latency": self.accumulate_latency,
                "requant_latency": self.requant_latency,
                "share_latency": self.share_latency,
                "fifo_latency": self.fifo_latency,
                "bank_drain_cycles": self.bank_drain_cycles,
                "weight_load_cycles": self.weight_load_cycles,
                "min_m_for_full_rate": self.min_m_for_full_rate,
            },
            "peak_macs_per_cycle": self.peak_macs_per_cycle,
        }

    @classmethod
    def from_manifest(cls, manifest, *, source: str = "manifest") -> ArrayConfig:
        """The config a manifest (``to_manifest``'s dict, as read from JSON) describes.

        Refuses, with one ``ConfigError`` line that starts with ``source`` and names the field: a
        ``format_version`` newer than this qhw's (or none), a missing, unknown or invalid parameter,
        and a derived constant or latency that these parameters no longer give (a manifest written by
        a qhw with another hardware contract: its Verilog is not what this qhw would time).
        ``parameters.acc_bits`` equal to the derived width reads back as ``None`` (derived).
        """
        def fail(field: str, problem: str) -> ConfigError:
            return ConfigError(f"{source}: field {field!r} {problem}")

        if not isinstance(manifest, dict):
            raise ConfigError(f"{source}: not a qhw manifest (a JSON object expected, not {type(manifest).__name__})")
        if "format_version" not in manifest:
            raise fail("format_version", "is missing (a manifest from before versioned manifests: "
                                         "regenerate it with qhw generate)")
        version = manifest["format_version"]
        if not _is_int(version) or version < 1:
            raise fail("format_version", f"must be a positive integer, not {version!r}")
        if version > MANIFEST_FORMAT_VERSION:
            raise fail("format_version", f"is {version}, newer than this qhw reads ({MANIFEST_FORMAT_VERSION}); "
                                         f"update qhw or regenerate the manifest with this one")
        params = manifest.get("parameters")
        if not isinstance(params, dict):
            raise fail("parameters", "is missing" if params is None else f"must be an object, not {params!r}")
        names = [f.name for f in fields(cls)]
        for key in params:
            if key not in names:
                raise fail(f"parameters.{key}", "is not an ArrayConfig parameter (a manifest from a newer qhw?)")
        for name in names:
            if name not in params:
                raise fail(f"parameters.{name}", "is missing")
        kwargs = dict(params)
        if not isinstance(kwargs["rounding"], list):
            raise fail("parameters.rounding", f"must be a list of modes, not {kwargs['rounding']!r}")
        kwargs["rounding"] = tuple(kwargs["rounding"])
        try:
            config = cls(**kwargs)
        except ConfigError as e:
            field = getattr(e, "field", None)
            text = str(e)
            if field is None:
                raise ConfigError(f"{source}: field 'parameters': {text}") from None
            problem = text[len(field) + 1:] if text.startswith(field + " ") else f"is invalid: {text}"
            raise fail(f"parameters.{field}", problem) from None
        except TypeError as e:      # an unhashable rounding entry and the like
            raise fail("parameters", f"do not describe an array ({e})") from None
        if config.acc_bits == config.required_acc_bits:
            config = replace(config, acc_bits=None)
        expected = config.to_manifest()
        for section in ("derived", "latency"):
            given = manifest.get(section)
            if not isinstance(given, dict):
                raise fail(section, "is missing" if given is None else f"must be an object, not {given!r}")
            for key, value in expected[section].items():
                if key not in given:
                    raise fail(f"{section}.{key}", "is missing")
                if given[key] != value:
                    raise fail(f"{section}.{key}", f"is {given[key]!r}, but these parameters give {value!r} "
                                                   f"(written by another qhw version; regenerate with qhw generate)")
        if manifest.get("peak_macs_per_cycle") != expected["peak_macs_per_cycle"]:
            raise fail("peak_macs_per_cycle", f"must be {expected['peak_macs_per_cycle']} for these parameters, "
                                              f"not {manifest.get('peak_macs_per_cycle')!r}")
        return config


def check_config(config) -> ArrayConfig:
    """``config`` itself when it is an ``ArrayConfig``; else the one-line ``ConfigError`` every
    hardware component raises for its ``config`` parameter."""
    if not isinstance(config, ArrayConfig):
        raise ConfigError(f"config must be an ArrayConfig, not {config!r}")
    return config


def read_manifest(path) -> tuple[ArrayConfig, dict]:
    """Read ``NAME.json`` (written by ``qhw generate``): its ``ArrayConfig`` (``from_manifest``, with the
    path as the source of every message) and the whole document. ``name`` is checked too, and ``top``
    (``"accel"``, ``"network"``, or the module name in older manifests) when present: absent is accel."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such manifest (qhw generate writes NAME.json beside NAME.v)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not a qhw manifest ({type(e).__name__}: {e})") from None
    config = ArrayConfig.from_manifest(doc, source=str(p))
    for key in ("name", "top"):
        if key == "top" and key not in doc:
            continue
        if not isinstance(doc.get(key), str) or not doc[key]:
            problem = "is missing" if key not in doc else f"must be a module name, not {doc[key]!r}"
            raise ConfigError(f"{p}: field {key!r} {problem}")
    return config, doc
