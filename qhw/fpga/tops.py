"""Synthesis tops that keep the design's inputs live.

Tying an input to a constant lets Yosys delete most of the array (MEASURED.md), and an array's
hundreds of stream bits do not fit a board's pins. ``ArrayTop`` therefore feeds every input of the
array from a shift register driven by an LFSR (XORed with a button, so nothing is a constant) and
XOR-reduces every output, through registers, to one LED. The array's own registers and
multipliers are what nextpnr times; the feeder and the reduction are pipelined so they never set
Fmax.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Elaboratable, Module, Signal
from amaranth.lib import io

__all__ = ["AccelTop", "ArrayTop", "NetworkTop", "live_bits", "xor_reduce"]


def _pins(m: Module, platform):
    """The first button (LFSR seed input) and the first LED (reduced output); plain signals without
    a platform."""
    if platform is None:
        return Signal(), Signal()
    m.submodules.seed_buf = seed = io.Buffer("i", platform.request("button", 0, dir="-"))
    m.submodules.led_buf = led = io.Buffer("o", platform.request("led", 0, dir="-"))
    return seed.i, led.o


def live_bits(m: Module, width: int, seed_in, *, name: str = "stim") -> Signal:
    """``width`` registered bits that change every cycle, all structurally different.

    A 31-bit LFSR (x^31 + x^28 + 1, XOR ``seed_in``) feeds two shift registers running in opposite
    directions from different taps; output bit ``k`` is the registered XOR of both registers' bit
    ``k``. A plain shift register would not do: its taps are delay lines like the array's own
    skew and pipeline registers, and Yosys merges flip-flops with identical inputs across the two,
    which fans one register out across the array and distorts both the counts and the timing.
    """
    lfsr = Signal(31, init=0x5EED1, name=f"{name}_lfsr")
    m.d.sync += lfsr.eq(Cat(lfsr[30] ^ lfsr[27] ^ seed_in, lfsr[:30]))
    fwd = Signal(width + 1, name=f"{name}_fwd")
    rev = Signal(width + 1, name=f"{name}_rev")
    m.d.sync += [fwd.eq(Cat(lfsr[0] ^ lfsr[17], fwd[:-1])),
                 rev.eq(Cat(rev[1:], lfsr[5] ^ lfsr[29] ^ lfsr[11]))]
    bits = Signal(width, name=f"{name}_out")
    m.d.sync += bits.eq(fwd[1:] ^ rev[:-1])
    return bits


def xor_reduce(m: Module, value, *, fanin: int = 4, name: str = "xr") -> Signal:
    """XOR of all bits of ``value``, one register stage per ``fanin``-input level (one LUT4 each)."""
    bits = [value[i] for i in range(len(value))]
    level = 0
    while len(bits) > 1 or level == 0:
        nxt = []
        for g in range(0, len(bits), fanin):
            r = Signal(name=f"{name}_l{level}_{g // fanin}")
            acc = bits[g]
            for b in bits[g + 1:g + fanin]:
                acc = acc ^ b
            m.d.sync += r.eq(acc)
            nxt.append(r)
        bits = nxt
        level += 1
    return bits[0]


def drive_live(m: Module, inputs: list, seed) -> None:
    """Drive every signal in ``inputs`` from consecutive bits of one live shift register."""
    bits = live_bits(m, sum(len(v) for v in inputs), seed)
    offset = 0
    for v in inputs:
        m.d.comb += v.eq(bits[offset:offset + len(v)])
        offset += len(v)


class ArrayTop(Elaboratable):
    """A ``SystolicArray``-like component (``a_in``, ``bank_in``, ``w_we``, ``w_bank``, ``w_data`` in,
    ``psum_out`` out) with live stimulus and its outputs reduced to the board's first LED."""

    def __init__(self, array):
        self.array = array

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = arr = self.array
        seed, led = _pins(m, platform)
        drive_live(m, [arr.a_in.as_value(), arr.bank_in, arr.w_we, arr.w_bank, arr.w_data.as_value()], seed)
        m.d.comb += led.eq(xor_reduce(m, arr.psum_out.as_value()))
        return m


class AccelTop(Elaboratable):
    """The whole ``Accelerator`` (streams, accumulators, requantization) with live stimulus: every
    stream's ``valid`` and payload and ``out.ready`` come from the shift register."""

    def __init__(self, accel):
        self.accel = accel

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = acc = self.accel
        seed, led = _pins(m, platform)
        ins = []
        for name in ("cmd", "weights", "params", "act"):
            s = getattr(acc, name)
            ins += [s.valid, s.payload.as_value()]
        ins.append(acc.out.ready)
        drive_live(m, ins, seed)
        outs = Cat(acc.out.payload.as_value(), acc.out.valid, acc.busy,
                   *(getattr(acc, s).ready for s in ("cmd", "weights", "params", "act")))
        m.d.comb += led.eq(xor_reduce(m, outs))
        return m


class NetworkTop(Elaboratable):
    """The ``NetworkEngine`` with live stimulus: ``load`` and ``i`` (valid and payload) and ``o.ready``
    from the shift register, the outputs reduced to the LED. The ``trace`` tap is left out: it only
    taps the scratchpad's write port, which the engine keeps anyway."""

    def __init__(self, engine):
        self.engine = engine

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        seed, led = _pins(m, platform)
        drive_live(m, [eng.load.valid, eng.load.payload, eng.i.valid, eng.i.payload, eng.o.ready], seed)
        outs = Cat(eng.o.payload.as_value(), eng.o.valid, eng.busy, eng.error, eng.loaded, eng.load.ready,
                   eng.i.ready)
        m.d.comb += led.eq(xor_reduce(m, outs))
        return m
