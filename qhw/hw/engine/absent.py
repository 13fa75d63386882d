"""``AbsentUnit``: the stand-in of an optional unit an engine is generated without (``EngineConfig.units``).

It has the unit's ports so the engine's wiring stays one piece of code: it takes any descriptor at
once (so the program walk never stalls on it), never reads or writes, and raises ``taken`` when it
does take one, which the engine turns into its ``error`` flag. The compiler refuses a program that
needs the unit, so ``taken`` rises only for a hand-made program.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from ...errors import ConfigError

__all__ = ["AbsentUnit"]


class AbsentUnit(wiring.Component):
    """The ports of ``signature`` (a unit's, with a ``desc`` stream in) plus ``taken``; every output low but
    ``desc.ready``. ``latency`` 0: it does nothing."""

    def __init__(self, *, signature: wiring.Signature):
        if not isinstance(signature, wiring.Signature) or "desc" not in signature.members:
            raise ConfigError(f"signature must be a unit's wiring.Signature with a desc stream, not {signature!r}")
        super().__init__(wiring.Signature({**dict(signature.members.items()), "taken": Out(1)}))

    @property
    def latency(self) -> int:
        return 0

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.desc.ready.eq(1), self.taken.eq(self.desc.valid)]
        return m
