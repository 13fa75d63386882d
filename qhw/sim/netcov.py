"""Functional coverage of the network top's bench (``qhw simulate --coverage`` on ``--top network``).

The same bins machinery as the accelerator's (``qhw.sim.funcov``: name -> hits, every bin listed
hit or not, shards merged with ``funcov.merge``), with the engine's cases:

* ``backpressure/load``, ``backpressure/i``: cycles the bench's ``valid`` waited for the engine's
  ``ready``; ``backpressure/o``: cycles the engine's ``valid`` waited for the bench's ``ready``;
* ``k_tiles/1``, ``k_tiles/many``: MATMUL descriptors run with one K tile, and with several;
* ``rounding/<mode>/tie``, ``saturate_high``, ``saturate_low``: requantized MATMUL outputs that round
  an exact half or clamp (``funcov.requant_cases``, for the engine's rounding modes);
* ``padding/top``, ``bottom``, ``left``, ``right``: MATMUL and POOL windows that cover padding on
  that side, and INPUT rows padded left / right for a sliding-window layout;
* ``pool/max_tie``: max-pooling windows whose maximum occurs more than once; ``pool/avg_tie``:
  averages that round an exact half (integer rules ``div``, ``single``, ``tflite``, ``onnx_int``);
* ``table/lookup``: values passed through a MATMUL's or an ADD's 256-entry table;
* ``add/run``, ``add/saturate``: ADD descriptors run, and ADD outputs clamped to ``[qmin, qmax]``;
* ``segments/many``: inferences of a program with several segments (host steps between);
* ``output/partial_beat``: OUTPUT tensors whose last beat is only partly filled.

The bins are counted on the reference model (``qhw.engine.model.EngineModel``) as the bench runs
it for each segment: every one of its writes is compared with the hardware's, so in a bit-exact
run the model's cases are the hardware's. Stream back-pressure is counted by the drivers.
"""

from __future__ import annotations

import numpy as np

from ..arith import Requant, add_with_multipliers, saturate
from ..engine.agen import k_tiles
from ..engine.isa import IN_WINDOW, POOL_AVG, RULES
from ..engine.model import _MODE_NAMES, EngineModel, segment_ranges
from ..kernels import avgpool2d_sums, pad_nchw, pool_windows
from .funcov import _ties, requant_cases

__all__ = ["STREAMS", "CoverageModel", "NetworkCoverage", "bin_names"]

STREAMS = ("load", "i", "o")
SIDES = ("top", "bottom", "left", "right")


def bin_names(rounding) -> list[str]:
    """Every bin of an engine whose array builds ``rounding`` modes, in report order."""
    names = [f"backpressure/{s}" for s in STREAMS] + ["k_tiles/1", "k_tiles/many"]
    names += [f"rounding/{mode}/{case}" for mode in rounding for case in ("tie", "saturate_high", "saturate_low")]
    names += [f"padding/{s}" for s in SIDES] + ["pool/max_tie", "pool/avg_tie", "table/lookup", "add/run",
                                                 "add/saturate", "segments/many", "output/partial_beat"]
    return names


class NetworkCoverage:
    """The bins of one bench (``bin_names``)."""

    def __init__(self, rounding):
        self.bins: dict[str, int] = dict.fromkeys(bin_names(rounding), 0)

    def hit(self, name: str, n: int = 1) -> None:
        self.bins[name] = self.bins.get(name, 0) + int(n)

    def inference(self, program) -> None:
        """Once per inference: the program's static cases."""
        if len(segment_ranges(program)) > 1:
            self.hit("segments/many")

    def add_backpressure(self, stalls: dict[str, int]) -> None:
        for s, v in stalls.items():
            self.hit(f"backpressure/{s}", v)

    def to_json(self) -> dict:
        return {"bins": dict(self.bins), "missed": [k for k, v in self.bins.items() if not v]}


def _padded_windows(h: int, w: int, d, *, rows: bool = True, cols: bool = True) -> dict[str, int]:
    """Windows (output pixels) of a ``kh x kw`` (stride ``sh/sw``, dilation ``dh/dw``, pads
    ``pt/pl/pb/pr``) window over an ``h x w`` input that reach into each side's padding."""
    oy, ox = np.arange(d["oh"]), np.arange(d["ow"])
    y0, x0 = oy * d["sh"] - d["pt"], ox * d["sw"] - d["pl"]
    y1 = y0 + (d["kh"] - 1) * max(d["dh"], 1)
    x1 = x0 + (d["kw"] - 1) * max(d["dw"], 1)
    out = dict.fromkeys(SIDES, 0)
    if rows:
        out["top"] = int(np.count_nonzero(y0 < 0)) * d["ow"]
        out["bottom"] = int(np.count_nonzero(y1 >= h)) * d["ow"]
    if cols:
        out["left"] = int(np.count_nonzero(x0 < 0)) * d["oh"]
        out["right"] = int(np.count_nonzero(x1 >= w)) * d["oh"]
    return out


