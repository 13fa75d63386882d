"""``qhw board run`` / ``qhw board info``: a quantized model through the runtime with a board top (real,
over a serial port, or simulated, ``--port sim``) as the GEMM backend.

``open_board`` returns ``(transport, runner)``: ``runner(fn)`` calls ``fn(transport)`` (for ``sim``
inside the simulation of the board top built from ``--rtl``) and returns its result with the link
time in seconds (simulated time at ``--baud`` for ``sim``: one UART bit is ``divisor`` cycles).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError
from .host import BoardBackend, BoardLink

__all__ = ["SIM_DIVISOR", "board_info", "board_run", "open_board"]

SIM_DIVISOR = 4         # cycles per UART bit in simulation: the fastest the UART allows


def open_board(port: str, *, baud: int, rtl=None, faults: float = 0.0, seed: int = 0):
    if not isinstance(baud, int) or baud <= 0:
        raise ConfigError(f"--baud must be a positive integer, not {baud!r}")
    if port == "sim":
        if rtl is None:
            raise ConfigError("--port sim needs --rtl DIR/NAME.json (the board top to simulate)")
        from .board_top import BoardTop
        from .flow import config_from_manifest
        from .simlink import Faults, run_with_host
        fault_model = Faults(faults, seed) if faults else None
        config, _ = config_from_manifest(rtl)
        top = BoardTop(config=config, divisor=SIM_DIVISOR)

        def runner(fn):
            box = []
            value = run_with_host(top, fn, faults=fault_model, transport_out=box)
            return value, box[0].cycles / (SIM_DIVISOR * baud)
        return config, runner
    if faults:
        raise ConfigError("--faults injects faults into the simulated link only (--port sim)")
    from .host import SerialTransport

    def runner(fn):
        transport = SerialTransport(port, baud)
        try:
            t0 = time.perf_counter()
            value = fn(transport)
            return value, time.perf_counter() - t0
        finally:
            transport.close()
    config = None
    if rtl is not None:
        from .flow import config_from_manifest
        config, _ = config_from_manifest(rtl)
    return config, runner


def board_info(port: str, *, baud: int, rtl=None) -> dict:
    config, runner = open_board(port, baud=baud, rtl=rtl)
    info, _ = runner(lambda t: BoardLink(t, config).info)
    return info


def board_run(qmodel, data, port: str, *, baud: int, rtl=None, limit: int | None = None, faults: float = 0.0,
              seed: int = 0) -> dict:
    from ..executor import run_batched
    from ..metrics import accuracy
    from ..runtime import Runtime, check_model, load_array_run

    qm, x, labels = load_array_run(qmodel, data, limit=limit)
    config, runner = open_board(port, baud=baud, rtl=rtl, faults=faults, seed=seed)
    if config is not None:
        check_model(qm.graph, config, str(rtl))

    def session(transport):
        link = BoardLink(transport, config)
        check_model(qm.graph, link.config, f"board on {port}")   # refuse a model the bitstream cannot run
        backend = BoardBackend(link)
        y = Runtime(qm.graph, link.config).run(x, backend)[0]
        return link.recovered, backend.gemms, y

    (recovered, gemms, y_hw), seconds = runner(session)
    y_q = run_batched(qm.graph, x, integer=True)
    mismatches = int(np.count_nonzero(y_hw != y_q))
    n = int(x.shape[0])
    report = {"model": qm.source or str(qmodel), "port": port, "baud": baud, "samples": n,
              "bit_exact": mismatches == 0, "mismatches": mismatches,
              "accuracy_hw": accuracy(y_hw, labels) if labels is not None else None,
              "inferences_per_s": n / seconds if seconds > 0 else None,
              "link_errors_recovered": recovered, "gemms": gemms,
              "time_basis": "simulated link at --baud" if port == "sim" else "wall clock"}
    return report


def link_traffic(graph, config, x) -> dict:
    """Bytes each way and ideal accelerator cycles for running ``x`` through ``graph`` on a board top
    built for ``config`` (no faults; one ack per frame, the most the board sends)."""
    from ..hw.driver import plan_gemm
    from ..runtime import GoldenBackend, Runtime
    from .host import program_packets
    from .payload import packet_bytes
    from .protocol import OVERHEAD

    sizes = packet_bytes(config)
    golden = GoldenBackend()
    totals = {"to_board": 0, "from_board": 0, "frames": 0, "gemms": 0, "cycles": 0}

    class Counting:
        def run(self, calls):
            for c in calls:
                program = plan_gemm(config, c.x, c.w, c.bias, c.requant)
                packets = program_packets(program)
                totals["to_board"] += sum(OVERHEAD + len(p) for _, p in packets)
                totals["from_board"] += OVERHEAD * len(packets) + program.out_beats * (OVERHEAD + sizes["out"])
                totals["frames"] += len(packets)
                totals["gemms"] += 1
                totals["cycles"] += config.ideal_cycles(*c.shape)
            return golden.run(calls)

    Runtime(graph, config).run(x, Counting())
    return totals
