"""Host side of the board link: run GEMMs on a board top over a UART (pyserial) or any byte transport.

The transport is anything with ``write(bytes)`` and ``read(n) -> bytes`` (which may return fewer
bytes on timeout): ``SerialTransport`` for a real board, ``qhw.fpga.simlink.SimTransport`` for the
bit-level simulation. Beats come from ``qhw.hw.driver.plan_gemm`` and results are decoded by
``GemmProgram.decode``, so the host never re-implements the arithmetic.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..errors import QhwError
from ..hw.config import ArrayConfig
from ..hw.driver import GemmProgram, plan_gemm, stream_beats, unpack_result
from .protocol import INFO_BYTES, OPCODES, RESP, fifo_depth, info_bytes, packet_bytes

__all__ = ["BoardLink", "LinkError", "SerialTransport", "program_packets"]


class LinkError(QhwError):
    """The board did not answer as the protocol says (timeout, unknown frame, wrong hardware)."""


class SerialTransport:
    """A UART through pyserial (the board's USB bridge, e.g. /dev/ttyUSB1 or /dev/ttyACM0)."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 2.0):
        import serial
        try:
            self.serial = serial.Serial(port, baudrate=baud, timeout=timeout)
        except serial.SerialException as e:
            raise LinkError(f"cannot open {port}: {e}") from None

    def write(self, data: bytes) -> None:
        self.serial.write(data)

    def read(self, n: int) -> bytes:
        return self.serial.read(n)

    def close(self) -> None:
        self.serial.close()


def program_packets(program: GemmProgram) -> list[bytes]:
    """Every packet of one GEMM in the order one sequential source must send them: the command,
    then per tile (N tiles outer, K tiles inner) the parameter beat (last K tile only), the
    tile's weight rows and its activation rows (``docs/hardware.md``, "Running a GEMM")."""
    c = program.config
    sizes = packet_bytes(c)
    beats = stream_beats(program)

    def pkt(name, value):
        return bytes([OPCODES[name]]) + int(value).to_bytes(sizes[name], "little")

    packets = [pkt("cmd", beats["cmd"][0])]
    kt, nt = c.gemm_tiles(program.k, program.n)
    w_iter, a_iter, p_iter = iter(beats["weights"]), iter(beats["act"]), iter(beats["params"])
    for _ in range(nt):
        for ki in range(kt):
            if ki == kt - 1:
                packets.append(pkt("params", next(p_iter)))
            for _ in range(min(c.rows, program.k - ki * c.rows)):
                packets.append(pkt("weights", next(w_iter)))
            for _ in range(program.m):
                packets.append(pkt("act", next(a_iter)))
    return packets


class BoardLink:
    """Run GEMMs on a board top built for ``config`` (the manifest's ``ArrayConfig``)."""

    def __init__(self, transport, config: ArrayConfig):
        self.transport, self.config = transport, config
        self.sizes = packet_bytes(config)
        self.window = fifo_depth(config)
        self._in_flight = deque()        # byte counts of packets not yet acknowledged
        self._results = []
        self._info = None

    # ------------------------------------------------------------------ frames
    def _read(self, n: int) -> bytes:
        data = self.transport.read(n)
        if len(data) != n:
            raise LinkError(f"board did not answer (timeout after {len(data)} of {n} bytes)")
        return data

    def _frame(self) -> None:
        tag = self._read(1)[0]
        if tag == RESP["credit"]:
            if not self._in_flight:
                raise LinkError("board acknowledged a packet that was not sent")
            self._in_flight.popleft()
        elif tag == RESP["result"]:
            raw = int.from_bytes(self._read(self.sizes["out"]), "little")
            self._results.append(unpack_result(self.config, raw))
        elif tag == RESP["info"]:
            self._info = self._read(INFO_BYTES)
        elif tag == RESP["error"]:
            raise LinkError(f"board rejected opcode 0x{self._read(1)[0]:02x}")
        else:
            raise LinkError(f"unknown frame 0x{tag:02x} from the board (baud rate or bitstream mismatch?)")

    def _send(self, packet: bytes) -> None:
        while self._in_flight and sum(self._in_flight) + len(packet) > self.window:
            self._frame()
        self._in_flight.append(len(packet))
        self.transport.write(packet)

    # ------------------------------------------------------------------ API
    def check(self) -> bytes:
        """Ask for the info frame and check the board was built for this ``config``."""
        self._info = None
        self.transport.write(bytes([OPCODES["info"]]))
        while self._info is None:
            self._frame()
        expected = info_bytes(self.config)
        if self._info != expected:
            raise LinkError(f"board reports {self._info.hex()}, expected {expected.hex()} "
                            f"(bitstream built from another manifest?)")
        return self._info

    def run(self, program: GemmProgram) -> np.ndarray:
        """Send one GEMM program and return its M x N result (``program.decode``)."""
        if program.config != self.config:
            raise LinkError("the program was planned for another ArrayConfig than the board's")
        self._results = []
        for packet in program_packets(program):
            self._send(packet)
        while len(self._results) < program.out_beats or self._in_flight:
            self._frame()
        return program.decode(self._results)

    def gemm(self, x_q, w, bias_hw, requant) -> np.ndarray:
        """``requant.apply(x_q @ w + bias_hw)`` on the board (see ``qhw.hw.driver.plan_gemm``)."""
        return self.run(plan_gemm(self.config, x_q, w, bias_hw, requant))
