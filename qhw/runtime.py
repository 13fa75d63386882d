"""Host runtime: a quantized model on the systolic array.

Every quantized Dense and Conv node becomes GEMMs for the accelerator
(``x_q @ w + bias_hw`` requantized, ``docs/hardware.md``): a Dense directly, a Conv through
im2col of its integer input (padding holds the input zero point, so padded taps add nothing
once the zero point is folded into the bias with ``qhw.hw.driver.fold_bias``). M is split into
chunks of at most ``acc_depth`` rows when K spans several K tiles; N and K tiling is the
hardware's own (``plan_gemm``). Everything else (pooling, reshapes, float-kept nodes) runs on
the host through the golden model's own op registries (``qhw.ops``), exactly as
``qhw.executor.run_int`` does.

The GEMMs go to a ``GemmBackend``: ``GoldenBackend`` (``qhw.kernels.matmul_exact`` +
``qhw.arith.Requant``) or the simulated hardware (``qhw.sim``). The same ``Runtime`` code drives
both; a backend that needs to wait for a simulator uses ``Runtime.run_async``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .arith import INT32_MAX, INT32_MIN, Requant
from .contract import MAX_GEMM_M, MAX_GEMM_N
from .errors import ConfigError
from .executor import Trace, check_input, int_steps
from .fileio import load_data
from .graph import Graph, Node
from .hw.config import ArrayConfig
from .hw.driver import fold_bias
from .kernels import im2col, matmul_exact, pad_nchw
from .ops import conv_input, conv_output, requant_of
from .qmodel import load_qmodel

__all__ = ["GemmBackend", "GemmCall", "GoldenBackend", "Runtime", "array_layers", "check_model", "load_array_run",
           "config_for_model", "model_requirements"]


@dataclass
class GemmCall:
    """One GEMM for the array: ``requant.apply(x @ w + bias)`` with the zero point folded into ``bias``."""

    x: np.ndarray           # M x K raw activation codes
    w: np.ndarray           # K x N weights (zero point 0)
    bias: np.ndarray        # N, int32 range (``fold_bias``)
    requant: Requant
    layer: str = "gemm"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.x.shape[0], self.x.shape[1], self.w.shape[1]


class GemmBackend(Protocol):
    """Runs a list of GEMMs (in order) and returns their M x N integer outputs."""

    def run(self, calls: Sequence[GemmCall]) -> list[np.ndarray]: ...


class GoldenBackend:
    """The golden model: exact integer matmul, then the arithmetic contract's requantization."""

    def run(self, calls: Sequence[GemmCall]) -> list[np.ndarray]:
        return [c.requant.apply(matmul_exact(c.x, c.w) + c.bias, axis=-1) for c in calls]


# --------------------------------------------------------------------------- lowering


def _slice_requant(rq: Requant, cols: slice) -> Requant:
    def part(a):
        a = np.atleast_1d(np.asarray(a))
        return a if a.size == 1 else a[cols]
    return Requant(mode=rq.mode, multiplier=part(rq.multiplier), shift=part(rq.shift), scale=part(rq.scale),
                   zero_point=rq.zero_point, qmin=rq.qmin, qmax=rq.qmax)


def layer_gemms(node: Node) -> list[tuple[np.ndarray, np.ndarray, Requant]]:
    """Per group: (w K x N, bias N before folding, requant) of a quantized Dense/Conv."""
    w = np.asarray(node.qparams["weight"], dtype=np.int64)
    bias = np.asarray(node.qparams["bias"], dtype=np.int64).reshape(-1)
    rq = requant_of(node)
    if node.op == "Dense":
        return [(w.T, bias, rq)]
    group = int(node.attrs["group"])
    mg = w.shape[0] // group
    out = []
    for g in range(group):  # K ordered (KH, KW, C) like kernels.im2col's patches
        sl = slice(g * mg, (g + 1) * mg)
        out.append((w[sl].transpose(0, 2, 3, 1).reshape(mg, -1).T, bias[sl], _slice_requant(rq, sl)))
    return out


def _m_chunk(config: ArrayConfig | None, k: int) -> int:
    if config is None:
        return 1 << 62
    return min(MAX_GEMM_M, config.acc_depth) if k > config.rows else MAX_GEMM_M


