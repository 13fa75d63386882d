"""Instruction-level reference model: executes an engine program on a scratchpad image.

The scratchpad is ``act_words`` words of ``rows`` int8 lanes (one per batch sample: samples are
independent inferences, vectorized here); the weight/parameter store is the program's image. Each
descriptor reads and writes the words ``qhw.engine.agen`` generates, so layouts, padding injection,
channel offsets and pooling windows are those the hardware sees; the arithmetic is the golden
model's own (``qhw.kernels``, ``qhw.arith``), no new math.
"""

from __future__ import annotations

import numpy as np

from ..arith import (
    Requant,
    add_with_multipliers,
    dequantize,
    divide_round_half_away,
    mul_scale_onnx,
    mul_shift_single,
    mul_shift_tflite,
    quantize_onnx_pool,
    saturate,
)
from ..errors import DataError
from ..hw.config import MODE_CODES
from ..kernels import avgpool2d_sequential, avgpool2d_sums, matmul_exact, maxpool2d
from .agen import PAD, k_tiles, matmul_reads, matmul_writes, pixel_words
from .isa import IN_WINDOW, POOL_AVG, POOL_NONE, RULES, Descriptor
from .program import Program

__all__ = ["EngineModel", "segment_ranges"]

_MODE_NAMES = {code: name for name, code in MODE_CODES.items()}


def segment_ranges(program: Program) -> list[tuple[int, int]]:
    """(first, end) descriptor indices of each segment (end is its HALT/END, exclusive)."""
    out, start = [], 0
    for i, d in enumerate(program.descriptors):
        if d.op in ("HALT", "END"):
            out.append((start, i))
            start = i + 1
    return out


