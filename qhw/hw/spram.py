"""``Spram``: the iCE40 UP5K's single-port RAM (``SB_SPRAM256KA``, 16 K x 16), with a portable equivalent.

The UP5K has four 256-kbit SPRAM blocks beside its 30 4-kbit block RAMs: the place for a network's
weights and program. ``Spram(width=16 * k)`` puts ``k`` blocks side by side on one address (16 K words
of ``width`` bits); ``family="ice40"`` instantiates ``SB_SPRAM256KA``, anything else builds the same
behaviour from an Amaranth memory (simulation, generic Verilog). Both behave as Yosys's
``ice40/cells_sim.v`` model of the block, in the cases the port contract defines:

* a read (``en`` high, ``we`` low) shows ``mem[addr]`` on ``rdata`` the next cycle (``latency`` 1);
* a write (``en`` and ``we`` high) stores the nibbles of ``wdata`` whose ``wmask`` bit is set; ``rdata``
  is undefined the cycle after a write (the block drives X);
* with ``en`` low ``rdata`` holds its value.

The blocks are always powered (``POWEROFF`` high, ``SLEEP`` and ``STANDBY`` low); their contents at
power-up are undefined.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError

__all__ = ["SPRAM_DEPTH", "SPRAM_WIDTH", "Spram"]

SPRAM_DEPTH = 16384     # words of one SB_SPRAM256KA
SPRAM_WIDTH = 16        # bits per word; write mask per 4-bit nibble
_NIBBLE = 4


class Spram(wiring.Component):
    """``width / 16`` SPRAM blocks on one address; ports as in the module docstring.

    Parameters
    ----------
    width:
        Word width: 16, 32, 48 or 64 (one to four of the UP5K's blocks).
    family:
        ``"ice40"`` to instantiate ``SB_SPRAM256KA``; ``None`` for the portable equivalent.
    """

    def __init__(self, *, width: int = SPRAM_WIDTH, family: str | None = None):
        if not isinstance(width, int) or isinstance(width, bool) or width not in (16, 32, 48, 64):
            raise ConfigError(f"Spram width must be 16, 32, 48 or 64 (one to four SB_SPRAM256KA), not {width!r}")
        if family not in (None, "ice40"):
            raise ConfigError(f"family must be None or 'ice40', not {family!r}")
        self.width, self.family = width, family
        super().__init__({
            "addr": In(range(SPRAM_DEPTH)),
            "en": In(1),
            "we": In(1),
            "wdata": In(width),
            "wmask": In(width // _NIBBLE),
            "rdata": Out(width),
        })

    @property
    def latency(self) -> int:
        """A read's address to its ``rdata``, in cycles."""
        return 1

    @property
    def blocks(self) -> int:
        return self.width // SPRAM_WIDTH

    def elaborate(self, platform):
        m = Module()
        if self.family == "ice40":
            per = SPRAM_WIDTH // _NIBBLE
            for k in range(self.blocks):
                bits = slice(k * SPRAM_WIDTH, (k + 1) * SPRAM_WIDTH)
                m.submodules[f"spram_{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=self.addr, i_DATAIN=self.wdata[bits], i_MASKWREN=self.wmask[k * per:(k + 1) * per],
                    i_WREN=self.we, i_CHIPSELECT=self.en, i_CLOCK=ClockSignal(),
                    i_STANDBY=Const(0, 1), i_SLEEP=Const(0, 1), i_POWEROFF=Const(1, 1),
                    o_DATAOUT=self.rdata[bits],
                )
        else:
            m.submodules.mem = mem = memory.Memory(shape=self.width, depth=SPRAM_DEPTH, init=[])
            wr = mem.write_port(granularity=_NIBBLE)
            rd = mem.read_port(domain="sync")
            m.d.comb += [
                wr.addr.eq(self.addr), wr.data.eq(self.wdata),
                wr.en.eq(self.wmask & (self.en & self.we).replicate(len(self.wmask))),
                rd.addr.eq(self.addr), rd.en.eq(self.en & ~self.we),
                self.rdata.eq(rd.data),
            ]
        return m
