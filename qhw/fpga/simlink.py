"""The board top in Amaranth's simulator behind a bit-level UART model, for the host driver.

``run_with_host(top, host_fn)`` simulates ``top`` (a ``BoardTop`` elaborated without a
platform) and runs ``host_fn(transport)`` in a thread; ``transport`` is a ``SimTransport`` whose
bytes are serialized onto ``top.rx`` (start bit, 8 data bits LSB first, stop bit, ``divisor``
cycles each) and deserialized from ``top.tx`` by sampling in the middle of each bit, exactly as
a USB-UART bridge would. The simulation ends when ``host_fn`` returns.
"""

from __future__ import annotations

import queue
import threading
import time

from amaranth.sim import Simulator

from .host import LinkError

__all__ = ["SimTransport", "run_with_host"]


class SimTransport:
    """Byte queues between the host thread and the simulated UART pins."""

    def __init__(self, timeout: float = 30.0):
        self.to_board = queue.Queue()
        self.from_board = queue.Queue()
        self.timeout = timeout

    def write(self, data: bytes) -> None:
        for b in data:
            self.to_board.put(b)

    def read(self, n: int) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + self.timeout
        while len(out) < n:
            try:
                out.append(self.from_board.get(timeout=max(deadline - time.monotonic(), 0.001)))
            except queue.Empty:
                break
        return bytes(out)


def run_with_host(top, host_fn, *, timeout: float = 30.0, max_cycles: int = 5_000_000):
    """Simulate ``top`` while ``host_fn(SimTransport)`` runs; return ``host_fn``'s result."""
    transport = SimTransport(timeout=timeout)
    d = top.divisor
    outcome = {}

    def host():
        try:
            outcome["value"] = host_fn(transport)
        except BaseException as e:      # re-raised in the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=host, daemon=True)

    async def sender(ctx):
        ctx.set(top.rx, 1)
        await ctx.tick().repeat(4 * d)
        thread.start()
        cycles = 0
        while thread.is_alive() and cycles < max_cycles:
            try:
                byte = transport.to_board.get_nowait()
            except queue.Empty:
                await ctx.tick().repeat(d)
                cycles += d
                continue
            for bit in [0, *((byte >> k) & 1 for k in range(8)), 1]:
                ctx.set(top.rx, bit)
                await ctx.tick().repeat(d)
            cycles += 10 * d
        if thread.is_alive():
            outcome.setdefault("error", LinkError(f"simulation stopped after {max_cycles} cycles"))
        outcome["done"] = True

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
            if stop != 1:
                transport.from_board.put(0x100)          # framing error: not a byte value
                continue
            transport.from_board.put(byte)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(sender)
    sim.add_testbench(receiver)
    sim.run()
    thread.join(timeout=1.0)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
