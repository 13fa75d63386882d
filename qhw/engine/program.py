"""The engine's program file (``.qbin``): header, descriptors, I/O tensor table, weight/parameter image.

``Program.to_bytes`` and ``Program.from_bytes`` are the only writer and reader; ``disassemble`` prints
it for people. All integers are little-endian. Layout (``docs/engine.md`` has the field tables):

=========  ==========================================================================
offset     content
=========  ==========================================================================
0          header, ``HEADER.size`` bytes: magic ``QHWE``, version, array shape, counts,
           memory map (store sizes compiled for, bytes/words used), section sizes
header     descriptors, ``DESCRIPTOR_WORDS`` u32 each (``qhw.engine.isa``)
...        tensor table: one entry per host-visible tensor (``TENSOR.size`` bytes + name)
...        weight/parameter image, ``image_bytes`` bytes, loaded at store address 0
end - 4    CRC-32 of everything before it
=========  ==========================================================================
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import ModelError
from .isa import DESCRIPTOR_WORDS, Descriptor

__all__ = ["MAGIC", "VERSION", "Program", "TensorEntry", "disassemble"]

MAGIC = b"QHWE"
VERSION = 2
# magic, version, header bytes, rows, cols, descriptors, tensors, rounding mask, segments,
# weight_kib, act_kib, program_words (compiled for), image bytes, params offset, act bytes used, tensor bytes
HEADER = struct.Struct("<4sHHHHHHBBHHIIIII")
# direction (0 in, 1 out), segment, flat, name length, c, h, w
TENSOR = struct.Struct("<BBBBHHH")
ROUNDING_BITS = {"single": 1, "tflite": 2, "onnx": 4}


@dataclass(frozen=True)
class TensorEntry:
    """A tensor the host writes (direction 0) or reads (1) in segment ``segment``.

    The engine holds it channel-last as ``h x w`` pixels of ``c`` channels; the logical (ONNX) value
    is ``(c, h, w)`` or, when ``flat``, that tensor flattened in NCHW order.
    """

    name: str
    direction: int
    segment: int
    flat: bool
    c: int
    h: int
    w: int

    @property
    def logical_shape(self) -> tuple[int, ...]:
        return (self.c * self.h * self.w,) if self.flat else (self.c, self.h, self.w)


@dataclass
class Program:
    rows: int
    cols: int
    rounding: tuple[str, ...]
    weight_kib: int
    act_kib: int
    program_words: int
    descriptors: list[Descriptor]
    tensors: list[TensorEntry]
    image: bytes = b""            # weight/parameter store contents from address 0
    params_offset: int = 0        # where the int32 parameters start in ``image``
    act_bytes_used: int = 0       # peak scratchpad bytes
    segments: int = 1

    @property
    def words(self) -> int:
        return len(self.descriptors) * DESCRIPTOR_WORDS

    def to_bytes(self) -> bytes:
        table = b""
        for t in self.tensors:
            name = t.name.encode()
            table += TENSOR.pack(t.direction, t.segment, int(t.flat), len(name), t.c, t.h, t.w)
            table += name + b"\0" * (-len(name) % 4)
        mask = sum(ROUNDING_BITS[r] for r in self.rounding)
        head = HEADER.pack(MAGIC, VERSION, HEADER.size, self.rows, self.cols, len(self.descriptors),
                           len(self.tensors), mask, self.segments, self.weight_kib, self.act_kib,
                           self.program_words, len(self.image), self.params_offset, self.act_bytes_used,
                           len(table))
        body = head + b"".join(struct.pack(f"<{DESCRIPTOR_WORDS}I", *d.to_words()) for d in self.descriptors)
        body += table + bytes(self.image)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "program") -> Program:
        data = bytes(data)
        if len(data) < HEADER.size + 4 or data[:4] != MAGIC:
            raise ModelError(f"{source}: not a qhw engine program (no {MAGIC.decode()} header)")
        (_, version, hsize, rows, cols, nd, nt, mask, segments, wkib, akib, pwords, nimage, poff, aused,
         ntable) = HEADER.unpack_from(data)
        if version != VERSION:
            raise ModelError(f"{source}: engine program version {version} is not supported (this qhw reads "
                             f"version {VERSION}); recompile with qhw compile")
        size = hsize + nd * DESCRIPTOR_WORDS * 4 + ntable + nimage + 4
        if len(data) != size:
            raise ModelError(f"{source}: truncated or padded engine program ({len(data)} bytes, header says {size})")
        if struct.unpack_from("<I", data, size - 4)[0] != zlib.crc32(data[:size - 4]):
            raise ModelError(f"{source}: engine program CRC mismatch (corrupted file)")
        pos = hsize
        descs = []
        for i in range(nd):
            try:
                descs.append(Descriptor.from_words(struct.unpack_from(f"<{DESCRIPTOR_WORDS}I", data, pos)))
            except ModelError as e:
                raise ModelError(f"{source}: descriptor {i}: {e}") from None
            pos += DESCRIPTOR_WORDS * 4
        tensors, end = [], pos + ntable
        for _ in range(nt):
            direction, seg, flat, nlen, c, h, w = TENSOR.unpack_from(data, pos)
            pos += TENSOR.size
            name = data[pos:pos + nlen].decode()
            pos += nlen + (-nlen % 4)
            tensors.append(TensorEntry(name, direction, seg, bool(flat), c, h, w))
        if pos != end:
            raise ModelError(f"{source}: tensor table size mismatch")
        rounding = tuple(r for r, bit in ROUNDING_BITS.items() if mask & bit)
        return cls(rows=rows, cols=cols, rounding=rounding, weight_kib=wkib, act_kib=akib, program_words=pwords,
                   descriptors=descs, tensors=tensors, image=data[end:end + nimage], params_offset=poff,
                   act_bytes_used=aused, segments=segments)


def disassemble(program: Program) -> str:
    """The program for people: header, memory map, tensor table, one line per descriptor."""
    p = program
    lines = [
        f"; qhw engine program v{VERSION}: {p.rows}x{p.cols} array, rounding {','.join(p.rounding)}, "
        f"{p.segments} segment(s)",
        f"; weight/param store: {len(p.image)} of {p.weight_kib * 1024} bytes (weights 0..{p.params_offset - 1}, "
        f"params {p.params_offset}..{len(p.image) - 1})",
        f"; scratchpad: {p.act_bytes_used} of {p.act_kib * 1024} bytes; program: {p.words} of "
        f"{p.program_words} words",
    ]
    for i, t in enumerate(p.tensors):
        lines.append(f"; tensor {i}: {'in ' if t.direction == 0 else 'out'} segment {t.segment} {t.name!r} "
                     f"{'flat ' if t.flat else ''}c={t.c} h={t.h} w={t.w}")
    for i, d in enumerate(p.descriptors):
        lines.append(f"{i:4d}  {d.text()}")
    return "\n".join(lines)
