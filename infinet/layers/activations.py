"""Activations: each maps every covariance entry given the self-variances v and v'.

Every formula is written once over the math namespace (see mathns.py) and returns
(Σ', Σ̇): the new covariance and the factor of the NTK (Θ' = Σ̇·Θ).

abrelu a, b (relu = abrelu 0, 1; leaky_relu α = abrelu α, 1):
    s = √(v v' − Σ²), θ = atan2(s, Σ) (θ = π/2 where s = Σ = 0, neural-tangents' value)
    Σ' = (b−a)²/(2π)·s + ((a²+b²)/2 − (b−a)²θ/(2π))·Σ,   Σ̇ = (a²+b²)/2 − (b−a)²θ/(2π)
erf:
    r = √(1 + 2v + 2v' + 4·(v v' − Σ²))   (= √((1+2v)(1+2v') − 4Σ²), without the cancellation)
    Σ' = (2/π)·atan2(2Σ, r),   Σ̇ = (4/π)/r

The angles come from the namespace's ``acos_sc`` / ``asin_sc``: atan2 exactly in NumPy,
a division-free polynomial with a proved error bound in the generated code
(codegen/theta_poly.py), normalised by reciprocal square roots that are features of
each input (:meth:`~infinet.layers.base.Elementwise.features`: 1/√v for abrelu,
1/√(1 + 2v) for erf), stored in the variance tables once per input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Elementwise, Real, _fmt


def inv_sqrt_v(m, v):
    """The arccos kernels' feature of an input: 1/√v.  v below the smallest normal number
    (float32 underflow, warned) is raised to it, so that r1·r2 <= 1/tiny stays finite and
    s·r1·r2 = 0 where s = 0."""
    return (m.const(1) / m.sqrt(m.max(v, m.tiny())),)


def arccos_theta(m, s, K, r1, r2):
    """θ = atan2(s, Σ) ∈ [0, π] (s >= 0), normalised by r1·r2 = 1/√(v v') ≈ 1/√(s² + Σ²);
    π/2 where s = Σ = 0 (s >= 0, so: s + |Σ| = 0), neural-tangents' value."""
    return m.where(s + m.abs(K) == m.const(0), m.const(math.pi / 2),
                   m.acos_sc(s, K, r1 * r2))


class ArcCosineKernel:
    """What the arc-cosine kernels share (abrelu, sign, rectified_monomial): the feature
    1/√v of each input, and s = √(v v' − Σ²) with the angle θ = atan2(s, Σ)."""

    n_features = 1

    def features(self, m, v):
        return inv_sqrt_v(m, v)

    def sine_and_angle(self, m, K, v1, v2, f1, f2):
        """(v v', s, θ) of an entry; f1, f2 are the inputs' features (or None: computed)."""
        (r1,), (r2,) = f1 or self.features(m, v1), f2 or self.features(m, v2)
        p = v1 * v2
        s = m.sqrt_fast(m.max0(p - K * K))
        return p, s, arccos_theta(m, s, K, r1, r2)


@dataclass(frozen=True)
class ABRelu(ArcCosineKernel, Elementwise):
    a: float = 0.0
    b: float = 1.0

    keyword = "abrelu"
    options = (Real("a", 0.0, "slope for x < 0"), Real("b", 1.0, "slope for x > 0"))
    summary = "a·x for x < 0, b·x for x > 0"
    examples = ("a=-0.3 b=1.2",)
    flops_per_entry = 16
    transcendentals_per_entry = 2

    def entry(self, m, K, v1, v2, f1=None, f2=None):
        _, s, theta = self.sine_and_angle(m, K, v1, v2, f1, f2)
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
    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    keyword = "erf"
    options = (Real("a", 1.0, "output scale"), Real("b", 1.0, "input scale"),
               Real("c", 0.0, "output shift"))
    summary = "a·erf(b·x) + c (neural-tangents' Erf)"
    examples = ("a=0.8 b=1.3 c=0.2",)
    flops_per_entry = 14
    transcendentals_per_entry = 3
    n_features = 1

    def shown_options(self):
        return tuple(o.name for o in self.options
                     if getattr(self, o.target) != o.default)

    def features(self, m, v):
        b2 = self.b * self.b
        if b2 != 1:
            v = m.const(b2) * v
        return (m.const(1) / m.sqrt(m.const(1) + m.const(2) * v),)   # 1/√(1 + 2b²v)

    def entry(self, m, K, v1, v2, f1=None, f2=None):
        # neural-tangents: Σ, v scaled by b² first, the result by a², plus c² (erf is odd,
        # so the shift adds c² alone); Θ' = a²·b²·Σ̇·Θ.  The factors are printed only
        # where they are not 1 (and c² only where c ≠ 0), so the default stays as it was.
        (q1,), (q2,) = f1 or self.features(m, v1), f2 or self.features(m, v2)
        b2 = self.b * self.b
        if b2 != 1:
            K, v1, v2 = m.const(b2) * K, m.const(b2) * v1, m.const(b2) * v2
        two = m.const(2)
        r2 = m.const(1) + two * v1 + two * v2 + m.const(4) * m.max0(v1 * v2 - K * K)
        # atan2(2Σ, r), normalised by q1·q2 = 1/√((1+2v)(1+2v')) = 1/√(r² + 4Σ²)
        new = m.const(2 / math.pi) * m.asin_sc(two * K, m.sqrt_fast(r2), q1 * q2)
        dot = m.const(4 / math.pi) * m.rsqrt(r2)
        a2 = self.a * self.a
        if a2 != 1:
            new = m.const(a2) * new
        if a2 * b2 != 1:
            dot = m.const(a2 * b2) * dot
        if self.c != 0:
            new = new + m.const(self.c * self.c)
        return new, dot


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


__all__ = ["ABRelu", "Erf", "Identity", "LeakyRelu", "Relu", "arccos_theta", "inv_sqrt_v"]
