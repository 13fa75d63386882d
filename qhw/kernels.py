"""Integer compute kernels of the golden model: exact matmul, im2col convolution, pooling.

Pure NumPy math on arrays, no graphs. Accumulation is exact: float BLAS when
every partial sum provably stays below the format's integer limit (float32:
2**24, float64: 2**53 — integer products and sums below the limit are exact,
whatever order BLAS adds in), int64 matmul otherwise.
"""

from __future__ import annotations

import numpy as np

from .arith import divide_round_half_away

__all__ = [
    "FLOAT32_EXACT_LIMIT",
    "FLOAT64_EXACT_LIMIT",
    "exact_float_dtype",
    "matmul_exact",
    "float64_is_exact",
    "pad_nchw",
    "zero_insert",
    "im2col",
    "conv2d_int",
    "conv2d_float",
    "pool_windows",
    "maxpool2d",
    "avgpool2d_sums",
    "avgpool2d_int",
    "avgpool2d_float",
    "avgpool2d_sequential",
]

FLOAT32_EXACT_LIMIT = 1 << 24
FLOAT64_EXACT_LIMIT = 1 << 53


def _absmax(a: np.ndarray) -> int:
    return max(int(a.max()), -int(a.min())) if a.size else 0  # no |a| temporary


def exact_float_dtype(a: np.ndarray, b: np.ndarray, k: int | None = None):
    """The narrowest float dtype whose matmul of integer arrays ``a @ b`` is exact
    (K·max|a|·max|b| below 2**24 or 2**53), or None when only int64 is."""
    if a.size == 0 or b.size == 0:
        return np.float32
    k = a.shape[-1] if k is None else k
    bound = k * _absmax(a) * _absmax(b)
    if bound < FLOAT32_EXACT_LIMIT:
        return np.float32
    if bound < FLOAT64_EXACT_LIMIT:
        return np.float64
    return None


def float64_is_exact(a: np.ndarray, b: np.ndarray, k: int | None = None) -> bool:
    """True when float64 matmul of integer arrays ``a @ b`` is exact: K·max|a|·max|b| < 2**53."""
    return exact_float_dtype(a, b, k) is not None


def matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer ``a @ b`` as int64 (float BLAS when exact, else int64 NumPy)."""
    a = np.asarray(a)
    b = np.asarray(b)
    dt = exact_float_dtype(a, b)
    if dt is not None:
        return np.matmul(a.astype(dt), b.astype(dt)).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def pad_nchw(x: np.ndarray, pads: tuple[int, int, int, int], value) -> np.ndarray:
    """Pad H and W of an NCHW array; ``pads`` = (top, left, bottom, right)."""
    t, l, b, r = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def zero_insert(x: np.ndarray, strides: tuple[int, int], value) -> np.ndarray:
    """``strides - 1`` elements of ``value`` between neighbours along H and W: a transposed
    convolution with these strides is a stride-1 convolution over the result."""
    sh, sw = strides
    if sh == 1 and sw == 1:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, (h - 1) * sh + 1, (w - 1) * sw + 1), value, dtype=x.dtype)
    out[:, :, ::sh, ::sw] = x
    return out


def pool_windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
                 dilations: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Sliding windows of an (already padded) NCHW array: shape (N, C, OH, OW, KH, KW), a view."""
    kh, kw = kernel
    sh, sw = strides
    dh, dw = dilations
    n, c, h, w = x.shape
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, shape=(n, c, oh, ow, kh, kw),
        strides=(s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw), writeable=False)


def im2col(x: np.ndarray, kernel, strides, dilations=(1, 1)) -> np.ndarray:
    """Patches of a padded NCHW array as (N, OH, OW, KH, KW, C), C-contiguous.

    The windows are taken over an NHWC copy of the input (seen through an NCHW view), so
    each tap copies a contiguous run of channels: much faster than gathering NCHW planes.
    """
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    win = pool_windows(nhwc.transpose(0, 3, 1, 2), kernel, strides, dilations)  # (N, C, OH, OW, KH, KW)
    return np.ascontiguousarray(win.transpose(0, 2, 3, 4, 5, 1))


