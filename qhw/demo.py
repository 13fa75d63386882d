"""``qhw demo``: the embedded default end to end on the built-in digits models.

Writes the digits calibration/test data, quantizes each built-in model to int8,
runs the error analysis on the test split and writes a Markdown report with
plots per model plus a summary, all under the output folder. For the CNN it then
generates an 8x8 network engine with memories sized for the model (``--top network``,
the default; ``--top accel``: the GEMM co-processor) in ``DIR/rtl/``, simulates the
first test images on it (Verilator through cocotb; ``HW_SAMPLES`` by default,
``--limit`` otherwise) and reports accuracy float / int8 / hardware, bit-exactness
against the golden model, the hardware-vs-float error and the cycle counts (for the
network engine: per layer, measured against the compiler's prediction).
"""

from __future__ import annotations

import json
import sys
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

__all__ = ["HW_MODEL", "HW_SAMPLES", "run_demo"]

HW_MODEL = "digits_cnn"      # the model the demo runs on the simulated array
HW_SAMPLES = 200             # test images simulated when --limit is not given
HW_ROWS = HW_COLS = 8


def _network(qpath: Path, qm, data: Path, out_dir: Path, *, limit: int, log, t0: float,
             size=(HW_ROWS, HW_COLS)) -> dict:
    """Generate the network engine sized for the quantized CNN and run ``limit`` test images on it."""
    from .engine.compiler import fit_engine
    from .hw.generate import write_network
    from .runtime import config_for_model
    from .sim.cli import network_table
    from .sim.run import simulate_model

    rows, cols = size
    engine = fit_engine(qm, config_for_model(qm.graph, rows=rows, cols=cols), source=qpath.name)
    name = f"qhw_network_{rows}x{cols}"
    log(f"[{time.perf_counter() - t0:5.1f}s] {HW_MODEL}: generate the network engine ({engine.describe()}) -> "
        f"{out_dir / 'rtl'}")
    _, manifest = write_network(engine, name=name, out_dir=out_dir / "rtl")
    log(f"[{time.perf_counter() - t0:5.1f}s] {HW_MODEL}: simulate {limit} test images on Verilator, the whole "
        f"network on the engine (the first run builds the simulator)")
    report, _ = simulate_model(qpath, data, manifest, limit=limit, log=log, progress=sys.stderr.isatty())
    with atomic_path(out_dir / HW_MODEL / "hardware.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    for line in network_table(report):
        log(line)
    return report


def _hardware(qpath: Path, qm, data: Path, out_dir: Path, *, limit: int, log, t0: float,
              size=(HW_ROWS, HW_COLS)) -> dict:
    """Generate the array for the quantized CNN and run ``limit`` test images on it."""
    from .hw.generate import write
    from .runtime import config_for_model
    from .sim.run import simulate_model

    rows, cols = size
    config = config_for_model(qm.graph, rows=rows, cols=cols)
    name = f"qhw_array_{rows}x{cols}"
    log(f"[{time.perf_counter() - t0:5.1f}s] {HW_MODEL}: generate {rows}x{cols} array (max_k {config.max_k}, "
        f"rounding {','.join(config.rounding)}) -> {out_dir / 'rtl'}")
    _, manifest = write(config, name=name, out_dir=out_dir / "rtl")
    log(f"[{time.perf_counter() - t0:5.1f}s] {HW_MODEL}: simulate {limit} test images on Verilator "
        f"(the first run builds the simulator, ~1 min)")
    report, _ = simulate_model(qpath, data, manifest, limit=limit, log=log, progress=sys.stderr.isatty(),
                               batch=64)
    with atomic_path(out_dir / HW_MODEL / "hardware.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    return report


def _network_markdown(r: dict) -> list[str]:
    e, t = r["hw_vs_float"], r["time"]
    sq = e["sqnr_db"]
    eq = r["cycles_equal"]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    return [
        "", f"## {HW_MODEL} on the simulated {r['rows']}x{r['cols']} network engine", "",
        f"Generated Verilog and manifest in [rtl/](rtl/) (`qhw generate --top network`); the program and weights "
        f"are loaded through the `load` stream, then {r['samples']} test images are streamed in and their logits "
        f"back on {r['simulator']} through cocotb; every scratchpad write is checked against the golden model.", "",
        "| | top-1 accuracy |", "|---|---|",
        f"| float | {pct(r.get('accuracy_float'))} |",
        f"| int8 golden model | {pct(r.get('accuracy_quant'))} |",
        f"| hardware (simulated) | {pct(r.get('accuracy_hw'))} |", "",
        f"- bit-exact with the golden model: **{'yes' if r['bit_exact'] else 'NO'}** "
        f"({r['mismatches']} mismatches{'; ' + r['first_mismatch'] if r['first_mismatch'] else ''})",
        f"- measured cycles equal to the compiler's prediction: **"
        f"{'not compared' if eq is None else 'yes' if eq else 'NO'}** ({r['cycles_per_inference']:g} measured, "
        f"{r['predicted_cycles_per_inference']} predicted per inference); MAC utilization "
        f"{100 * r['mac_utilization']:.1f} %; latency {r['latency_cycles']:g} cycles; host traffic "
        f"{r['host_bytes_per_inference']:g} bytes per inference",
        f"- hardware vs float output: SQNR {'exact' if sq is None else f'{sq:.1f} dB'}, max abs error "
        f"{e['max_abs_error']:.4g}",
        f"- simulation: {t['simulated_cycles']} cycles at {t['cycles_per_s'] or 0:,.0f} cycles/s; build "
        f"{t['build_s']:.1f} s, total {t['wall_s']:.1f} s; details in [{HW_MODEL}/hardware.json]"
        f"({HW_MODEL}/hardware.json)",
        "", "| layer | op | predicted cycles | measured cycles |", "|---|---|---|---|",
        *[f"| {L['name']} | {L['op']} | {L['predicted_cycles']} | {L['measured_cycles']} |" for L in r["layers"]],
    ]


def _hardware_markdown(r: dict) -> list[str]:
    e, t = r["hw_vs_float"], r["time"]
    sq = e["sqnr_db"]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    return [
        "", f"## {HW_MODEL} on the simulated {r['rows']}x{r['cols']} array", "",
        f"Generated Verilog and manifest in [rtl/](rtl/); {r['samples']} test images simulated on "
        f"{r['simulator']} through cocotb, every GEMM checked against the golden model as it came out.", "",
        "| | top-1 accuracy |", "|---|---|",
        f"| float | {pct(r.get('accuracy_float'))} |",
        f"| int8 golden model | {pct(r.get('accuracy_quant'))} |",
        f"| hardware (simulated) | {pct(r.get('accuracy_hw'))} |", "",
        f"- bit-exact with the golden model: **{'yes' if r['bit_exact'] else 'NO'}** "
        f"({r['mismatches']} mismatching outputs{'; ' + r['first_mismatch'] if r['first_mismatch'] else ''})",
        f"- hardware vs float output: SQNR {'exact' if sq is None else f'{sq:.1f} dB'}, mean error "
        f"{e['mean_error']:.4g}, std {e['std_error']:.4g}, max abs error {e['max_abs_error']:.4g}",
        f"- {r['cycles_per_inference']:.0f} accelerator cycles per image ({r['gemms']} GEMMs), MAC utilization "
        f"{100 * r['mac_utilization']:.1f} %; cycle counts equal the manifest's model for "
        f"{sum(lc['cycle_checks'] for lc in r['layers'])} GEMMs "
        f"({sum(len(lc['cycle_errors']) for lc in r['layers'])} differ)",
        f"- simulation: {t['simulated_cycles']} cycles at {t['cycles_per_s'] or 0:,.0f} cycles/s; build "
        f"{t['build_s']:.1f} s, total {t['wall_s']:.1f} s; details in [{HW_MODEL}/hardware.json]"
        f"({HW_MODEL}/hardware.json)",
        "", "| layer | GEMMs | cycles | MACs | mismatches |", "|---|---|---|---|---|",
        *[f"| {lc['layer']} | {lc['gemms']} | {lc['cycles']} | {lc['macs']} | {lc['mismatches']} |"
          for lc in r["layers"]],
    ]


def run_demo(*, out_dir: Path, models=("digits_cnn", "digits_mlp"), log=print, progress=None,
             limit: int | None = None, top: str = "network", size: tuple[int, int] = (HW_ROWS, HW_COLS)) -> int:
    t0 = time.perf_counter()
    data = write_digits_npz(out_dir / "data")
    xc, _ = load_data(data["calib"], what="calibration data")
    xt, yt = load_data(data["test"], what="test data")
    if limit is not None:
        xt, yt = xt[:limit], yt[:limit]
    rows = []
    hw_report = None
    for name in models:
        log(f"[{time.perf_counter() - t0:5.1f}s] {name}: quantize (int8, per-channel, minmax, single rounding)")
        qm = quantize_model(builtin_model_path(name), QuantConfig(), calib_x=xc, progress=progress, log=log)
        qpath = out_dir / f"{name}.qhw"
        save_qmodel(qm, qpath)
        log(f"[{time.perf_counter() - t0:5.1f}s] {name}: analyze on {xt.shape[0]} test images")
        report = analyze(qm, check_input(qm.graph, xt, str(data["test"])), yt, progress=progress)
        write_report(report, out_dir / name)
        rows.append((name, report))
        if name == HW_MODEL:
            run_hw = _network if top == "network" else _hardware
            hw_report = run_hw(qpath, qm, data["test"], out_dir, t0=t0, log=log, size=size,
                               limit=min(limit or HW_SAMPLES, xt.shape[0]))
            hw_report["rows"], hw_report["cols"] = size
    lines = ["# qhw demo", "", f"Digits test split, {xt.shape[0]} images; int8 weights per-channel, "
             "int8 activations, minmax calibration, `single` rounding.", "",
             "| model | float top-1 | int8 top-1 | output SQNR dB | max abs error | report |",
             "|---|---|---|---|---|---|"]
    for name, r in rows:
        sq = r["output_sqnr_db"]
        lines.append(f"| {name} | {100 * r['accuracy_float']:.2f} % | {100 * r['accuracy_quant']:.2f} % | "
                     f"{'exact' if sq is None else f'{sq:.1f}'} | {r['output']['max_abs_error']:.4g} | "
                     f"[{name}/report.md]({name}/report.md) |")
    if hw_report is not None:
        lines += (_network_markdown if top == "network" else _hardware_markdown)(hw_report)
    summary = "\n".join(lines) + "\n"
    with atomic_path(out_dir / "README.md") as tmp:
        tmp.write_text(summary)
    log("")
    log(summary)
    log(f"[{time.perf_counter() - t0:5.1f}s] done: {out_dir / 'README.md'}")
    ok = hw_report is None or (hw_report["bit_exact"] and hw_report.get("cycles_equal") is not False)
    return 0 if ok else 1
