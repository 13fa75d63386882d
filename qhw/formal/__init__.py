"""Formal verification of the generated hardware with SymbiYosys (YoWASP) and Yices, all from PyPI.

``harness`` states the properties around unchanged components, ``sby`` runs one proof,
``properties`` is the set ``qhw prove`` runs, ``mutate`` builds the broken variants their tests use.
"""
