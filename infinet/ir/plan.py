"""The analysed plan: the single description every backend consumes.

A :class:`Plan` is the network graph after parsing, lowering, shape inference, demand
analysis and costing.  ``plan.nodes[0]`` is the input; state ``i`` is the covariance
after ``plan.nodes[i]``, which reads the states ``plan.nodes[i].inputs``; the last node
is the output.  Backends read only this object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..layers.base import Demand, Layer, LayerCost, Shape, StateInfo, ZERO_COST
from . import demand as demand_analysis
from .shapes import infer_states

#: Unrolled networks longer than this are refused (they are almost surely a typo in a
#: repeat count, and would take forever to analyse).
MAX_LAYERS = 10_000


@dataclass(frozen=True)
class NodePlan:
    index: int
    layer: Layer
    inputs: tuple[int, ...]              # the states it reads
    info: StateInfo                      # output shape and flags
    pair_demand: Demand                  # offsets of state `index` needed for K(x, x')
    self_demand: Demand                  # offsets of state `index` needed per input
    pair_cost: LayerCost
    self_cost: LayerCost
    consumers: tuple[int, ...] = ()      # the nodes that read state `index`

    @property
    def shape(self) -> Shape:
        return self.info.shape

    @property
    def trains_ntk(self) -> bool:
        """Adds its Σ' to Θ' (a dense/conv layer that is not fixed)."""
        return self.layer.trains

    def __repr__(self) -> str:
        return (f"<node {self.index}: {self.layer.describe()} <- {list(self.inputs)}, "
                f"{self.shape}>")


@dataclass(frozen=True)
class Plan:
    name: str
    filename: str
    source: str
    params: dict[str, float | int]
    nodes: tuple[NodePlan, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def input(self) -> Layer:
        return self.nodes[0].layer

    @property
    def input_shape(self) -> Shape:
        return self.nodes[0].shape

    @property
    def output(self) -> NodePlan:
        return self.nodes[-1]

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Per-sample array shape the data must have: (*spatial, C) or (D,)."""
        s = self.input_shape
        return tuple(s.spatial) + (s.channels,)

    @property
    def pair_total(self) -> LayerCost:
        return sum((n.pair_cost for n in self.nodes), ZERO_COST)

    @property
    def self_total(self) -> LayerCost:
        return sum((n.self_cost for n in self.nodes), ZERO_COST)

    @property
    def peak_entries(self) -> int:
        """Largest state, in entries per pair, over the pair and self passes."""
        return max(max(n.pair_cost.entries, n.self_cost.entries) for n in self.nodes)

    @cached_property
    def variance_states(self) -> tuple[int, ...]:
        """States whose self-variances v(x)[p] the pair pass reads (the inputs of the
        needed layers that act given the variances)."""
        return _variance_states(self.nodes, [n.pair_demand for n in self.nodes])

    @cached_property
    def mean_states(self) -> tuple[int, ...]:
        """Spatial states whose mean self-variance (over the positions) a layer reads
        (``variance_stat == "mean"``: layernorm axes=all)."""
        found = {n.inputs[0] for n in self.nodes
                 if n.layer.variance_stat == "mean" and n.pair_demand is not None
                 and not self.nodes[n.inputs[0]].shape.is_flat}
        return tuple(sorted(found))

    def self_variance_entries(self) -> int:
        """Self-variance numbers stored per input (one per position per variance state,
        and one per mean)."""
        return (sum(max(self.nodes[s].shape.positions, 1) for s in self.variance_states)
                + len(self.mean_states))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes[1:]:
            out[n.layer.keyword] = out.get(n.layer.keyword, 0) + 1
        return out

    def __repr__(self) -> str:
        n = len(self.nodes) - 1
        params = "".join(f", {k}={v:g}" for k, v in self.params.items())
        return (f"<Plan {self.name} ({self.filename}): input {'x'.join(map(str, self.data_shape))}"
                f", {n} layer{'s' if n != 1 else ''}{params}; "
                f"{human_count(self.pair_total.flops)} flops per pair>")

    def summary(self) -> str:
        """What ``infinet check`` prints: input, layers, readout demand, cost."""
        from ..report import summary
        return summary(self)


def _variance_states(nodes, pair_demand) -> tuple[int, ...]:
    found = {n.inputs[0] for n in nodes
             if n.layer.variance_stat is not None and pair_demand[n.index] is not None}
    return tuple(sorted(found))


def analyse(name: str, filename: str, source: str, params: dict, nodes) -> Plan:
    """Shapes → demand → cost, packaged as a :class:`Plan` (``nodes``: the lowered graph)."""
    states = infer_states(nodes)
    shapes = [s.shape for s in states]
    pair = demand_analysis.pair_demand(nodes, shapes)
    variance = _variance_states(nodes, pair)
    self_ = demand_analysis.self_demand(nodes, shapes, variance)
    consumers: dict[int, list[int]] = {n.index: [] for n in nodes}
    for n in nodes:
        for j in n.inputs:
            consumers[j].append(n.index)
    planned = []
    for n in nodes:
        ins = [shapes[j] for j in n.inputs]
        planned.append(NodePlan(
            index=n.index, layer=n.layer, inputs=n.inputs, info=states[n.index],
            pair_demand=pair[n.index], self_demand=self_[n.index],
            pair_cost=_cost(n.layer, ins, shapes[n.index], [pair[j] for j in n.inputs],
                            pair[n.index], True),
            self_cost=_cost(n.layer, ins, shapes[n.index], [self_[j] for j in n.inputs],
                            self_[n.index], False),
            consumers=tuple(consumers[n.index])))
    return Plan(name=name, filename=filename, source=source, params=dict(params),
                nodes=tuple(planned))


def _cost(layer, ins, out, demand_in, demand_out, with_ntk) -> LayerCost:
    if demand_out is None:
        return ZERO_COST
    return layer.cost(ins, out, demand_in, demand_out, with_ntk)


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


__all__ = ["MAX_LAYERS", "NodePlan", "Plan", "analyse", "human_bytes", "human_count"]
