"""One way to run independent jobs in parallel, locally or on a Dask cluster.

A ``concurrent.futures`` executor: a local ``ProcessPoolExecutor``, or
``dask.distributed.Client(ADDR).get_executor()`` (which implements the same interface), so a
command is the same on one machine and on a cluster. Used by ``qhw sweep`` (one synthesis per
job) and ``qhw simulate --jobs`` (one simulator process per shard of the inputs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .errors import ConfigError

__all__ = ["EXECUTORS", "executor", "map_ordered"]

EXECUTORS = ("local", "dask")


def executor(kind: str, jobs: int | None, scheduler):
    """(executor, client to close or None). ``scheduler``: a Dask address, or an existing
    ``dask.distributed.Client`` (tests pass a ``LocalCluster``'s client; the caller closes it)."""
    if kind == "local":
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 1), None
    if kind == "dask":
        try:
            from dask.distributed import Client
        except ImportError:
            raise ConfigError("--executor dask needs dask[distributed]: pip install 'dask[distributed]'") from None
        try:
            client = scheduler if not isinstance(scheduler, str) else Client(scheduler, timeout="10s")
        except OSError as e:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        return client.get_executor(pure=False), (client if isinstance(scheduler, str) else None)
    raise ConfigError(f"executor must be local or dask, not {kind!r}")


def map_ordered(fn: Callable, args: Sequence[tuple], *, jobs: int = 1, kind: str = "local", scheduler=None) -> list:
    """``[fn(*a) for a in args]``, the calls in parallel (``jobs`` local processes, or the Dask
    cluster at ``scheduler``); results in the order of ``args``, the first failure re-raised.
    One local job runs in this process."""
    if kind == "local" and (jobs <= 1 or len(args) <= 1):
        return [fn(*a) for a in args]
    pool, client = executor(kind, jobs, scheduler)
    try:
        futures = [pool.submit(fn, *a) for a in args]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True)
        if client is not None:
            client.close()