def _grouped_conv(cols: np.ndarray, w: np.ndarray, group: int, matmul) -> np.ndarray:
    """cols (N, OH, OW, KH, KW, C), w (M, C/g, KH, KW) -> (N, M, OH, OW), one batched product."""
    n, oh, ow, kh, kw, c = cols.shape
    m = w.shape[0]
    cg, mg = c // group, m // group
    p = n * oh * ow
    if group == 1:
        y = matmul(cols.reshape(p, kh * kw * c), w.transpose(0, 2, 3, 1).reshape(m, -1).T)
        return y.reshape(n, oh, ow, m).transpose(0, 3, 1, 2)
    a = cols.reshape(p, kh * kw, group, cg).transpose(2, 0, 1, 3).reshape(group, p, kh * kw * cg)
    b = w.reshape(group, mg, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(group, kh * kw * cg, mg)
    y = matmul(a, b).transpose(1, 0, 2).reshape(n, oh, ow, m)              # channel = g*Mg + j
    return y.transpose(0, 3, 1, 2)


def conv2d_int(xq: np.ndarray, wq: np.ndarray, *, pads, strides, dilations, group: int,
               x_zero: int, w_zero=0) -> np.ndarray:
    """Exact integer convolution sum((x - x_zero) * (w - w_zero)) as int64 NCHW.

    Padding uses ``x_zero`` (the quantized real zero), so padded taps add nothing.
    The exactness bound is checked on the input and the weights, before im2col, so the
    patches are built directly in the dtype the product runs in.
    """
    xs = pad_nchw(np.asarray(xq, dtype=np.int64), pads, x_zero) - x_zero
    wz = np.asarray(w_zero, dtype=np.int64)
    if wz.ndim:
        wz = wz.reshape(-1, 1, 1, 1)
    ws = np.asarray(wq, dtype=np.int64) - wz
    dt = exact_float_dtype(xs, ws, int(np.prod(ws.shape[1:])))
    if dt is not None:
        xs, ws = xs.astype(dt), ws.astype(dt)
    cols = im2col(xs, ws.shape[2:], strides, dilations)
    return _grouped_conv(cols, ws, group, np.matmul).astype(np.int64)


def conv2d_float(x: np.ndarray, w: np.ndarray, *, pads, strides, dilations, group: int) -> np.ndarray:
    """Float32 convolution (the float reference), NCHW."""
    xs = pad_nchw(np.asarray(x, dtype=np.float32), pads, 0.0)
    cols = im2col(xs, w.shape[2:], strides, dilations)
    return _grouped_conv(cols, np.asarray(w, dtype=np.float32), group, np.matmul)


def maxpool2d(x: np.ndarray, *, kernel, strides, pads, pad_value, dilations=(1, 1)) -> np.ndarray:
    """Max pooling; padded taps hold ``pad_value`` (the type's minimum)."""
    win = pool_windows(pad_nchw(x, pads, pad_value), kernel, strides, dilations)
    return win.max(axis=(-2, -1))


def _valid_counts(shape_hw, kernel, strides, pads, include_pad: bool) -> np.ndarray:
    h, w = shape_hw
    ones = pad_nchw(np.ones((1, 1, h, w), dtype=np.int64), pads, 1 if include_pad else 0)
    return pool_windows(ones, kernel, strides).sum(axis=(-2, -1))[0, 0]


def avgpool2d_sums(xq: np.ndarray, *, kernel, strides, pads, zero_point: int,
                   count_include_pad: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Window sums of (q - zp) and the number of taps each averages (padded taps are real zeros)."""
    xs = np.asarray(xq, dtype=np.int64) - zero_point
    win = pool_windows(pad_nchw(xs, pads, 0), kernel, strides)
    count = _valid_counts(xs.shape[2:], kernel, strides, pads, count_include_pad)
    return win.sum(axis=(-2, -1)), count


def avgpool2d_int(xq: np.ndarray, *, kernel, strides, pads, zero_point: int,
                  count_include_pad: bool = False) -> np.ndarray:
    """Integer average pool of the ``single``/``tflite`` modes: mean of (q - zp) rounded half
    away from zero, plus zp (scale and zero point pass through)."""
    total, count = avgpool2d_sums(xq, kernel=kernel, strides=strides, pads=pads, zero_point=zero_point,
                                  count_include_pad=count_include_pad)
    return divide_round_half_away(total, count) + zero_point


def avgpool2d_sequential(x: np.ndarray, *, kernel, strides, pads, count_include_pad: bool = False) -> np.ndarray:
    """Float32 average pool summing taps one at a time in row-major order, then dividing by
    the tap count: the order ONNX Runtime's QLinearAveragePool uses, so rounding matches."""
    win = pool_windows(pad_nchw(np.asarray(x, dtype=np.float32), pads, 0.0), kernel, strides)
    acc = np.zeros(win.shape[:4], np.float32)
    for i in range(win.shape[4]):  # a loop over kernel taps, vectorized over everything else
        for j in range(win.shape[5]):
            acc += win[..., i, j]
    count = _valid_counts(x.shape[2:], kernel, strides, pads, count_include_pad)
    return acc / count.astype(np.float32)


def avgpool2d_float(x: np.ndarray, *, kernel, strides, pads, count_include_pad: bool = False) -> np.ndarray:
    win = pool_windows(pad_nchw(np.asarray(x, dtype=np.float32), pads, 0.0), kernel, strides)
    count = _valid_counts(x.shape[2:], kernel, strides, pads, count_include_pad)
    return (win.sum(axis=(-2, -1)) / count).astype(np.float32)
