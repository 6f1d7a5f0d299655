"""Blocks: ``residual { … }`` and ``sum { branch { … } branch { … } }``.

The sum of branches y = b1(x) + b2(x) + … (neural-tangents: FanOut, parallel, FanInSum)
has Σ = Σ_b1 + Σ_b2 + … and Θ = Θ_b1 + Θ_b2 + … — but only when the branches are jointly
Gaussian and independent: every branch's output Gaussian (no nonlinearity after its last
dense or conv layer, or an empty branch whose input is Gaussian), and at most one branch
without a dense or conv layer of its own on every path (two such branches are the same or
correlated functions of x; a nested block's shortcut is such a path).  The network's
input data itself is not Gaussian: a branch that carries it is refused.  Anything else is
an error that says why: neural-tangents accepts some such sums silently and returns a
wrong kernel.

``residual { body }`` is ``sum { branch { body } branch { } }``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import NetError, SourcePos
from .base import Layer, LayerCost, Shape, StateInfo, describe_spatial, entries


@dataclass(frozen=True)
class Branch:
    pos: SourcePos
    label: str                 # "branch 2 of this sum", "the shortcut of this residual"
    empty: bool
    #: every path through it passes a dense or conv layer of its own, so its output is
    #: independent of the other branches' (dsl/lower.py: _Lowering.branch)
    has_weights: bool


@dataclass(frozen=True)
class Sum(Layer):
    branches: tuple[Branch, ...] = ()
    block: str = "sum"         # how it was written: sum | residual

    keyword = "sum"
    summary = "the sum of independent Gaussian branches (residual, sum { branch … })"
    family = "sum"
    arity = None

    def describe(self) -> str:
        return "residual (sum)" if self.block == "residual" else \
            f"sum of {len(self.branches)} branches"

    def output_shape(self, inputs):
        first = inputs[0]
        for br, shape in zip(self.branches[1:], inputs[1:]):
            if shape.spatial != first.spatial:
                a = "a flat vector" if first.is_flat else describe_spatial(first)
                b = "a flat vector" if shape.is_flat else describe_spatial(shape)
                raise NetError(f"the branches of this {self.block} end with different shapes: "
                               f"{self.branches[0].label.split(' of ')[0]} gives {a}, "
                               f"{br.label.split(' of ')[0]} gives {b}",
                               self.pos)
        return Shape(first.spatial, None)

    def infer(self, inputs: list[StateInfo]) -> StateInfo:
        info = super().infer(inputs)
        for br, state in zip(self.branches, inputs):
            if state.shape.channels is not None:
                # a finite channel count: the network's input data itself (or pooled /
                # normalised data), not the features of a dense or conv layer
                raise NetError(f"{br.label} is the network's input data itself, not Gaussian "
                               f"features, so the {self.block}'s kernel is not the sum of its "
                               f"branches' kernels (neural-tangents refuses it too); put a "
                               f"dense or conv layer before the {self.block}", br.pos)
            if not state.gaussian:
                if br.empty:
                    why = "its input comes after a nonlinearity"
                    fix = ("move the nonlinearity into the block (pre-activation: "
                           "`residual { relu; conv …; relu; conv … }`)")
                else:
                    why = "it ends with a nonlinearity after its last dense or conv layer"
                    fix = "end the branch with a dense or conv layer"
                raise NetError(f"{br.label} is not Gaussian ({why}), so "
                               f"the {self.block}'s kernel is not the sum of its branches' "
                               f"kernels; {fix}", br.pos)
        bare = [br for br in self.branches if not br.has_weights]
        if len(bare) > 1:
            inner = [br for br in bare[:2] if not br.empty]
            how = (f" on every path ({inner[0].label.split(' of ')[0]} has one, but the "
                   f"shortcut of a block inside it carries the input around it)"
                   if inner else "")
            raise NetError(f"{bare[0].label.split(' of ')[0]} and {bare[1].label} have no "
                           f"dense or conv layer of their own{how}: they are not independent, "
                           f"so the {self.block}'s kernel is not the sum of theirs; give all but "
                           f"one branch its own dense or conv layer on every path", bare[1].pos)
        return info

    def cost(self, inputs, out, demand_in, demand_out, with_ntk):
        n = entries(out, demand_out)
        kernels = 2 if with_ntk else 1
        return LayerCost(n, kernels * (len(inputs) - 1) * n, 0, n * 8 * kernels)

    # -- lowering the block statements -----------------------------------------------------
    @classmethod
    def lower_residual(cls, stmt, lowering) -> None:
        start = lowering.current
        end, weights = lowering.branch(stmt.body, start)
        body = Branch(stmt.pos, "the body of this residual", end == start, weights)
        shortcut = Branch(stmt.pos, "the shortcut of this residual", True, False)
        lowering.add(cls(stmt.pos, (body, shortcut), "residual"), (end, start))

    @classmethod
    def lower_sum(cls, stmt, lowering) -> None:
        start = lowering.current
        branches, ends = [], []
        for sub in stmt.body:
            if getattr(sub, "kind", None) != "branch" or not hasattr(sub, "body"):
                raise NetError("a `sum` block holds only `branch { … }` blocks", sub.pos)
            end, weights = lowering.branch(sub.body, start)
            branches.append(Branch(sub.pos, f"branch {len(branches) + 1} of this sum", end == start,
                                   weights))
            ends.append(end)
        if len(branches) < 2:
            raise NetError(f"a `sum` needs at least two branches, got {len(branches)}",
                           stmt.pos)
        lowering.add(cls(stmt.pos, tuple(branches), "sum"), tuple(ends))


#: block keyword -> how it is lowered (``branch`` only appears inside ``sum``)
BLOCKS = {"residual": Sum.lower_residual, "sum": Sum.lower_sum}
