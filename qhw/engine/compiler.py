"""Compile a quantized model for the network engine: segments, descriptors, weight image, memory map.

``compile_model(qmodel, config)`` turns every run of consecutive engine-capable nodes into a segment
(INPUT descriptors, one MATMUL per Conv/Dense with a directly following pool fused into its
write-back where the pool allows it, POOL descriptors for the others, OUTPUT descriptors, HALT/END).
Flatten/Reshape to (batch, features) cost nothing: a Dense reads the channel-last tensor with its
weight columns permuted to that layout. Everything else runs on the host, as in ``qhw run``.
Activations are allocated first-fit in the scratchpad, reusing the words of dead tensors; a model
that does not fit is refused with one line naming the memory and the smallest size that fits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from ..arith import add_left_shift, add_multipliers, average_onnx_scale, quantize_multiplier
from ..contract import ADD_MODES
from ..errors import ConfigError
from ..executor import Trace, int_steps
from ..graph import Graph, Node
from ..hw.config import MODE_CODES
from ..hw.driver import fold_bias
from ..ops import requant_of
from ..ops_elementwise import TABLE_KINDS, int_kind, node_attrs
from ..runtime import check_model
from .config import OPTIONAL_UNITS, EngineConfig
from .isa import DESCRIPTOR_WORDS, IN_STD, IN_WINDOW, POOL_AVG, POOL_MAX, RULE_CODES, RULES, Descriptor
from .program import Program, TensorEntry

__all__ = ["NOT_BUILT_RULES", "Buf", "Compiled", "LayerInfo", "check_hardware", "check_program", "compile_model",
           "engine_segments", "fit_engine", "tensor_shapes", "units_used"]

POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool")
VIEW_OPS = ("Flatten", "Reshape")
CLAMP_OPS = ("Relu", "Clip")    # integer saturate: folded into the producer's clamp, or a 1x1 POOL


@dataclass(eq=False)
class Buf:
    """A tensor in the scratchpad: ``h x w`` pixels of ``c`` channels, ``cws`` words per pixel (std),
    or a window layout (``wpos`` words per row). ``base`` is set by the allocator."""

    name: str
    kind: int
    c: int
    h: int
    w: int
    cws: int = 0
    wpos: int = 0
    base: int = -1

    @property
    def words(self) -> int:
        return self.h * (self.wpos if self.kind == IN_WINDOW else self.w * self.cws)


@dataclass
class View:
    buf: Buf
    flat: bool = False


@dataclass
class LayerInfo:
    """One row of the compiler's table (one compute descriptor, or an I/O descriptor)."""

    index: int                 # descriptor index
    name: str
    op: str
    shape: str
    tiles: str
    macs: int = 0
    weight_bytes: int = 0
    act_bytes: int = 0


@dataclass
class Compiled:
    program: Program
    layers: list[LayerInfo]
    config: EngineConfig
    host_nodes: list[str] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(x.macs for x in self.layers)


@dataclass
class _Pending:
    op: str
    fields: dict
    reads: list = field(default_factory=list)    # (Buf, field name)
    writes: list = field(default_factory=list)


