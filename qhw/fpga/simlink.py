"""The board top in Amaranth's simulator behind a bit-level UART model, for the host driver.

``run_with_host(top, host_fn)`` simulates ``top`` (a ``BoardTop`` elaborated without a
platform) and runs ``host_fn(transport)`` in a thread; ``transport`` is a ``SimTransport`` whose
bytes are serialized onto ``top.rx`` (start bit, 8 data bits LSB first, stop bit, ``divisor``
cycles each) and deserialized from ``top.tx`` by sampling in the middle of each bit, exactly as
a USB-UART bridge would. Reply timeouts count simulated time (``timeout_bytes`` byte times), so a
slow or busy machine does not change the outcome. ``Faults`` flips, drops, duplicates and inserts
bytes in both directions at a rate; ``stall`` holds the board's transmitter (its output consumer)
for ``stall[0]`` of every ``stall[1]`` cycles, or the host holds it itself (``transport.tx_hold``).
The simulation ends when ``host_fn`` returns.

Nothing waits without a bound: each read waits at most the reply timeout of simulated time, the
host's ``BoardLink`` stops after ``retries`` failures in a row without progress (one ``LinkError``
line naming what it awaited and for how many simulated cycles), and ``max_cycles`` stops the
simulation itself (then a pending read raises instead of waiting for cycles that never come).
"""

from __future__ import annotations

import random
import threading

from amaranth.sim import Simulator

from ..errors import ConfigError
from .host import LinkError

__all__ = ["FAULT_KINDS", "Faults", "SimTransport", "run_with_host"]

FAULT_KINDS = ("flip", "drop", "duplicate", "insert")


class Faults:
    """Each byte, with probability ``rate``, suffers one of ``kinds`` (seeded: reproducible)."""

    def __init__(self, rate: float, seed: int = 0, kinds=FAULT_KINDS):
        if not (isinstance(rate, (int, float)) and 0 <= rate < 1):
            raise ConfigError(f"--faults must be a rate in [0, 1), not {rate!r}")
        if not kinds or any(k not in FAULT_KINDS for k in kinds):
            raise ConfigError(f"fault kinds must be among {', '.join(FAULT_KINDS)}, not {kinds!r}")
        self.rate, self.kinds = rate, tuple(kinds)
        self.rng = random.Random(seed)
        self.count = 0

    def apply(self, data: bytes) -> bytes:
        if not self.rate:
            return data
        out = bytearray()
        for b in data:
            if self.rng.random() >= self.rate:
                out.append(b)
                continue
            self.count += 1
            kind = self.rng.choice(self.kinds)
            if kind == "flip":
                out.append(b ^ (1 << self.rng.randrange(8)))
            elif kind == "duplicate":
                out += bytes([b, b])
            elif kind == "insert":
                out += bytes([self.rng.randrange(256), b])
        return bytes(out)


class SimTransport:
    """Byte queues between the host thread and the simulated UART pins; timeouts in simulated time."""

    def __init__(self, *, divisor: int, timeout_bytes: int = 200, faults: Faults | None = None,
                 timeout_cycles: int | None = None):
        self.name = "sim"
        self.divisor = divisor
        self.timeout_cycles = timeout_cycles or timeout_bytes * 10 * divisor
        self.byte_level = False         # bytes one a cycle (a ``uart=False`` top), not UART bits
        self.faults = faults
        self.to_board = bytearray()
        self.from_board = bytearray()
        self.cycles = 0
        self.deadline = None            # a read waits until this cycle
        self.done = False
        self.stopped = None             # why the simulation ended while the host was still running
        self.tx_hold = False            # the host holds the board's transmitter (without ``stall``)
        self.bytes_out = self.bytes_in = 0
        self.cond = threading.Condition()

    def write(self, data: bytes) -> None:
        if self.faults:
            data = self.faults.apply(data)
        with self.cond:
            self.to_board += data
            self.bytes_out += len(data)

    def read(self, n: int) -> bytes:
        with self.cond:
            self.deadline = self.cycles + self.timeout_cycles
            while not self.from_board and self.cycles < self.deadline and not self.done and not self.stopped:
                self.cond.wait(0.5)         # a poll: the simulation notifies at the deadline
            self.deadline = None
            if self.stopped and not self.from_board:
                raise LinkError(self.stopped)
            out = bytes(self.from_board[:n])
            del self.from_board[:n]
            return out

    def sleep(self, cycles: int) -> None:
        """Wait ``cycles`` of simulated time (a host pacing itself against the board, in tests)."""
        with self.cond:
            self.deadline = self.cycles + cycles
            while self.cycles < self.deadline and not self.done and not self.stopped:
                self.cond.wait(0.5)
            self.deadline = None
            if self.stopped:
                raise LinkError(self.stopped)

    def _arrived(self, byte: int) -> None:
        data = bytes([byte])
        if self.faults:
            data = self.faults.apply(data)
        with self.cond:
            self.from_board += data
            self.bytes_in += 1
            self.cond.notify_all()

    def _stop(self, why: str) -> None:
        with self.cond:
            self.stopped = why
            self.cond.notify_all()

    def _advance(self, cycles: int) -> None:
        self.cycles += cycles
        if self.deadline is not None and self.cycles >= self.deadline:
            with self.cond:
                self.cond.notify_all()


