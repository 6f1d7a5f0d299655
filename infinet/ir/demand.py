"""Demand analysis (SPEC §2.1): which spatial offsets d = p' - p each state needs.

Working backwards from the readout: flatten needs offset 0 only, gap needs every
offset, a conv keeps the set (times its stride), an avgpool of window w and stride s
turns a coarse offset D into the fine offsets s*D-(w-1) .. s*D+(w-1).  Every layer acts
on each spatial axis separately, so a demand is a product of per-axis offset sets:

* ``None``       nothing of this state is needed;
* ``()``         a flat state (one number per pair) is needed;
* ``(Dh, Dw)``   sorted offset tuples per axis, for an image state.

Two demands are computed for a plan.  The *pair* demand is what K(x, x') needs.  The
*self* demand is what the per-input pass needs to produce every nonlinearity's input
variances v(x)[p] (offset 0 at that layer, plus whatever the pooling layers before
it need to produce that).
"""
from __future__ import annotations

from typing import Optional

from .layers import (Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Layer, Shape,
                     conv_geometry)

AxisOffsets = tuple[int, ...]
Demand = Optional[tuple[AxisOffsets, ...]]


def union(a: Demand, b: Demand) -> Demand:
    """Smallest product set holding both (per-axis union)."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(tuple(sorted(set(x) | set(y))) for x, y in zip(a, b))


def all_offsets(n: int) -> AxisOffsets:
    return tuple(range(-(n - 1), n))


def pairs_per_axis(n: int, offsets: AxisOffsets) -> int:
    """How many (p, p + d) pairs with both ends inside an axis of size n."""
    return sum(n - abs(d) for d in offsets if abs(d) < n)


def entries(shape: Shape, demand: Demand) -> int:
    """Covariance entries per pair of inputs that a state with this demand stores."""
    if demand is None:
        return 0
    count = 1
    for n, offsets in zip(shape.spatial, demand):
        count *= pairs_per_axis(n, offsets)
    return count


def backward(layer: Layer, shape_in: Shape, shape_out: Shape, needed: Demand) -> Demand:
    """The demand on a layer's input state, given the demand on its output state."""
    if needed is None:
        return None
    if isinstance(layer, (Dense, Activation)):
        return needed
    if isinstance(layer, GlobalAvgPool):
        return tuple(all_offsets(n) for n in shape_in.spatial)
    if isinstance(layer, Flatten):
        return tuple((0,) for _ in shape_in.spatial)
    if isinstance(layer, Conv):
        return tuple(_conv_axis(n, layer.stride, layer.pad, offsets)
                     for n, offsets in zip(shape_in.spatial, needed))
    if isinstance(layer, AvgPool):
        return tuple(_pool_axis(n, w, s, offsets)
                     for n, w, s, offsets in zip(shape_in.spatial, layer.window, layer.stride,
                                                 needed))
    raise AssertionError(type(layer))  # pragma: no cover


def _conv_axis(n: int, stride: int, pad: str, offsets: AxisOffsets) -> AxisOffsets:
    out: set[int] = set()
    for d in offsets:
        fine = stride * d
        if pad == "circular":
            r = fine % n       # wrapped pairs differ by r or r - n
            out.update(x for x in (r, r - n) if abs(x) < n)
        elif abs(fine) < n:
            out.add(fine)
    return tuple(sorted(out))


def _pool_axis(n: int, w: int, s: int, offsets: AxisOffsets) -> AxisOffsets:
    out = {s * d + k for d in offsets for k in range(-(w - 1), w)}
    return tuple(sorted(x for x in out if abs(x) < n))


def pair_demand(layers: list[Layer], shapes: list[Shape]) -> list[Demand]:
    """Demand on every state for computing K(x, x') at the output (a flat state)."""
    demand: list[Demand] = [None] * len(layers)
    demand[-1] = ()
    for i in range(len(layers) - 1, 0, -1):
        demand[i - 1] = backward(layers[i], shapes[i - 1], shapes[i], demand[i])
    return demand


def self_demand(layers: list[Layer], shapes: list[Shape]) -> list[Demand]:
    """Demand on every state of the per-input pass (Σ(x, x) where activations need v)."""
    demand: list[Demand] = [None] * len(layers)
    for i in range(len(layers) - 1, 0, -1):
        need = backward(layers[i], shapes[i - 1], shapes[i], demand[i])
        if isinstance(layers[i], Activation) and layers[i].nonlinear:
            need = union(need, tuple((0,) for _ in shapes[i - 1].spatial))
        demand[i - 1] = need
    return demand


def describe(shape: Shape, demand: Demand) -> str:
    """Compact text for tables: ``-3..3 x 0`` or ``all`` or ``-``."""
    if demand is None:
        return "-"
    if demand == ():
        return "scalar"
    parts = []
    for n, offsets in zip(shape.spatial, demand):
        if offsets == all_offsets(n) and n > 1:
            parts.append(f"all({2 * n - 1})")
        elif len(offsets) == 1:
            parts.append(str(offsets[0]))
        elif offsets == tuple(range(offsets[0], offsets[-1] + 1)):
            parts.append(f"{offsets[0]}..{offsets[-1]}")
        else:
            step = offsets[1] - offsets[0]
            if offsets == tuple(range(offsets[0], offsets[-1] + 1, step)):
                parts.append(f"{offsets[0]}..{offsets[-1]}/{step}")
            else:
                parts.append("{" + ",".join(map(str, offsets)) + "}")
    return " x ".join(parts)


__all__ = ["AxisOffsets", "Demand", "all_offsets", "backward", "describe", "entries",
           "pair_demand", "pairs_per_axis", "self_demand", "union", "conv_geometry"]
