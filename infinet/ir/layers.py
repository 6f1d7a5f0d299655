"""Typed IR layers (what the network *is*, with every constant resolved).

The semantics of each layer (SPEC §2) live in the executors and the code
generator; this module only describes the layers and their shapes.  Every layer
keeps the position of the ``.net`` line it came from, so later stages can point
at it (error messages, comments in generated code, ``infinet explain``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SourcePos


@dataclass(frozen=True)
class Shape:
    """The shape of one input's features after a layer.

    ``spatial`` is (H, W) for images and () for flat vectors.  ``channels`` is the
    input's channel (or feature) count; hidden layers are infinitely wide (None).
    """

    spatial: tuple[int, ...]
    channels: int | None = None

    @property
    def is_flat(self) -> bool:
        return not self.spatial

    @property
    def positions(self) -> int:
        return math.prod(self.spatial)

    def __str__(self) -> str:
        width = "inf" if self.channels is None else str(self.channels)
        if self.is_flat:
            return f"flat x{width}" if self.channels is None else f"{width} features"
        return "x".join(str(n) for n in self.spatial) + "x" + width


def _fmt(x: float) -> str:
    return f"{x:.6g}"


@dataclass(frozen=True)
class Layer:
    pos: SourcePos

    #: short name used in tables and generated code
    kind = "layer"

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class Input(Layer):
    shape: Shape
    kind = "input"

    def describe(self) -> str:
        if self.shape.is_flat:
            return f"input {self.shape.channels}"
        return "input " + "x".join(map(str, self.shape.spatial + (self.shape.channels,)))


@dataclass(frozen=True)
class Dense(Layer):
    W: float
    b: float
    fixed: bool = False
    kind = "dense"

    def describe(self) -> str:
        return f"dense W={_fmt(self.W)} b={_fmt(self.b)}" + (" fixed" if self.fixed else "")


@dataclass(frozen=True)
class Conv(Layer):
    size: tuple[int, int]       # filter (kh, kw)
    stride: int
    pad: str                    # same | valid | circular
    W: float
    b: float
    fixed: bool = False
    kind = "conv"

    def describe(self) -> str:
        text = f"conv {self.size[0]}x{self.size[1]} pad={self.pad}"
        if self.stride != 1:
            text += f" stride={self.stride}"
        return text + f" W={_fmt(self.W)} b={_fmt(self.b)}" + (" fixed" if self.fixed else "")


@dataclass(frozen=True)
class Activation(Layer):
    """An elementwise nonlinearity.

    ``fn`` is ``abrelu`` (relu = abrelu 0,1; leaky_relu alpha = abrelu alpha,1),
    ``erf`` or ``identity``; ``name`` is what the user wrote.
    """

    fn: str
    name: str
    a: float = 0.0
    b: float = 1.0
    kind = "activation"

    @property
    def nonlinear(self) -> bool:
        return self.fn != "identity"

    def describe(self) -> str:
        if self.name == "abrelu":
            return f"abrelu a={_fmt(self.a)} b={_fmt(self.b)}"
        if self.name == "leaky_relu":
            return f"leaky_relu alpha={_fmt(self.a)}"
        return self.name


@dataclass(frozen=True)
class AvgPool(Layer):
    window: tuple[int, int]
    stride: tuple[int, int]
    pad: str                    # valid | same
    kind = "avgpool"

    def describe(self) -> str:
        text = f"avgpool {self.window[0]}x{self.window[1]}"
        if self.stride != self.window:
            text += f" stride={self.stride[0]}" if self.stride[0] == self.stride[1] else \
                f" stride={self.stride[0]}x{self.stride[1]}"
        return text + (" pad=same" if self.pad == "same" else "")


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    kind = "gap"


@dataclass(frozen=True)
class Flatten(Layer):
    kind = "flatten"


# -- geometry shared by every backend -------------------------------------------------

def conv_geometry(n: int, q: int, stride: int, pad: str) -> tuple[int, int]:
    """Output size and low-side padding of a conv/pool along one axis (SPEC §2).

    SAME: out = ceil(n/s), total padding max((out-1)s + q - n, 0), floor half low.
    VALID: out = floor((n-q)/s) + 1, no padding.  CIRCULAR: wrap-pads floor((q-1)/2)
    low and the rest high, then acts as VALID on n + q - 1 entries.
    """
    if pad == "same":
        out = -(-n // stride)
        total = max((out - 1) * stride + q - n, 0)
        return out, total // 2
    if pad == "valid":
        return (n - q) // stride + 1, 0
    if pad == "circular":
        return (n - 1) // stride + 1, (q - 1) // 2
    raise ValueError(pad)
