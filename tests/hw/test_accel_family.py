# amaranth: UnusedElaboratable=no
"""``Accelerator(family=...)``: checked against ``config.pe``, and the family picks the DSP primitive.

(The linter option above: a constructor that raises still leaves an unelaborated object behind.)
"""

import re

import pytest
from amaranth.back import rtlil

from qhw.errors import ConfigError
from qhw.hw.accel import Accelerator
from qhw.hw.config import ArrayConfig


def cfg(**kw):
    return ArrayConfig(rows=2, cols=2, max_k=16, acc_depth=8, rounding=("single",), **kw)


@pytest.mark.parametrize("pe, family, message", [
    ("generic", "xilinx", "family must be None, 'ice40' or 'ecp5', not 'xilinx'"),
    ("ecp5-pipelined", "ice40", "pe ecp5-pipelined needs family 'ecp5' or None, not 'ice40'"),
    ("ice40-dual", "ecp5", "pe ice40-dual needs family 'ice40' or None, not 'ecp5'"),
])
def test_family_rejected(pe, family, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        Accelerator(config=cfg(pe=pe), family=family)


@pytest.mark.parametrize("pe, family, primitive", [
    ("ecp5-pipelined", "ecp5", "MULT18X18D"),
    ("ice40-dual", "ice40", "SB_MAC16"),
])
def test_family_selects_the_primitive(pe, family, primitive):
    """With a family the DSP PEs are vendor instances (one per MAC / per MAC pair); without, none.
    On ECP5 the requantization lanes' partial products are MULT18X18D too (2 lanes x 4 for a
    33x31-bit product); on iCE40 they stay portable (Yosys infers SB_MAC16)."""
    lanes = 8 if family == "ecp5" else 0
    text = rtlil.convert(Accelerator(config=cfg(pe=pe), family=family), name="top")
    assert text.count(f"cell \\{primitive} ") == (4 if pe == "ecp5-pipelined" else 2) + lanes
    assert primitive not in rtlil.convert(Accelerator(config=cfg(pe=pe)), name="top")
    generic = rtlil.convert(Accelerator(config=cfg(), family=family), name="top")
    assert generic.count(f"cell \\{primitive} ") == lanes
