"""A per-layer cost model: covariance entries, arithmetic and bytes per pair of inputs.

Counts are for one pair (x, x') on the pair pass, or one input on the self pass, and
follow the direct algorithm every backend implements: a conv reads q_h*q_w input
entries per output entry for both Σ and Θ; an activation does a fixed amount of
arithmetic plus a few transcendental calls per entry; pooling reads w^4 entries per
output entry; readouts read each demanded entry once.  ``flops`` counts a multiply-add
as 2; ``transcendentals`` counts sqrt/atan2/asin calls separately (they cost tens of
flops each on every target).
"""
from __future__ import annotations

from dataclasses import dataclass

from .demand import Demand, entries
from .layers import (Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Input, Layer,
                     Shape)

# (flops, transcendentals) per entry for the Σ and Θ updates of each activation.
_ACTIVATION_COST = {
    "abrelu": (16, 2),   # sqrt, atan2
    "erf": (14, 3),      # sqrt, atan2 (arcsin form), reciprocal sqrt
    "identity": (0, 0),
}


@dataclass(frozen=True)
class LayerCost:
    entries: int           # entries of the output state, per pair
    flops: int             # arithmetic, per pair
    transcendentals: int   # sqrt / atan2 calls, per pair
    bytes: int             # output state bytes per pair at float64 (Σ and Θ)

    def __add__(self, other: "LayerCost") -> "LayerCost":
        return LayerCost(self.entries + other.entries, self.flops + other.flops,
                         self.transcendentals + other.transcendentals, self.bytes + other.bytes)


ZERO = LayerCost(0, 0, 0, 0)


def layer_cost(layer: Layer, shape_in: Shape, shape_out: Shape, demand_in: Demand,
               demand_out: Demand, with_ntk: bool = True) -> LayerCost:
    """Cost of producing the demanded part of a layer's output from its input."""
    n_out = entries(shape_out, demand_out)
    n_in = entries(shape_in, demand_in)
    kernels = 2 if with_ntk else 1
    if demand_out is None:
        return ZERO
    if isinstance(layer, Input):
        channels = layer.shape.channels or 1
        flops = 2 * channels * n_out
        trans = 0
    elif isinstance(layer, Conv):
        taps = layer.size[0] * layer.size[1]
        flops = kernels * 2 * taps * n_out + 2 * kernels * n_out
        trans = 0
    elif isinstance(layer, Dense):
        flops = 2 * kernels * n_out
        trans = 0
    elif isinstance(layer, Activation):
        per, trans_per = _ACTIVATION_COST[layer.fn]
        flops, trans = per * n_out, trans_per * n_out
    elif isinstance(layer, AvgPool):
        taps = (layer.window[0] * layer.window[1]) ** 2
        flops = kernels * taps * n_out
        trans = 0
    elif isinstance(layer, (GlobalAvgPool, Flatten)):
        flops = kernels * n_in
        trans = 0
    else:  # pragma: no cover
        raise AssertionError(type(layer))
    return LayerCost(n_out, flops, trans, n_out * 8 * kernels)
