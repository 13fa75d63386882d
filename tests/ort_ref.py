"""What this machine's ONNX Runtime computes exactly, for tests that compare against it.

ORT's x86 int8 GEMM without VNNI (AVX2, AVX-512BW) multiplies u8 x s8 with ``VPMADDUBSW``,
whose pairwise int16 sums saturate when ``|a0*w0 + a1*w1| > 32767`` (int8 activations are
shifted to u8 first). With full-range int8 weights its QLinearConv / QLinearMatMul (and the
fused QDQ groups) then differ from the QDQ definition by tens of LSB; ORT documents this and
recommends 7-bit weights (``quantize_static(reduce_range=True)``). With weight codes in
[-64, 63] no pair can saturate (2 * 255 * 64 = 32640), so the comparison is exact again.
On VNNI CPUs (and non-x86) the full int8 range is exact and is what the tests use.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

__all__ = ["U8S8_EXACT", "WEIGHT_CODE_RANGE", "SATURATION_FREE_WEIGHT_BITS", "lsb_mismatches", "ort_output"]


def _x86_without_vnni() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True         # unknown: assume the saturating kernel
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


U8S8_EXACT = not _x86_without_vnni()
# Raw int8 weight codes ORT multiplies exactly on this CPU.
WEIGHT_CODE_RANGE = (-128, 127) if U8S8_EXACT else (-64, 63)
# qhw --weight-bits whose codes stay in that range (4 when 8 would saturate: qhw has no 7-bit weights).
SATURATION_FREE_WEIGHT_BITS = 8 if U8S8_EXACT else 4


def ort_output(path, x):
    """ONNX Runtime's first output for ``x`` fed to the model's first input (default optimizations)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def lsb_mismatches(qm, ours, theirs) -> int:
    """Outputs of a quantized model differing from another result by more than 1 % of an output LSB."""
    scale = qm.graph.tensors[qm.graph.outputs[0]].scale
    return int(np.count_nonzero(np.abs(ours - theirs) > scale / 100))
