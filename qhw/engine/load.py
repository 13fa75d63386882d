"""The network engine's host streams: the model-load words of ``load`` (docs/engine.md, "Loading"),
the input beats of ``i`` and the output beats of ``o``.

``load_words(program)`` is the only writer; ``qhw.hw.engine.engine.LoadUnit`` the only reader. All
words are 32-bit. The stream is::

    LOAD_MAGIC, program words P, weight words W, parameter words Q, table words T,
    P program words (the descriptors, ``DESCRIPTOR_WORDS`` (16) words each, in order),
    W weight words (the image's weight bytes ``image[:params_offset]``, little-endian, 4 per word),
    Q parameter words (the image's int32 parameters ``image[params_offset:]``),
    T table words: per table (``program_tables``, slot 0, 1, ...) its ``table`` field value (the tag
    the descriptors name it by), then its 256 entries, one per word (int8 in the low byte, code -128 first)

A wrong magic, or sizes larger than the memories, set ``error`` and the rest of the stream is
consumed until the counts given are exhausted (the memories keep what they had, ``loaded`` stays low).
"""

from __future__ import annotations

import struct

import numpy as np

from .program import Program

__all__ = ["LOAD_HEADER_WORDS", "LOAD_MAGIC", "TABLE_WORDS", "input_beats", "program_tables",
           "load_words", "output_beat_count", "output_tensors"]

LOAD_MAGIC = 0x4C574851          # b"QHWL" little-endian
LOAD_HEADER_WORDS = 5
TABLE_WORDS = 1 + 256            # a table's tag, then its entries


def program_tables(program: Program) -> list[tuple[int, list[int]]]:
    """The distinct tables the descriptors use (``table`` != 0), in order of first use: (tag = the
    ``table`` field, its 256 int8 entries read from the image at ``table - 1``). A table's slot in the
    engine's table memories is its index here."""
    out, seen = [], set()
    image = np.frombuffer(bytes(program.image), np.int8)
    for d in program.descriptors:
        tag = d["table"] if "table" in d.fields else 0
        if tag and tag not in seen:
            seen.add(tag)
            out.append((tag, image[tag - 1:tag - 1 + 256].astype(int).tolist()))
    return out


def load_words(program: Program) -> list[int]:
    """The ``load`` stream's words for ``program`` (header, descriptors, weights, parameters)."""
    prog = [w for d in program.descriptors for w in d.to_words()]
    image = bytes(program.image)
    weights, params = image[:program.params_offset], image[program.params_offset:]
    weights += b"\0" * (-len(weights) % 4)
    params += b"\0" * (-len(params) % 4)
    w = list(struct.unpack(f"<{len(weights) // 4}I", weights))
    q = list(struct.unpack(f"<{len(params) // 4}I", params))
    t = [v & 0xFFFFFFFF for tag, entries in program_tables(program) for v in [tag, *entries]]
    return [LOAD_MAGIC, len(prog), len(w), len(q), len(t)] + prog + w + q + t


def input_beats(program: Program, codes: dict, segment: int = 0) -> list[int]:
    """The ``i`` stream of one inference's segment: each INPUT descriptor's tensor (``codes[name]``,
    its logical shape with or without a batch axis of 1) channel-last, dense int8 bytes, ``rows`` per
    beat (byte ``j`` in bits ``8j..8j+7``), the tensor's last beat zero-padded."""
    R, beats = program.rows, []
    for d in program.descriptors:
        if d.op != "INPUT" or program.tensors[d["tensor"]].segment != segment:
            continue
        t = program.tensors[d["tensor"]]
        x = np.asarray(codes[t.name]).reshape(t.c, t.h, t.w).transpose(1, 2, 0).reshape(-1).astype(np.int8)
        raw = x.tobytes() + b"\0" * (-x.size % R)
        beats += [int.from_bytes(raw[i:i + R], "little") for i in range(0, len(raw), R)]
    return beats


def output_beat_count(program: Program, segment: int = 0) -> int:
    """Beats of one inference's segment on the ``o`` stream."""
    return sum(-(-t.c * t.h * t.w // program.rows) for d in program.descriptors if d.op == "OUTPUT"
               for t in [program.tensors[d["tensor"]]] if t.segment == segment)


def output_tensors(program: Program, beats: list[int], segment: int = 0) -> dict[str, np.ndarray]:
    """The OUTPUT descriptors' tensors (int64 codes, logical shape) from a segment's ``o`` beats."""
    R, out, pos = program.rows, {}, 0
    for d in program.descriptors:
        if d.op != "OUTPUT" or program.tensors[d["tensor"]].segment != segment:
            continue
        t = program.tensors[d["tensor"]]
        n = -(-t.c * t.h * t.w // R)
        raw = b"".join(int(b).to_bytes(R, "little") for b in beats[pos:pos + n])
        pos += n
        v = np.frombuffer(raw, np.int8)[:t.c * t.h * t.w].astype(np.int64)
        out[t.name] = v.reshape(t.h, t.w, t.c).transpose(2, 0, 1).reshape(t.logical_shape)
    return out
