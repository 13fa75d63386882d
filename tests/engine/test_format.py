"""The program file: round trip, the one reader's refusals, descriptor fields, the disassembler."""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace

import pytest

from qhw.engine.compiler import compile_model
from qhw.engine.isa import DESCRIPTOR_WORDS, FIELDS, Descriptor, field_table
from qhw.engine.program import HEADER, Program, disassemble
from qhw.errors import ConfigError, ModelError

from .conftest import engine_for


@pytest.fixture(scope="module")
def cnn_program(digits_q):
    qm = digits_q["digits_cnn"]
    return compile_model(qm, engine_for(qm.graph)).program


def test_round_trip_is_identity(cnn_program):
    data = cnn_program.to_bytes()
    back = Program.from_bytes(data)
    assert back.to_bytes() == data
    assert back.descriptors == cnn_program.descriptors and back.tensors == cnn_program.tensors
    assert back.image == cnn_program.image and back.rounding == cnn_program.rounding
    assert data[:4] == b"QHWE" and struct.unpack_from("<H", data, 4)[0] == 2


def test_same_model_same_bytes(digits_q):
    qm = digits_q["digits_cnn"]
    a = compile_model(qm, engine_for(qm.graph)).program.to_bytes()
    b = compile_model(qm, engine_for(qm.graph)).program.to_bytes()
    assert a == b


def test_reader_refuses_bad_files(cnn_program):
    data = cnn_program.to_bytes()
    with pytest.raises(ModelError, match=r"^f: not a qhw engine program \(no QHWE header\)$"):
        Program.from_bytes(b"PK\3\4" + data[4:], "f")
    bad_version = data[:4] + struct.pack("<H", 9) + data[6:]
    with pytest.raises(ModelError, match=r"^f: engine program version 9 is not supported"):
        Program.from_bytes(bad_version, "f")
    with pytest.raises(ModelError, match=r"^f: truncated or padded engine program"):
        Program.from_bytes(data[:-5], "f")
    bad_op = bytearray(data[:-4])
    bad_op[HEADER.size] = 200                      # descriptor 0's opcode, CRC recomputed
    bad_op += struct.pack("<I", zlib.crc32(bytes(bad_op)))
    with pytest.raises(ModelError, match=r"^f: descriptor 0: unknown engine opcode 200$"):
        Program.from_bytes(bytes(bad_op), "f")
    flipped = bytearray(data)
    flipped[HEADER.size + 7] ^= 1
    with pytest.raises(ModelError, match=r"^f: engine program CRC mismatch \(corrupted file\)$"):
        Program.from_bytes(bytes(flipped), "f")


@pytest.mark.parametrize("op", list(FIELDS))
def test_descriptor_words_round_trip_extremes(op):
    for pick in (0, 1):   # every field at its minimum, then at its maximum
        values = {name: ((-(1 << (w - 1)) if signed else 0) if pick == 0 else
                         ((1 << (w - 1)) - 1 if signed else (1 << w) - 1))
                  for name, _, w, signed in field_table(op)[1:]}
        d = Descriptor(op, values)
        words = d.to_words()
        assert len(words) == DESCRIPTOR_WORDS and all(0 <= w < 1 << 32 for w in words)
        assert Descriptor.from_words(words) == d


def test_descriptor_field_overflow_is_one_line():
    with pytest.raises(ConfigError, match=r"^MATMUL\.oh = 4096 does not fit its 12-bit unsigned field$"):
        Descriptor("MATMUL", {"oh": 4096}).to_words()
    with pytest.raises(ConfigError, match=r"^MATMUL\.zp = -257 does not fit its 9-bit signed field$"):
        Descriptor("MATMUL", {"zp": -257}).to_words()
    with pytest.raises(ConfigError, match=r"^POOL: unknown field\(s\) kcw$"):
        Descriptor("POOL", {"kcw": 1})
    with pytest.raises(ModelError, match=r"^unknown engine opcode 200$"):
        Descriptor.from_words([200] + [0] * (DESCRIPTOR_WORDS - 1))


def test_disassembler_lists_every_descriptor_and_field(cnn_program):
    text = disassemble(cnn_program)
    lines = text.splitlines()
    body = [ln for ln in lines if not ln.startswith(";")]
    assert len(body) == len(cnn_program.descriptors)
    for i, (line, d) in enumerate(zip(body, cnn_program.descriptors)):
        assert line.split()[:2] == [str(i), d.op]
        parsed = dict(tok.split("=") for tok in line.split()[2:])
        assert {k: int(v) for k, v in parsed.items()} == {n: d[n] for n, _, _ in FIELDS[d.op]}
    assert "; tensor 0: in  segment 0 'x' c=1 h=8 w=8" in lines
    assert "; tensor 1: out segment 0 'logits' flat c=10 h=1 w=1" in lines
    assert [d.op for d in cnn_program.descriptors] == ["INPUT", "MATMUL", "MATMUL", "MATMUL", "MATMUL", "OUTPUT", "END"]


def test_program_words_count(cnn_program):
    assert cnn_program.words == len(cnn_program.descriptors) * DESCRIPTOR_WORDS
    assert replace(cnn_program, descriptors=[]).words == 0
