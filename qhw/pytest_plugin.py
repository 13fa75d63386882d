"""pytest plugin: keep a quantized model's generated hardware under regression in your own CI.

In a test module::

    from qhw.pytest_plugin import hardware_regression

    test_my_net_hardware = hardware_regression("my_net.qhw", rtl="rtl/my_net.json", data="val.npz",
                                               batch=32, limit=128)

collects one test per input batch and per layer that runs on the array
(``test_my_net_hardware[batch1-/fc1/Gemm]``: that layer's GEMMs in that batch bit-exact with the
golden model and, without stalls, cycle-exact with the manifest's model where it is exact), plus
one per batch for the model's output (``[batch1-output]``). The model is simulated once per
session (``qhw.sim.run.simulate_model``, shared by all its tests); ``pytest --junitxml=FILE`` writes
the JUnit XML. Relative paths are relative to the test module.

Options (this plugin is registered as the ``pytest11`` entry point ``qhw``; without the installed
package, add ``-p qhw.pytest_plugin``): ``--qhw-jobs N`` shards the batches over N simulator
processes, ``--qhw-executor dask --qhw-scheduler ADDR`` runs them on a Dask cluster,
``--qhw-coverage DIR`` writes the coverage report of the regression there.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["RegressionSpec", "hardware_regression"]


@dataclass(frozen=True)
class RegressionSpec:
    """One model on one generated array over one data file (absolute paths)."""

    qmodel: str
    rtl: str
    data: str
    batch: int = 64
    limit: int | None = None
    seed: int = 0
    stall: float = 0.0
    simulator: str = "verilator"

    def cases(self) -> list[tuple[int, str]]:
        """(batch index, layer name or ``"output"``), in run order, from the model and the data's size."""
        import numpy as np

        from .executor import fixed_batch
        from .qmodel import load_qmodel
        from .runtime import array_layers

        qm = load_qmodel(self.qmodel)
        with np.load(self.data, allow_pickle=False) as z:
            n = int(z["x"].shape[0])
        n = min(n, self.limit) if self.limit else n
        batch = fixed_batch(qm.graph) or self.batch         # as simulate_model batches
        layers = [ly.name for ly in array_layers(qm.graph, self.qmodel)]
        return [(b, name) for b in range(-(-n // batch)) for name in (*layers, "output")]


class Simulations:
    """The session's simulations, one per spec, run on first use with the command line's options."""

    def __init__(self, config):
        self.config = config
        self.reports: dict[RegressionSpec, dict] = {}

    def report(self, spec: RegressionSpec) -> dict:
        if spec not in self.reports:
            from .sim.run import simulate_model

            opt = self.config.getoption
            cov = opt("qhw_coverage")
            if cov and len(self.reports):           # one folder per model when a session has several
                cov = str(Path(cov) / Path(spec.qmodel).stem)
            rep, _ = simulate_model(spec.qmodel, spec.data, spec.rtl, limit=spec.limit, seed=spec.seed,
                                    simulator=spec.simulator, stall=spec.stall, batch=spec.batch,
                                    jobs=opt("qhw_jobs"), executor=opt("qhw_executor"),
                                    scheduler=opt("qhw_scheduler"), coverage=cov,
                                    log=lambda msg: print(msg, file=sys.stderr))
            self.reports[spec] = rep
        return self.reports[spec]


def check_case(report: dict, batch: int, layer: str) -> None:
    """Fail (``AssertionError`` with the first mismatch) unless that layer's GEMMs in that batch, or
    that batch's outputs (``layer="output"``), equal the golden model's."""
    b = report["batches"][batch]
    where = f"samples {b['start']}-{b['stop'] - 1}"
    if layer == "output":
        assert b["output_mismatches"] == 0, f"{where}: {b['output_mismatches']} outputs differ from the golden model"
        return
    found = [lc for lc in b["layers"] if lc["layer"] == layer]
    assert found, f"{where}: layer {layer!r} ran no GEMM on the array"
    lc = found[0]
    assert lc["mismatches"] == 0, f"{where}: {lc['mismatches']} mismatches; {lc['first_mismatch']}"
    assert not lc["cycle_errors"], f"{where}: cycle counts differ from the manifest's model: {lc['cycle_errors']}"


def hardware_regression(qmodel, *, rtl, data, batch: int = 64, limit: int | None = None, seed: int = 0,
                        stall: float = 0.0, simulator: str = "verilator"):
    """A test function parametrized over (input batch, layer); assign it to a ``test_*`` name."""
    base = Path(sys._getframe(1).f_globals.get("__file__", ".")).resolve().parent

    def resolve(p) -> str:
        p = Path(p)
        return str(p if p.is_absolute() else base / p)

    spec = RegressionSpec(qmodel=resolve(qmodel), rtl=resolve(rtl), data=resolve(data), batch=int(batch),
                          limit=limit, seed=seed, stall=stall, simulator=simulator)
    cases = spec.cases()

    @pytest.mark.parametrize("qhw_case", cases, ids=[f"batch{b}-{layer}" for b, layer in cases])
    def test_hardware(qhw_case, qhw_simulations):
        check_case(qhw_simulations.report(spec), *qhw_case)

    test_hardware.spec = spec
    return test_hardware


def pytest_addoption(parser) -> None:
    g = parser.getgroup("qhw", "qhw hardware regressions (qhw.pytest_plugin)")
    g.addoption("--qhw-jobs", type=int, default=1, metavar="N",
                help="simulator processes per model (the batches sharded over them; default 1)")
    g.addoption("--qhw-executor", default="local", choices=("local", "dask"), help="where the shards run")
    g.addoption("--qhw-scheduler", metavar="ADDR", help="Dask scheduler address for --qhw-executor dask")
    g.addoption("--qhw-coverage", metavar="DIR", help="coverage report of the regression into DIR")


@pytest.fixture(scope="session")
def qhw_simulations(request) -> Simulations:
    """The session's simulations (``Simulations.report(spec)``), shared by every regression test."""
    return Simulations(request.config)
