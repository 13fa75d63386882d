"""FPGA targets: board platforms, synthesis tops, YoWASP place-and-route flow, host link, sweeps.

``qhw synth`` and ``qhw sweep`` (``qhw.fpga.cli``) drive everything here; ``docs/fpga.md`` is the
prose version. Vendor primitives (SB_MAC16, MULT18X18D) appear only when a design is elaborated
for an FPGA platform; the Verilog of ``qhw generate`` stays generic.
"""

__all__ = []