def tensor_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape without the batch axis, from one golden-model run on a zero input."""
    info = graph.inputs[0]
    x = np.zeros(tuple(d if isinstance(d, int) else 1 for d in info.shape), np.float32)
    trace = Trace()
    with contextlib.suppress(StopIteration):   # no lowering: the generator finishes at once
        next(int_steps(graph, x, trace=trace))
    shapes = {info.name: x.shape[1:]}
    shapes.update({k: np.shape(v)[1:] for k, v in trace.values.items()})
    return shapes


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


# --------------------------------------------------------------------------- which nodes the engine runs


def _engine_capable(node: Node, shapes, graph: Graph | None = None, rows: int | None = None) -> bool:
    if node.quant is None or not node.inputs:
        return False
    if node.op == "Onnx":
        return graph is not None and rows is not None and _elementwise_kind(node, graph, shapes, rows) is not None
    rank = len(shapes[node.inputs[0]])
    if node.op == "Conv" or node.op in POOL_OPS:
        return rank == 3
    if node.op == "Dense":
        return rank == 1
    if node.op in CLAMP_OPS:
        return rank in (1, 3)
    if node.op in VIEW_OPS:   # (batch, features) with every feature of the sample: a flatten
        out = shapes[node.outputs[0]]
        return len(out) == 1 and rank in (1, 3) and int(np.prod(out)) == int(np.prod(shapes[node.inputs[0]]))
    return False


def _int8(qp) -> bool:
    return qp is not None and qp.bits == 8 and not qp.unsigned and qp.qmin == -128


def _elementwise_kind(node: Node, graph: Graph, shapes, rows: int) -> str | None:
    """"Add", "Concat" or "table" for an integer ``Onnx`` node the engine runs (docs/engine.md), else None.

    Add (or a two-input Sum): two int8 inputs of one shape (no broadcast), ``single``/``tflite``.
    Concat: along channels, as placement, so every input must already be in the output's scale and
    zero point (no rescale), be produced in the segment for this Concat alone by a MATMUL or POOL
    descriptor, and all but the last fill whole words. Table: one 256-entry int8 table (not PRelu's
    per-channel tables)."""
    kind = int_kind(node)
    ins, out = node.inputs, node.outputs[0]
    qps = [graph.tensors.get(t) for t in ins + [out]]
    if kind is None or not all(_int8(q) for q in qps):
        return None
    if kind in ("Add", "Sum"):        # a two-input Sum is the same TFLite ADD (qhw.ops_elementwise)
        same = len(ins) == 2 and shapes[ins[0]] == shapes[ins[1]] == shapes[out] and len(shapes[out]) in (1, 3)
        return "Add" if same and node.quant["rounding"] in ADD_MODES else None
    if kind == "Concat":
        consumers = graph.consumers()
        rank = len(shapes[out])
        if rank != 3 or int(node_attrs(node).get("axis", 0)) not in (1, -3) or len(set(ins)) != len(ins):
            return None
        o = qps[-1]
        producers = {o_: n for n in graph.nodes for o_ in n.outputs}
        for i, t in enumerate(ins):
            if not _placeable(producers.get(t), producers):
                return None
            q = graph.tensors[t]
            if (float(q.scale), q.zero_point) != (float(o.scale), o.zero_point) or t in graph.outputs \
                    or len(consumers.get(t, [])) != 1 or t in [x.name for x in graph.inputs]:
                return None
            if i < len(ins) - 1 and shapes[t][0] % rows:
                return None
        return kind
    if kind in TABLE_KINDS:
        table = node.qparams.get("table")
        return "table" if table is not None and np.shape(table) == (256,) else None
    return None


def _placeable(node: Node | None, producers) -> bool:
    """Whether ``node``'s output is written by a MATMUL or POOL descriptor (the ones with ``out_cw0``/
    ``out_pp``): a Conv, Dense or pool, or a Relu/Clip (folded into a Conv's clamp, or a POOL pass),
    but not one folded into an ADD's clamp; not an Add or a table pass (contiguous ADD words)."""
    if node is None:
        return False
    if node.op in CLAMP_OPS:
        src = producers.get(node.inputs[0])
        return src is not None and src.op != "Onnx"
    return node.op in ("Conv", "Dense", *POOL_OPS)


def _act_inputs(node: Node) -> list[str]:
    """The activation inputs a node reads on the engine (all of an Add's or Concat's, else the first)."""
    return list(node.inputs) if node.op == "Onnx" else node.inputs[:1]


def engine_segments(graph: Graph, shapes, rows: int | None = None) -> list[list[Node]]:
    """Runs of consecutive engine-capable nodes that do some compute (pure view runs stay on the host).
    Integer Add, Concat and table nodes need ``rows`` (the word width) to be judged."""
    segs, cur = [], []
    for node in graph.nodes:
        if _engine_capable(node, shapes, graph, rows):
            cur.append(node)
        elif cur:
            segs.append(cur)
            cur = []
    if cur:
        segs.append(cur)
    return [s for s in segs if any(n.op not in VIEW_OPS for n in s)]


# --------------------------------------------------------------------------- the compiler


class _Builder:
    def __init__(self, graph: Graph, config: EngineConfig, shapes):
        self.g, self.cfg, self.shapes = graph, config, shapes
        self.R, self.C = config.array.rows, config.array.cols
        self.pending: list[_Pending] = []
        self.layers: list[LayerInfo] = []
        self.weights = bytearray()
        self.params: list[int] = []           # int32 words (two's complement kept as Python ints)
        self.param_fix: list[tuple[_Pending, str, int]] = []   # fields holding a param word index
        self.tensors: list[TensorEntry] = []
        self.modes: set[str] = set()
        self.fused_kernel: dict[str, tuple[int, int]] = {}    # pool node -> its window when fused
        self.clampable: dict[str, _Pending] = {}               # tensor -> the MATMUL whose clamp it is
        self.tableable: dict[str, _Pending] = {}               # tensor -> the MATMUL/ADD whose table it can be
        self.table_fix: list[tuple[_Pending, int]] = []        # descriptors whose ``table`` is a param index
        self.writer: dict[Buf, _Pending] = {}                  # buffer -> the descriptor that writes it

    # ---------------------------------------------------------------- buffers
    def std_buf(self, name: str, c: int, h: int, w: int) -> Buf:
        return Buf(name, IN_STD, c, h, w, cws=_ceil(c, self.R))

    def emit(self, p: _Pending, layer: LayerInfo | None = None) -> int:
        self.pending.append(p)
        for b, _ in p.writes:
            self.writer.setdefault(b, p)
        if layer is not None:
            layer.index = len(self.pending) - 1
            self.layers.append(layer)
        return len(self.pending) - 1

    def param_block(self, words) -> int:
        start = len(self.params)
        self.params.extend(int(v) for v in words)
        return start

    # ---------------------------------------------------------------- segment
    def segment(self, index: int, nodes: list[Node], last: bool) -> None:
        names = {n.name for n in nodes}
        produced = {o for n in nodes for o in n.outputs}
        consumers = self.g.consumers()
        views: dict[str, View] = {}
        inputs = list(dict.fromkeys(i for n in nodes for i in _act_inputs(n) if i not in produced))
        for t in inputs:
            self._input(index, t, [c for c in consumers.get(t, []) if c.name in names], views)
        fused: set[str] = set()
        for node in nodes:
            if node.name in fused:
                continue
            if node.op in VIEW_OPS:
                views[node.outputs[0]] = View(views[node.inputs[0]].buf, flat=True)
            elif node.op in ("Conv", "Dense"):
                pool = self._fusable_pool(node, consumers, names)
                if pool is not None:
                    fused.add(pool.name)
                self._matmul(node, views, pool)
                out = node.outputs[0]
                if pool is None and out not in self.g.outputs and len(consumers.get(out, [])) == 1:
                    self.clampable[out] = self.tableable[out] = self.pending[-1]
            elif node.op in CLAMP_OPS:
                self._clamp(node, views)
                out = node.outputs[0]
                if node.inputs[0] in self.tableable and views[out].buf is views[node.inputs[0]].buf \
                        and out not in self.g.outputs and len(consumers.get(out, [])) == 1:
                    self.tableable[out] = self.tableable[node.inputs[0]]     # folded: still the raw producer
            elif node.op == "Onnx":
                self._elementwise(node, views, consumers)
            else:
                self._pool(node, views)
        outs = [t for t in produced if t in self.g.outputs
                or any(c.name not in names for c in consumers.get(t, []))]
        for t in sorted(outs, key=lambda t: (t not in self.g.outputs, t)):
            self._output(index, t, views[t])
        self.emit(_Pending("END" if last else "HALT", {} if last else {"segment": index}))

    def _input(self, seg: int, t: str, readers: list[Node], views) -> None:
        shape = self.shapes[t]
        c, h, w = (shape if len(shape) == 3 else (shape[0], 1, 1))
        qp = self.g.tensors[t]
        buf = self.std_buf(t, c, h, w)
        fields = {"tensor": len(self.tensors), "kind": IN_STD, "h": h, "w": w, "c": c, "pp": buf.cws,
                  "zp": qp.zero_point}
        if len(readers) == 1 and readers[0].op == "Conv" and len(shape) == 3:
            win = self._window(readers[0], c, h, w)
            if win is not None:
                buf = Buf(t, IN_WINDOW, c, h, w, wpos=win["wpos"])
                fields.update(kind=IN_WINDOW, **win)
        self.tensors.append(TensorEntry(t, 0, seg, len(shape) == 1, c, h, w))
        self.emit(_Pending("INPUT", fields, writes=[(buf, "out_base")]),
                  LayerInfo(0, t, "input", f"{h}x{w}x{c}", "-", act_bytes=buf.words * self.R))
        views[t] = View(buf)

    def _window(self, conv: Node, c: int, h: int, w: int) -> dict | None:
        """Sliding-window layout for a small-channel conv input, when it needs fewer K tiles."""
        a = conv.attrs
        kh, kw = conv.qparams["weight"].shape[2:]
        if int(a["group"]) != 1 or 2 * c > self.R:
            return None
        cp = 1 << (c - 1).bit_length()
        g = self.R // cp
        if (kw - 1) * a["dilations"][1] + 1 > g or kh >= kh * kw * _ceil(c, self.R):
            return None
        ow = self.shapes[conv.outputs[0]][2]
        return {"sw": a["strides"][1], "pl": a["pads"][1], "pr": a["pads"][3], "wpos": ow, "cp": cp}

    def _output(self, seg: int, t: str, view: View) -> None:
        b = view.buf
        self.tensors.append(TensorEntry(t, 1, seg, len(self.shapes[t]) == 1, b.c, b.h, b.w))
        self.emit(_Pending("OUTPUT", {"tensor": len(self.tensors) - 1, "h": b.h, "w": b.w, "c": b.c, "pp": b.cws},
                           reads=[(b, "in_base")]),
                  LayerInfo(0, t, "output", f"{b.h}x{b.w}x{b.c}", "-"))

    # ---------------------------------------------------------------- pools
    def _fusable_pool(self, node: Node, consumers, names) -> Node | None:
        out = node.outputs[0]
        users = consumers.get(out, [])
        if out in self.g.outputs or len(users) != 1 or users[0].op not in POOL_OPS or users[0].name not in names:
            return None
        pool = users[0]
        c, oh, ow = self.shapes[out] if len(self.shapes[out]) == 3 else (self.shapes[out][0], 1, 1)
        if pool.op == "GlobalAveragePool":
            k, line = (oh, ow), 1
        else:
            a = pool.attrs
            if list(a["kernel"]) != list(a["strides"]) or any(a["pads"]):
                return None
            k, line = tuple(a["kernel"]), ow // a["kernel"][1]
        if line > self.cfg.pool_line or (self._k_tiles(node) > 1 and oh * ow > self.cfg.array.acc_depth):
            return None
        self.fused_kernel[pool.name] = k
        return pool

    def _k_tiles(self, node: Node) -> int:
        w = node.qparams["weight"]
        c_in = self.shapes[node.inputs[0]]
        if node.op == "Dense":
            return _ceil(w.shape[1], self.R)
        return _ceil(c_in[0], self.R) * w.shape[2] * w.shape[3]

    def _pool_fields(self, pool: Node, in_t: str, out_t: str) -> dict:
        in_qp, out_qp = self.g.tensors[in_t], self.g.tensors[out_t]
        mode = pool.quant["rounding"]
        self.modes.add(mode)
        f = {"pool": POOL_MAX if pool.op == "MaxPool" else POOL_AVG, "pool_zp_in": in_qp.zero_point,
             "pool_zp": out_qp.zero_point, "pool_qmin": out_qp.qmin, "pool_qmax": out_qp.qmax}
        if pool.op == "MaxPool":
            return dict(f, rule=RULE_CODES["max"], pool_qmin=in_qp.qmin)
        kh, kw = self.fused_kernel.get(pool.name) or pool.attrs.get("kernel") or self.shapes[in_t][1:]
        counts = np.arange(1, kh * kw + 1)
        f32 = np.float32
        if mode == "onnx" and pool.op == "AveragePool":
            offset = (pool.quant.get("onnx_offsets") or [out_qp.code_offset])[-1]   # as qhw.ops: ORT's uint8
            rule, words = "onnx_float", [f32(in_qp.scale).view(np.int32), f32(out_qp.scale).view(np.int32), offset]
        elif mode == "onnx":
            rule, words = "onnx_int", average_onnx_scale(in_qp.scale, out_qp.scale, counts).view(np.int32)
        elif in_qp.scale == out_qp.scale:
            rule, words = "div", []
        else:
            m0, shift = quantize_multiplier(np.float64(in_qp.scale) / (np.float64(out_qp.scale) * counts))
            rule, words = mode, np.stack([m0, shift], axis=1).reshape(-1)
        return dict(f, rule=RULE_CODES[rule], pool_param=self.param_block(words) if len(words) else -1)

    def _clamp(self, node: Node, views) -> None:
        """Relu/Clip (``saturate(x, qmin, qmax)``): narrows the clamp of the MATMUL that produced its only
        input (clip(clip(v, a, b), c, d) = clip(v, clip(a, c, d), clip(b, c, d))), else a 1x1 POOL whose
        ``div`` rule with count 1 and equal zero points is exactly that saturation."""
        src_t, out_t = node.inputs[0], node.outputs[0]
        lo, hi = node.quant["qmin"], node.quant["qmax"]
        producer = self.clampable.get(src_t)
        if producer is not None:
            f = producer.fields
            f["qmin"], f["qmax"] = min(max(f["qmin"], lo), hi), min(max(f["qmax"], lo), hi)
            views[out_t] = views[src_t]
            return
        src = views[src_t].buf
        zp = self.g.tensors[src_t].zero_point
        out = self.std_buf(out_t, src.c, src.h, src.w)
        fields = {"in_h": src.h, "in_w": src.w, "in_pp": src.cws, "kh": 1, "kw": 1, "sh": 1, "sw": 1, "dh": 1,
                  "dw": 1, "oh": src.h, "ow": src.w, "cws": src.cws, "out_h": src.h, "out_w": src.w,
                  "out_pp": out.cws, "pool": POOL_AVG, "rule": RULE_CODES["div"], "pkh": 1, "pkw": 1,
                  "pool_zp_in": zp, "pool_zp": zp, "pool_qmin": lo, "pool_qmax": hi}
        self.emit(_Pending("POOL", fields, reads=[(src, "in_base")], writes=[(out, "out_base")]),
                  LayerInfo(0, node.name, node.op, f"{src.h}x{src.w}x{src.c}", f"{src.words} reads",
                            act_bytes=out.words * self.R))
        views[out_t] = View(out, flat=views[src_t].flat)

    def _pool(self, node: Node, views) -> None:
        src = views[node.inputs[0]].buf
        if src.kind != IN_STD:
            raise ConfigError(f"node {node.name!r}: internal error, pool input in a window layout")
        out_t = node.outputs[0]
        c, oh, ow = self.shapes[out_t]
        if node.op == "GlobalAveragePool":
            geo = {"kh": src.h, "kw": src.w, "sh": 1, "sw": 1}
        else:
            a = node.attrs
            t, l_, b, r = a["pads"]
            geo = {"kh": a["kernel"][0], "kw": a["kernel"][1], "sh": a["strides"][0], "sw": a["strides"][1],
                   "pt": t, "pl": l_, "pb": b, "pr": r}
        out = self.std_buf(out_t, c, oh, ow)
        fields = {"in_h": src.h, "in_w": src.w, "in_pp": src.cws, "dh": 1, "dw": 1, **geo, "oh": oh, "ow": ow,
                  "cws": src.cws, "include_pad": int(node.attrs.get("count_include_pad", 0)),
                  "out_h": oh, "out_w": ow, "out_pp": out.cws}
        p = _Pending("POOL", fields, reads=[(src, "in_base")], writes=[(out, "out_base")])
        fields.update(self._pool_fields(node, node.inputs[0], out_t))
        fields["pkh"], fields["pkw"] = fields["kh"], fields["kw"]
        self.param_fix.append((p, "pool_param", fields.pop("pool_param", -1)))
        self.emit(p, LayerInfo(0, node.name, node.op, f"{src.h}x{src.w}x{c} -> {oh}x{ow}x{c}",
                               f"{oh * ow * src.cws * geo['kh'] * geo['kw']} reads", act_bytes=out.words * self.R))
        views[out_t] = View(out)

    # ---------------------------------------------------------------- Conv / Dense
    def _matmul(self, node: Node, views, pool: Node | None) -> None:
        R, C = self.R, self.C
        src = views[node.inputs[0]].buf
        in_qp = self.g.tensors[node.inputs[0]]
        w = np.asarray(node.qparams["weight"], dtype=np.int64)
        cout = w.shape[0]
        if node.op == "Dense":   # a conv whose kernel covers the whole (h, w, c) input
            w = w.reshape(cout, src.c, src.h, src.w)
            geo = dict(kh=src.h, kw=src.w, sh=1, sw=1, dh=1, dw=1, pt=0, pl=0, pb=0, pr=0, oh=1, ow=1)
            group = 1
        else:
            a = node.attrs
            t, l_, b, r = a["pads"]
            _, oh, ow = self.shapes[node.outputs[0]]
            geo = dict(kh=w.shape[2], kw=w.shape[3], sh=a["strides"][0], sw=a["strides"][1], dh=a["dilations"][0],
                       dw=a["dilations"][1], pt=t, pl=l_, pb=b, pr=r, oh=oh, ow=ow)
            group = int(a["group"])
        kh, kw = geo["kh"], geo["kw"]
        cg, mg = w.shape[1], cout // group
        nt_count = _ceil(cout, C)
        # Dense weights over the input's channels (zero outside each output channel's group).
        wd = np.zeros((nt_count * C, max(src.c, 1), kh, kw), np.int64)
        for g in range(group):
            wd[g * mg:(g + 1) * mg, g * cg:(g + 1) * cg] = w[g * mg:(g + 1) * mg]
        fields = dict(geo, in_h=src.h, in_zp=in_qp.zero_point, n_tiles=nt_count)
        if src.kind == IN_WINDOW:
            fields.update(in_kind=IN_WINDOW, in_w=src.wpos, in_pp=1, kcw=1, cw_step=0, pl=0, pr=0)
            cp = 1 << (src.c - 1).bit_length()
            tiles = np.zeros((nt_count, kh, R, C), np.int64)
            for kx in range(kw):
                lane = kx * geo["dw"] * cp
                tap = wd[:, :, :, kx].reshape(nt_count, C, src.c, kh)
                tiles[:, :, lane:lane + src.c, :] = tap.transpose(0, 3, 2, 1)
        else:
            lo, hi = [], []
            for nt in range(nt_count):   # channel words each N tile reads
                n0, n1 = nt * C, min(cout, nt * C + C)
                g0, g1 = n0 // mg, (n1 - 1) // mg
                lo.append(g0 * cg // R)
                hi.append(_ceil((g1 + 1) * cg, R))
            step = lo[1] - lo[0] if nt_count > 1 else 0
            if step < 0 or any(lo[i] != lo[0] + i * step for i in range(nt_count)):
                step = 0
            start = lo[0] if step else min(lo)
            kcw = max(hi[i] - (start + i * step) for i in range(nt_count))
            fields.update(in_kind=IN_STD, in_w=src.w, in_pp=src.cws, in_cw0=start, kcw=kcw, cw_step=step)
            cpad = np.zeros((nt_count * C, src.cws * R, kh, kw), np.int64)
            cpad[:, :src.c] = wd
            tiles = np.zeros((nt_count, kcw, kh, kw, R, C), np.int64)
            for nt in range(nt_count):
                for ci in range(kcw):
                    cw = start + nt * step + ci
                    blk = cpad[nt * C:(nt + 1) * C, cw * R:(cw + 1) * R]          # C x R x kh x kw
                    tiles[nt, ci] = blk.transpose(2, 3, 1, 0)
            tiles = tiles.reshape(nt_count, -1, R, C)
        kt_count = tiles.shape[1]
        w_base = len(self.weights)
        self.weights += tiles.astype(np.int8).tobytes()
        rq = requant_of(node)
        self.modes.add(rq.mode)

        def per_col(p):
            p = np.atleast_1d(np.asarray(p)).reshape(-1)
            full = np.broadcast_to(p, (cout,)) if p.size == 1 else p
            return np.concatenate([full, np.zeros(nt_count * C - cout, full.dtype)])

        bias_hw = per_col(fold_bias(node.qparams["bias"], w.reshape(cout, -1).T, in_qp.zero_point))
        scale = per_col(np.asarray(rq.scale, np.float32)).astype(np.float32).view(np.int32)
        block = np.stack([bias_hw, per_col(rq.multiplier), per_col(rq.shift), scale], axis=1)  # (N, 4)
        block = block.reshape(nt_count, C, 4).transpose(0, 2, 1).reshape(-1)
        self.params.extend([0] * (-len(self.params) % (4 * C)))   # an N tile's block is one wide store entry
        p_index = self.param_block(block)
        m = geo["oh"] * geo["ow"]
        m_chunk = min(m, self.cfg.array.acc_depth) if kt_count > 1 else m
        fields.update(m_chunk=m_chunk, w_base=w_base, mode=MODE_CODES[rq.mode], zp=rq.zero_point,
                      qmin=rq.qmin, qmax=rq.qmax)
        out_t = node.outputs[0]
        op = node.op
        if pool is not None:
            out_t = pool.outputs[0]
            pkh, pkw = self.fused_kernel[pool.name]
            pf = self._pool_fields(pool, node.outputs[0], out_t)
            fields.update(pf, pkh=pkh, pkw=pkw)
            op += "+" + pool.op
        oshape = self.shapes[out_t]
        c_o, h_o, w_o = oshape if len(oshape) == 3 else (oshape[0], 1, 1)
        out = self.std_buf(out_t, c_o, h_o, w_o)
        fields.update(out_h=h_o, out_w=w_o, out_pp=out.cws)
        p = _Pending("MATMUL", fields, reads=[(src, "in_base")], writes=[(out, "out_base")])
        self.param_fix.append((p, "p_base", p_index))
        if pool is not None:
            self.param_fix.append((p, "pool_param", fields.pop("pool_param", -1)))
        macs = m * cout * cg * kh * kw
        mc = _ceil(m, m_chunk)
        self.emit(p, LayerInfo(0, node.name, op, f"{src.h}x{src.w}x{src.c} -> {h_o}x{w_o}x{c_o}",
                               f"{kt_count}x{nt_count}" + (f"x{mc}" if mc > 1 else ""), macs=macs,
                               weight_bytes=tiles.size + block.size * 4, act_bytes=out.words * self.R))
        views[out_t] = View(out)

    # ---------------------------------------------------------------- dependences
    def dependences(self) -> None:
        """``dep_base``/``dep_step`` of every reader (docs/engine.md, "Timing contract"): scratchpad writes
        happen in one global order (program order, each descriptor in its generator's order), so a
        plane is ready once the write count passes its producer's last write to it."""
        R, C = self.R, self.C
        writer, before, total = {}, [], 0
        for i, p in enumerate(self.pending):
            before.append(total)
            total += _writes(p.op, p.fields)
            for b, _ in p.writes:
                writer.setdefault(b, i)
        for i, p in enumerate(self.pending):
            if p.op == "ADD":                                  # after every earlier write (docs/engine.md)
                p.fields["dep_base"] = before[i]
                continue
            if p.op not in ("MATMUL", "POOL", "OUTPUT"):
                continue
            base, step = before[i], 0                       # conservative: every earlier write
            src = p.reads[0][0]
            w = writer.get(src)
            f = p.fields
            if p.op == "MATMUL" and w is not None and f["in_kind"] == IN_STD:
                q = self.pending[w]
                qf, start, end = q.fields, before[w], before[w] + _writes(q.op, q.fields)
                base = end
                per_word = R // C
                if q.op == "MATMUL" and qf["m_chunk"] >= qf["oh"] * qf["ow"] and qf.get("out_cw0", 0) == 0 \
                        and qf["n_tiles"] % per_word == 0:
                    step = per_word * qf["out_h"] * qf["out_w"]      # N tiles write plane after plane
                elif q.op in ("INPUT", "POOL") and src.h * src.w == 1:
                    step = 1                                         # one pixel: word after word
                if step:
                    base = start + (f["in_cw0"] + 1) * step
            f["dep_base"] = base
            if p.op == "MATMUL":
                f["dep_step"] = step

    # ---------------------------------------------------------------- Add, Concat, tables
    def _elementwise(self, node: Node, views, consumers) -> None:
        kind = _elementwise_kind(node, self.g, self.shapes, self.R)
        if kind == "Add":
            self._add(node, views, consumers)
        elif kind == "Concat":
            self._concat(node, views)
        else:
            self._table(node, views)

    def _table_index(self, node: Node) -> int:
        """The node's 256-entry int8 table as 64 parameter words (indexed by code + 128)."""
        table = np.asarray(node.qparams["table"], np.int64).astype(np.int8)
        return self.param_block(table.view("<i4"))

    def _add(self, node: Node, views, consumers) -> None:
        """TFLite ADD (``qhw.ops_elementwise``, ``qhw.arith.add_rescaled``) as one ADD descriptor over the
        inputs' contiguous words (both in the standard layout of one shape)."""
        a_t, b_t = node.inputs
        out_t = node.outputs[0]
        a, b = views[a_t].buf, views[b_t].buf
        if a.kind != IN_STD or b.kind != IN_STD or a.words != b.words:
            raise ConfigError(f"node {node.name!r}: internal error, Add inputs not in one standard layout")
        qa, qb, qo = self.g.tensors[a_t], self.g.tensors[b_t], self.g.tensors[out_t]
        mode = node.quant["rounding"]
        if mode not in self.cfg.array.rounding:      # the AddUnit builds the engine's modes only
            raise ConfigError(f"node {node.name!r}: Add uses rounding {mode!r} but the engine has "
                              f"{','.join(self.cfg.array.rounding)}; regenerate with --rounding "
                              f"{','.join(dict.fromkeys([*self.cfg.array.rounding, mode]))}")
        self.modes.add(mode)
        left = add_left_shift(8)
        (m0, sh), (m_out, s_out) = add_multipliers([qa.scale, qb.scale], qo.scale, left)
        out = self.std_buf(out_t, a.c, a.h, a.w)
        fields = {"words": a.words, "a_zp": qa.zero_point, "b_zp": qb.zero_point, "left_shift": left,
                  "a_mul": m0[0], "a_shift": sh[0], "b_mul": m0[1], "b_shift": sh[1], "out_mul": m_out,
                  "out_shift": s_out, "zp": qo.zero_point, "qmin": node.quant["qmin"], "qmax": node.quant["qmax"],
                  "mode": MODE_CODES[mode]}
        p = _Pending("ADD", fields, reads=[(a, "a_base"), (b, "b_base")], writes=[(out, "out_base")])
        self.emit(p, LayerInfo(0, node.name, "Add", f"{a.h}x{a.w}x{a.c}", f"{2 * a.words} reads",
                               act_bytes=out.words * self.R))
        views[out_t] = View(out, flat=views[a_t].flat)
        if out_t not in self.g.outputs and len(consumers.get(out_t, [])) == 1:
            self.clampable[out_t] = self.tableable[out_t] = p

    def _table(self, node: Node, views) -> None:
        """A table activation: the ``table`` of the MATMUL/ADD that produced its input raw (no other
        reader, no fused pool), else an ADD descriptor with ``table_only`` (one read per word)."""
        src_t, out_t = node.inputs[0], node.outputs[0]
        producer = self.tableable.pop(src_t, None)
        if producer is not None and not producer.fields.get("table"):
            producer.fields["table"] = -1          # set to 1 + its store address at the end
            self.table_fix.append((producer, self._table_index(node)))
            self.clampable.pop(src_t, None)        # a later clamp would act after the table
            views[out_t] = views[src_t]
            return
        src = views[src_t].buf
        if src.kind != IN_STD:
            raise ConfigError(f"node {node.name!r}: internal error, table input in a window layout")
        out = self.std_buf(out_t, src.c, src.h, src.w)
        p = _Pending("ADD", {"words": src.words, "table": -1, "table_only": 1},
                     reads=[(src, "a_base")], writes=[(out, "out_base")])
        self.table_fix.append((p, self._table_index(node)))
        self.emit(p, LayerInfo(0, node.name, node.attrs["op_type"], f"{src.h}x{src.w}x{src.c}",
                               f"{src.words} reads", act_bytes=out.words * self.R))
        views[out_t] = View(out, flat=views[src_t].flat)

    def _concat(self, node: Node, views) -> None:
        """Concat along channels as placement: each input's producer writes straight into the output
        buffer at its channel-word offset (``out_cw0``) with the output's words per pixel (``out_pp``)."""
        out_t = node.outputs[0]
        c, h, w = self.shapes[out_t]
        out = self.std_buf(out_t, c, h, w)
        cw0 = 0
        for t in node.inputs:
            src = views[t].buf
            p = self.writer.get(src)
            if p is None or p.op not in ("MATMUL", "POOL") or any(b is src for q in self.pending for b, _ in q.reads) \
                    or (src.h, src.w) != (h, w):
                raise ConfigError(f"node {node.name!r}: Concat input {t!r} is not written by one Conv, Dense or "
                                  f"pool descriptor of its own, so it cannot be placed (run the Concat on the host)")
            p.writes = [(out if b is src else b, name) for b, name in p.writes]
            p.fields["out_pp"], p.fields["out_cw0"] = out.cws, cw0
            self.writer[out] = p
            cw0 += src.cws
        views[out_t] = View(out)

    # ---------------------------------------------------------------- memory
    def allocate(self) -> int:
        """First-fit over word addresses, in descriptor order; returns the peak word count."""
        first: dict[Buf, int] = {}
        last: dict[Buf, int] = {}
        for i, p in enumerate(self.pending):
            for b, _ in p.writes + p.reads:
                first.setdefault(b, i)
                last[b] = i
        free: list[tuple[int, int]] = [(0, 1 << 40)]   # (start, length), sorted
        peak = 0
        for i, p in enumerate(self.pending):
            for b, _ in p.writes:
                if b.base >= 0:
                    continue
                for j, (s, n) in enumerate(free):
                    if n >= b.words:
                        b.base = s
                        free[j] = (s + b.words, n - b.words)
                        break
                peak = max(peak, b.base + b.words)
            for b in [b for b in last if last[b] == i]:
                free.append((b.base, b.words))
                free.sort()
                merged = []
                for s, n in free:
                    if merged and merged[-1][0] + merged[-1][1] == s:
                        merged[-1] = (merged[-1][0], merged[-1][1] + n)
                    elif n:
                        merged.append((s, n))
                free = merged
        for p in self.pending:
            for b, name in p.writes + p.reads:
                p.fields[name] = b.base
        return peak


def _writes(op: str, f: dict) -> int:
    """Scratchpad writes of one descriptor (a fused pool writes each window once)."""
    if op == "INPUT":
        return f["h"] * (f["wpos"] if f["kind"] == IN_WINDOW else f["w"] * f["pp"])
    if op == "MATMUL":
        return f["out_h"] * f["out_w"] * f["n_tiles"]
    if op == "POOL":
        return f["out_h"] * f["out_w"] * f["cws"]
    if op == "ADD":
        return f["words"]
    return 0


def _kib(n_bytes: int) -> int:
    return max(1, _ceil(n_bytes, 1024))


def compile_model(qmodel, config: EngineConfig, *, source: str = "model") -> Compiled:
    """Compile ``qmodel`` (a ``QModel`` or its ``Graph``) for ``config``; ``ConfigError`` (one line) if
    it does not fit. Cycle predictions are added by ``qhw.engine.cycles.predict``."""
    graph = getattr(qmodel, "graph", qmodel)
    info = graph.inputs[0]
    if not all(isinstance(d, int) for d in info.shape[1:]):
        raise ConfigError(f"{source}: input {info.name!r} has shape {info.describe()}; an engine program needs "
                          f"every dimension but the batch fixed")
    check_model(graph, config.array, source)
    shapes = tensor_shapes(graph)
    segs = engine_segments(graph, shapes, config.array.rows)
    if not segs:
        raise ConfigError(f"{source}: no quantized Conv, Dense or pooling node the engine can run")
    b = _Builder(graph, config, shapes)
    for i, seg in enumerate(segs):
        b.segment(i, seg, last=i == len(segs) - 1)
    peak_words = b.allocate()
    b.dependences()
    weights = bytes(b.weights) + b"\0" * (-len(b.weights) % 4)
    params_offset = len(weights)
    for p, name, index in b.param_fix:
        p.fields[name] = params_offset + 4 * index if index >= 0 else 0
    for p, index in b.table_fix:     # ``table`` = 1 + the table's store address (0: no table)
        p.fields["table"] = params_offset + 4 * index + 1
    image = weights + np.asarray(b.params, dtype=np.int64).astype(np.uint32).astype("<u4").tobytes()
    descs = [Descriptor(p.op, p.fields) for p in b.pending]
    _check_units(descs, {layer.index: layer.name for layer in b.layers}, config, source)
    for d in descs:
        d.to_words()      # a field that does not fit its bits is refused here, naming it
    act_bytes = peak_words * config.word_bytes
    words = len(descs) * DESCRIPTOR_WORDS
    misfits, flags = [], []
    if len(image) > config.weight_bytes:
        misfits.append(f"weight/parameter store needs {len(image)} bytes but has {config.weight_bytes}")
        flags.append(f"--weight-kib {_kib(len(image))}")
    if act_bytes > config.act_bytes:
        need = _kib(act_bytes)
        while need * 1024 % config.word_bytes:
            need += 1
        misfits.append(f"activation scratchpad needs {act_bytes} bytes but has {config.act_bytes}")
        flags.append(f"--act-kib {need}")
    if words > config.program_words:
        misfits.append(f"program store needs {words} words but has {config.program_words}")
        flags.append(f"--program-words {words}")
    tables = len({p.fields["table"] for p in b.pending if p.fields.get("table")})
    if tables > config.tables:
        misfits.append(f"table memories need {tables} tables but have {config.tables}")
        flags.append(f"--tables {tables}")
    if misfits:
        raise ConfigError(f"{source}: does not fit the engine: {'; '.join(misfits)}; smallest that fits: "
                          f"{' '.join(flags)} (qhw compile, qhw generate --top network)")
    host = [n.name for n in graph.nodes if n.name not in {x.name for s in segs for x in s}]
    program = Program(rows=config.array.rows, cols=config.array.cols,
                      rounding=tuple(m for m in ("single", "tflite", "onnx") if m in b.modes),
                      weight_kib=config.weight_kib, act_kib=config.act_kib, program_words=config.program_words,
                      descriptors=descs, tensors=b.tensors, image=image, params_offset=params_offset,
                      act_bytes_used=act_bytes, segments=len(segs))
    return Compiled(program=program, layers=b.layers, config=config, host_nodes=host)


def _where(names: dict, i: int) -> str:
    """A descriptor named by its layer (``names``: index to layer name) or, without one, by its index."""
    return f"layer {names[i]!r}" if i in names else f"descriptor {i}"


def _check_units(descs, names: dict, config: EngineConfig, source: str) -> None:
    """Refuse (one line, naming the layer) a descriptor whose unit the engine was generated without."""
    for i, d in enumerate(descs):
        unit = next((u for u, op in OPTIONAL_UNITS.items() if op == d.op), None)
        if unit is not None and unit not in config.units:
            have = ",".join(config.units) or "none"
            raise ConfigError(f"{source}: {_where(names, i)} needs the engine's {unit} unit ({d.op}), but "
                              f"it was generated with --units {have} (regenerate with --units "
                              f"{','.join(u for u in OPTIONAL_UNITS if u in config.units or u == unit)})")


def units_used(program) -> tuple:
    """The optional units a compiled program's descriptors need (``qhw generate --units used``)."""
    ops = {d.op for d in program.descriptors}
    return tuple(u for u, op in OPTIONAL_UNITS.items() if op in ops)


def fit_engine(qmodel, array, *, source: str = "model") -> EngineConfig:
    """The smallest memories that hold ``qmodel`` on ``array`` (``qhw generate --for MODEL --top network``)."""
    big = EngineConfig(array=array, weight_kib=1 << 14, act_kib=1 << 14, program_words=1 << 20, tables=1 << 8)
    prog = compile_model(qmodel, big, source=source).program
    act = _kib(prog.act_bytes_used)
    while act * 1024 % big.word_bytes:
        act += 1
    tables = max(1, len({d["table"] for d in prog.descriptors if d.fields.get("table")}))
    return EngineConfig(array=array, weight_kib=_kib(len(prog.image)), act_kib=act, program_words=prog.words,
                        tables=tables)


# Pool rules the NetworkEngine hardware does not build yet (docs/engine.md, "Hardware notes"): the
# reference model runs them, the hardware would write wrong codes, so generate/simulate refuse them.
NOT_BUILT_RULES = ("onnx_float",)


def check_hardware(compiled: Compiled, *, source: str = "model") -> None:
    """Refuse (one line, naming the layer) a program that uses what ``NetworkEngine`` does not build."""
    _check_built(compiled.program.descriptors, {layer.index: layer.name for layer in compiled.layers},
                 compiled.config, source)


def check_program(program: Program, config: EngineConfig, *, source: str = "program") -> None:
    """Refuse (one line) a compiled ``program`` that ``config``'s hardware cannot run: another array
    shape or rounding, memories too small (program, weights, scratchpad, tables, the fused pools' line
    buffer), a unit left out (``units``), a pool rule not built (``pool_avg``, ``NOT_BUILT_RULES``).
    For a program compiled elsewhere (the board host checks it against the board's info frame); it
    names descriptors by index."""
    a = config.array
    if (program.rows, program.cols) != (a.rows, a.cols):
        raise ConfigError(f"{source}: the program is for a {program.rows}x{program.cols} array, the engine has "
                          f"{a.rows}x{a.cols}")
    missing = [r for r in program.rounding if r not in a.rounding]
    if missing:
        raise ConfigError(f"{source}: the program uses rounding {','.join(missing)}, the engine has "
                          f"{','.join(a.rounding)}")
    tables = len({d["table"] for d in program.descriptors if d.fields.get("table")})
    lines = [d["ow"] // max(1, d["pkw"]) for d in program.descriptors if d.op == "MATMUL" and d.fields.get("pool")]
    for what, need, have in (("program store words", program.words, config.program_words),
                             ("weight/parameter store bytes", len(program.image), config.weight_bytes),
                             ("activation scratchpad bytes", program.act_bytes_used, config.act_bytes),
                             ("table memories", tables, config.tables),
                             ("fused-pool line entries", max(lines, default=0), config.pool_line)):
        if need > have:
            raise ConfigError(f"{source}: the program needs {need} {what}, the engine has {have}")
    _check_units(program.descriptors, {}, config, source)
    _check_built(program.descriptors, {}, config, source)


def _check_built(descs, names: dict, config: EngineConfig, source: str) -> None:
    for i, d in enumerate(descs):
        rule = d.fields.get("rule") if d.op in ("MATMUL", "POOL") and d.fields.get("pool") else None
        if rule is not None and config.pool_avg == "div" and RULES[rule] in ("single", "tflite", "onnx_int"):
            raise ConfigError(f"{source}: {_where(names, i)}: the {RULES[rule]} average-pool rule (a pool "
                              f"that rescales) needs the pool requantization lanes; this engine was generated "
                              f"with --pool-avg div (regenerate with --pool-avg lane)")
        if rule is not None and RULES[rule] in NOT_BUILT_RULES:
            raise ConfigError(f"{source}: {_where(names, i)}: the {RULES[rule]} average-pool rule (ONNX "
                              f"Runtime's QLinearAveragePool, rounding onnx) is not built in the network engine; "
                              f"run this model with qhw generate --top accel, or quantize with --rounding single")