def _lower(node: Node, xq: np.ndarray, x_zp: int, config: ArrayConfig | None):
    """GEMM calls of one quantized linear node, and a function assembling their outputs."""
    x = np.asarray(xq, dtype=np.int64)
    batch = x.shape[0]
    gemms = layer_gemms(node)
    if node.op == "Dense":
        rows = [x.reshape(x.shape[0], -1)]
        geometry = None
    else:
        a = node.attrs
        x = conv_input(node, x, x_zp)  # 1-D/3-D as 2-D; a transposed conv's zero-inserted input
        xp = pad_nchw(x, tuple(a["pads"]), x_zp)  # padded taps hold the zero point: they add nothing
        cols = im2col(xp, node.qparams["weight"].shape[2:], a["strides"], a["dilations"])  # (N,OH,OW,KH,KW,C)
        b, oh, ow = cols.shape[:3]
        cg = cols.shape[-1] // len(gemms)
        rows = [cols[..., g * cg:(g + 1) * cg].reshape(b * oh * ow, -1) for g in range(len(gemms))]
        geometry = (b, oh, ow)
    calls, spans = [], []
    for xg, (w, bias, rq) in zip(rows, gemms):
        bias_hw = fold_bias(bias, w, x_zp)
        step = _m_chunk(config, w.shape[0])
        first = len(calls)
        for m0 in range(0, xg.shape[0], step):
            calls.append(GemmCall(x=xg[m0:m0 + step], w=w, bias=bias_hw, requant=rq, layer=node.name))
        spans.append((first, len(calls)))

    def assemble(ys: list[np.ndarray]) -> np.ndarray:
        y = np.concatenate([np.concatenate(ys[a:b], axis=0) for a, b in spans], axis=1)
        if geometry is None:
            return y
        b, oh, ow = geometry
        return conv_output(node, np.ascontiguousarray(y.reshape(b, oh, ow, -1).transpose(0, 3, 1, 2)), batch)

    return calls, assemble


def on_array(node: Node) -> bool:
    """True for the nodes the accelerator runs: quantized Dense and Conv."""
    return node.quant is not None and node.op in ("Dense", "Conv")


class Runtime:
    """Runs a quantized graph with its linear layers on a GEMM backend.

    ``config`` is the array the GEMMs must fit (M chunking); ``None`` for the golden backend
    alone. ``check_model`` should have accepted the graph for ``config`` first.
    """

    def __init__(self, graph: Graph, config: ArrayConfig | None = None):
        self.graph = graph
        self.config = config

    def steps(self, x: np.ndarray, trace: Trace | None = None
              ) -> Generator[list[GemmCall], list[np.ndarray], list[np.ndarray]]:
        """The model as a generator: yields each layer's GEMM calls, receives their outputs,
        returns the graph outputs (float, dequantized, as ``run_int``)."""

        def lower(node, env):
            if not on_array(node):
                return None
            return _lower(node, env.as_codes(node.inputs[0]), env.qp(node.inputs[0]).zero_point, self.config)

        outputs, self.last_codes = yield from int_steps(self.graph, x, trace=trace, lower=lower)
        return outputs

    def run(self, x: np.ndarray, backend: GemmBackend, trace: Trace | None = None) -> list[np.ndarray]:
        gen = self.steps(x, trace)
        try:
            calls = next(gen)
            while True:
                calls = gen.send(backend.run(calls))
        except StopIteration as stop:
            return stop.value

    async def run_async(self, x: np.ndarray, backend, trace: Trace | None = None) -> list[np.ndarray]:
        """As ``run``, with ``await backend.run(calls)`` (a simulator backend inside cocotb)."""
        gen = self.steps(x, trace)
        try:
            calls = next(gen)
            while True:
                calls = gen.send(await backend.run(calls))
        except StopIteration as stop:
            return stop.value


# --------------------------------------------------------------------------- model vs array


@dataclass
class LayerNeeds:
    name: str
    k: int
    n: int
    mode: str
    act_bits: int
    weight_bits: int
    weight_lo: int
    weight_hi: int
    per_channel: bool       # multiplier/shift/scale vary over output channels
    asym_weights: bool
    bias_lo: int
    bias_hi: int
    out_lo: int
    out_hi: int


def model_requirements(graph: Graph) -> list[LayerNeeds]:
    """What each array layer of ``graph`` needs from the hardware."""
    needs = []
    tensors = graph.tensors
    for node in graph.nodes:
        if not on_array(node):
            continue
        q = node.quant
        wzp = np.asarray(node.qparams.get("weight_zero_point", 0))
        rq = requant_of(node)
        in_qp = tensors.get(node.inputs[0])
        act_bits = max(int(q.get("act_bits", 8)), in_qp.bits if in_qp else 0)
        varies = any(np.unique(np.asarray(p).reshape(-1)).size > 1 for p in (rq.multiplier, rq.shift, rq.scale))
        blo = bhi = 0
        wlo = whi = 0
        k = 0
        for w, bias, _ in layer_gemms(node):
            k = max(k, w.shape[0])
            folded = fold_bias(bias, w, in_qp.zero_point if in_qp else 0)
            blo, bhi = min(blo, int(folded.min())), max(bhi, int(folded.max()))
            wlo, whi = min(wlo, int(w.min())), max(whi, int(w.max()))
        needs.append(LayerNeeds(
            name=node.name, k=k, n=int(node.qparams["weight"].shape[0]), mode=q["rounding"], act_bits=act_bits,
            weight_bits=int(q.get("weight_bits", 8)), weight_lo=wlo, weight_hi=whi, per_channel=varies,
            asym_weights=bool(np.any(wzp != 0)), bias_lo=blo, bias_hi=bhi,
            out_lo=min(rq.qmin, rq.zero_point), out_hi=max(rq.qmax, rq.zero_point)))
    return needs


