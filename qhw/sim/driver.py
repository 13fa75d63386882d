"""Driver of one valid/ready input stream of the accelerator (``cmd``, ``params``, ``weights``,
``act``): one whole beat per cycle, idle cycles from a pause generator (``qhw.sim.pauses``).

``valid`` never waits for ``ready`` and, once high, stays high with the same payload until the
handshake. The beats are packed integers (``StreamCodec.pack``), so a step does no per-element
work; the bench calls ``step`` once per clock at the falling edge.
"""

from __future__ import annotations

from .pauses import Pauses
from .signals import int_reader

__all__ = ["StreamDriver"]


class StreamDriver:
    """Presents queued beats on ``<stream>__valid/__payload``; ``ready`` is the DUT's."""

    def __init__(self, dut, stream: str, *, pauses: Pauses = None):
        self.name = stream
        self.valid = getattr(dut, f"{stream}__valid")
        self.payload = getattr(dut, f"{stream}__payload")
        self.ready = getattr(dut, f"{stream}__ready")
        self.read_ready = int_reader(self.ready)
        self.pauses = pauses
        self.beats: list[int] = []
        self.pos = 0
        self.presenting = False
        self.v = 0
        self.handshakes: list[int] | None = None   # cycle of every handshake when recorded
        self.stalls = 0                             # cycles a presented beat waited for ``ready``

    def extend(self, beats) -> None:
        """Queue raw payloads behind the ones not sent yet."""
        self.beats.extend(beats)

    def idle(self) -> None:
        self.valid.value = self.v = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.beats)

    def step(self, t: int) -> None:
        """Drive for the coming edge and note whether it transfers (``ready`` already valid)."""
        if self.pos >= len(self.beats):
            if self.v:
                self.valid.value = self.v = 0
            return
        if not self.presenting:
            if self.pauses is not None and next(self.pauses):
                if self.v:
                    self.valid.value = self.v = 0
                return
            self.payload.value = self.beats[self.pos]
            self.presenting = True
            if not self.v:
                self.valid.value = self.v = 1
        if self.read_ready():
            self.pos += 1
            self.presenting = False
            if self.handshakes is not None:
                self.handshakes.append(t)
        else:
            self.stalls += 1
