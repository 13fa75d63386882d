"""The simulated hardware as a ``qhw.runtime`` GEMM backend (used inside a cocotb test)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime import GemmCall, GoldenBackend
from .bench import AccelBench
from .checker import Mismatch
from .model import jobs_for

__all__ = ["LayerCheck", "SimBackend"]


@dataclass
class LayerCheck:
    """Per layer: GEMMs run, output elements compared and wrong, cycles, and the first mismatch."""

    layer: str
    gemms: int = 0
    elements: int = 0
    mismatches: int = 0
    cycles: int = 0
    macs: int = 0
    cycle_checks: int = 0           # GEMMs whose cycle count the analytical model predicts exactly
    cycle_errors: list = field(default_factory=list)
    first: Mismatch | None = None
    ideal: int | None = 0           # the analytical model's cycles summed, None once a GEMM is not exact

    def to_json(self) -> dict:
        return {"layer": self.layer, "gemms": self.gemms, "elements": self.elements,
                "mismatches": self.mismatches, "cycles": self.cycles, "macs": self.macs,
                "cycle_checks": self.cycle_checks, "cycle_errors": self.cycle_errors[:5],
                "ideal_cycles": self.ideal,
                "first_mismatch": None if self.first is None else str(self.first)}


class SimBackend:
    """Runs GEMM calls on the simulated accelerator, each checked against the golden model.

    Returns the hardware's outputs, so the host continues with what the hardware computed.
    ``check_cycles``: compare every GEMM's cycle count with the manifest's analytical model where
    that model is exact (only meaningful without random stalls).
    """

    def __init__(self, bench: AccelBench, *, check_cycles: bool = True):
        self.bench = bench
        self.golden = GoldenBackend()
        self.check_cycles = check_cycles
        self.layers: dict[str, LayerCheck] = {}
        self.first: Mismatch | None = None
        self.on_layer = None            # progress callback (layer name, position)
        self.position = 0

    async def run(self, calls: list[GemmCall]):
        hw = self.bench.hw
        if self.on_layer is not None and calls:
            self.on_layer(calls[0].layer, self.position)
        records, checker = await self.bench.run(jobs_for(hw, calls, self.golden))
        for rec in records:
            lc = self.layers.setdefault(rec.layer, LayerCheck(rec.layer))
            lc.gemms += 1
            lc.elements += rec.output.size
            lc.mismatches += rec.mismatches
            lc.cycles += rec.cycles
            lc.macs += rec.macs
            ideal = hw.ideal_cycles(rec.m, rec.k, rec.n)
            lc.ideal = None if ideal is None or lc.ideal is None else lc.ideal + ideal
            if self.check_cycles and ideal is not None:
                lc.cycle_checks += 1
                if rec.cycles != ideal:
                    lc.cycle_errors.append({"m": rec.m, "k": rec.k, "n": rec.n, "cycles": rec.cycles,
                                            "ideal": ideal})
        if checker.first is not None:
            lc = self.layers[checker.first.layer]
            lc.first = lc.first or checker.first
            self.first = self.first or checker.first
        return [r.output for r in records]
