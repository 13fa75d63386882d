"""The model-load word protocol of the network engine's ``load`` stream (docs/engine.md, "Loading").

``load_words(program)`` is the only writer; ``qhw.hw.engine.engine.LoadUnit`` the only reader. All
words are 32-bit. The stream is::

    LOAD_MAGIC, program words P, weight words W, parameter words Q,
    P program words (the descriptors, ``DESCRIPTOR_WORDS`` each, in order),
    W weight words (the image's weight bytes ``image[:params_offset]``, little-endian, 4 per word),
    Q parameter words (the image's int32 parameters ``image[params_offset:]``)

A wrong magic, or sizes larger than the memories, set ``error`` and the rest of the stream is
consumed until the counts given are exhausted (the memories keep what they had, ``loaded`` stays low).
"""

from __future__ import annotations

import struct

from .isa import DESCRIPTOR_WORDS
from .program import Program

__all__ = ["LOAD_HEADER_WORDS", "LOAD_MAGIC", "load_words"]

LOAD_MAGIC = 0x4C574851          # b"QHWL" little-endian
LOAD_HEADER_WORDS = 4


def load_words(program: Program) -> list[int]:
    """The ``load`` stream's words for ``program`` (header, descriptors, weights, parameters)."""
    prog = [w for d in program.descriptors for w in d.to_words()]
    assert len(prog) == len(program.descriptors) * DESCRIPTOR_WORDS
    image = bytes(program.image)
    weights, params = image[:program.params_offset], image[program.params_offset:]
    weights += b"\0" * (-len(weights) % 4)
    params += b"\0" * (-len(params) % 4)
    w = list(struct.unpack(f"<{len(weights) // 4}I", weights))
    q = list(struct.unpack(f"<{len(params) // 4}I", params))
    return [LOAD_MAGIC, len(prog), len(w), len(q)] + prog + w + q
