"""Activations: each maps every covariance entry given the self-variances v and v'.

Every formula is written once over the math namespace (see mathns.py) and returns
(Σ', Σ̇): the new covariance and the factor of the NTK (Θ' = Σ̇·Θ).

abrelu a, b (relu = abrelu 0, 1; leaky_relu α = abrelu α, 1):
    s = √(v v' − Σ²), θ = atan2(s, Σ) (θ = π/2 where s = Σ = 0, neural-tangents' value)
    Σ' = (b−a)²/(2π)·s + ((a²+b²)/2 − (b−a)²θ/(2π))·Σ,   Σ̇ = (a²+b²)/2 − (b−a)²θ/(2π)
erf:
    r = √(1 + 2v + 2v' + 4·(v v' − Σ²))   (= √((1+2v)(1+2v') − 4Σ²), without the cancellation)
    Σ' = (2/π)·atan2(2Σ, r),   Σ̇ = (4/π)/r
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Elementwise, Real, _fmt


@dataclass(frozen=True)
class ABRelu(Elementwise):
    a: float = 0.0
    b: float = 1.0

    keyword = "abrelu"
    options = (Real("a", 0.0, "slope for x < 0"), Real("b", 1.0, "slope for x > 0"))
    summary = "a·x for x < 0, b·x for x > 0"
    examples = ("a=-0.3 b=1.2",)
    flops_per_entry = 16
    transcendentals_per_entry = 2

    def entry(self, m, K, v1, v2):
        s = m.sqrt(m.max0(v1 * v2 - K * K))
        # s = Σ = 0 (s >= 0, so: s + |Σ| = 0): θ = π/2
        theta = m.where(s + m.abs(K) == m.const(0), m.const(math.pi / 2), m.atan2(s, K))
        fac = m.const((self.a - self.b) ** 2 / (2 * math.pi))
        dot = m.const((self.a * self.a + self.b * self.b) / 2) - fac * theta
        return fac * s + dot * K, dot


@dataclass(frozen=True)
class Relu(ABRelu):
    keyword = "relu"
    options = ()
    summary = "max(x, 0)"
    examples = ()

    def describe(self) -> str:
        return "relu"


@dataclass(frozen=True)
class LeakyRelu(ABRelu):
    keyword = "leaky_relu"
    options = (Real("alpha", 0.01, "slope for x < 0", field="a"),)
    summary = "alpha·x for x < 0, x for x > 0"
    examples = ("alpha=0.1",)

    def describe(self) -> str:
        return f"leaky_relu alpha={_fmt(self.a)}"


@dataclass(frozen=True)
class Erf(Elementwise):
    keyword = "erf"
    summary = "the error function"
    flops_per_entry = 14
    transcendentals_per_entry = 3

    def entry(self, m, K, v1, v2):
        two = m.const(2)
        r = m.sqrt(m.const(1) + two * v1 + two * v2 + m.const(4) * m.max0(v1 * v2 - K * K))
        return m.const(2 / math.pi) * m.atan2(two * K, r), m.const(4 / math.pi) / r


@dataclass(frozen=True)
class Identity(Elementwise):
    keyword = "identity"
    summary = "x (changes nothing)"
    variance_stat = None
    nonlinear = False
    flops_per_entry = 0
    transcendentals_per_entry = 0

    def entry(self, m, K, v1, v2):
        return K, None        # Θ unchanged


__all__ = ["ABRelu", "Erf", "Identity", "LeakyRelu", "Relu"]
