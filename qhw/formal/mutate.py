"""Mutants for the proofs' own tests: a component class rebuilt from its source with one edit.

A proof that passes on the design must fail on a deliberately broken copy of it, or it proves
nothing. ``mutant(Issuer, "outstanding < c.fifo_depth", "outstanding <= c.fifo_depth")`` returns
a new ``Issuer`` class built from ``qhw/hw/issuer.py`` with that one edit; the edit must match
exactly once, so a refactor of the component makes the mutation test fail loudly instead of
silently testing the unmutated design.
"""

from __future__ import annotations

import inspect
import sys

from ..errors import ConfigError

__all__ = ["mutant"]


def mutant(cls: type, old: str, new: str, names: dict | None = None) -> type:
    """A copy of ``cls`` whose module source has ``old`` replaced by ``new`` (``old`` occurs once).

    ``names`` are added to the copy's module namespace, e.g. a mutant of a subcomponent for ``new``
    to build instead of the original (a top with a broken part)."""
    module = sys.modules[cls.__module__]
    source = inspect.getsource(module)
    if source.count(old) != 1:
        raise ConfigError(f"mutant: {old!r} occurs {source.count(old)} times in {module.__name__}, expected once")
    namespace = {"__name__": f"{module.__name__}_mutant", "__package__": module.__package__, **(names or {})}
    exec(compile(source.replace(old, new), f"{module.__file__} (mutant)", "exec"), namespace)   # noqa: S102
    return namespace[cls.__name__]
