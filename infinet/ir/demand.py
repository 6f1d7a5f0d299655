"""Demand analysis: which spatial offsets d = p' - p each state must provide.

Working backwards from the readout: flatten needs offset 0 only, gap needs every
offset, a conv keeps the set (times its stride), an avgpool of window w and stride s
turns a coarse offset D into the fine offsets s*D-(w-1) .. s*D+(w-1) (each layer says
its own, ``Layer.demand``).  Every layer acts on each spatial axis separately, so a
demand is a product of per-axis offset sets:

* ``None``       nothing of this state is needed;
* ``()``         a flat state (one number per pair) is needed;
* ``(D1, ...)``  sorted offset tuples per axis, for a spatial state.

A state read by several layers (a block's input) must provide the union of what its
readers need.  Two demands are computed for a plan.  The *pair* demand is what K(x, x')
needs.  The *self* demand is what the per-input pass needs to produce every
nonlinearity's input variances v(x)[p] (offset 0 at that layer, plus whatever the
layers before it need to produce that).
"""
from __future__ import annotations

from ..layers.base import (AxisOffsets, Demand, all_offsets, entries, pairs_per_axis, union,
                           zero_plane)


def _backward(nodes, shapes, demand: list[Demand]) -> list[Demand]:
    """Propagate ``demand`` (set on some states) to every state the layers read."""
    for node in reversed(nodes):
        needed = demand[node.index]
        if needed is None:
            continue
        ins = [shapes[j] for j in node.inputs]
        for j, d in zip(node.inputs, node.layer.demand(needed, ins, shapes[node.index])):
            demand[j] = union(demand[j], d)
    return demand


def pair_demand(nodes, shapes) -> list[Demand]:
    """Demand on every state for computing K(x, x') at the output (a flat state)."""
    demand: list[Demand] = [None] * len(nodes)
    demand[-1] = ()
    return _backward(nodes, shapes, demand)


def self_demand(nodes, shapes, variance_states) -> list[Demand]:
    """Demand on every state of the per-input pass: Σ(x, x) at offset 0 of every state in
    ``variance_states`` (whose v the pair pass reads), and what producing that needs."""
    demand: list[Demand] = [None] * len(nodes)
    for s in variance_states:
        demand[s] = union(demand[s], zero_plane(shapes[s]))
    return _backward(nodes, shapes, demand)


def describe(shape, demand: Demand) -> str:
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


__all__ = ["AxisOffsets", "Demand", "all_offsets", "describe", "entries", "pair_demand",
           "pairs_per_axis", "self_demand", "union", "zero_plane"]
