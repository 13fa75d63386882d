"""The model graph qhw works on: float nodes with optional integer annotations.

One graph serves both executions. The float reference ignores ``Node.quant``;
the integer golden model runs every node that has ``quant`` in the integer
domain and every other node in float, converting tensors at the boundaries with
the tensor's ``QParams`` (this is partial quantization). Graphs are plain data:
JSON attributes and NumPy arrays, so they serialize without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arith import qrange

__all__ = ["QParams", "TensorInfo", "Node", "Graph", "LINEAR_OPS"]

# Ops whose weights are quantized and whose outputs go through requantization.
LINEAR_OPS = ("Dense", "Conv")


@dataclass(frozen=True)
class QParams:
    """Per-tensor activation quantization: real = scale * (q - zero_point), q in [qmin, qmax].

    Codes are always signed; ``unsigned`` records that the source model stored them as
    unsigned (code + 2**(bits-1)), which one ONNX Runtime rounding rule depends on.
    """

    scale: float
    zero_point: int
    bits: int = 8
    unsigned: bool = False

    @property
    def code_offset(self) -> int:
        """What the source model's codes add to qhw's signed codes (128 for uint8, else 0)."""
        return 1 << (self.bits - 1) if self.unsigned else 0

    @property
    def qmin(self) -> int:
        return qrange(self.bits)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits)[1]

    def to_json(self) -> dict:
        return {"scale": float(self.scale), "zero_point": int(self.zero_point), "bits": int(self.bits),
                "unsigned": bool(self.unsigned)}

    @classmethod
    def from_json(cls, d: dict) -> QParams:
        return cls(scale=float(d["scale"]), zero_point=int(d["zero_point"]), bits=int(d["bits"]),
                   unsigned=bool(d.get("unsigned", False)))


@dataclass(frozen=True)
class TensorInfo:
    """A graph input: name, shape (ints, or strings for symbolic dimensions) and dtype name."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def matches(self, shape: tuple) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d == s for d, s in zip(self.shape, shape))

    def describe(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + ")"


@dataclass
class Node:
    """One operation. ``params`` hold float arrays (and constant inputs); ``quant`` holds
    the integer-domain settings and ``qparams`` its integer arrays, when quantized."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    quant: dict | None = None
    qparams: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"node {self.name!r} ({self.attrs.get('op_type', self.op)})"


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[TensorInfo]
    outputs: list[str]
    opset: int = 13
    tensors: dict[str, QParams] = field(default_factory=dict)  # activation quantization

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def quantized_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.quant is not None]

    def linear_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op in LINEAR_OPS]