class EngineModel:
    """Runs ``program`` on ``batch`` independent scratchpads of ``act_words`` words."""

    def __init__(self, program: Program, *, act_words: int | None = None):
        self.p = program
        self.R, self.C = program.rows, program.cols
        self.act_words = act_words or program.act_kib * 1024 // self.R
        self.image = np.frombuffer(program.image, dtype=np.uint8)
        self.mem: np.ndarray | None = None
        self.log: dict | None = None      # (descriptor, word, lane) -> values written (sample 0)
        self.current = 0

    # ---------------------------------------------------------------- store access
    def _int8(self, offset: int, count: int) -> np.ndarray:
        return self.image[offset:offset + count].view(np.int8).astype(np.int64)

    def _int32(self, offset: int, count: int) -> np.ndarray:
        return self.image[offset:offset + 4 * count].view("<i4").astype(np.int64)

    # ---------------------------------------------------------------- running
    def run_segment(self, segment: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feed a segment's input tensors (integer codes, batch first, logical ONNX shape), run it,
        return its output tensors the same way."""
        first, end = segment_ranges(self.p)[segment]
        batch = next(iter(inputs.values())).shape[0] if inputs else 1
        if self.mem is None or self.mem.shape[0] != batch:
            self.mem = np.zeros((batch, self.act_words, self.R), np.int8)
        outputs: dict[str, np.ndarray] = {}
        for i in range(first, end):
            self.current = i
            d = self.p.descriptors[i]
            getattr(self, f"_{d.op.lower()}")(d, inputs, outputs)
        return outputs

    def _record(self, words, lane: int, values) -> None:
        """Log writes of sample 0: ``words`` (N,) and ``values`` (N, lanes)."""
        if self.log is not None:
            words = np.asarray(words).reshape(-1)
            for w, v in zip(words.tolist(), np.asarray(values).reshape(words.size, -1).tolist()):
                self.log[(self.current, w, lane)] = tuple(v)

    def _gather(self, addr: np.ndarray, pad_value: int) -> np.ndarray:
        """Words at ``addr`` (any shape) as (batch, *addr.shape, rows) int64; ``PAD`` -> ``pad_value``."""
        words = self.mem[:, np.where(addr == PAD, 0, addr)].astype(np.int64)
        return np.where((addr == PAD)[None, ..., None], pad_value, words)

    def _input(self, d: Descriptor, inputs, outputs) -> None:
        t = self.p.tensors[d["tensor"]]
        try:
            x = np.asarray(inputs[t.name], dtype=np.int64)
        except KeyError:
            raise DataError(f"engine input {t.name!r} was not given") from None
        b = x.shape[0]
        pix = x.reshape(b, t.c, t.h, t.w).transpose(0, 2, 3, 1)       # the stream: pixels, channels dense
        if d["kind"] == IN_WINDOW:
            cp, g = d["cp"], self.R // d["cp"]
            padded = np.full((b, t.h, d["pl"] + t.w + d["pr"] + g, cp), d["zp"], np.int64)
            padded[:, :, d["pl"]:d["pl"] + t.w, :t.c] = pix
            j = np.arange(d["wpos"])[:, None] * d["sw"] + np.arange(g)[None, :]      # (wpos, g) padded x
            words = padded[:, :, j, :].reshape(b, t.h * d["wpos"], self.R)
            self.mem[:, d["out_base"]:d["out_base"] + words.shape[1]] = words
            self._record(d["out_base"] + np.arange(words.shape[1]), 0, words[0])
            return
        lanes = np.full((b, t.h, t.w, d["pp"] * self.R), d["zp"], np.int64)
        lanes[..., :t.c] = pix
        addr = pixel_words(d["out_base"], t.h, t.w, d["pp"], 0, d["pp"])
        self.mem[:, addr] = lanes.reshape(b, t.h, t.w, d["pp"], self.R)
        self._record(addr, 0, lanes[0])

    def _output(self, d: Descriptor, inputs, outputs) -> None:
        t = self.p.tensors[d["tensor"]]
        words = self._gather(pixel_words(d["in_base"], t.h, t.w, d["pp"], 0, d["pp"]), 0)
        b = words.shape[0]
        v = words.reshape(b, t.h, t.w, -1)[..., :t.c].transpose(0, 3, 1, 2)
        outputs[t.name] = v.reshape((b,) + t.logical_shape)

    def _halt(self, d, inputs, outputs) -> None:
        pass

    _end = _halt

    def _table(self, d: Descriptor, codes: np.ndarray) -> np.ndarray:
        """The 256-entry int8 table at store address ``table - 1``, indexed by code + 128."""
        return self._int8(d["table"] - 1, 256)[codes + 128] if d["table"] else codes

    def _add(self, d: Descriptor, inputs, outputs) -> None:
        """TFLite ADD (``qhw.arith.add_with_multipliers``, the golden model's Add) over ``words``
        contiguous words, or the table alone (``table_only``)."""
        n = d["words"]
        a = self.mem[:, d["a_base"]:d["a_base"] + n].astype(np.int64)
        if d["table_only"]:
            y = a
        else:
            b = self.mem[:, d["b_base"]:d["b_base"] + n].astype(np.int64)
            r = add_with_multipliers([a - d["a_zp"], b - d["b_zp"]], [(d["a_mul"], d["a_shift"]),
                                     (d["b_mul"], d["b_shift"])], (d["out_mul"], d["out_shift"]), d["left_shift"],
                                     mode=_MODE_NAMES[d["mode"]])
            y = saturate(r + d["zp"], d["qmin"], d["qmax"])
        y = self._table(d, y)
        self.mem[:, d["out_base"]:d["out_base"] + n] = y
        self._record(d["out_base"] + np.arange(n), 0, y[0])

    # ---------------------------------------------------------------- array
    def _requant(self, d: Descriptor, nt: int) -> tuple[np.ndarray, Requant]:
        blk = self._int32(d["p_base"] + nt * 16 * self.C, 4 * self.C).reshape(4, self.C)
        scale = blk[3].astype(np.uint32).view(np.float32)
        return blk[0], Requant(mode=_MODE_NAMES[d["mode"]], multiplier=blk[1], shift=blk[2], scale=scale,
                               zero_point=d["zp"], qmin=d["qmin"], qmax=d["qmax"])

    def _matmul(self, d: Descriptor, inputs, outputs) -> None:
        R, C = self.R, self.C
        nt_count, kt_count = d["n_tiles"], k_tiles(d)
        reads = matmul_reads(d)                                               # (NT, KT, M)
        beats = self._gather(reads, d["in_zp"])                               # (B, NT, KT, M, R)
        b, m = beats.shape[0], reads.shape[2]
        tiles = self._int8(d["w_base"], nt_count * kt_count * R * C).reshape(nt_count, kt_count * R, C)
        rows = np.empty((b, nt_count, m, C), np.int64)
        for nt in range(nt_count):
            x = beats[:, nt].transpose(0, 2, 1, 3).reshape(b * m, kt_count * R)
            bias, rq = self._requant(d, nt)
            rows[:, nt] = rq.apply(matmul_exact(x, tiles[nt]) + bias, axis=-1).reshape(b, m, C)
        rows = self._table(d, rows)
        waddr, lane0 = matmul_writes(d, R, C)
        if d["pool"] != POOL_NONE:
            pkh, pkw = d["pkh"], d["pkw"]
            oh, ow = d["oh"], d["ow"]
            x = rows.reshape(b, nt_count, oh, ow, C).transpose(0, 1, 4, 2, 3).reshape(b, nt_count * C, oh, ow)
            pooled = self._pool_math(d, x, (pkh, pkw), (pkh, pkw), (0, 0, 0, 0), False)
            ph, pw = pooled.shape[2:]
            m_idx = np.arange(m)
            oy, ox = m_idx // ow, m_idx % ow
            last = (oy % pkh == pkh - 1) & (ox % pkw == pkw - 1) & (waddr[0] != PAD)
            rows = np.zeros_like(rows)
            pv = pooled.reshape(b, nt_count, C, ph * pw).transpose(0, 1, 3, 2)
            rows[:, :, last] = pv[:, :, (oy[last] // pkh) * pw + ox[last] // pkw]
            waddr = np.where(last[None, :], waddr, PAD)
        for nt in range(nt_count):
            keep = waddr[nt] != PAD
            self.mem[:, waddr[nt][keep], lane0[nt]:lane0[nt] + C] = rows[:, nt][:, keep]
            self._record(waddr[nt][keep], int(lane0[nt]), rows[0, nt][keep])

    # ---------------------------------------------------------------- pooling
    def _pool_math(self, d: Descriptor, x: np.ndarray, kernel, strides, pads, include_pad: bool) -> np.ndarray:
        """The golden model's pooling rule (``qhw.ops``) selected by ``d['rule']``, NCHW int64."""
        rule = RULES[d["rule"]]
        geo = dict(kernel=tuple(kernel), strides=tuple(strides), pads=tuple(pads))
        if d["pool"] != POOL_AVG:
            return maxpool2d(x, pad_value=d["pool_qmin"], **geo)
        zp, qmin, qmax = d["pool_zp"], d["pool_qmin"], d["pool_qmax"]
        if rule == "onnx_float":
            s_in, s_out, offset = self._int32(d["pool_param"], 3)
            f = np.array([s_in, s_out], np.int64).astype(np.uint32).view(np.float32)
            v = avgpool2d_sequential(dequantize(x, f[0], d["pool_zp_in"]), count_include_pad=include_pad, **geo)
            return quantize_onnx_pool(v, f[1], zp, qmin, qmax, int(offset))
        total, count = avgpool2d_sums(x, zero_point=d["pool_zp_in"], count_include_pad=include_pad, **geo)
        if rule == "div":
            return saturate(divide_round_half_away(total, count) + zp, qmin, qmax)
        n = int(kernel[0]) * int(kernel[1])
        if rule == "onnx_int":
            scale = self._int32(d["pool_param"], n).astype(np.uint32).view(np.float32)[count - 1]
            return mul_scale_onnx(total, scale, qmin - zp, qmax - zp) + zp
        table = self._int32(d["pool_param"], 2 * n).reshape(n, 2)
        mul = mul_shift_single if rule == "single" else mul_shift_tflite
        return saturate(mul(total, table[count - 1, 0], table[count - 1, 1]) + zp, qmin, qmax)

    def _pool(self, d: Descriptor, inputs, outputs) -> None:
        h, w, cws = d["in_h"], d["in_w"], d["cws"]
        words = self._gather(pixel_words(d["in_base"], h, w, d["in_pp"], d["in_cw0"], cws), 0)
        b = words.shape[0]
        x = words.reshape(b, h, w, cws * self.R).transpose(0, 3, 1, 2)
        y = self._pool_math(d, x, (d["kh"], d["kw"]), (d["sh"], d["sw"]), (d["pt"], d["pl"], d["pb"], d["pr"]),
                            bool(d["include_pad"]))
        addr = pixel_words(d["out_base"], d["out_h"], d["out_w"], d["out_pp"], d["out_cw0"], cws)
        words = y.transpose(0, 2, 3, 1).reshape(b, d["out_h"], d["out_w"], cws, self.R)
        self.mem[:, addr] = words
        self._record(addr, 0, words[0])
