"""The op registries, built once: one float and (where it exists) one integer implementation per op.

``qhw.ops`` (linear layers, pooling, clamps, Pad) and ``qhw.ops_elementwise`` (Add/Mul/Concat,
tables, layout ops) register into these tables; import the tables from ``qhw.ops``, which loads
both, so every handler is registered before a graph runs. Registering an op twice is an error.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["FLOAT_OPS", "INT_OPS", "register"]

FLOAT_OPS: dict[str, Callable] = {}
INT_OPS: dict[str, Callable] = {}


def register(table: dict, *ops: str):
    def deco(fn):
        for op in ops:
            if op in table:
                raise RuntimeError(f"op {op!r} registered twice")
            table[op] = fn
        return fn
    return deco
