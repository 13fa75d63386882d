"""Model-zoo-style architectures (bench/zoo.py: onnx.helper, seeded random weights, 32x32 inputs)
through qhw end to end: every node integer, ONNX Runtime's own QDQ models reproduced exactly in
``onnx`` rounding, qhw's QDQ export run by ONNX Runtime equal to ``qhw run``, and the command line
without tracebacks. ORT is the independent reference; see tests/ort_ref.py for the weight range
this CPU's ORT int8 kernels compute exactly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ort_ref import SATURATION_FREE_WEIGHT_BITS, U8S8_EXACT, lsb_mismatches, ort_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import zoo  # noqa: E402  (bench/zoo.py: test and benchmark scaffolding, not part of the package)

from qhw.api import quantize_model, run_batched  # noqa: E402
from qhw.cli import main as qhw_main  # noqa: E402
from qhw.export_onnx import export_qdq  # noqa: E402
from qhw.quantize import QuantConfig  # noqa: E402

ARCHS = list(zoo.ARCHS)
CALIB_SEED, TEST_SEED = 1, 2


@pytest.fixture(scope="module")
def data():
    return {"calib": zoo.images(32, seed=CALIB_SEED), "test": zoo.images(32, seed=TEST_SEED)}


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


def _float_model(zoo_dir: Path, arch: str, opset: int | None = None) -> Path:
    path = zoo_dir / f"{arch}_{opset}.onnx"
    if not path.exists():
        onnx.save(zoo.build(arch, seed=0, opset=opset), path)
    return path


def _quiet(m):
    pass


# --------------------------------------------------------------------------- everything integer


# Every architecture at its default opset, and in the old zoo form (opset 9) where its ops existed
# then (MobileNet-v2's HardSwish is opset 14).
OPSET_CASES = [(arch, None) for arch in ARCHS] + [(arch, 9) for arch in ARCHS if arch != "mobilenetv2"]


@pytest.mark.parametrize("arch, opset", OPSET_CASES, ids=[f"{a}-{o or 'default'}" for a, o in OPSET_CASES])
def test_float_model_quantizes_every_node(arch, opset, zoo_dir, data):
    qm = quantize_model(_float_model(zoo_dir, arch, opset), QuantConfig(), calib_x=data["calib"], log=_quiet)
    float_nodes = [n.label for n in qm.graph.nodes if n.quant is None]
    assert float_nodes == []
    assert not [n for n in qm.notes if "float" in n], qm.notes
    yf = run_batched(qm.graph, data["test"], integer=False)
    np.testing.assert_allclose(yf, ort_output(_float_model(zoo_dir, arch, opset), data["test"]), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- ORT quantize_static


def _ort_qdq(zoo_dir: Path, arch: str, per_channel: bool, calib: np.ndarray) -> Path:
    """ORT's recommended flow: quant_pre_process (fuses BatchNormalization), then quantize_static
    QDQ, int8 activations and weights (7-bit weights where ORT's kernels saturate)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = zoo_dir / f"{arch}_qdq{int(per_channel)}.onnx"
    if dst.exists():
        return dst

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"x": calib[i:i + 8]} for i in range(0, len(calib), 8))

        def get_next(self):
            return next(self.batches, None)

    pre = zoo_dir / f"{arch}_pre.onnx"
    logging.disable(logging.WARNING)  # ORT's quantizer logs advice at WARNING level
    try:
        if not pre.exists():
            quant_pre_process(str(_float_model(zoo_dir, arch)), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                        reduce_range=not U8S8_EXACT)
    finally:
        logging.disable(logging.NOTSET)
    return dst


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("arch", ARCHS)
def test_ort_qdq_model_reproduced_exactly(arch, per_channel, zoo_dir, data):
    path = _ort_qdq(zoo_dir, arch, per_channel, data["calib"])
    qm = quantize_model(path, QuantConfig(rounding="onnx"), calib_x=None, log=_quiet)
    x = data["test"]
    assert lsb_mismatches(qm, run_batched(qm.graph, x, integer=True), ort_output(path, x)) == 0


def test_ort_qdq_models_exercise_orts_unfused_groups(zoo_dir, data):
    """The cases above include the groups ORT runs in float because a tensor feeding two nodes stays
    int8 while single-consumer ones become uint8 (Conv, AveragePool), and a Q/DQ pair between two
    float nodes (DenseNet's Mul -> Add by constants), so their exactness is tested."""
    def mixed(arch, op):
        qm = quantize_model(_ort_qdq(zoo_dir, arch, False, data["calib"]), QuantConfig(rounding="onnx"),
                            calib_x=None, log=_quiet)
        return [n.name for n in qm.graph.nodes if n.op == op and len(set(n.quant.get("onnx_offsets") or [0])) > 1]

    assert mixed("resnet", "Conv") and mixed("shufflenet", "AveragePool")
    qm = quantize_model(_ort_qdq(zoo_dir, "densenet", False, data["calib"]), QuantConfig(rounding="onnx"),
                        calib_x=None, log=_quiet)
    float_mul = [n for n in qm.graph.nodes if n.quant is None and n.attrs.get("op_type") == "Mul"]
    assert float_mul and all(n.outputs[0] in qm.graph.tensors for n in float_mul)


# --------------------------------------------------------------------------- qhw's export


@pytest.mark.parametrize("arch", ARCHS)
def test_export_onnx_run_by_ort_equals_qhw_run(arch, zoo_dir, data, tmp_path):
    cfg = QuantConfig(rounding="onnx", weight_bits=SATURATION_FREE_WEIGHT_BITS)     # see tests/ort_ref.py
    qm = quantize_model(_float_model(zoo_dir, arch), cfg, calib_x=data["calib"], log=_quiet)
    out = tmp_path / f"{arch}.qdq.onnx"
    export_qdq(qm, out)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    x = data["test"]
    assert lsb_mismatches(qm, run_batched(qm.graph, x, integer=True), ort_output(out, x)) == 0


# --------------------------------------------------------------------------- command line


def _cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = qhw_main(argv)
    return rc, out.getvalue() + err.getvalue()


@pytest.mark.parametrize("arch", ["resnet", "shufflenet", "squeezenet", "inception", "densenet"])
def test_cli_quantize_analyze_export_without_traceback(arch, zoo_dir, data, tmp_path):
    np.savez(tmp_path / "calib.npz", x=data["calib"])
    np.savez(tmp_path / "test.npz", x=data["test"][:4])
    qmodel, out = str(tmp_path / "m.qhw"), str(tmp_path / "m.qdq.onnx")
    for argv in (["quantize", str(_float_model(zoo_dir, arch, 9)), "--calib", str(tmp_path / "calib.npz"),
                  "-o", qmodel],
                 ["analyze", qmodel, "--data", str(tmp_path / "test.npz"), "--json"],
                 ["export-onnx", qmodel, "-o", out]):
        rc, text = _cli(argv)
        assert rc == 0, text
        assert "Traceback" not in text
    onnx.checker.check_model(onnx.load(out), full_check=True)
    ort.InferenceSession(out, providers=["CPUExecutionProvider"])
