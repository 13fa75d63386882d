"""The tile walk of the loader and the issuer, written once for its two forms.

Both walk a GEMM's tiles (N tiles outer, K tiles inner) with counters whose terminal tests are
registers decided a cycle ahead. A component lists once what each counter becomes when the walk
advances (a weight row written, an activation beat issued): its ``Steps``. ``assign`` and
``k_steps_if`` write them as ``If`` statements (``ArrayConfig.area_first``, iCE40: the fewest logic
cells); ``lookahead`` as each register's next value with and without an advance, selected last by
the advance (ECP5: the handshake's fan-out reaches the registers through one mux level, every other
input being a register). The two forms give the same values, cycle for cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Value

__all__ = ["FLIP", "Steps", "assign", "k_steps_if", "lookahead", "next_value"]

FLIP = "flip"   # a ``Steps`` value: the one-bit register inverts (the bank)


@dataclass(frozen=True)
class Steps:
    """What a tile walk's registers become when it advances, by event, each a sequence of
    ``(register, value)`` (a value may be ``FLIP``); where events coincide the later one's wins.

    ``advance``: every advance; ``tile``: at the tile's last row; ``k_last``/``k_next``: at the last
    row of a last K tile (the K walk restarts, the N walk steps) or of another K tile (the K walk steps).
    """

    advance: Sequence = ()
    tile: Sequence = ()
    k_last: Sequence = ()
    k_next: Sequence = ()


def assign(updates) -> list:
    """``updates`` (``(register, value)``) as assignments."""
    return [reg.eq(~reg if value is FLIP else value) for reg, value in updates]


def k_steps_if(m: Module, steps: Steps, *, last_k, last_n, run) -> None:
    """The K and N walks' updates at a tile's end, as ``If`` statements (inside the tile end's own):
    ``k_last`` (and ``run`` falls after the last N tile), else ``k_next``."""
    with m.If(last_k):
        m.d.sync += assign(steps.k_last)
        with m.If(last_n):
            m.d.sync += run.eq(0)
    with m.Else():
        m.d.sync += assign(steps.k_next)


def _find(updates, reg):
    return next((value for r, value in updates if r is reg), None)


def _is(value, n: int) -> bool:
    return isinstance(value, int) and value == n


def _advanced(steps: Steps, reg, *, tile_end, end_k, last_k) -> Value:
    """``reg`` after an advance, from registers only (``tile_end`` is the registered last-row test,
    ``end_k`` is ``tile_end & last_k``)."""
    advance, tile, k_last, k_next = (_find(u, reg) for u in (steps.advance, steps.tile, steps.k_last, steps.k_next))
    if k_last is not None and k_next is None:       # steps only after a last K tile (the N walk)
        return Mux(end_k, k_last, reg)
    if tile is FLIP:
        return reg ^ tile_end
    if k_last is not None:
        at_end = last_k if _is(k_last, 1) and _is(k_next, 0) else Mux(last_k, k_last, k_next)
    else:
        at_end = tile
    return Mux(tile_end, at_end, reg if advance is None else advance)


def next_value(steps: Steps, reg, *, loads, run, tile_end, end_k, last_k) -> tuple:
    """``reg``'s next value as ``(advanced, idle)``: after an advance (``_advanced``), else held
    while ``run`` and, idle, loaded from ``loads`` (a register absent holds)."""
    advanced = _advanced(steps, reg, tile_end=tile_end, end_k=end_k, last_k=last_k)
    load = _find(loads, reg)
    idle = reg if load is None else Mux(run, reg, load)
    return advanced, idle


def lookahead(m: Module, steps: Steps, *, advance, run, start, loads, tile_end, end_k, end, last_k) -> dict:
    """Each register of ``steps`` (in order of first appearance) loaded with its next value: after an
    ``advance``, else held while ``run`` and, idle, loaded from ``loads`` (``(register, value)``; a
    register absent holds); then ``run``, set by ``start`` and cleared by the advance at the walk's
    ``end`` (``end_k & last_n``). Returns ``{name: (advanced, idle)}``, the two values per register."""
    regs = []
    for updates in (steps.advance, steps.tile, steps.k_last, steps.k_next):
        regs += [reg for reg, _ in updates if not any(reg is r for r in regs)]
    values = {}
    for reg in regs:
        advanced, idle = next_value(steps, reg, loads=loads, run=run, tile_end=tile_end, end_k=end_k, last_k=last_k)
        m.d.sync += reg.eq(Mux(advance, advanced, idle))
        values[reg.name] = (advanced, idle)
    m.d.sync += run.eq(Mux(advance, ~end, run | start))
    return values
