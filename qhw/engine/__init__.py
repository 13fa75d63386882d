"""The network engine (``--top network``): ISA, program format, compiler, cycle model, reference model.

Pure Python and NumPy; ``docs/engine.md`` is the specification the hardware is built against.
"""
