"""The generated array as the host sees it: its manifest (``NAME.json``), its Verilog, and
payload codecs built from the manifest's ``streams`` section (so host code cannot drift from
the hardware's bit layout)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..hw.config import ArrayConfig, read_manifest

__all__ = ["Hardware", "StreamCodec", "load_hardware", "hardware_from_config"]


class StreamCodec:
    """Packs field values into raw payload integers and back, from a manifest ``streams`` entry.

    All per-element work is vectorized with NumPy; only the final bytes -> int conversion is
    one Python call per beat, so payloads can be precomputed before the clock loop.
    """

    def __init__(self, stream: dict):
        self.bits = int(stream["payload_bits"])
        self.nbytes = max(1, (self.bits + 7) // 8)
        self.fields = [(f["name"], int(f["offset"]), int(f["width"]), bool(f["signed"])) for f in stream["fields"]]
        self.index = {name: i for i, (name, *_rest) in enumerate(self.fields)}

    def pack(self, values: np.ndarray) -> list[int]:
        """``values`` (beats x fields, in manifest field order) -> one int per beat."""
        values = np.asarray(values, dtype=np.int64).reshape(-1, len(self.fields))
        bits = np.zeros((values.shape[0], self.nbytes * 8), dtype=np.uint8)
        for i, (_, off, width, _) in enumerate(self.fields):
            v = values[:, i] & ((1 << width) - 1)
            bits[:, off:off + width] = (v[:, None] >> np.arange(width, dtype=np.int64)) & 1
        packed = np.packbits(bits, axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in packed]

    def unpack(self, raws) -> np.ndarray:
        """Raw payload ints -> values (beats x fields), signed fields sign-extended."""
        raws = list(raws)
        if not raws:
            return np.zeros((0, len(self.fields)), dtype=np.int64)
        buf = b"".join(int(r).to_bytes(self.nbytes, "little") for r in raws)
        bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8).reshape(len(raws), self.nbytes), axis=1,
                             bitorder="little").astype(np.int64)
        out = np.zeros((len(raws), len(self.fields)), dtype=np.int64)
        for i, (_, off, width, signed) in enumerate(self.fields):
            v = bits[:, off:off + width] @ (np.int64(1) << np.arange(width, dtype=np.int64))
            if signed:
                v = np.where(v >> (width - 1), v - (np.int64(1) << width), v)
            out[:, i] = v
        return out

    def columns(self, records: list[dict]) -> np.ndarray:
        """Dict records (``{"bias": [..], "multiplier": 3, ...}`` as ``plan_gemm`` builds them) ->
        a beats x fields matrix in manifest order."""
        out = np.zeros((len(records), len(self.fields)), dtype=np.int64)
        for r, rec in enumerate(records):
            for key, val in rec.items():
                if isinstance(val, (list, tuple, np.ndarray)):
                    for j, v in enumerate(val):
                        out[r, self.index[f"{key}[{j}]"]] = int(v)
                else:
                    out[r, self.index[key]] = int(val)
        return out


@dataclass(frozen=True)
class Hardware:
    """One generated array: config, top name, Verilog path and text hash, manifest and codecs.

    ``models`` (simulation models of primitives the Verilog instantiates), ``sim_args`` (simulator
    flags they need) and ``netlist`` (what the Verilog is, e.g. ``post-synth ice40``) are set for a
    post-synthesis netlist (``qhw.fpga.postsynth``); the generated RTL needs none."""

    config: ArrayConfig
    name: str
    manifest_path: Path
    verilog_path: Path
    manifest: dict
    models: tuple[Path, ...] = ()
    sim_args: tuple[str, ...] = ()
    netlist: str | None = None

    @property
    def top(self) -> str:
        """``"network"`` (``qhw generate --top network``) or ``"accel"`` (the GEMM co-processor)."""
        from ..engine.config import manifest_top

        return manifest_top(self.manifest)

    @property
    def engine(self):
        """The network top's ``EngineConfig`` (``EngineConfig.from_manifest``)."""
        from ..engine.config import EngineConfig

        return EngineConfig.from_manifest(self.manifest, source=str(self.manifest_path), array=self.config)

    @property
    def verilog_hash(self) -> str:
        return hashlib.sha256(self.verilog_path.read_bytes()).hexdigest()

    def sources_key(self) -> bytes:
        """Everything a simulator build depends on: the Verilog, the models and the flags."""
        h = hashlib.sha256(self.verilog_path.read_bytes())
        for m in self.models:
            h.update(b"\0" + Path(m).read_bytes())
        h.update("\0".join(self.sim_args).encode())
        return h.digest()

    def codec(self, stream: str) -> StreamCodec:
        return StreamCodec(self.manifest["streams"][stream])

    def ideal_cycles(self, m: int, k: int, n: int) -> int | None:
        """The manifest's analytical cycle count, or None where it is not exact (several tiles and
        M < ``min_m_for_full_rate``)."""
        c = self.config
        kt, nt = c.gemm_tiles(k, n)
        if kt * nt > 1 and m < self.manifest["latency"]["min_m_for_full_rate"]:
            return None
        return c.ideal_cycles(m, k, n)


def load_hardware(path) -> Hardware:
    """Read ``DIR/NAME.json`` (written by ``qhw generate``; ``qhw.hw.config.read_manifest``) and find
    ``DIR/NAME.v`` next to it."""
    p = Path(path)
    config, doc = read_manifest(p)
    if doc.get("top") == "network":
        from ..engine.config import EngineConfig

        EngineConfig.from_manifest(doc, source=str(p), array=config)     # refuse a bad engine section now
    for key, kind in (("streams", dict), ("ports", list)):
        if not isinstance(doc.get(key), kind):
            problem = "is missing" if key not in doc else f"must be a JSON {kind.__name__}, not {doc[key]!r}"
            raise ConfigError(f"{p}: field {key!r} {problem}")
    name = doc["name"]
    v = p.with_name(f"{name}.v")
    if not v.is_file():
        raise ConfigError(f"{p}: Verilog {v.name} not found next to the manifest; regenerate with qhw generate")
    return Hardware(config=config, name=name, manifest_path=p, verilog_path=v, manifest=doc)


def generator_hash() -> str:
    """Hash of the hardware generator's sources (``qhw/hw/*.py``): cached Verilog is reused only
    while the generator is unchanged."""
    h = hashlib.sha256()
    for f in sorted((Path(__file__).resolve().parent.parent / "hw").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def hardware_from_config(config: ArrayConfig, *, name: str, out_dir) -> Hardware:
    """Generate (``qhw.hw.generate.write``) unless the same config was generated into ``out_dir``
    by the same generator sources (a ``NAME.src`` stamp records both)."""
    from ..hw.generate import manifest, write

    out = Path(out_dir)
    j, v, stamp = out / f"{name}.json", out / f"{name}.v", out / f"{name}.src"
    key = hashlib.sha256((json.dumps(manifest(config, name=name), sort_keys=True)
                          + generator_hash()).encode()).hexdigest()
    if not (j.is_file() and v.is_file() and stamp.is_file() and stamp.read_text() == key):
        write(config, name=name, out_dir=out)
        stamp.write_text(key)
    return load_hardware(j)
