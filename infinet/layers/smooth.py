"""Smooth activations with closed-form kernels: gelu, sin, cos, rbf, exp, gaussian, sigmoid_like.

Each maps (Σ, v, v') to (Σ', Σ̇) as neural-tangents 0.6.5 does (stax/elementwise.py; the
line numbers below are of that file), written so that the self pass (Σ = v = v') is exact
or stable there and nothing overflows where the exact value is finite.  m = (v + v')/2.

gelu (NT Gelu, l.197-274): with p = v v', δ² = (1+v)(1+v') − Σ² = 1 + v + v' + (p − Σ²),
    ang = atan2(Σ, δ):
    Σ' = Σ/4 + ((Σ² + p δ²)/((1+v)(1+v') δ) + Σ·ang)/(2π)
    Σ̇ = 1/4 + ang/(2π) + Σ/(2π δ)·(1/δ² + (1 − p)/((1+v)(1+v')) + 1)
    evaluated as (Σ/(1+v))·(Σ/(1+v'))/δ + (v/(1+v))·(v'/(1+v'))·δ: no v⁴ to overflow.
sin a b c (NT Sin, l.277-328), a·sin(b·x + c): with E± = exp(−b²(m ± Σ)) and
    D = E₋ − E₊ = sign(Σ)·exp(b²(|Σ| − m))·(−expm1(−2b²|Σ|))   (no cancellation, no overflow)
    Σ' = a²/2·(E₋ − E₊ cos 2c) = a²/2·D + a²·E₊·sin²c
    Σ̇ = a²b²/2·(E₋ + E₊ cos 2c) = a²b²/2·(D + 2 E₊ cos²c)
cos a b c (NT Cos = Sin(a, b, c + π/2), l.331-347): sin with sin²c and cos²c exchanged.
rbf gamma (NT Rbf, l.350-402):  Σ' = exp(−γ((v − Σ) + (v' − Σ))),  Σ̇ = 2γ Σ'.
exp a b (NT Exp, l.551-592), a·exp(b·x):  Σ' = a² exp(b²(m + Σ)) = exp(b²(m + Σ) + ln a²)
    (finite wherever a²·exp(…) is),  Σ̇ = b² Σ'.
gaussian a b (NT Gaussian, l.595-649), a·exp(b·x²): with
    det = (1 − 2bv)(1 − 2bv') − 4b²Σ² = 1 − 2b(v + v') + 4b²(p − Σ²),
    Σ' = a²/√det,  Σ̇ = 4a²b²Σ/det^{3/2}.  For b > 0 the expectation is infinite unless
    1 − 2bv > 0, 1 − 2bv' > 0 and det > 0 (NT returns a finite wrong value where only
    det > 0); there Σ' = +∞ and the run stops with a numerical error.
sigmoid_like (NT Sigmoid_like = Erf(a=1/2, b=1/2.4020563531719796, c=1/2), l.117-130; Erf l.49-114):
    0.5·erf(β x) + 0.5, with B = β²,
    r = √(1 + 2Bv + 2Bv' + 4B²(p − Σ²)),  Σ' = (1/4)(2/π) atan2(2BΣ, r) + 1/4,
    Σ̇ = (1/4)·B·(4/π)/r.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Elementwise, Scale


@dataclass(frozen=True)
class Gelu(Elementwise):
    keyword = "gelu"
    summary = "x·Φ(x) (Φ: the standard normal CDF; NT Gelu(approximate=False))"
    flops_per_entry = 40
    transcendentals_per_entry = 2

    n_features = 2

    def features(self, m, v):
        # g = 1/√(1+v) and v/(1+v), once per input: no division per entry
        w = m.const(1) + v
        return m.const(1) / m.sqrt(w), v / w

    def entry(self, m, K, v1, v2, f1=None, f2=None):
        (g1, h1), (g2, h2) = f1 or self.features(m, v1), f2 or self.features(m, v2)
        one = m.const(1)
        d2 = one + v1 + v2 + m.max0(v1 * v2 - K * K)   # (1+v)(1+v') − Σ², no cancellation
        delta = m.sqrt_fast(d2)
        rd = m.rsqrt(d2)                               # 1/δ
        n = g1 * g2                                    # 1/√((1+v)(1+v')) = 1/√(Σ² + δ²)
        ratio = h1 * h2                                # p/((1+v)(1+v')), no overflow
        inv = n * n
        ang = m.asin_sc(K, delta, n)                   # atan2(Σ, δ), δ > 0
        inv2pi = m.const(1 / (2 * math.pi))
        # (Σ² + p δ²)/((1+v)(1+v') δ) = (Σ/(1+v))(Σ/(1+v'))/δ + ratio·δ
        new = ((K * (g1 * g1)) * (K * (g2 * g2)) * rd + ratio * delta + K * ang) * inv2pi \
            + m.const(0.25) * K
        dot = (K * rd * inv2pi * (rd * rd + inv - ratio + one)
               + m.const(0.25) + ang * inv2pi)
        return new, dot


@dataclass(frozen=True)
class Sin(Elementwise):
    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    keyword = "sin"
    options = (Scale("a", 1.0, "output scale"), Scale("b", 1.0, "input scale"),
               Scale("c", 0.0, "phase"))
    summary = "a·sin(b·x + c)"
    examples = ("a=1.2 b=0.8 c=0.3", "b=1.5")
    flops_per_entry = 20
    transcendentals_per_entry = 3

    def phase_squares(self) -> tuple[float, float]:
        """(sin²c, cos²c) of the phase that multiplies exp(−b²(m + Σ))."""
        return math.sin(self.c) ** 2, math.cos(self.c) ** 2

    def entry(self, m, K, v1, v2):
        a2, b2 = self.a * self.a, self.b * self.b
        s2, c2 = self.phase_squares()
        half = (v1 + v2) * m.const(0.5)
        ak = m.abs(K)
        e_plus = m.exp(m.const(-b2) * (half + K))
        d = m.exp(m.const(b2) * (ak - half)) * -m.expm1(m.const(-2 * b2) * ak)
        d = m.where(K < m.const(0), -d, d)
        new = m.const(a2 / 2) * d
        if s2:
            new = new + m.const(a2 * s2) * e_plus
        dot = d
        if c2:
            dot = dot + m.const(2 * c2) * e_plus
        return new, m.const(a2 * b2 / 2) * dot


@dataclass(frozen=True)
class Cos(Sin):
    keyword = "cos"
    summary = "a·cos(b·x + c)"
    examples = ("a=0.9 b=1.1 c=-0.4", "b=0.7")

    def phase_squares(self) -> tuple[float, float]:
        # cos(bx + c) = sin(bx + c + π/2): sin² and cos² of the phase exchange
        return math.cos(self.c) ** 2, math.sin(self.c) ** 2


@dataclass(frozen=True)
class Rbf(Elementwise):
    gamma: float = 1.0

    keyword = "rbf"
    options = (Scale("gamma", 1.0, "1/(2 l²) for the length scale l", minimum=0.0),)
    summary = "√2·sin(√(2γ)·x + π/4): the kernel exp(−γ‖x − x'‖²/d)"
    examples = ("gamma=0.3",)
    flops_per_entry = 6
    transcendentals_per_entry = 1

    def entry(self, m, K, v1, v2):
        new = m.exp(m.const(-self.gamma) * ((v1 - K) + (v2 - K)))
        return new, m.const(2 * self.gamma) * new


@dataclass(frozen=True)
class Exp(Elementwise):
    a: float = 1.0
    b: float = 1.0

    keyword = "exp"
    options = (Scale("a", 1.0, "output scale"), Scale("b", 1.0, "input scale"))
    summary = "a·exp(b·x)"
    examples = ("a=0.5 b=0.5", "a=1.5 b=-0.3")
    flops_per_entry = 6
    transcendentals_per_entry = 1

    def entry(self, m, K, v1, v2):
        if self.a == 0:
            return m.const(0), m.const(0)
        b2 = self.b * self.b
        x = m.const(b2) * ((v1 + v2) * m.const(0.5) + K)
        new = m.exp(x + m.const(2 * math.log(abs(self.a))))
        return new, m.const(b2) * new


@dataclass(frozen=True)
class Gaussian(Elementwise):
    a: float = 1.0
    b: float = -1.0

    keyword = "gaussian"
    options = (Scale("a", 1.0, "output scale"), Scale("b", -1.0, "scale of x² (< 0: a bump)"))
    summary = "a·exp(b·x²)"
    examples = ("a=1.3 b=-0.4",)
    flops_per_entry = 14
    transcendentals_per_entry = 1

    def entry(self, m, K, v1, v2):
        a2, b = self.a * self.a, self.b
        det = (m.const(1) - m.const(2 * b) * (v1 + v2)
               + m.const(4 * b * b) * m.max0(v1 * v2 - K * K))
        if b > 0:
            # E exp(b u² + b u'²) is finite only where I − 2bΣ is positive definite
            ok = m.min(m.const(1) - m.const(2 * b) * m.max(v1, v2), det) > m.const(0)
            det = m.where(ok, det, m.const(0))
        rs = m.rsqrt(det)                     # 1/√det (inf where det = 0: Σ' = +∞)
        return m.const(a2) * rs, m.const(4 * a2 * b * b) * K * (rs * rs * rs)


@dataclass(frozen=True)
class SigmoidLike(Elementwise):
    keyword = "sigmoid_like"
    summary = "0.5·erf(x/2.4020563531719796) + 0.5 (NT Sigmoid_like)"
    flops_per_entry = 16
    transcendentals_per_entry = 3

    #: NT's constants: Erf(a=0.5, b=1/2.4020563531719796, c=0.5)
    A, BETA, C = 0.5, 1 / 2.4020563531719796, 0.5

    n_features = 1

    def features(self, m, v):
        return (m.const(1) / m.sqrt(m.const(1) + m.const(2 * self.BETA ** 2) * v),)

    def entry(self, m, K, v1, v2, f1=None, f2=None):
        # as erf: atan2(2BΣ, r) normalised by q1·q2 = 1/√((1+2Bv)(1+2Bv')) = 1/√(r² + 4B²Σ²)
        (q1,), (q2,) = f1 or self.features(m, v1), f2 or self.features(m, v2)
        B = self.BETA ** 2
        r2 = (m.const(1) + m.const(2 * B) * v1 + m.const(2 * B) * v2
              + m.const(4 * B * B) * m.max0(v1 * v2 - K * K))
        new = m.const(self.A ** 2 * 2 / math.pi) * \
            m.asin_sc(m.const(2 * B) * K, m.sqrt_fast(r2), q1 * q2) + m.const(self.C ** 2)
        return new, m.const(self.A ** 2 * B * 4 / math.pi) * m.rsqrt(r2)


__all__ = ["Cos", "Exp", "Gaussian", "Gelu", "Rbf", "SigmoidLike", "Sin"]
