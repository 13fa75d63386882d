"""Skew, mesh and de-skew: each input row's dot products appear ``latency`` cycles later, banks switch per row."""

import numpy as np
import pytest
from hw_cases import run_array

from qhw.hw.array import SystolicArray
from qhw.hw.config import ArrayConfig


@pytest.mark.parametrize("rows, cols, tile_rows, tile_cols, tile_pipeline", [
    (2, 2, 1, 1, 1),
    (4, 4, 1, 1, 1),
    (4, 6, 2, 3, 1),
    (4, 4, 2, 2, 2),
    (3, 5, 1, 1, 0),
    (8, 8, 1, 1, 1),
])
def test_array_rows_and_bank_switch(rows, cols, tile_rows, tile_cols, tile_pipeline):
    cfg = ArrayConfig(rows=rows, cols=cols, tile_rows=tile_rows, tile_cols=tile_cols,
                      tile_pipeline=tile_pipeline, max_k=64, acc_depth=8)
    got, expected = run_array(SystolicArray(config=cfg), cfg, seed=rows * 100 + cols)
    assert np.array_equal(got, expected)
