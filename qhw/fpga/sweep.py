"""``qhw sweep``: many array sizes synthesized in parallel, tabulated (CSV, Markdown) and plotted.

One code path for both executors (``qhw.parallel.executor``): a local ``ProcessPoolExecutor`` or
``dask.distributed.Client(ADDR).get_executor()``, so the command is the same on one machine and on
a cluster. Every run is one
``synth_one`` call (a picklable top-level function) that returns a row, also for a design that
does not fit (``fits`` false and the one-line reason).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from concurrent.futures import as_completed
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, QhwError
from ..fileio import atomic_path, write_text
from ..hw.config import ArrayConfig
from ..parallel import executor as _executor
from .toolchain import log

__all__ = ["COLUMNS", "describe", "markdown_table", "parse_sizes", "plot", "sweep", "synth_one"]

COLUMNS = ("size", "rows", "cols", "macs", "pe", "fits", "luts", "ffs", "dsps", "brams", "fmax_mhz",
           "target_mhz", "peak_gops", "gops_per_dsp", "transistors", "critical_path_ns", "critical_source",
           "pnr_s", "error")
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        m = _SIZE.match(part)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise ConfigError(f"--sizes must be a comma-separated list like 2x2,4x4,8x8, not {text!r}")
        sizes.append((int(m.group(1)), int(m.group(2))))
    return sizes


def synth_one(board: str, params: dict, top: str, pe: str, freq_mhz, seed: int, out_dir: str) -> dict:
    """One configuration; never raises for a user-level failure (the row says what happened)."""
    from .arrays import resolve_pe
    from .boards import board_info
    from .flow import synth
    config = ArrayConfig(**params)
    size = f"{config.rows}x{config.cols}"
    if board != "generic" and top == "array":
        try:
            pe = resolve_pe(config, pe=pe, family=board_info(board).family)
        except ConfigError as e:
            return {"size": size, "rows": config.rows, "cols": config.cols, "macs": config.rows * config.cols,
                    "pe": pe, "fits": False, "error": str(e)}
    row = {"size": size, "rows": config.rows, "cols": config.cols, "macs": config.rows * config.cols, "pe": pe}
    start = time.monotonic()
    try:
        if board == "generic":
            from .asic import asic_estimate
            r = asic_estimate(config, top=top, out_dir=out_dir, quiet=True)
        else:
            r = synth(config, board=board, top=top, freq_mhz=freq_mhz, seed=seed, out_dir=out_dir, pe=pe,
                      quiet=True)
    except QhwError as e:
        row.update(fits=False, error=str(e), pnr_s=round(time.monotonic() - start, 1))
        return row
    cp = r.get("critical_path") or {}
    row.update({
        "pe": r.get("pe", pe), "fits": True, "luts": r.get("luts"), "ffs": r.get("ffs"), "dsps": r.get("dsps"),
        "brams": r.get("brams"), "fmax_mhz": r.get("fmax_mhz"), "target_mhz": r.get("target_mhz"),
        "peak_gops": r.get("peak_gops"), "gops_per_dsp": r.get("gops_per_dsp"),
        "transistors": r.get("transistors"), "cells": r.get("cells"),
        "critical_path_ns": cp.get("delay_ns"), "critical_source": ";".join(cp.get("sources", [])[:3]),
        "pnr_s": r.get("times_s", {}).get("total"), "error": "",
        "dsp_use": r.get("dsp_use"), "critical_path": cp or None,
    })
    return row


def sweep(*, board: str, sizes, top: str = "array", pe: str = "auto", freq_mhz=None, seed: int = 1,
          base_manifest=None, jobs: int | None = None, executor: str = "local", scheduler=None,
          out_dir="sweep_out") -> dict:
    """Run every size, write ``sweep.csv``, ``sweep.md``, ``sweep.json`` and ``sweep.png`` to ``out_dir``.

    ``scheduler`` is a Dask address, or an existing ``dask.distributed.Client`` (tests pass a
    ``LocalCluster``'s client).
    """
    if base_manifest:
        from .flow import config_from_manifest
        base, _ = config_from_manifest(base_manifest)
    else:
        base = ArrayConfig()
    configs = []
    for r, c in sizes:
        try:
            configs.append(replace(base, rows=r, cols=c))
        except ConfigError as e:
            raise ConfigError(f"size {r}x{c}: {e}") from None
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output directory cannot be created: {e}") from None
    pool, client = _executor(executor, jobs, scheduler)
    start = time.monotonic()
    log(f"[qhw] sweep {board}: {len(configs)} configurations on {executor} executor "
        f"({jobs or os.cpu_count()} jobs); the first YoWASP run compiles WebAssembly for about a minute")
    rows = []
    try:
        futures = {}
        for cfg in configs:
            params = {k: getattr(cfg, k) for k in ArrayConfig.__dataclass_fields__}
            run_dir = str((out / "runs" / f"{cfg.rows}x{cfg.cols}").resolve())
            futures[pool.submit(synth_one, board, params, top, pe, freq_mhz, seed, run_dir)] = cfg
        for fut in as_completed(futures):
            row = fut.result()
            rows.append(row)
            if not row["fits"]:
                state = row["error"]
            elif board == "generic":
                state = f"{row.get('transistors')} transistors"
            else:
                state = f"{row['luts']} LUTs, {row['dsps']} DSPs, {row['fmax_mhz']} MHz"
            log(f"[qhw] sweep: {row['size']} done ({len(rows)}/{len(configs)}, "
                f"{time.monotonic() - start:.0f} s): {state}")
    finally:
        pool.shutdown(wait=True)
        if client is not None:
            client.close()
    rows.sort(key=lambda r: (r["macs"], r["rows"]))
    result = {"board": board, "top": top, "freq_mhz": freq_mhz, "seed": seed, "rows": rows,
              "wall_s": round(time.monotonic() - start, 1)}
    write_text(out / "sweep.json", json.dumps(result, indent=2) + "\n")
    write_text(out / "sweep.csv", csv_table(rows))
    write_text(out / "sweep.md", markdown_table(rows, board=board) + "\n")
    plot(rows, out / "sweep.png", board=board)
    log(f"[qhw] sweep: wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'} "
        f"in {result['wall_s']} s")
    return result


def csv_table(rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def _fmt(v):
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def markdown_table(rows, *, board: str) -> str:
    if board == "generic":
        head = ["array", "MACs", "cells", "FFs", "transistors", "transistors/MAC"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if not r["fits"]:
                lines.append(f"| {r['size']} | {r['macs']} | failed: {r['error']} | | | |")
                continue
            lines.append(f"| {r['size']} | {r['macs']} | {_fmt(r.get('cells'))} | {_fmt(r['ffs'])} | "
                         f"{_fmt(r['transistors'])} | {_fmt(round(r['transistors'] / r['macs']))} |")
        return "\n".join(lines)
    head = ["array", "PE", "MACs", "LUTs", "FFs", "DSPs", "BRAMs", "Fmax (MHz)", "target", "peak GOPS",
            "GOPS/DSP", "critical path"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if not r["fits"]:
            lines.append(f"| {r['size']} | {r['pe']} | {r['macs']} | does not fit: {r['error']} |" + " |" * 8)
            continue
        lines.append("| " + " | ".join(_fmt(v) for v in (
            r["size"], r["pe"], r["macs"], r["luts"], r["ffs"], r["dsps"], r["brams"], r["fmax_mhz"],
            r["target_mhz"], r["peak_gops"], r["gops_per_dsp"],
            f"{_fmt(r['critical_path_ns'])} ns {r['critical_source']}")) + " |")
    return "\n".join(lines)


def plot(rows, path: Path, *, board: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["fits"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = [r["size"] for r in ok]
    x = range(len(ok))
    if board == "generic":
        axes[0].bar(x, [r["transistors"] for r in ok])
        axes[0].set_title("estimated transistors")
        axes[1].bar(x, [r["ffs"] for r in ok])
        axes[1].set_title("flip-flops")
        axes[2].bar(x, [r["transistors"] / r["macs"] for r in ok])
        axes[2].set_title("transistors per MAC")
    else:
        for key, label in (("luts", "LUTs"), ("ffs", "FFs")):
            axes[0].plot(x, [r[key] for r in ok], marker="o", label=label)
        ax2 = axes[0].twinx()
        ax2.bar(x, [r["dsps"] for r in ok], alpha=0.3, color="gray", label="DSPs")
        ax2.set_ylabel("DSP blocks")
        axes[0].set_yscale("log")
        axes[0].legend(loc="upper left")
        axes[0].set_title("resources")
        axes[1].plot(x, [r["fmax_mhz"] for r in ok], marker="o")
        if ok and ok[0].get("target_mhz"):
            axes[1].axhline(ok[0]["target_mhz"], color="red", linestyle="--", label="target")
            axes[1].legend()
        axes[1].set_title("Fmax (MHz, nextpnr)")
        axes[2].plot(x, [r["peak_gops"] for r in ok], marker="o")
        axes[2].set_title("peak GOPS (2·MACs·Fmax)")
    for ax in axes:
        ax.set_xticks(list(x), labels)
        ax.set_xlabel("array size")
    fig.suptitle(f"qhw sweep on {board}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def describe(r: dict) -> str:
    """Human-readable summary of one ``synth`` result."""
    if r["board"] == "generic":
        return (f"{r['rows']}x{r['cols']} array, Yosys generic synthesis: {r['cells']} cells, {r['ffs']} flip-flops, "
                f"~{r['transistors']} transistors ({r['transistors_per_mac']} per MAC; stat -tech cmos)")
    cp = r.get("critical_path") or {}
    lines = [
        f"{r['board']} ({r['device']}), {r['top']} top {r['rows']}x{r['cols']}, PE {r['pe']}",
        f"  logic cells {r['luts']}/{r['luts_available']}, FFs {r['ffs']}, DSPs {r['dsps']}/{r['dsps_available']}"
        f" ({', '.join(f'{k}: {v}' for k, v in (r.get('dsp_use') or {}).items()) or 'none'}), "
        f"BRAMs {r['brams']}/{r['brams_available']}",
        f"  Fmax {r['fmax_mhz']} MHz (target {r['target_mhz']:g} MHz, {'met' if r['timing_met'] else 'NOT met'}), "
        f"peak {r['peak_gops']} GOPS ({r['macs']} MACs)",
    ]
    if cp:
        lines.append(f"  critical path {cp['delay_ns']} ns (logic {cp['logic_ns']}, routing {cp['routing_ns']}; "
                     f"longest route {cp['longest_route_ns']} ns) from {cp['from']} to {cp['to']}"
                     f"{' via ' + ', '.join(cp['sources']) if cp['sources'] else ''}")
    lines.append(f"  bitstream {r['bitstream']}")
    return "\n".join(lines)
