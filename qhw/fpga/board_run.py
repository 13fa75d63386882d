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

__all__ = ["SIM_DIVISOR", "board_config_from_manifest", "board_info", "board_run", "link_seconds", "open_board"]

SIM_DIVISOR = 4         # cycles per UART bit in simulation: the fastest the UART allows
SIM_REPLY_CYCLES = 2_000    # byte-level simulated link: the host's reply timeout beyond an inference's cycles


def board_config_from_manifest(path):
    """The ``ArrayConfig`` (GEMM board top) or ``EngineConfig`` (a ``qhw generate --top network``
    manifest: the network board top) and the top name a manifest describes."""
    from ..engine.config import EngineConfig, manifest_top
    from ..hw.config import read_manifest
    config, doc = read_manifest(path)
    if manifest_top(doc) == "network":
        return EngineConfig.from_manifest(doc, source=str(path), array=config), doc["name"]
    return config, doc["name"]


def open_board(port: str, *, baud: int, rtl=None, faults: float = 0.0, seed: int = 0,
               reply_cycles: int = SIM_REPLY_CYCLES):
    """``(config, runner)``; for ``sim`` a network manifest is simulated with its bytes one a cycle
    (``uart=False``: the engine is slow in Amaranth's simulator), its time taken from the link bytes,
    the host's reply timeout ``reply_cycles`` (longer than an inference)."""
    if not isinstance(baud, int) or baud <= 0:
        raise ConfigError(f"--baud must be a positive integer, not {baud!r}")
    if port == "sim":
        if rtl is None:
            raise ConfigError("--port sim needs --rtl DIR/NAME.json (the board top to simulate)")
        from ..engine.config import EngineConfig
        from .simlink import Faults, run_with_host
        fault_model = Faults(faults, seed) if faults else None
        config, _ = board_config_from_manifest(rtl)
        if isinstance(config, EngineConfig):
            from .network_top import NetworkBoardTop
            top = NetworkBoardTop(engine=config, divisor=SIM_DIVISOR, uart=False)
            extra = {"timeout_cycles": reply_cycles}
        else:
            from .board_top import BoardTop
            top = BoardTop(config=config, divisor=SIM_DIVISOR)
            extra = {}

        def runner(fn):
            box = []
            value = run_with_host(top, fn, faults=fault_model, transport_out=box, **extra)
            t = box[0]
            bits = 10 * (t.bytes_out + t.bytes_in) if extra else t.cycles / SIM_DIVISOR
            return value, bits / baud
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
        config, _ = board_config_from_manifest(rtl)
    return config, runner


def link_seconds(transport, baud: int) -> float:
    """The link's time so far: simulated (UART cycles, or bytes at ``baud`` on a byte-level
    simulated link), or the wall clock on a real port."""
    from .simlink import SimTransport
    if isinstance(transport, SimTransport):
        if transport.byte_level:
            return 10 * (transport.bytes_out + transport.bytes_in) / baud
        return transport.cycles / (transport.divisor * baud)
    return time.perf_counter()


def board_info(port: str, *, baud: int, rtl=None) -> dict:
    config, runner = open_board(port, baud=baud, rtl=rtl)
    info, _ = runner(lambda t: BoardLink(t, config).info)
    return info


def board_run(qmodel, data, port: str, *, baud: int, rtl=None, limit: int | None = None, faults: float = 0.0,
              seed: int = 0) -> dict:
    from ..engine.config import EngineConfig
    from ..engine.cycles import predict
    from ..executor import run_batched
    from ..metrics import accuracy
    from ..runtime import Runtime, check_model, load_array_run

    qm, x, labels = load_array_run(qmodel, data, limit=limit)
    reply = SIM_REPLY_CYCLES
    manifest = board_config_from_manifest(rtl)[0] if rtl is not None else None
    if isinstance(manifest, EngineConfig):          # refuse a model that does not fit before the link
        reply += 2 * predict(_compile(qm, manifest, str(qmodel)), manifest).total
    elif manifest is not None:
        check_model(qm.graph, manifest, str(rtl))
    config, runner = open_board(port, baud=baud, rtl=rtl, faults=faults, seed=seed, reply_cycles=reply)
    extra = {}

    def session(transport):
        link = BoardLink(transport, config)
        if link.top == "network":
            return network_session(link, transport)
        check_model(qm.graph, link.config, f"board on {port}")   # refuse a model the bitstream cannot run
        backend = BoardBackend(link)
        y = Runtime(qm.graph, link.config).run(x, backend)[0]
        return link.recovered, backend.gemms, y

    def network_session(link, transport):
        from .engine_host import EngineSession, infer
        program = _compile(qm, link.config, f"{qmodel} on the board at {port}")     # the board's engine
        s = EngineSession(link, program)
        t0, b0 = link_seconds(transport, baud), _bytes(transport)
        s.load()
        t1, b1 = link_seconds(transport, baud), _bytes(transport)
        y = infer(s, qm.graph, x)
        t2, b2 = link_seconds(transport, baud), _bytes(transport)
        extra.update({"top": "network", "load_bytes": b1 - b0, "load_s": t1 - t0, "inference_s": t2 - t1,
                      "host_bytes_per_inference": (b2 - b1) / max(1, x.shape[0]), "model_loads": s.loads})
        return link.recovered, 0, y

    (recovered, gemms, y_hw), seconds = runner(session)
    if "inference_s" in extra:
        seconds = extra.pop("inference_s")            # the model load is once per session, not per inference
    y_q = run_batched(qm.graph, x, integer=True)
    mismatches = int(np.count_nonzero(y_hw != y_q))
    n = int(x.shape[0])
    sim_basis = "link bytes at --baud (byte-level simulated link)" if extra else "simulated link at --baud"
    report = {"model": qm.source or str(qmodel), "port": port, "baud": baud, "samples": n,
              "bit_exact": mismatches == 0, "mismatches": mismatches,
              "accuracy_hw": accuracy(y_hw, labels) if labels is not None else None,
              "inferences_per_s": n / seconds if seconds > 0 else None,
              "link_errors_recovered": recovered, "gemms": gemms,
              "time_basis": sim_basis if port == "sim" else "wall clock", **extra}
    return report


def _bytes(transport) -> int:
    """Bytes both ways so far (0 where the transport does not count them)."""
    return getattr(transport, "bytes_out", 0) + getattr(transport, "bytes_in", 0)


def _compile(qm, engine, source: str):
    """The engine program of ``qm`` for ``engine``; one ``ConfigError`` line if it does not fit."""
    from ..engine.compiler import check_hardware, compile_model
    compiled = compile_model(qm, engine, source=source)
    check_hardware(compiled, source=source)
    return compiled.program


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
