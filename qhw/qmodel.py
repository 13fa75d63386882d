"""The quantized-model file (QMODEL): one versioned zip of JSON + .npy arrays, no pickle.

Layout: ``model.json`` (format name, version, quantization config, calibration
ranges, notes, the graph with every node's attributes and integer settings)
and ``arrays/NNNN.npy`` referenced from it. The graph keeps the float weights
too, so the float reference runs from the same file. Entries are written in a
fixed order with a fixed timestamp, so the same model gives the same bytes.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelError
from .fileio import atomic_path
from .graph import Graph, Node, QParams, TensorInfo
from .quantize import QuantConfig

__all__ = ["FORMAT", "VERSION", "QModel", "save_qmodel", "load_qmodel"]

FORMAT = "qhw-qmodel"
VERSION = 1
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class QModel:
    graph: Graph
    config: QuantConfig
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    imported: dict[str, QParams] = field(default_factory=dict)  # a QDQ model's own tensor params
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def is_qdq(self) -> bool:
        return bool(self.imported)


def _write_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def save_qmodel(qm: QModel, path: str | Path) -> None:
    arrays: list[np.ndarray] = []

    def ref(a: np.ndarray) -> int:
        arrays.append(np.asarray(a, order="C"))  # (ascontiguousarray would make 0-d arrays 1-d)
        return len(arrays) - 1

    g = qm.graph
    nodes = []
    for n in g.nodes:
        nodes.append({
            "name": n.name, "op": n.op, "inputs": n.inputs, "outputs": n.outputs, "attrs": n.attrs,
            "params": {k: ref(v) for k, v in sorted(n.params.items())},
            "quant": n.quant,
            "qparams": {k: ref(v) for k, v in sorted(n.qparams.items())},
        })
    doc = {
        "format": FORMAT, "version": VERSION, "source": qm.source, "notes": qm.notes,
        "config": qm.config.to_json(),
        "ranges": {k: [float(a), float(b)] for k, (a, b) in qm.ranges.items()},
        "imported": {k: v.to_json() for k, v in qm.imported.items()},
        "graph": {
            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in g.inputs],
            "outputs": g.outputs, "opset": g.opset,
            "tensors": {k: v.to_json() for k, v in g.tensors.items()},
            "nodes": nodes,
        },
    }
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        _write_entry(zf, "model.json", json.dumps(doc, indent=1, sort_keys=True).encode())
        for i, a in enumerate(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, allow_pickle=False)
            _write_entry(zf, f"arrays/{i:04d}.npy", buf.getvalue())


def load_qmodel(path: str | Path) -> QModel:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such file (expected a quantized model written by 'qhw quantize')")
    try:
        with zipfile.ZipFile(p) as zf:
            doc = json.loads(zf.read("model.json"))
            if doc.get("format") != FORMAT:
                raise ModelError(f"{p}: not a qhw quantized model (format {doc.get('format')!r})")
            if doc.get("version") != VERSION:
                raise ModelError(f"{p}: quantized-model version {doc.get('version')!r} is not supported "
                                 f"(this qhw reads version {VERSION}); re-run 'qhw quantize'")

            def arr(i: int) -> np.ndarray:
                return np.lib.format.read_array(io.BytesIO(zf.read(f"arrays/{i:04d}.npy")),
                                                allow_pickle=False)

            gd = doc["graph"]
            nodes = [Node(name=n["name"], op=n["op"], inputs=n["inputs"], outputs=n["outputs"],
                          attrs=n["attrs"], params={k: arr(i) for k, i in n["params"].items()},
                          quant=n["quant"], qparams={k: arr(i) for k, i in n["qparams"].items()})
                     for n in gd["nodes"]]
    except ModelError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, json.JSONDecodeError) as e:
        raise ModelError(f"{p}: not a qhw quantized model ({type(e).__name__}: {e})") from e
    graph = Graph(nodes=nodes,
                  inputs=[TensorInfo(i["name"], tuple(i["shape"]), i["dtype"]) for i in gd["inputs"]],
                  outputs=gd["outputs"], opset=gd["opset"],
                  tensors={k: QParams.from_json(v) for k, v in gd["tensors"].items()})
    return QModel(graph=graph, config=QuantConfig.from_json(doc["config"]),
                  ranges={k: (a, b) for k, (a, b) in doc["ranges"].items()},
                  imported={k: QParams.from_json(v) for k, v in doc["imported"].items()},
                  source=doc.get("source", ""), notes=doc.get("notes", []))
