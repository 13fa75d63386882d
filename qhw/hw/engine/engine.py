"""``NetworkEngine``: the ``--top network`` hardware (docs/engine.md, "Hardware").

The top only joins its units; ``network_signature`` is its port contract (the Verilog generator,
the manifest and the cocotb testbench build against it).
"""

from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ...engine.config import EngineConfig
from ...errors import ConfigError

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


class NetworkEngine(wiring.Component):
    """The network engine (skeleton: ports only, the units follow)."""

    def __init__(self, *, engine: EngineConfig, family: str | None = None, image: bytes | None = None):
        if not isinstance(engine, EngineConfig):
            raise ConfigError(f"engine must be an EngineConfig, not {engine!r}")
        if family not in (None, "ice40", "ecp5"):
            raise ConfigError(f"family must be None, 'ice40' or 'ecp5', not {family!r}")
        self.engine, self.family, self.image = engine, family, image
        super().__init__(network_signature(engine))

    def elaborate(self, platform):
        m = Module()
        return m
