"""The network engine's hardware (``--top network``, docs/engine.md): components built against
``qhw.engine``'s specification and reference model."""
