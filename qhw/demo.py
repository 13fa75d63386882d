"""``qhw demo``: the embedded default end to end on the built-in digits models.

Writes the digits calibration/test data, quantizes each built-in model to int8,
runs the error analysis on the test split and writes a Markdown report with
plots per model plus a summary, all under the output folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from .analysis import analyze
from .api import quantize_model
from .datasets import builtin_model_path, write_digits_npz
from .executor import check_input
from .fileio import atomic_path, load_data
from .qmodel import save_qmodel
from .quantize import QuantConfig
from .report import write_report

__all__ = ["run_demo"]


def run_demo(*, out_dir: Path, models=("digits_cnn", "digits_mlp"), log=print, progress=None,
             limit: int | None = None) -> int:
    t0 = time.perf_counter()
    data = write_digits_npz(out_dir / "data")
    xc, _ = load_data(data["calib"], what="calibration data")
    xt, yt = load_data(data["test"], what="test data")
    if limit is not None:
        xt, yt = xt[:limit], yt[:limit]
    rows = []
    for name in models:
        log(f"[{time.perf_counter() - t0:5.1f}s] {name}: quantize (int8, per-channel, minmax, single rounding)")
        qm = quantize_model(builtin_model_path(name), QuantConfig(), calib_x=xc, progress=progress, log=log)
        qpath = out_dir / f"{name}.qhw"
        save_qmodel(qm, qpath)
        log(f"[{time.perf_counter() - t0:5.1f}s] {name}: analyze on {xt.shape[0]} test images")
        report = analyze(qm, check_input(qm.graph, xt, str(data["test"])), yt, progress=progress)
        write_report(report, out_dir / name)
        rows.append((name, report))
    lines = ["# qhw demo", "", f"Digits test split, {xt.shape[0]} images; int8 weights per-channel, "
             "int8 activations, minmax calibration, `single` rounding.", "",
             "| model | float top-1 | int8 top-1 | output SQNR dB | max abs error | report |",
             "|---|---|---|---|---|---|"]
    for name, r in rows:
        sq = r["output_sqnr_db"]
        lines.append(f"| {name} | {100 * r['accuracy_float']:.2f} % | {100 * r['accuracy_quant']:.2f} % | "
                     f"{'exact' if sq is None else f'{sq:.1f}'} | {r['output']['max_abs_error']:.4g} | "
                     f"[{name}/report.md]({name}/report.md) |")
    summary = "\n".join(lines) + "\n"
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text(summary)
    log("")
    log(summary)
    log(f"[{time.perf_counter() - t0:5.1f}s] done: {out_dir / 'README.md'}")
    return 0
