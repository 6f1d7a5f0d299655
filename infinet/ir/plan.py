"""The analysed plan: the single description every backend consumes.

A :class:`Plan` is the network after parsing, lowering, shape inference, demand
analysis and costing.  ``plan.layers[0]`` is the input; state ``i`` is the
covariance after ``plan.layers[i]``.  Backends read only this object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import cost as cost_model
from . import demand as demand_analysis
from .layers import Activation, Conv, Dense, Input, Layer, Shape
from .shapes import infer_shapes

#: Unrolled networks longer than this are refused (they are almost surely a typo in a
#: repeat count, and would take forever to analyse).
MAX_LAYERS = 10_000


@dataclass(frozen=True)
class LayerPlan:
    index: int
    layer: Layer
    shape: Shape                         # output shape
    pair_demand: demand_analysis.Demand  # offsets of state `index` needed for K(x, x')
    self_demand: demand_analysis.Demand  # offsets of state `index` needed per input
    pair_cost: cost_model.LayerCost
    self_cost: cost_model.LayerCost
    trains_ntk: bool                     # adds its Σ' to Θ' (dense/conv, not fixed)


@dataclass(frozen=True)
class Plan:
    name: str
    filename: str
    source: str
    params: dict[str, float | int]
    layers: tuple[LayerPlan, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def input(self) -> Input:
        return self.layers[0].layer

    @property
    def input_shape(self) -> Shape:
        return self.layers[0].shape

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Per-sample array shape the data must have: (H, W, C) or (D,)."""
        s = self.input_shape
        return tuple(s.spatial) + (s.channels,)

    @property
    def pair_total(self) -> cost_model.LayerCost:
        return sum((lp.pair_cost for lp in self.layers), cost_model.ZERO)

    @property
    def self_total(self) -> cost_model.LayerCost:
        return sum((lp.self_cost for lp in self.layers), cost_model.ZERO)

    @property
    def peak_entries(self) -> int:
        """Largest state, in entries per pair, over the pair and self passes."""
        return max(max(lp.pair_cost.entries, lp.self_cost.entries) for lp in self.layers)

    @property
    def activation_indices(self) -> tuple[int, ...]:
        """Layers whose input variances v(x)[p] the pair pass needs from the self pass."""
        return tuple(lp.index for lp in self.layers
                     if isinstance(lp.layer, Activation) and lp.layer.nonlinear
                     and lp.pair_demand is not None)

    def self_variance_entries(self) -> int:
        """Self-variance numbers stored per input (one per position per activation)."""
        return sum(max(self.layers[i - 1].shape.positions, 1) for i in self.activation_indices)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lp in self.layers[1:]:
            name = getattr(lp.layer, "name", lp.layer.kind)
            out[name] = out.get(name, 0) + 1
        return out

    def __repr__(self) -> str:
        n = len(self.layers) - 1
        params = "".join(f", {k}={v:g}" for k, v in self.params.items())
        return (f"<Plan {self.name} ({self.filename}): input {'x'.join(map(str, self.data_shape))}"
                f", {n} layer{'s' if n != 1 else ''}{params}; "
                f"{human_count(self.pair_total.flops)} flops per pair>")

    def summary(self) -> str:
        """What ``infinet check`` prints: input, layers, readout demand, cost."""
        from ..report import summary
        return summary(self)


def analyse(name: str, filename: str, source: str, params: dict, layers: list[Layer]) -> Plan:
    """Shapes → demand → cost, packaged as a :class:`Plan`."""
    shapes = infer_shapes(layers)
    pair = demand_analysis.pair_demand(layers, shapes)
    self_ = demand_analysis.self_demand(layers, shapes)
    planned = []
    for i, layer in enumerate(layers):
        prev_shape = shapes[i - 1] if i else shapes[0]
        prev_pair = pair[i - 1] if i else None
        prev_self = self_[i - 1] if i else None
        planned.append(LayerPlan(
            index=i, layer=layer, shape=shapes[i], pair_demand=pair[i], self_demand=self_[i],
            pair_cost=cost_model.layer_cost(layer, prev_shape, shapes[i], prev_pair, pair[i]),
            self_cost=cost_model.layer_cost(layer, prev_shape, shapes[i], prev_self, self_[i],
                                            with_ntk=False),
            trains_ntk=isinstance(layer, (Dense, Conv)) and not layer.fixed,
        ))
    return Plan(name=name, filename=filename, source=source, params=dict(params),
                layers=tuple(planned))


def human_count(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}" if not float(x).is_integer() else str(int(x))


def human_bytes(n: float) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


__all__ = ["LayerPlan", "MAX_LAYERS", "Plan", "analyse", "human_bytes", "human_count", "math"]
