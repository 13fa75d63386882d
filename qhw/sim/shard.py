"""Sharding a simulation: a list of inputs cut into contiguous shards, one simulator process per
shard (``qhw.parallel.map_ordered``: local processes or a Dask cluster), the per-shard results
merged into what one process would have reported.

Generic over what a shard runs: a shard's result is a cocotb job's ``result.json`` with per-layer
checks (``layers``, ``qhw.sim.backend.LayerCheck.to_json``), GEMM counts and cycles, timings and,
in coverage runs, functional coverage bins (the network top's: ``merge_network_results``). Shards
are cut at batch boundaries, so they run exactly the GEMMs a single process runs and the merged
report is the same (timings aside).
"""

from __future__ import annotations

from collections.abc import Sequence

from . import funcov

__all__ = ["merge_layers", "merge_network_results", "merge_results", "shard_ranges"]


def shard_ranges(n: int, jobs: int, *, align: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` of at most ``jobs`` contiguous, non-empty shards of ``n`` inputs, cut only
    at multiples of ``align`` (a batch), as even as that allows."""
    units = -(-n // max(align, 1))
    k = max(1, min(jobs, units))
    cuts = [min(i * units // k * align, n) for i in range(k + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if a < b]


def merge_layers(parts: Sequence[Sequence[dict]]) -> list[dict]:
    """Per-layer checks of the shards, in order -> one list: counts added, the first shard's first
    mismatch, cycle errors kept up to five."""
    out: dict[str, dict] = {}
    for layers in parts:
        for lc in layers:
            m = out.get(lc["layer"])
            if m is None:
                out[lc["layer"]] = {**lc, "cycle_errors": list(lc["cycle_errors"])}
                continue
            for key in ("gemms", "elements", "mismatches", "cycles", "macs", "cycle_checks"):
                m[key] += lc[key]
            m["cycle_errors"] = (m["cycle_errors"] + lc["cycle_errors"])[:5]
            m["first_mismatch"] = m["first_mismatch"] or lc["first_mismatch"]
    return list(out.values())


def merge_results(parts: Sequence[dict]) -> dict:
    """The shards' job results (in input order) -> one, as a single job over all inputs reports it.
    Timings: the shards' seconds added (``total`` is the longest shard)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    out = {**first, "layers": merge_layers([p["layers"] for p in parts])}
    out["first_mismatch"] = next((p["first_mismatch"] for p in parts if p.get("first_mismatch")), None)
    for key in ("samples", "gemms", "gemm_cycles", "macs", "sim_cycles", "host_bytes"):
        if key in first:
            out[key] = sum(int(p[key]) for p in parts)
    out["gemm_records"] = [r for p in parts for r in p.get("gemm_records", [])][:2000]
    if "batches" in first:
        out["batches"] = [b for p in parts for b in p["batches"]]
    out["time"] = _merge_time(parts)
    if "functional_coverage" in first:
        out["functional_coverage"] = funcov.merge(p["functional_coverage"] for p in parts)
    return out


def _merge_time(parts: Sequence[dict]) -> dict:
    rates = [p["time"]["sim_only_cycles_per_s"] for p in parts if p["time"].get("sim_only_cycles_per_s")]
    return {"total": max(p["time"]["total"] for p in parts),
            **{k: sum(p["time"][k] for p in parts) for k in ("clock_loop", "awaiting", "host")},
            "sim_only_cycles_per_s": sum(rates) / len(rates) if rates else None}


def merge_network_results(parts: Sequence[dict]) -> dict:
    """The network top's shard results (``qhw.sim.cocotb_job``'s ``network`` job, in input order)
    -> one, as a single job over all images reports it: counts and per-image lists joined, the
    per-descriptor cycles' minimum, maximum and (integer) sum over every image, the first shard's
    first mismatch, cycle errors kept up to five. The program, its prediction and the load are the
    same in every shard (each loads the program once, as one process does)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    out = dict(first)
    for key in ("samples", "write_mismatches", "output_mismatches", "sim_cycles"):
        out[key] = sum(int(p[key]) for p in parts)
    out["first_mismatch"] = next((p["first_mismatch"] for p in parts if p.get("first_mismatch")), None)
    out["cycle_errors"] = [e for p in parts for e in p["cycle_errors"]][:5]
    for key in ("totals", "latencies", "beats"):
        out[key] = [v for p in parts for v in p[key]]
    out["measured"] = [r for p in parts for r in p["measured"]][:8]
    out["measured_min"] = [min(v) for v in zip(*(p["measured_min"] for p in parts))]
    out["measured_max"] = [max(v) for v in zip(*(p["measured_max"] for p in parts))]
    out["measured_sum"] = [sum(v) for v in zip(*(p["measured_sum"] for p in parts))]
    out["time"] = _merge_time(parts)
    if "functional_coverage" in first:
        out["functional_coverage"] = funcov.merge(p["functional_coverage"] for p in parts)
    return out
