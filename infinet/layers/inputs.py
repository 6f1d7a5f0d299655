"""The network's input: Σ0[p, p'] = (1/C) Σ_c x[p, c]·x'[p', c] (flat: x·x'/D); Θ0 = 0."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import NetError
from .base import MAX_SPATIAL_AXES, Layer, LayerCost, Shape, entries


@dataclass(frozen=True)
class Input(Layer):
    shape: Shape = Shape(())

    keyword = "input"
    summary = "the inputs: LxC sequences, HxWxC images, DxHxWxC volumes or D features"
    family = "input"
    locality = "input"
    arity = 0

    @classmethod
    def from_size(cls, pos, dims: tuple[int, ...], size_pos) -> "Input":
        """``input AxBx...xC``: the last number is the channels, the others spatial axes."""
        if len(dims) - 1 > MAX_SPATIAL_AXES:
            raise NetError(f"an input has at most {MAX_SPATIAL_AXES} spatial axes and channels "
                           f"(DxHxWxC), got {'x'.join(map(str, dims))}", size_pos)
        if min(dims) < 1:
            raise NetError("input sizes must be at least 1", size_pos)
        return cls(pos, Shape(tuple(dims[:-1]), dims[-1]))

    @classmethod
    def flat(cls, pos, features: int) -> "Input":
        return cls(pos, Shape((), features))

    def describe(self) -> str:
        return "input " + "x".join(map(str, self.shape.spatial + (self.shape.channels,)))

    def output_shape(self, inputs):
        return self.shape

    def cost(self, inputs, out, demand_in, demand_out, with_ntk):
        n = entries(out, demand_out)
        return LayerCost(n, 2 * (self.shape.channels or 1) * n, 0,
                         n * 8 * (2 if with_ntk else 1))
