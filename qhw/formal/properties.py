"""The property set ``qhw prove`` runs on one accelerator configuration.

Each property is a harness (``qhw.formal.harness``) around one component, proven by k-induction
(``mode prove``): a PASS holds for every reachable state, not only the first ``depth`` cycles.
``result_count`` and the ``liveness_*`` properties are bounded (``mode bmc``): they hold for every
input sequence of ``depth`` cycles.
``depth`` is the induction length; each property has a floor below which induction cannot close
(the lane's, its latency + 2: only then is every register a function of the inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError
from ..hw.accel import Accelerator
from ..hw.config import ArrayConfig
from .board_harness import accel_board_rules
from .harness import (
    LANE_REFERENCES,
    BankHarness,
    CreditHarness,
    LaneHarness,
    LivenessHarness,
    ResultCountHarness,
    StreamRules,
)
from .sby import ProofResult, run_proof

__all__ = ["LANE_M0_FREE", "PROPERTIES", "Property", "lane_config", "liveness_shapes", "prove_all"]


@dataclass(frozen=True)
class Property:
    """``build(config)`` returns the harness; ``min_depth(config)`` the shortest induction that closes
    (``mode="prove"``), or, for a bounded property (``mode="bmc"``), the cycles its scenarios need."""

    name: str
    component: str
    what: str
    build: Callable
    min_depth: Callable
    mode: str = "prove"


def lane_config(config: ArrayConfig) -> ArrayConfig:
    """The lane under proof: ``config``'s lane with its fixed-point rules built (``single`` and/or
    ``tflite``, those the combinational references state; ``onnx``'s float32 rule is checked by the
    exhaustive sweep, ``qhw.formal.lane_sweep``). A config with only ``onnx`` proves ``single``'s."""
    return replace(config, rounding=tuple(r for r in config.rounding if r in LANE_REFERENCES) or ("single",))


# The lane proof's reduced M0: the multiplier's equivalence with a plain product is out of the
# solver's reach here (a free 4-bit M0, or M0 = 0x5DC3B1A7, ran past 120 s; M0 = 2**30 took 74 s;
# M0 free in bits {0, 17, 30} past 600 s), so M0 is reduced to {0, 1}; everything around the
# product is proven for every value, the product by the exhaustive sweep (docs/verification.md).
LANE_M0_FREE = (0,)


def liveness_shapes(config: ArrayConfig) -> dict[str, tuple[int, int, int]]:
    """The command shapes of the liveness properties, (M, K, N): where the cycle model is exact,
    one full tile of two rows, and two N tiles at full rate (M = ``min_m_for_full_rate``)."""
    return {"tile": (2, config.rows, config.cols),
            "n_tiles": (config.min_m_for_full_rate, config.rows, 2 * config.cols)}


def _liveness(name: str) -> Property:
    def build(c):
        m, k, n = liveness_shapes(c)[name]
        return LivenessHarness(config=c, m=m, k=k, n=n)

    return Property(f"liveness_{name}", "Accelerator",
                    f"from reset, inputs offered and out ready, a command of the {name.replace('_', ' ')} shape "
                    "has all rows out within ideal_cycles and busy low 2 cycles later (bounded)",
                    build, lambda c: build(c).depth, mode="bmc")

# The result-count property is bounded: commands of at most this size, whole within the depth.
COUNT_MAX_M, COUNT_MAX_N_TILES = 2, 2

PROPERTIES = (
    Property("stream_rules", "Accelerator",
             "out holds valid and payload until ready, given cmd/weights/params/act do",
             lambda c: StreamRules(Accelerator(config=c)), lambda c: 2),
    Property("credits", "Issuer+OutputQueue",
             "credits <= queue depth; queue never written full nor read empty; credits = rows in flight + queued",
             lambda c: CreditHarness(config=c), lambda c: 2),
    Property("double_buffering", "CommandRegister+Loader+Issuer",
             "the loader never writes weights or parameters into a bank an issued activation still uses",
             lambda c: BankHarness(config=c), lambda c: 3),
    Property("result_count", "CommandRegister+Loader+Issuer",
             f"a command issues exactly M*ceil(N/cols) result rows (bounded: M <= {COUNT_MAX_M}, "
             f"N <= {COUNT_MAX_N_TILES}*cols, K <= rows)",
             lambda c: ResultCountHarness(config=c, max_m=COUNT_MAX_M, max_n_tiles=COUNT_MAX_N_TILES),
             lambda c: 2 * (c.weight_load_cycles + 2 + COUNT_MAX_M) + 4, mode="bmc"),
    Property("requant_lane", "RequantLane",
             "lane output == the contract's single/tflite rule (qhw.arith) for the built ones, every acc, bias, "
             f"shift, zp, qmin, qmax; M0 free in bits {LANE_M0_FREE} (the product: exhaustive sweep)",
             lambda c: LaneHarness(config=lane_config(c), m0_free=LANE_M0_FREE),
             lambda c: lane_config(c).requant_latency + 2),
    _liveness("tile"),
    _liveness("n_tiles"),
    Property("board_stream_rules", "BoardTop",
             "the link's frames and the cmd/params/weights/act streams routed into the accelerator, and out to "
             "the link, hold valid and payload until ready (the board top)",
             lambda c: accel_board_rules(c), lambda c: 2),
)


def prove_all(config, *, build_dir, depth: int = 2, jobs: int = 1, names=None,
              timeout: int | None = None) -> list[tuple[Property, ProofResult]]:
    """Run the properties (all, or those ``names``) on ``config``: an ``ArrayConfig`` (an accelerator,
    ``PROPERTIES``) or an ``EngineConfig`` (a network engine, ``engine_properties.ENGINE_PROPERTIES``);
    results in the set's order."""
    from ..engine.config import EngineConfig

    if isinstance(config, EngineConfig):
        from .engine_properties import ENGINE_PROPERTIES as props
    elif isinstance(config, ArrayConfig):
        props = PROPERTIES
    else:
        raise ConfigError(f"config must be an ArrayConfig or an EngineConfig, not {config!r}")
    for name, value in (("depth", depth), ("jobs", jobs)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    known = {p.name for p in props}
    if names is not None and not set(names) <= known:
        raise ConfigError(f"unknown properties {sorted(set(names) - known)} for this top; "
                          f"known: {', '.join(sorted(known))}")
    chosen = [p for p in props if names is None or p.name in names]
    build = Path(build_dir)

    def one(prop: Property) -> tuple[Property, ProofResult]:
        harness = prop.build(config)
        return prop, run_proof(harness, name=prop.name, ports=harness.ports, build_dir=build, mode=prop.mode,
                               depth=max(depth, prop.min_depth(config)), timeout=timeout,
                               script=getattr(harness, "script", ()))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, chosen))
