"""The Amaranth simulator set-up the tests share: a 1 MHz clock (unless the design is combinational),
then the processes, the background testbenches and the testbenches, in that order."""

from __future__ import annotations

from amaranth.sim import Simulator

__all__ = ["run_sim"]


def run_sim(dut, *testbenches, processes=(), background=(), clock: bool = True,
            deadline: float | None = None) -> None:
    """Simulates ``dut`` until every testbench returns, or until ``deadline`` (seconds) if given."""
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-6)
    for process in processes:
        sim.add_process(process)
    for bench in background:
        sim.add_testbench(bench, background=True)
    for bench in testbenches:
        sim.add_testbench(bench)
    if deadline is None:
        sim.run()
    else:
        sim.run_until(deadline)
