"""Write an analysis report: JSON for machines, Markdown for people, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .fileio import atomic_path

__all__ = ["public_report", "write_report", "markdown"]


def public_report(report: dict) -> dict:
    """The report without private (underscore) entries: what --json prints."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "exact"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def markdown(report: dict, *, plots: list[str] = ()) -> str:
    r = report
    lines = [f"# Quantization report: {r.get('model') or 'model'}", ""]
    cfg = r["config"]
    lines.append(f"Weights int{cfg['weight_bits']} {cfg['granularity']}, activations int{cfg['act_bits']}, "
                 f"calibration {cfg['calib_method']}, rounding `{cfg['rounding']}`; {r['samples']} samples.")
    lines.append("")
    if "accuracy_float" in r:
        lines += ["| | top-1 accuracy |", "|---|---|",
                  f"| float | {100 * r['accuracy_float']:.2f} % |",
                  f"| quantized | {100 * r['accuracy_quant']:.2f} % |", ""]
    o = r["output"]
    which = " (the first floating-point one)" if len(r.get("outputs", ())) > 1 else ""
    lines.append(f"Output{which}: SQNR {_fmt(o['sqnr_db'])} dB, mean error {_fmt(o['mean_error'])}, "
                 f"std {_fmt(o['std_error'])}, max |error| {_fmt(o['max_abs_error'])}, "
                 f"cosine {_fmt(o['cosine_similarity'], 6)}, top-1 agreement with float "
                 f"{100 * r['top1_agreement']:.2f} %.")
    lines.append("")
    if len(r.get("outputs", ())) > 1:
        lines += ["| output | SQNR dB | mean error | std error | max abs error | cosine |", "|---|---|---|---|---|---|"]
        for o in r["outputs"]:
            lines.append(f"| {o['name']} | {_fmt(o['sqnr_db'])} | {_fmt(o['mean_error'])} | {_fmt(o['std_error'])} | "
                         f"{_fmt(o['max_abs_error'])} | {_fmt(o['cosine_similarity'], 6)} |")
        lines.append("")
    if r["notes"]:
        lines += [f"- {n}" for n in r["notes"]] + [""]
    lines += ["## Per layer (error carried from earlier layers included)", "",
              "| layer | op | SQNR dB | mean error | std error | max abs error | cosine | saturation |",
              "|---|---|---|---|---|---|---|---|"]
    for L in r["layers"]:
        lines.append(f"| {L['name']} | {L['op']} | {_fmt(L['sqnr_db'])} | {_fmt(L['mean_error'])} | "
                     f"{_fmt(L['std_error'])} | {_fmt(L['max_abs_error'])} | {_fmt(L['cosine_similarity'], 6)} | "
                     f"{100 * L['saturation_rate']:.2f} % |")
    if r.get("sensitivity"):
        metric = "accuracy" if "accuracy_float" in r else "top-1 agreement"
        lines += ["", "## Sensitivity (only this layer quantized; most sensitive first)", "",
                  f"| layer | output SQNR dB | output max abs error | {metric} |", "|---|---|---|---|"]
        for s in r["sensitivity"]:
            lines.append(f"| {s['name']} | {_fmt(s['output_sqnr_db'])} | {_fmt(s['output_max_abs_error'])} | "
                         f"{100 * s['score']:.2f} % |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [L["name"] for L in report["layers"]]
    sq = [L["sqnr_db"] if L["sqnr_db"] is not None else np.nan for L in report["layers"]]
    written = []
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(names) + 2), 3.2))
    ax.bar(range(len(names)), sq, color="#4878a8")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("Per-layer SQNR, quantized vs float")
    fig.tight_layout()
    with atomic_path(out / "sqnr.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
    plt.close(fig)
    written.append("sqnr.png")
    errs = report.get("_errors", {})
    keys = [k for k in ["output"] + [L["tensor"] for L in report["layers"]] if k in errs and errs[k].size]
    if keys:
        cols = min(3, len(keys))
        rows = (len(keys) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
        for ax, k in zip(axes.ravel(), keys):
            ax.hist(errs[k], bins=60, color="#a85448")
            ax.set_title(k, fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in axes.ravel()[len(keys):]:
            ax.axis("off")
        fig.suptitle("Error histograms (quantized - float)", fontsize=9)
        fig.tight_layout()
        with atomic_path(out / "errors.png") as tmp:
            fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
        plt.close(fig)
        written.append("errors.png")
    return written


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, out)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(public_report(report), indent=1) + "\n")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(report, plots=plots))
    return {"json": out / "report.json", "markdown": out / "report.md", **{p: out / p for p in plots}}