class _RequantTap:
    """A ``Requant`` that counts the cases of what it requantizes (the model's MATMUL calls only
    ``apply``)."""

    def __init__(self, rq: Requant, cov: NetworkCoverage):
        self.rq, self.cov = rq, cov

    def apply(self, acc, axis=-1):
        for case, n in requant_cases(self.rq, acc).items():
            self.cov.hit(f"rounding/{self.rq.mode}/{case}", n)
        return self.rq.apply(acc, axis=axis)


class CoverageModel(EngineModel):
    """``EngineModel`` counting ``NetworkCoverage`` bins as it runs (sample 0 of each batch is the
    one the bench simulates)."""

    def __init__(self, program, *, act_words: int | None = None, coverage: NetworkCoverage):
        super().__init__(program, act_words=act_words)
        self.cov = coverage

    def _input(self, d, inputs, outputs) -> None:
        if d["kind"] == IN_WINDOW:
            h = self.p.tensors[d["tensor"]].h
            self.cov.hit("padding/left", h if d["pl"] else 0)
            self.cov.hit("padding/right", h if d["pr"] else 0)
        super()._input(d, inputs, outputs)

    def _output(self, d, inputs, outputs) -> None:
        t = self.p.tensors[d["tensor"]]
        if (t.h * t.w * t.c) % self.R:
            self.cov.hit("output/partial_beat")
        super()._output(d, inputs, outputs)

    def _requant(self, d, nt):
        bias, rq = super()._requant(d, nt)
        return bias, _RequantTap(rq, self.cov)

    def _table(self, d, codes):
        if d["table"]:
            self.cov.hit("table/lookup", np.size(codes))
        return super()._table(d, codes)

    def _matmul(self, d, inputs, outputs) -> None:
        self.cov.hit("k_tiles/1" if k_tiles(d) == 1 else "k_tiles/many")
        # a sliding-window input is padded left / right when it is written (INPUT)
        pads = _padded_windows(d["in_h"], d["in_w"], d, cols=d["in_kind"] != IN_WINDOW)
        for side, n in pads.items():
            self.cov.hit(f"padding/{side}", n)
        super()._matmul(d, inputs, outputs)

    def _pool(self, d, inputs, outputs) -> None:
        for side, n in _padded_windows(d["in_h"], d["in_w"], d).items():
            self.cov.hit(f"padding/{side}", n)
        super()._pool(d, inputs, outputs)

    def _pool_math(self, d, x, kernel, strides, pads, include_pad):
        y = super()._pool_math(d, x, kernel, strides, pads, include_pad)
        x = x[:1]                       # sample 0: the one simulated
        geo = dict(kernel=tuple(kernel), strides=tuple(strides), pads=tuple(pads))
        if d["pool"] != POOL_AVG:
            win = pool_windows(pad_nchw(np.asarray(x, np.int64), geo["pads"], d["pool_qmin"]), geo["kernel"],
                               geo["strides"])
            top = win.max(axis=(-2, -1), keepdims=True)
            self.cov.hit("pool/max_tie", np.count_nonzero((win == top).sum(axis=(-2, -1)) > 1))
            return y
        rule = RULES[d["rule"]]
        if rule == "onnx_float":
            return y
        total, count = avgpool2d_sums(x, zero_point=d["pool_zp_in"], count_include_pad=include_pad, **geo)
        count = np.broadcast_to(count, total.shape)
        if rule == "div":
            ties = (np.abs(total) % count) * 2 == count
        else:
            n = int(kernel[0]) * int(kernel[1])
            flat = total.reshape(1, -1)
            if rule == "onnx_int":
                scale = self._int32(d["pool_param"], n).astype(np.uint32).view(np.float32)[count - 1].reshape(-1)
                rq = Requant(mode="onnx", multiplier=np.zeros(1), shift=np.zeros(1), scale=scale, zero_point=0,
                             qmin=-128, qmax=127)
            else:
                table = self._int32(d["pool_param"], 2 * n).reshape(n, 2)
                rq = Requant(mode=rule, multiplier=table[count - 1, 0].reshape(-1),
                             shift=table[count - 1, 1].reshape(-1), scale=np.zeros(1), zero_point=0, qmin=-128,
                             qmax=127)
            ties = _ties(rq, flat)
        self.cov.hit("pool/avg_tie", np.count_nonzero(ties))
        return y

    def _add(self, d, inputs, outputs) -> None:
        self.cov.hit("add/run")
        if not d["table_only"]:
            n = d["words"]
            a = self.mem[:1, d["a_base"]:d["a_base"] + n].astype(np.int64)
            b = self.mem[:1, d["b_base"]:d["b_base"] + n].astype(np.int64)
            r = add_with_multipliers([a - d["a_zp"], b - d["b_zp"]], [(d["a_mul"], d["a_shift"]),
                                     (d["b_mul"], d["b_shift"])], (d["out_mul"], d["out_shift"]), d["left_shift"],
                                     mode=_MODE_NAMES[d["mode"]]) + d["zp"]
            self.cov.hit("add/saturate", np.count_nonzero(saturate(r, d["qmin"], d["qmax"]) != r))
        super()._add(d, inputs, outputs)

