"""Monitor of an output stream (the accelerator's ``out``, the network top's ``o``): takes result
beats, with back-pressure from a pause generator (``qhw.sim.pauses``: a paused cycle holds ``ready``
low)."""

from __future__ import annotations

from .pauses import Pauses
from .signals import int_reader

__all__ = ["OutputMonitor"]


class OutputMonitor:
    """Drives ``<stream>__ready`` and returns the raw payload of every beat that transfers."""

    def __init__(self, dut, *, pauses: Pauses = None, stream: str = "out"):
        self.valid = getattr(dut, f"{stream}__valid")
        self.payload = getattr(dut, f"{stream}__payload")
        self.ready = getattr(dut, f"{stream}__ready")
        self.read_valid = int_reader(self.valid)
        self.read_payload = int_reader(self.payload)
        self.pauses = pauses
        self.r = 0
        self.stalls = 0                 # cycles a valid beat waited for our ``ready`` (back-pressure)

    def set_ready(self, r: int) -> None:
        if r != self.r:
            self.ready.value = self.r = r

    def step(self) -> int | None:
        """Drive ``ready`` for the coming edge; the raw payload if a beat transfers, else None."""
        r = 0 if (self.pauses is not None and next(self.pauses)) else 1
        if r != self.r:
            self.ready.value = self.r = r
        if self.read_valid():
            if r:
                return self.read_payload()
            self.stalls += 1
        return None
