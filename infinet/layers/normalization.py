"""Layer normalisation (neural-tangents' LayerNorm), elementwise given the variances.

Over infinitely many channels a layer norm divides each feature by its standard
deviation, which converges to the self-variance (the mean is 0):

    layernorm             (NT LayerNorm(axis=-1): over the channels at each position)
        Σ'[p, p'] = Σ[p, p'] / √((v[p] + ε)(v'[p'] + ε)),   Θ' = Θ / √(…)
    layernorm axes=all    (NT LayerNorm(axis=(1, …, rank)): over positions and channels)
        the same with v̄ = the mean of v over the positions in place of v[p]

ε = ``eps`` (NT's default 1e-12).  On flat states both are the same.  The input must be
Gaussian (after a dense or conv layer, as NT requires); the output stays Gaussian.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import NetError
from .base import Choice, Elementwise, Real, StateInfo, _fmt


class NonNegative(Real):
    def read(self, value, ctx):
        x = super().read(value, ctx)
        if x < 0:
            raise NetError(f"{self.name} must be >= 0, got {x:g}", value.pos)
        return x


@dataclass(frozen=True)
class LayerNorm(Elementwise):
    axes: str = "channels"
    eps: float = 1e-12

    keyword = "layernorm"
    options = (Choice("axes", "channels", "what to normalise over",
                      choices=("channels", "all")),
               NonNegative("eps", 1e-12, "added to the variances"))
    summary = "layer normalisation over the channels (axes=all: positions and channels)"
    examples = ("axes=all", "eps=0.1")
    nonlinear = False
    flops_per_entry = 6
    transcendentals_per_entry = 2

    @property
    def variance_stat(self) -> str:
        return "mean" if self.axes == "all" else "position"

    def describe(self) -> str:
        text = "layernorm" + (" axes=all" if self.axes == "all" else "")
        return text + (f" eps={_fmt(self.eps)}" if self.eps != 1e-12 else "")

    def infer(self, inputs: list[StateInfo]) -> StateInfo:
        if inputs[0].shape.channels is not None:
            # the data itself: its features have a mean that a layer norm would subtract
            raise NetError("layernorm needs Gaussian features (after a dense or conv layer), "
                           "not the network's input data, as neural-tangents' LayerNorm does",
                           self.pos)
        if not inputs[0].gaussian:
            raise NetError("layernorm needs a Gaussian input (after a dense or conv layer, "
                           "not after a nonlinearity), as neural-tangents' LayerNorm does",
                           self.pos)
        return StateInfo(inputs[0].shape, True, inputs[0].iid)

    n_features = 1

    def features(self, m, v):
        # 1/√(v + ε) per input (each factor <= 1/√ε: huge variances do not overflow)
        return (m.const(1) / m.sqrt(v + m.const(self.eps)),)

    def entry(self, m, K, v1, v2, f1=None, f2=None):
        (g1,), (g2,) = f1 or self.features(m, v1), f2 or self.features(m, v2)
        scale = g1 * g2
        return K * scale, scale
