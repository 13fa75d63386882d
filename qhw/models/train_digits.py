"""Train the built-in digits models and export them to ONNX (developers only; needs torch).

Run from the repository root:

    python qhw/models/train_digits.py

It writes ``digits_mlp.onnx`` and ``digits_cnn.onnx`` next to this file and
prints their test accuracies. qhw never imports this script; at run time it
only reads the exported ONNX files. Data and split come from
``qhw.datasets.digits_split`` so there is one definition of both.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

OUT_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(OUT_DIR.parents[1]))  # the repository root, for qhw.datasets

SEED = 0
OPSET = 13
ALLOWED_OPS = {"Conv", "BatchNormalization", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"}


def make_mlp() -> nn.Module:
    """Flatten -> Linear(64,64) -> ReLU -> Linear(64,32) -> ReLU -> Linear(32,10)."""
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64, 64)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(64, 32)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(32, 10)),
    ]))


def make_cnn() -> nn.Module:
    """Three Conv3x3-BN-ReLU blocks (MaxPool after the second), global average pool, Linear."""
    layers: list[tuple[str, nn.Module]] = []
    for i, (cin, cout) in enumerate(((1, 8), (8, 16), (16, 32)), start=1):
        layers += [(f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1)),
                   (f"bn{i}", nn.BatchNorm2d(cout)), (f"relu{i}", nn.ReLU())]
        if i == 2:
            layers.append(("pool", nn.MaxPool2d(2)))
    layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(32, 10))]
    return nn.Sequential(OrderedDict(layers))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float) -> None:
    """Adam on cross-entropy, mini-batches of 32 in a seeded order."""
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == y).mean())


def export(model: nn.Module, path: Path) -> None:
    """Export with the TorchScript exporter, keeping BatchNormalization unfolded.

    ``TrainingMode.PRESERVE`` with the model in eval mode skips the exporter's
    Conv+BN fusion (qhw folds BN itself) while BN still exports in inference
    form (running statistics as initializers, one output).
    """
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based", category=DeprecationWarning)
    torch.onnx.export(
        model, (torch.zeros(1, 1, 8, 8),), str(path),
        dynamo=False, opset_version=OPSET,
        input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
    )
    proto = onnx.load(str(path))
    proto.producer_name, proto.producer_version = "qhw/models/train_digits.py", ""
    proto.doc_string = ""
    onnx.save(proto, str(path))


def check(path: Path, x: np.ndarray, expected: np.ndarray) -> list[str]:
    """Validate the file, compare onnxruntime to torch, return the op list."""
    import onnxruntime as ort

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    if not set(ops) <= ALLOWED_OPS:
        raise SystemExit(f"{path.name}: unexpected ops {sorted(set(ops) - ALLOWED_OPS)}")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"x": x})[0]
    err = float(np.abs(got - expected).max())
    if err > 1e-4:
        raise SystemExit(f"{path.name}: onnxruntime differs from torch by {err}")
    return ops


def main() -> None:
    from qhw.datasets import digits_split

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    split = digits_split()
    x_tr, y_tr = (torch.from_numpy(a) for a in split["train"])
    x_te, y_te = split["test"]

    for name, make, epochs, lr in (("digits_mlp", make_mlp, 60, 3e-3), ("digits_cnn", make_cnn, 40, 3e-3)):
        torch.manual_seed(SEED)
        model = make()
        train(model, x_tr, y_tr, epochs=epochs, lr=lr)
        with torch.no_grad():
            ref = model(torch.from_numpy(x_te)).numpy()
        path = OUT_DIR / f"{name}.onnx"
        export(model, path)
        ops = check(path, x_te, ref)
        print(f"{name}: test accuracy {100 * accuracy(ref, y_te):.2f}% "
              f"({path.stat().st_size} bytes) ops: {' '.join(ops)}")


if __name__ == "__main__":
    main()
