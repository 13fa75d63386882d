"""Registers that stay copies: one per consumer, so a value that fans out wide reaches each consumer
over a short route.

Yosys merges flip-flops that have the same inputs (``opt_merge``), which undoes a copy made by hand
(measured: the 8x8 accelerator's per-lane ``qmin``/``qmax`` copies became one register whose fan-out
set the critical path), and nextpnr does not replicate registers. A signal made by ``replica`` carries
``REPLICA_ATTR``; qhw's Yosys script marks the flip-flops that drive such signals ``keep``
(``qhw.fpga.flow.yosys_overrides``), so every copy reaches placement. Simulation is unaffected.

A copy that has the same inputs as its original (``flag.eq(v), flag_r.eq(v)`` beside each other) needs
the original made by ``replica`` too (``replica_pair`` makes both): Yosys merges a flip-flop without
``keep`` into a kept one with equal inputs, so the copy then drives both fan-outs (measured in session
16: every ``*_r`` copy of ``Im2colAgen``, ``WritebackAgen`` and ``PoolAgen`` was one flip-flop with its
original).
"""

from __future__ import annotations

from amaranth.hdl import Signal

from ..contract import REPLICA_ATTR

__all__ = ["replica", "replica_pair"]


def replica(value, *, name: str) -> Signal:
    """A signal shaped like ``value`` for the caller to register as its own copy of it."""
    return Signal.like(value, name=name, attrs={REPLICA_ATTR: 1})


def replica_pair(value, *, name: str) -> tuple[Signal, Signal]:
    """An original ``name`` shaped like ``value`` and its copy ``name_r``, both made by ``replica`` (so
    Yosys keeps two flip-flops when the caller loads them with the same value: the original's fan-out
    and the copy's stay apart)."""
    return replica(value, name=name), replica(value, name=f"{name}_r")
