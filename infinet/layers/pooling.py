"""Layers without weights that combine positions: pooling and the readouts.

avgpool w stride s:  Σ'[P, P'] = (1/|w|²) Σ_{a, a'} Σ[s·P + a, s·P' + a'] over every pair of
                     window taps (the covariance of two window means); same on Θ
sumpool w stride s:  the same without the 1/|w|² (window sums)
gap:                 the mean of Σ over all (p, p')          (a flat state)
flatten:             the mean of Σ over the diagonal p = p'  (a flat state)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import NetError, SourcePos
from .base import (WINDOW, Choice, Demand, Layer, LayerCost, Shape, Whole, all_offsets,
                   entries, zero_plane)
from .affine import check_spatial, check_window_rank, window_out


@dataclass(frozen=True)
class AvgPool(Layer):
    size: tuple[int, ...] = ()
    stride: int = 0            # 0: the window (one stride per axis, see strides())
    pad: str = "valid"
    size_pos: SourcePos | None = field(default=None, compare=False)

    keyword = "avgpool"
    window = WINDOW
    options = (Whole("stride", 0, "stride (every axis; default: the window)", minimum=1),
               Choice("pad", "valid", "padding", choices=("valid", "same")))
    summary = "average pooling (divided by the window, zeros of pad=same included)"
    family = "pool"
    locality = "mixing"

    def strides(self) -> tuple[int, ...]:
        return tuple(self.size) if self.stride == 0 else (self.stride,) * len(self.size)

    def axis_weight(self, axis: int) -> float:
        """The factor of the window-pair sum along one axis: 1/w² (a mean over tap pairs)."""
        w = self.size[axis]
        return 1.0 / (w * w)

    def describe(self) -> str:
        text = f"{self.keyword} {'x'.join(map(str, self.size))}"
        strides = self.strides()
        if strides != tuple(self.size):
            text += f" stride={strides[0]}"
        return text + (" pad=same" if self.pad == "same" else "")

    def output_shape(self, inputs):
        shape = inputs[0]
        check_spatial(self, shape, self.keyword)
        check_window_rank(self, self.size, shape, self.keyword)
        return Shape(tuple(window_out(self, n, w, s, self.pad, "pooling window")
                           for n, w, s in zip(shape.spatial, self.size, self.strides())),
                     shape.channels)

    def demand(self, needed: Demand, inputs, out):
        if needed is None:
            return [None]
        return [tuple(_pool_axis(n, w, s, offsets) for n, w, s, offsets in
                      zip(inputs[0].spatial, self.size, self.strides(), needed))]

    def cost(self, inputs, out, demand_in, demand_out, with_ntk):
        n = entries(out, demand_out)
        kernels = 2 if with_ntk else 1
        taps = math.prod(w * w for w in self.size)
        return LayerCost(n, kernels * taps * n, 0, n * 8 * kernels)


@dataclass(frozen=True)
class SumPool(AvgPool):
    """Window sums, not divided by the window (neural-tangents' SumPool)."""

    keyword = "sumpool"
    summary = "sum pooling (the window sums, not divided)"

    def axis_weight(self, axis: int) -> float:
        return 1.0


def _pool_axis(n: int, w: int, s: int, offsets) -> tuple[int, ...]:
    out = {s * d + k for d in offsets for k in range(-(w - 1), w)}
    return tuple(sorted(x for x in out if abs(x) < n))


class Readout(Layer):
    """A spatial state → one number per pair: the mean of Σ over some (p, p') pairs."""

    family = "readout"
    locality = "readout"
    #: "all": every (p, p') pair; "diagonal": p = p' only
    pairs: str = "all"

    def cost(self, inputs, out, demand_in, demand_out, with_ntk):
        n = entries(out, demand_out)
        kernels = 2 if with_ntk else 1
        return LayerCost(n, kernels * entries(inputs[0], demand_in[0]), 0, n * 8 * kernels)


@dataclass(frozen=True)
class GlobalAvgPool(Readout):
    keyword = "gap"
    summary = "global average pooling: the mean of Σ over all position pairs"
    pairs = "all"

    def output_shape(self, inputs):
        check_spatial(self, inputs[0], "gap")
        return Shape((), inputs[0].channels)

    def demand(self, needed, inputs, out):
        if needed is None:
            return [None]
        return [tuple(all_offsets(n) for n in inputs[0].spatial)]


@dataclass(frozen=True)
class Flatten(Readout):
    keyword = "flatten"
    summary = "flatten: the mean of Σ over the diagonal p = p'"
    pairs = "diagonal"
    mixes_features = True

    def output_shape(self, inputs):
        shape = inputs[0]
        if shape.is_flat:
            raise NetError("flatten on an input that is already flat", self.pos)
        return Shape((), None if shape.channels is None else shape.channels * shape.positions)

    def demand(self, needed, inputs, out):
        if needed is None:
            return [None]
        return [zero_plane(inputs[0])]
