"""The cocotb bench's parts without a simulator: pause generators, the stream driver's valid/ready
protocol, the monitor's back-pressure, and the checker against the model's beats.

Signals are stand-ins with a ``value`` (what cocotb handles offer), so these run in milliseconds.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qhw.errors import ConfigError
from qhw.hw.config import ArrayConfig
from qhw.sim.checker import Checker
from qhw.sim.driver import StreamDriver
from qhw.sim.gemm import random_gemms
from qhw.sim.manifest import hardware_from_config
from qhw.sim.model import ExpectedBeats, jobs_for
from qhw.sim.monitor import OutputMonitor
from qhw.sim.pauses import pattern_pauses, random_pauses

SEED = 7


class Sig:
    def __init__(self, width: int = 1, value: int = 0):
        self.width, self.value = width, value

    def __len__(self) -> int:
        return self.width


class Dut:
    def __init__(self):
        for s in ("act", "out"):
            for part, width in (("valid", 1), ("ready", 1), ("payload", 16)):
                setattr(self, f"{s}__{part}", Sig(width))


def test_random_pauses_are_seeded_and_near_their_rate():
    a = list(itertools.islice(random_pauses(0.3, seed=SEED), 4000))
    b = list(itertools.islice(random_pauses(0.3, seed=SEED), 4000))
    assert a == b
    assert 0.27 < sum(a) / len(a) < 0.33
    assert random_pauses(0.0, seed=SEED) is None


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2])
def test_random_pauses_refuse_bad_rates(bad):
    with pytest.raises(ConfigError, match=r"^pause probability must be in \[0, 1\), not "):
        random_pauses(bad, seed=SEED)


def test_pattern_pauses():
    assert list(itertools.islice(pattern_pauses([1, 0]), 5)) == [True, False, True, False, True]
    assert pattern_pauses([0, 0]) is None
    with pytest.raises(ConfigError, match="never lets a beat through"):
        pattern_pauses([1])


def test_driver_holds_a_beat_until_ready_and_pauses_only_between_beats():
    dut = Dut()
    drv = StreamDriver(dut, "act", pauses=pattern_pauses([1, 0]))
    drv.handshakes = []
    drv.extend([11, 22])
    seen = []
    for t, ready in enumerate([0, 0, 0, 1, 1, 0, 1, 1, 1], start=1):
        dut.act__ready.value = ready
        drv.step(t)
        seen.append((dut.act__valid.value, dut.act__payload.value if dut.act__valid.value else None))
    # t1: paused; t2: presents 11, not ready until t4; t5: paused; t6: presents 22, taken at t7
    assert seen[:7] == [(0, None), (1, 11), (1, 11), (1, 11), (0, None), (1, 22), (1, 22)]
    assert drv.handshakes == [4, 7] and drv.done
    assert seen[7:] == [(0, None), (0, None)]


def test_monitor_back_pressure_takes_only_ready_beats():
    dut = Dut()
    mon = OutputMonitor(dut, pauses=pattern_pauses([0, 1, 1]))
    dut.out__valid.value, dut.out__payload.value = 1, 5
    got = [mon.step() for _ in range(6)]
    assert got == [5, None, None, 5, None, None]
    assert dut.out__ready.value == 0


def test_checker_finds_the_first_wrong_column(tmp_path):
    c = ArrayConfig(rows=2, cols=2, max_k=8, acc_depth=8, rounding=("single",))
    hw = hardware_from_config(c, name="qhw_parts", out_dir=tmp_path)
    jobs = jobs_for(hw, random_gemms(c, [[3, 5, 3, "single"]], seed=SEED))
    exp = ExpectedBeats(hw, jobs)
    assert len(exp) == 6 and exp.ends == [6]                   # M rows per N tile, 2 tiles
    good = Checker(exp, jobs, cols=c.cols)
    assert all(good.check(i, raw, i) for i, raw in enumerate(exp.beats))
    assert good.first is None and good.bad_beats == 0
    # beat 4 is tile 1, row 1: column 2 (the only one below N=3) off by one; column 3 is don't-care
    bad = Checker(exp, jobs, cols=c.cols)
    beats = list(exp.beats)
    codec = exp.codec
    row = codec.unpack([beats[4]])[0]
    wrong = row.copy()
    wrong[0] = row[0] + 1 if row[0] < c.act_range[1] else row[0] - 1
    wrong[1] = 99 if row[1] != 99 else 98
    beats[4] = codec.pack(wrong)[0]
    results = [bad.check(i, raw, 100 + i) for i, raw in enumerate(beats)]
    assert results == [True] * 4 + [False, True]
    m = bad.first
    assert (m.gemm, m.tile, m.row, m.column, m.cycle, m.got, m.expected) == (0, 1, 1, 2, 104, int(wrong[0]),
                                                                           int(jobs[0].expected[1, 2]))
    assert bad.bad_beats == 1
    assert np.array_equal(codec.unpack([exp.beats[4]])[0][:1], jobs[0].expected[1, 2:3])
