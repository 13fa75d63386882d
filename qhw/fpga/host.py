"""Host side of the board link: run GEMMs on a board top over a UART (pyserial) or any byte transport.

The transport is anything with ``write(bytes)`` and ``read(n) -> bytes`` (which returns fewer bytes
when its reply timeout passes) and a ``name``: ``SerialTransport`` for a real board,
``qhw.fpga.simlink.SimTransport`` for the simulated board top. Beats come from
``qhw.hw.driver.plan_gemm`` and results are decoded by ``GemmProgram.decode``, so the host never
re-implements the arithmetic.

Recovery (``docs/fpga.md``, "Host link"): frames are sent go-back-N within a window of the
board's receive FIFO; an error frame or a silent timeout resends every unacknowledged frame from
the sequence number the board expects; a lost or out-of-order result restarts the GEMM after a
reset frame. ``recovered`` counts these actions. ``retries`` failures in a row without progress
end in one ``LinkError`` line that names what was awaited and for how long, never a hang: progress is
an ack that retires frames or a result taken; a failure is a reply timeout, a go-back-N resend, or
``NOISE_FRAMES`` replies that change nothing (a board that answers forever without doing the work).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from ..engine.config import ENGINE_SIZES, EngineConfig
from ..errors import QhwError
from ..hw.config import ArrayConfig
from ..hw.driver import GemmProgram, plan_gemm, stream_beats, unpack_result
from .payload import fifo_depth, network_fifo_depth, packet_bytes, result_bytes
from .protocol import (
    ERROR_TEXT,
    ERRORS,
    FATAL_ERRORS,
    INFO_BYTES,
    OPCODES,
    OVERHEAD,
    PROTOCOL_VERSION,
    REPLIES,
    SYNC,
    crc16,
    encode,
    parse_info,
)

__all__ = ["BoardBackend", "BoardLink", "LinkError", "SerialTransport", "config_from_info", "program_packets"]

_CODE_NAMES = {v: k for k, v in ERRORS.items()}
MAX_WINDOW_FRAMES = 64          # < 128: the board tells old (duplicate) from new (lost) seq numbers
NOISE_FRAMES = 2 * MAX_WINDOW_FRAMES    # replies without progress that count as one failure: a resent
                                        # window draws at most an ack or an error a frame


class LinkError(QhwError):
    """The board did not answer as the protocol says (timeout, wrong hardware, unrecoverable link)."""


class _Restart(Exception):
    """A result was lost or duplicated out of order: redo the GEMM after a reset."""


class SerialTransport:
    """A UART through pyserial (the board's USB bridge, e.g. /dev/ttyUSB1 or /dev/ttyACM0)."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 0.5):
        import serial
        self.name = port
        try:
            self.serial = serial.Serial(port, baudrate=baud, timeout=timeout)
        except (serial.SerialException, ValueError) as e:
            raise LinkError(f"cannot open {port}: {e}") from None

    def write(self, data: bytes) -> None:
        self.serial.write(data)

    def read(self, n: int) -> bytes:
        return self.serial.read(n)

    def close(self) -> None:
        self.serial.close()


def program_packets(program: GemmProgram) -> list[tuple[str, bytes]]:
    """Every beat of one GEMM as (stream, payload bytes), in the order one sequential source must send
    them: the command, then per tile (N tiles outer, K tiles inner) the parameter beat (last K tile
    only), the tile's weight rows and its activation rows (``docs/hardware.md``, "Running a GEMM")."""
    c = program.config
    sizes = packet_bytes(c)
    beats = stream_beats(program)

    def pkt(name, value):
        return name, int(value).to_bytes(sizes[name], "little")

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


def config_from_info(info: dict) -> ArrayConfig | EngineConfig:
    """The ``ArrayConfig`` (GEMM board top) or ``EngineConfig`` (network board top) a board's info
    frame describes."""
    from ..errors import ConfigError
    p = dict(info["parameters"], rounding=tuple(info["parameters"]["rounding"]))
    try:
        array = ArrayConfig(**p)
        if info.get("top") == "network":
            return EngineConfig(array=array, **dict(info["engine"], units=tuple(info["engine"]["units"])))
        return array
    except ConfigError as e:
        raise LinkError(f"the board's info frame describes no valid {info.get('top', 'accel')} top ({e}); "
                        f"wrong bitstream?") from None


def _board_fields(config: ArrayConfig | EngineConfig) -> dict:
    """What a board must match: the array's manifest parameters, and an engine's memory sizes, weight
    RAM, pool-average rule and units (spelt as ``qhw generate --units``)."""
    if isinstance(config, EngineConfig):
        return {**config.array.to_manifest()["parameters"], **{k: getattr(config, k) for k in ENGINE_SIZES},
                "weight_ram": config.weight_ram, "pool_avg": config.pool_avg,
                "units": ",".join(config.units) or "none"}
    return config.to_manifest()["parameters"]


class BoardLink:
    """A session with a board top: ``reset`` and ``info`` on opening, then GEMMs (the GEMM board top)
    or, through ``qhw.fpga.engine_host.EngineSession``, model loads and inferences (the network one).

    ``config`` (a manifest's ``ArrayConfig``, or ``EngineConfig`` for a network top) is checked
    against the board's info frame (``top``); ``None`` takes the board's own.
    """

    def __init__(self, transport, config: ArrayConfig | EngineConfig | None = None, *, retries: int = 8):
        self.transport, self.retries = transport, retries
        self.name = getattr(transport, "name", "the link")
        self.recovered = 0
        self._seq = 0
        self._unacked: deque[tuple[int, bytes]] = deque()
        self._results: list[int] = []
        self._result_seq = 0
        self._buf = bytearray()
        self._reset_done = None
        self._info = None
        self._rewound_to = None
        self._failures = self._noise = 0
        self._since = self._now()
        self.reset()
        self.info = self._ask_info()
        if self.info["protocol"] != PROTOCOL_VERSION:
            raise LinkError(f"{self.name}: board speaks link protocol {self.info['protocol']}, this qhw "
                            f"{PROTOCOL_VERSION} (rebuild the bitstream with this qhw)")
        self.top = self.info["top"]
        board = config_from_info(self.info)
        want = self.top if config is None else "network" if isinstance(config, EngineConfig) else "accel"
        if want != self.top:
            raise LinkError(f"{self.name}: board runs the {self.top} board top, the manifest describes the {want} "
                            f"top (bitstream built from another manifest?)")
        mine, theirs = _board_fields(config or board), _board_fields(board)
        if mine != theirs:
            diff = next(k for k in mine if mine[k] != theirs[k])
            raise LinkError(f"{self.name}: board was built for {diff}={theirs[diff]!r}, the manifest says "
                            f"{mine[diff]!r} (bitstream built from another manifest?)")
        self.config = config or board
        if self.top == "network":
            out_bytes = result_bytes(board)
            self.window = min(self.info["fifo_depth"], network_fifo_depth(self.info["frame_bytes"]))
        else:
            self.sizes = packet_bytes(board)
            out_bytes = self.sizes["out"]
            self.window = min(self.info["fifo_depth"], fifo_depth(board))
        self._lengths = {REPLIES["ack"]: 0, REPLIES["reset_done"]: 0, REPLIES["error"]: 2,
                         REPLIES["info"]: INFO_BYTES, REPLIES["result"]: out_bytes}

    # ------------------------------------------------------------------ frames in
    def _bytes(self, n: int) -> bool:
        while len(self._buf) < n:
            got = self.transport.read(n - len(self._buf))
            if not got:
                return False
            self._buf += got
        return True

    def _frame(self):
        """The next good frame (op, seq, payload), or None after a reply timeout."""
        lengths = getattr(self, "_lengths", {REPLIES["ack"]: 0, REPLIES["reset_done"]: 0, REPLIES["error"]: 2,
                                             REPLIES["info"]: INFO_BYTES})
        while True:
            if not self._bytes(2):
                return None
            if self._buf[0] != SYNC[0] or self._buf[1] != SYNC[1]:
                del self._buf[0]
                continue
            if not self._bytes(6):
                return None
            op, seq, n = self._buf[2], self._buf[3], self._buf[4] | self._buf[5] << 8
            # not a frame: hunt on from the next byte (an info frame of any length: another protocol's)
            if lengths.get(op) != n and not (op == REPLIES["info"] and 4 <= n <= 256):
                self.recovered += 1
                del self._buf[0]
                continue
            if not self._bytes(OVERHEAD + n):
                return None
            if crc16(bytes(self._buf[2:OVERHEAD + n])) != 0:
                self.recovered += 1
                del self._buf[0]
                continue
            payload = bytes(self._buf[6:6 + n])
            del self._buf[:OVERHEAD + n]
            return op, seq, payload

    def _handle(self, frame) -> bool:
        """Act on a reply; True if it was progress (an ack that retired frames, a result taken)."""
        op, seq, payload = frame
        if op == REPLIES["ack"]:
            return self._acked(seq)
        if op == REPLIES["result"]:
            d = (seq - self._result_seq) & 0xFF
            if d == 0:
                self._results.append(int.from_bytes(payload, "little"))
                self._result_seq += 1
                return True
            elif d >= 128:
                self.recovered += 1           # a duplicate of a result already taken
            else:
                raise _Restart(f"result seq {seq} arrived, {self._result_seq & 0xFF} expected")
        elif op == REPLIES["error"]:
            name = _CODE_NAMES.get(payload[0], f"code {payload[0]}")
            if name in FATAL_ERRORS:
                raise LinkError(f"{self.name}: board reports {name}: {ERROR_TEXT[name]}")
            self.recovered += 1
            progress = self._acked(seq)
            if self._unacked and self._rewound_to != seq:
                if progress:
                    self._progress()
                self._failed(f"error frame {name}, frames resent")
                self._resend()
                return False
            return progress
        elif op == REPLIES["info"]:
            self._info = payload
        elif op == REPLIES["reset_done"]:
            self._reset_done = seq
        return False

    def _acked(self, expected: int) -> bool:
        progress = False
        while self._unacked and 1 <= ((expected - self._unacked[0][0]) & 0xFF) <= MAX_WINDOW_FRAMES:
            self._unacked.popleft()
            progress = True
        if progress:
            self._rewound_to = None
        return progress

    # ------------------------------------------------------------------ the bound on a stuck board
    def _now(self) -> float:
        """The link's clock: simulated cycles behind ``SimTransport`` (its ``cycles``), else seconds."""
        cycles = getattr(self.transport, "cycles", None)
        return float(cycles) if cycles is not None else time.monotonic()

    def _elapsed(self, since: float | None = None) -> str:
        t = self._now() - (self._since if since is None else since)
        return f"{int(t):,} simulated cycles" if hasattr(self.transport, "cycles") else f"{t:.1f} s"

    def _progress(self) -> None:
        self._failures = self._noise = 0
        self._since = self._now()

    def _failed(self, what: str) -> None:
        """One failure without progress (``what`` happened); past ``retries`` of them, one line."""
        self._failures += 1
        if self._failures > self.retries:
            if self._unacked:
                awaited = (f"the ack of frame seq {self._unacked[0][0]} "
                           f"({len(self._unacked)} frame{'s' * (len(self._unacked) != 1)} unacknowledged)")
            else:
                awaited = f"result {len(self._results)} (seq {self._result_seq & 0xFF}; every frame acknowledged)"
            hint = (f"{self._noise} replies changed nothing" if self._noise else
                    "no reply at all: is the qhw board top flashed, and at this baud rate?")
            raise LinkError(f"{self.name}: no progress in {self._elapsed()}, {self._failures} failures in a row "
                            f"(last: {what}) while waiting for {awaited} ({hint})")

    def _resend(self) -> None:
        """Go back N: every unacknowledged frame again, oldest first."""
        self._rewound_to = self._unacked[0][0]
        self.transport.write(b"".join(f for _, f in self._unacked))

    def _pump(self) -> None:
        """Handle one reply; on a timeout resend what is unacknowledged (or restart the GEMM). Bounded:
        ``retries`` failures in a row without progress raise ``LinkError`` (``_failed``)."""
        frame = self._frame()
        if frame is not None:
            if self._handle(frame):
                self._progress()
            else:
                self._noise += 1
                if self._noise % NOISE_FRAMES == 0:
                    self._failed(f"{NOISE_FRAMES} replies in a row that changed nothing")
            return
        self._failed("reply timeout")
        self.recovered += 1
        if self._unacked:
            self._rewound_to = None
            self._resend()
        else:
            raise _Restart(f"no result {len(self._results)} in a reply timeout, every frame acknowledged")

    # ------------------------------------------------------------------ control
    def reset(self) -> None:
        """Return the board's payload to idle and restart the sequence numbers."""
        seq = self._seq
        frame = encode(OPCODES["reset"], seq)
        for _ in range(self.retries + 1):
            self._reset_done = None
            self.transport.write(frame)
            for _ in range(NOISE_FRAMES):       # replies in flight before the reset's, at most a window's
                f = self._frame()
                if f is None:
                    break
                op, rseq, _ = f
                if op == REPLIES["reset_done"] and rseq == (seq + 1) & 0xFF:
                    self._seq = seq + 1
                    self._unacked.clear()
                    self._results, self._result_seq = [], 0
                    self._rewound_to = None
                    self._progress()
                    return
                if op == REPLIES["error"] and _CODE_NAMES.get(f[2][0]) in FATAL_ERRORS:
                    continue
        raise LinkError(f"{self.name}: no answer from the board after {self.retries + 1} reset frames "
                        f"(is the qhw board top flashed, and at this baud rate?)")

    def _ask_info(self) -> dict:
        for _ in range(self.retries + 1):
            self._info = None
            self.transport.write(encode(OPCODES["info"], self._seq))
            for _ in range(NOISE_FRAMES):
                f = self._frame()
                if f is None:
                    break
                if f[0] == REPLIES["info"]:
                    self._info = f[2]
                    break
            if self._info is not None:
                try:
                    return parse_info(self._info)
                except ValueError as e:
                    raise LinkError(f"{self.name}: the board's info frame is not qhw's ({e}); "
                                    f"wrong bitstream?") from None
        raise LinkError(f"{self.name}: the board does not answer info requests")

    # ------------------------------------------------------------------ GEMMs
    def _send(self, name: str, payload: bytes) -> None:
        frame = encode(OPCODES[name], self._seq, payload)
        while self._unacked and (sum(len(f) for _, f in self._unacked) + len(frame) > self.window
                                 or len(self._unacked) >= MAX_WINDOW_FRAMES):
            self._pump()
        self._unacked.append((self._seq & 0xFF, frame))
        self._seq = (self._seq + 1) & 0xFF
        self.transport.write(frame)

    def run(self, program: GemmProgram) -> np.ndarray:
        """Send one GEMM program and return its M x N result (``program.decode``)."""
        if program.config != self.config:
            raise LinkError("the program was planned for another ArrayConfig than the board's")
        packets = program_packets(program)
        start = self._now()
        for _ in range(self.retries + 1):
            self._results = []
            try:
                for name, payload in packets:
                    self._send(name, payload)
                while len(self._results) < program.out_beats or self._unacked:
                    self._pump()
            except _Restart as e:
                self.recovered += 1
                self.reset()
                last = e
                continue
            return program.decode([unpack_result(self.config, r) for r in self._results])
        raise LinkError(f"{self.name}: a GEMM failed {self.retries + 1} times in a row in {self._elapsed(start)} "
                        f"(last: {last}) (link too noisy?)")

    def gemm(self, x_q, w, bias_hw, requant) -> np.ndarray:
        """``requant.apply(x_q @ w + bias_hw)`` on the board (see ``qhw.hw.driver.plan_gemm``)."""
        return self.run(plan_gemm(self.config, x_q, w, bias_hw, requant))


class BoardBackend:
    """The board as ``qhw.runtime.GemmBackend``: each GEMM call over ``link``."""

    def __init__(self, link: BoardLink):
        self.link = link
        self.gemms = 0

    def run(self, calls) -> list[np.ndarray]:
        out = []
        for c in calls:
            out.append(self.link.gemm(c.x, c.w, c.bias, c.requant))
            self.gemms += 1
        return out
