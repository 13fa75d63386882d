"""docs/engine.md's descriptor field tables are the ISA's own (one place for each fact)."""

from __future__ import annotations

from pathlib import Path

from qhw.engine.isa import markdown_tables
from qhw.engine.program import HEADER

DOC = Path(__file__).resolve().parents[2] / "docs" / "engine.md"


def test_field_tables_match_the_isa():
    text = DOC.read_text()
    begin, end = "<!-- isa-tables: begin -->\n", "<!-- isa-tables: end -->"
    assert text.split(begin, 1)[1].split(end, 1)[0].strip() == markdown_tables()


def test_header_size_matches_the_doc():
    assert f"u16 header size ({HEADER.size})" in DOC.read_text()
    assert f"| {HEADER.size} | descriptors" in DOC.read_text()