def run_with_host(top, host_fn, *, timeout_bytes: int = 200, faults: Faults | None = None,
                  stall: tuple[int, int] | None = None, max_cycles: int = 50_000_000, transport_out=None,
                  timeout_cycles: int | None = None, processes=()):
    """Simulate ``top`` while ``host_fn(SimTransport)`` runs; return ``host_fn``'s result.

    A top built with ``uart=False`` exchanges one byte a cycle on its ``rx_byte``/``tx_byte``
    streams instead of the UART pins; give it ``timeout_cycles`` (the host's reply timeout) longer
    than its longest computation. ``processes``: Amaranth processes (``async def p(ctx)``) that
    watch the design beside it (tests). ``max_cycles`` is the last bound (a host that is not a
    ``BoardLink``, or a board that keeps making progress forever)."""
    d = top.divisor
    byte_level = not getattr(top, "uart", True)
    transport = SimTransport(divisor=d, timeout_bytes=timeout_bytes, faults=faults, timeout_cycles=timeout_cycles)
    transport.byte_level = byte_level
    if transport_out is not None:
        transport_out.append(transport)
    outcome = {}

    def host():
        try:
            outcome["value"] = host_fn(transport)
        except BaseException as e:      # re-raised in the caller's thread
            outcome.setdefault("error", e)
        finally:
            with transport.cond:
                transport.done = True

    thread = threading.Thread(target=host, daemon=True)

    async def sender(ctx):
        ctx.set(top.rx, 1)
        await ctx.tick().repeat(4 * d)
        thread.start()
        while not transport.done and transport.cycles < max_cycles:
            hold(ctx)
            with transport.cond:
                byte = transport.to_board.pop(0) if transport.to_board else None
            if byte is None:
                await ctx.tick().repeat(d)
                transport._advance(d)
                continue
            for bit in [0, *((byte >> k) & 1 for k in range(8)), 1]:
                ctx.set(top.rx, bit)
                await ctx.tick().repeat(d)
            transport._advance(10 * d)
        ended()

    def ended():
        if not transport.done:
            why = f"sim: simulation stopped after {transport.cycles:,} cycles (max_cycles) with the host still running"
            outcome.setdefault("error", LinkError(why))
            transport._stop(why)
        outcome["done"] = True

    def hold(ctx):
        if not stall:
            ctx.set(top.tx_hold, transport.tx_hold)

    async def receiver(ctx):
        while not outcome.get("done"):
            *_, line = await ctx.tick().sample(top.tx)
            if line:
                continue
            await ctx.tick().repeat(d // 2)              # middle of the start bit
            byte = 0
            for k in range(8):
                *_, bit = await ctx.tick().sample(top.tx).repeat(d)
                byte |= bit << k
            *_, stop = await ctx.tick().sample(top.tx).repeat(d)    # middle of the stop bit
            transport._arrived(byte if stop else 0xFF)

    async def staller(ctx):
        hold, period = stall
        while not outcome.get("done"):
            ctx.set(top.tx_hold, 1)
            await ctx.tick().repeat(hold)
            ctx.set(top.tx_hold, 0)
            await ctx.tick().repeat(period - hold)

    async def byte_sender(ctx):
        await ctx.tick().repeat(4)
        thread.start()
        while not transport.done and transport.cycles < max_cycles:
            hold(ctx)
            with transport.cond:
                byte = transport.to_board.pop(0) if transport.to_board else None
            ctx.set(top.rx_byte.valid, byte is not None)
            ctx.set(top.rx_byte.payload, byte or 0)
            await ctx.tick()
            transport._advance(1)
        ctx.set(top.rx_byte.valid, 0)
        ended()

    async def byte_receiver(ctx):
        ctx.set(top.tx_byte.ready, 1)
        while not outcome.get("done"):
            *_, valid, byte = await ctx.tick().sample(top.tx_byte.valid, top.tx_byte.payload)
            if valid:
                transport._arrived(byte)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    for process in processes:
        sim.add_process(process)
    sim.add_testbench(byte_sender if byte_level else sender)
    sim.add_testbench(byte_receiver if byte_level else receiver)
    if stall:
        sim.add_testbench(staller)
    try:
        sim.run()
    finally:
        if not transport.done:          # the simulation failed: release a read that waits for cycles
            transport._stop(transport.stopped or "sim: the simulation ended with an error")
    thread.join(timeout=5.0)            # the host has been told to stop: it returns at once
    if "error" in outcome:
        raise outcome["error"]
    if thread.is_alive():
        raise LinkError("sim: the host function did not return after the simulation stopped")
    return outcome.get("value")
