# amaranth: UnusedElaboratable=no
"""``Spram`` (``qhw/hw/spram.py``): the ``SB_SPRAM256KA`` instance in Yosys's own ``ice40/cells_sim.v``
model (Verilator) and the portable equivalent (Verilator and the Amaranth simulator), both against a
Python model of the port contract: reads one cycle late, nibble write masks, ``rdata`` held while idle.
Random operations from a stated seed."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth_sim import run_sim
from test_fpga_primitives import SHARE, simulate

from qhw.errors import ConfigError
from qhw.hw.spram import SPRAM_DEPTH, Spram

SEED = 2027


def operations(width: int, n: int, seed: int) -> dict:
    """Every used address written whole first, then reads, masked writes and idle cycles at random
    (addresses from a small set with both ends of the range, so reads hit written words)."""
    rng = np.random.default_rng(seed)
    nib = width // 4
    addrs = [0, SPRAM_DEPTH - 1, 1, 0x2AAA, 0x1555] + [int(a) for a in rng.integers(0, SPRAM_DEPTH, 11)]
    ops = {"addr": [], "en": [], "we": [], "wdata": [], "wmask": []}

    def op(addr, en, we, data, mask):
        for k, v in zip(ops, (addr, en, we, data, mask)):
            ops[k].append(v)

    for a in addrs:
        op(a, 1, 1, int(rng.integers(0, 1 << 62)) & ((1 << width) - 1), (1 << nib) - 1)
    for _ in range(n):
        kind = rng.random()
        data = int(rng.integers(0, 1 << 62)) & ((1 << width) - 1)
        a = addrs[int(rng.integers(len(addrs)))]
        if kind < 0.45:
            op(a, 1, 0, data, int(rng.integers(0, 1 << nib)))        # read: data and mask are junk
        elif kind < 0.85:
            op(a, 1, 1, data, int(rng.integers(0, 1 << nib)))
        else:
            op(a, 0, int(rng.integers(0, 2)), data, int(rng.integers(0, 1 << nib)))   # idle
    return {k: np.array(v, dtype=object) for k, v in ops.items()}


def model(ops: dict, width: int) -> list:
    """``rdata`` the contract defines in each cycle (None: undefined, after a write or before any read)."""
    mem, out, cur = {}, [], None
    for addr, en, we, data, mask in zip(*(ops[k] for k in ("addr", "en", "we", "wdata", "wmask"))):
        out.append(cur)
        if en and not we:
            cur = mem[addr]
        elif en and we:
            keep = sum(0xF << (4 * i) for i in range(width // 4) if not (mask >> i) & 1)
            mem[addr] = (mem.get(addr, 0) & keep) | (data & ~keep & ((1 << width) - 1))
            cur = None
    return out


def check(got, expected):
    defined = [i for i, e in enumerate(expected) if e is not None]
    assert len(defined) > 100
    bad = [(i, got[i], expected[i]) for i in defined if got[i] != expected[i]]
    assert not bad, f"{len(bad)} wrong cycles, first (cycle, got, expected): {bad[:3]}"


class SpramPair(wiring.Component):
    """``Spram`` on ``SB_SPRAM256KA`` (``p``) and the portable one (``q``) on the same inputs."""

    def __init__(self, width):
        self.width = width
        super().__init__({"addr": In(14), "en": In(1), "we": In(1), "wdata": In(width), "wmask": In(width // 4),
                          "p": Out(width), "q": Out(width)})

    def elaborate(self, platform):
        m = Module()
        for name, family in (("p", "ice40"), ("q", None)):
            ram = m.submodules[f"ram_{name}"] = Spram(width=self.width, family=family)
            m.d.comb += [ram.addr.eq(self.addr), ram.en.eq(self.en), ram.we.eq(self.we), ram.wdata.eq(self.wdata),
                         ram.wmask.eq(self.wmask), getattr(self, name).eq(ram.rdata)]
        return m


def test_spram_against_yosys_model(tmp_path):
    """Two SB_SPRAM256KA side by side (32-bit words) in Yosys's cells_sim.v and the portable memory in
    Verilator, 3 000 random operations: both equal the model wherever it defines ``rdata``."""
    width = 32
    ops = operations(width, 3000, SEED)
    got = simulate(tmp_path, SpramPair(width), [SHARE / "ice40" / "cells_sim.v"], inputs=ops, outputs=["p", "q"],
                   defines=("NO_ICE40_DEFAULT_ASSIGNMENTS",))
    expected = model(ops, width)
    check(list(got["p"]), expected)
    check(list(got["q"]), expected)


def test_spram_portable_in_amaranth_sim():
    """The portable ``Spram`` (16-bit, one block) in the Amaranth simulator against the same model."""
    width = 16
    dut = Spram(width=width)
    ops = operations(width, 1500, SEED + 1)
    got = []

    async def bench(ctx):
        for i in range(len(ops["addr"])):
            for k in ops:
                ctx.set(getattr(dut, k), int(ops[k][i]))
            got.append(ctx.get(dut.rdata))
            await ctx.tick()

    run_sim(dut, bench)
    check(got, model(ops, width))
    assert dut.latency == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=24), "Spram width must be 16, 32, 48 or 64 (one to four SB_SPRAM256KA), not 24"),
    (dict(family="ecp5"), "family must be None or 'ice40', not 'ecp5'"),
])
def test_spram_parameters_checked(kwargs, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        Spram(**kwargs)
