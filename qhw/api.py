"""High-level steps the command line is made of: quantize a model file, run it, evaluate it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .calibrate import collect
from .errors import DataError
from .executor import check_input, run_float, run_int
from .graph import Graph
from .onnx_import import import_model
from .qmodel import QModel
from .quantize import QuantConfig, candidate_tensors, correct_biases, quantize_graph, ranges_from_stats

__all__ = ["quantize_model", "run_batched", "predictions", "accuracy", "requantize_variant"]


def run_batched(graph: Graph, x: np.ndarray, *, integer: bool, batch: int = 256, progress=None,
                label: str = "running") -> np.ndarray:
    """First graph output over ``x`` in batches (float reference or integer golden model)."""
    run = run_int if integer else run_float
    starts = range(0, x.shape[0], batch)
    outs = [run(graph, x[s:s + batch])[0] for s in (progress(starts, label) if progress else starts)]
    return np.concatenate(outs, axis=0)


def predictions(y: np.ndarray) -> np.ndarray:
    """Class predictions from model outputs: argmax of scores, or the output itself if integer labels."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or y.ndim == 1:
        return y.reshape(-1).astype(np.int64)
    return np.argmax(y.reshape(y.shape[0], -1), axis=1)


def accuracy(y: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions(y) == labels.reshape(-1)))


def requantize_variant(qm: QModel, keep_float) -> Graph:
    """The same model quantized with a different set of float-kept nodes (ranges reused)."""
    g, _ = quantize_graph(qm.graph, qm.ranges, qm.config, imported=qm.imported, keep_float=tuple(keep_float))
    return g


def quantize_model(model_path: str | Path, cfg: QuantConfig, *, calib_x: np.ndarray | None,
                   calib_y: np.ndarray | None = None, auto_keep_float: float | None = None,
                   calib_source: str = "--calib", progress=None, log=print, strict: bool = False) -> QModel:
    """ONNX file + calibration data -> QModel (calibration optional for a QDQ model).

    ``strict``: an attribute qhw cannot execute on a supported op is an error instead of
    running that node in float.

    ``auto_keep_float`` (accuracy points) widens ``cfg.keep_float`` with the most sensitive
    layers, measured on the calibration data; calibration itself runs once.
    """
    import_notes: list[str] = []
    graph, is_qdq = import_model(model_path, notes=import_notes)
    if calib_x is None and not is_qdq:
        raise DataError(f"{model_path}: a float model needs calibration data (--calib DATA.npz)")
    ranges: dict[str, tuple[float, float]] = {}
    if calib_x is not None:
        calib_x = check_input(graph, calib_x, calib_source)
        stats = collect(graph, calib_x, candidate_tensors(graph), progress=progress)
        ranges = ranges_from_stats(stats, cfg)
    imported = dict(graph.tensors)
    if is_qdq and cfg.rounding != "onnx":
        log(f"note: {Path(model_path).name} is a QDQ model; rounding {cfg.rounding!r} "
            f"(use --rounding onnx to reproduce ONNX Runtime exactly)")
    qgraph, notes = quantize_graph(graph, ranges, cfg, imported=imported, strict=strict)
    qm = QModel(graph=qgraph, config=cfg, ranges=ranges, imported=imported,
                source=Path(model_path).name, notes=import_notes + notes)
    if auto_keep_float is not None:
        if calib_x is None:
            raise DataError("--auto-keep-float needs calibration data (--calib DATA.npz)")
        from .analysis import auto_keep_float as choose_float_layers

        keep = choose_float_layers(qm, calib_x, calib_y, auto_keep_float, progress=progress, log=log)
        qm.config = cfg = replace(cfg, keep_float=tuple(keep))
        qm.graph, notes = quantize_graph(graph, ranges, cfg, imported=imported, strict=strict)
        qm.notes = import_notes + notes
    if cfg.bias_correction:
        if calib_x is None:
            raise DataError("--bias-correction needs calibration data (--calib DATA.npz)")
        n = correct_biases(qm.graph, calib_x)
        qm.notes.append(f"bias correction applied to {n} layer(s)")
    return qm