def array_layers(graph: Graph, source: str) -> list[LayerNeeds]:
    """``model_requirements``, refusing (one line) a model with no layer on the array."""
    needs = model_requirements(graph)
    if not needs:
        nq = sum(n.quant is not None for n in graph.nodes)
        raise ConfigError(f"{source}: nothing in this model runs on the array (no quantized Conv or Dense "
                          f"layer; {nq} of {len(graph.nodes)} nodes quantized); see the notes of qhw quantize "
                          f"for why its layers stayed float")
    return needs



def load_array_run(qmodel, data, *, limit: int | None):
    """The quantized model, inputs and labels (or None) of a run on hardware: a model with nothing
    on the array, data that does not fit the model, or a bad ``--limit`` is one line, before anything
    is built."""
    qm = load_qmodel(qmodel)
    array_layers(qm.graph, str(qmodel))
    x, labels = load_data(data)
    x = check_input(qm.graph, x, str(data))
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be a positive number of samples, not {limit}")
        x = x[:limit]
        labels = None if labels is None else labels[:limit]
    return qm, x, labels


def check_model(graph: Graph, config: ArrayConfig, source: str = "array") -> list[LayerNeeds]:
    """Refuse (``ConfigError``, one line) a model the array cannot hold, saying what to regenerate."""
    c = config
    needs = array_layers(graph, source)
    problems: list[str] = []
    flags: dict[str, str] = {}
    other: list[str] = []

    def first(pred):
        return next((n for n in needs if pred(n)), None)

    n = first(lambda n: n.asym_weights)
    if n:
        other.append(f"layer {n.name!r} has asymmetric weights (zero point != 0), which the array does not "
                     f"support; requantize with qhw quantize --weight-scheme sym")
    kmax = max((x.k for x in needs), default=0)
    n = first(lambda n: n.k == kmax)
    if n and kmax > c.max_k:
        problems.append(f"layer {n.name!r} needs K={kmax} but max_k is {c.max_k}")
        flags["--max-k"] = str(kmax)
    modes = sorted({x.mode for x in needs if x.mode not in c.rounding})
    if modes:
        n = first(lambda n: n.mode in modes)
        problems.append(f"layer {n.name!r} uses rounding {n.mode!r} but the array has {','.join(c.rounding)}")
        flags["--rounding"] = ",".join(dict.fromkeys([*c.rounding, *modes]))
    abits = max((x.act_bits for x in needs), default=0)
    lo, hi = c.act_range
    n = first(lambda n: n.act_bits > c.act_bits or n.out_lo < lo or n.out_hi > hi)
    if n or (needs and not c.act_signed):
        n = n or needs[0]
        problems.append(f"layer {n.name!r} has int{n.act_bits} activations but the array is built for "
                        f"{'' if c.act_signed else 'u'}int{c.act_bits}")
        flags["--act-bits"] = str(max(abits, 8))
    wlo, whi = c.weight_range
    n = first(lambda n: n.weight_lo < wlo or n.weight_hi > whi)
    if n:
        problems.append(f"layer {n.name!r} has int{n.weight_bits} weights but the array is built for "
                        f"int{c.weight_bits}")
        flags["--weight-bits"] = str(max(x.weight_bits for x in needs))
    n = first(lambda n: n.per_channel)
    if n and not c.per_channel:
        problems.append(f"layer {n.name!r} has per-channel requantization but the array is built per-tensor")
        flags["without --per-tensor"] = ""
    n = first(lambda n: n.bias_lo < INT32_MIN or n.bias_hi > INT32_MAX)
    if n:
        other.append(f"layer {n.name!r}: its bias with the activation zero point folded in exceeds int32")
    n = first(lambda n: n.n > MAX_GEMM_N)
    if n:
        other.append(f"layer {n.name!r} has N={n.n} output channels, more than the command's limit")
    if problems:
        regen = " ".join(f"{k} {v}".strip() if not k.startswith("without") else k for k, v in flags.items())
        msg = "; ".join(problems)
        raise ConfigError(f"{source}: {msg}; regenerate with qhw generate {regen}"
                          + (f" (also: {'; '.join(other)})" if other else ""))
    if other:
        raise ConfigError(f"{source}: {'; '.join(other)}")
    return needs


def config_for_model(graph: Graph, *, rows: int = 8, cols: int = 8, source: str = "model",
                     **overrides) -> ArrayConfig:
    """The smallest array parameters that hold ``graph``: max K, rounding mode(s), element widths and
    per-channel requantization taken from the model; ``overrides`` win. A model with no layer on
    the array is refused (``ConfigError``, one line)."""
    needs = array_layers(graph, source)
    params = dict(rows=rows, cols=cols, max_k=max(n.k for n in needs),
                  rounding=tuple(dict.fromkeys(n.mode for n in needs)),
                  act_bits=max(8, max(n.act_bits for n in needs)),
                  weight_bits=max(8, max(n.weight_bits for n in needs)),
                  per_channel=any(n.per_channel for n in needs))
    params.update(overrides)
    return ArrayConfig(**params)
