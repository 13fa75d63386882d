"""Verilator lint of generated Verilog, with the waivers it needs and why.

Every waived rule comes from the shape of Yosys' ``write_verilog`` output, not
from the design; each is listed with its reason so a new warning class still
fails the lint.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from ..verilator_tool import require_verilator, verilator_env

__all__ = ["WAIVERS", "lint"]

WAIVERS = """\
`verilator_config
// Waivers for Verilog written by Amaranth 0.5 through Yosys write_verilog (qhw.hw.generate).
// WIDTHEXPAND/WIDTHTRUNC: Yosys emits operands at their own width and relies on Verilog's
// context-determined extension and truncation ($signed(a) + $signed(b) with narrower b,
// `full >> bank` assigned to 1 bit, `!vector`); Amaranth's semantics are preserved exactly and the
// Amaranth simulation tests check the arithmetic.
lint_off -rule WIDTHEXPAND
lint_off -rule WIDTHTRUNC
// UNUSEDSIGNAL: Yosys keeps intermediate wires and the unused high bits of sliced values.
lint_off -rule UNUSEDSIGNAL
// PROCASSINIT: Amaranth gives every register its reset value as a declaration initializer and
// assigns it again in the always block (intended: initial value and synchronous reset agree).
lint_off -rule PROCASSINIT
// CASEINCOMPLETE: `proc -nomux` emits casez without default for FSM states and bank selects;
// the previous value is held, which is the Amaranth semantics.
lint_off -rule CASEINCOMPLETE
// DECLFILENAME: submodules are named `\\top.array.mesh...` (escaped, hierarchical) and live in
// the top's file by design: one self-contained file per generated array.
lint_off -rule DECLFILENAME
"""


def lint(verilog_path, *, top: str) -> tuple[bool, str]:
    """Run ``verilator --lint-only -Wall`` with ``WAIVERS``; returns (passed, messages)."""
    exe = require_verilator()
    with tempfile.TemporaryDirectory() as tmp:
        waivers = Path(tmp) / "waivers.vlt"
        waivers.write_text(WAIVERS)
        proc = subprocess.run([exe, "--lint-only", "-Wall", str(waivers), str(verilog_path),
                               "--top-module", top], capture_output=True, text=True, check=False,
                              env=verilator_env())
    return proc.returncode == 0, proc.stdout + proc.stderr


if __name__ == "__main__":  # python -m qhw.hw.lint FILE.v TOP
    ok, text = lint(sys.argv[1], top=sys.argv[2])
    print(text or "lint clean")
    sys.exit(0 if ok else 1)
