"""Session fixture for the cocotb tests: one generated Verilog and one simulator build per
configuration (``simcases.built``), shared by every test of that configuration."""

from __future__ import annotations

import pytest
from simcases import built


@pytest.fixture(scope="session")
def sim_build():
    """``sim_build(name, simulator)`` -> (Hardware, build directory); builds on first use, then reuses."""
    return built
