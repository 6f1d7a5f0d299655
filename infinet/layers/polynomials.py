"""Polynomial activations: monomial, rectified_monomial and polynomial.

Below p = v v', s = √(p − Σ²), θ = atan2(s, Σ) (π/2 where s = Σ = 0), ρ = cos θ.

monomial degree=n (NT Monomial, stax/elementwise.py l.754-838; NT stops at n = 5), x^n:
    by Isserlis' theorem (pair the n copies of u and of u' in every way: j cross pairs),
        E[u^n u'^n] = Σ_{j ≡ n mod 2} C(n, j)² j! ((n − j − 1)!!)² Σ^j p^{(n−j)/2}
    (n = 2: 2Σ² + p; n = 3: 6Σ³ + 9Σp: NT's table), Σ̇ = n² E[u^{n−1} u'^{n−1}];
    all terms have the sign of Σ^n: no cancellation.  On the self pass (2n − 1)!! v^n.
rectified_monomial degree=n (NT RectifiedMonomial, l.841-923), max(x, 0)^n: the arc-cosine
    kernel of degree n (Cho & Saul 2009),
        Σ' = p^{n/2} J_n(θ)/(2π),   J_n(θ) = (−1)^n sin^{2n+1}θ (1/sinθ · ∂/∂θ)^n ((π − θ)/sinθ).
    With ∂/∂ρ = −(1/sin θ) ∂/∂θ, J_n = P_n(ρ)(π − θ) + Q_n(ρ) sin θ for polynomials
        P_0 = 1, Q_0 = 0,  P_{n+1} = (1 − ρ²)P_n' + (2n + 1)ρ P_n,
        Q_{n+1} = P_n + (1 − ρ²)Q_n' + 2nρ Q_n
    (J_1 = sin θ + (π − θ)cos θ: relu; J_2 = 3 sin θ cos θ + (π − θ)(1 + 2cos²θ)).  P_n has
    the parity of n and Q_n that of n − 1, so p^{n/2}·J_n is a polynomial in Σ and p times
    (π − θ), plus one times s:  Σ' = (s·Q̃_n(Σ, p) + (π − θ)·P̃_n(Σ, p))/(2π).
    Σ̇ = n² × the same for n − 1 (max(x,0)^n has derivative n·max(x,0)^{n−1}); 0 for n = 0.
    On the self pass s = θ = 0: Σ' = P_n(1)·v^n/2 = (2n − 1)!!·v^n/2 — where NT's own
    general path divides 0 by 0 (sin θ = 0) and returns NaN for K(x, x) and everything after.
polynomial coef=[c_0, …, c_n] (NT Polynomial, l.926-1021), Σ_k c_k x^k: by the Hermite
    expansion of f(√v z) (Mehler's formula),
        Σ' = Σ_l R_l(v) R_l(v') Σ^l / l!,   R_l(v) = Σ_i c_{2i+l} (2i + l)!/(2^i i!) v^i,
        Σ̇ = Σ_{l≥1} R_l(v) R_l(v') Σ^{l−1}/(l − 1)!
    (NT's r-products with ratio^l = Σ^l/p^{l/2} multiplied out: no division by √p).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..errors import NetError
from .activations import ArcCosineKernel
from .base import Elementwise, RealList, WholeUpTo

#: the highest degree of monomial and rectified_monomial, and of a polynomial
MAX_DEGREE = 16


def _double_factorial(n: int) -> int:
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def wick_coefficients(n: int) -> dict[int, int]:
    """{j: C(n, j)² j! ((n − j − 1)!!)²}: E[u^n u'^n] = Σ_j c_j Σ^j p^{(n−j)/2}."""
    return {j: math.comb(n, j) ** 2 * math.factorial(j) * _double_factorial(n - j - 1) ** 2
            for j in range(n % 2, n + 1, 2)}


def homogeneous(m, coeffs: dict[int, float], K, p, degree: int):
    """Σ_j coeffs[j]·K^j·p^{(degree − j)/2} (degree − j even), by Horner's rule in K² and p.

    Grouped as K^{degree mod 2}·Σ_i c_{degree−2i}·(K²)^{N−i}·p^i with N = degree // 2: from
    the highest power of K down, the running sum is multiplied by K² and the next
    coefficient times p^i added.
    """
    terms = [(degree - 2 * i, i) for i in range(degree // 2 + 1) if coeffs.get(degree - 2 * i, 0)]
    if not terms:
        return m.const(0)
    K2 = K * K
    acc, p_pow, have, last = None, None, 0, None
    for j, i in terms:              # descending powers of K, ascending powers of p
        if acc is not None:
            for _ in range((last - j) // 2):
                acc = acc * K2
        while have < i:
            p_pow = p if p_pow is None else p_pow * p
            have += 1
        term = m.const(float(coeffs[j])) * p_pow if i else m.const(float(coeffs[j]))
        acc = term if acc is None else acc + term
        last = j
    for _ in range(last // 2):      # the lowest power's remaining (K²)^{j/2}
        acc = acc * K2
    return acc * K if degree % 2 else acc


@dataclass(frozen=True)
class Monomial(Elementwise):
    degree: int = 3

    keyword = "monomial"
    options = (WholeUpTo("degree", 3, "the power n of x^n", minimum=0, maximum=MAX_DEGREE),)
    summary = "x^degree"
    examples = ("degree=2", "degree=1", "degree=0")
    transcendentals_per_entry = 0

    @property
    def flops_per_entry(self) -> int:
        return 4 * self.degree + 4

    def entry(self, m, K, v1, v2):
        n = self.degree
        p = v1 * v2
        new = homogeneous(m, wick_coefficients(n), K, p, n) if n else m.const(1)
        if n == 0:
            return new, m.const(0)
        dot = homogeneous(m, wick_coefficients(n - 1), K, p, n - 1) if n > 1 else m.const(1)
        return new, m.const(n * n) * dot


def arc_cosine_polynomials(n: int) -> tuple[list[Fraction], list[Fraction]]:
    """(P_n, Q_n) as coefficient lists in ρ (index = power): J_n = P_n(ρ)(π − θ) + Q_n(ρ) sin θ."""
    P, Q = [Fraction(1)], [Fraction(0)]
    for k in range(n):
        def d(c):
            return [i * c[i] for i in range(1, len(c))] or [Fraction(0)]

        def times_one_minus_rho2(c):
            out = [Fraction(0)] * (len(c) + 2)
            for i, x in enumerate(c):
                out[i] += x
                out[i + 2] -= x
            return out

        def times_rho(c, f):
            return [Fraction(0)] + [f * x for x in c]

        def add(*polys):
            out = [Fraction(0)] * max(len(c) for c in polys)
            for c in polys:
                for i, x in enumerate(c):
                    out[i] += x
            return out
        P, Q = (add(times_one_minus_rho2(d(P)), times_rho(P, 2 * k + 1)),
                add(P, times_one_minus_rho2(d(Q)), times_rho(Q, 2 * k)))
    return P, Q


def arc_cosine(m, n: int, K, p, s, theta):
    """p^{n/2}·J_n(θ)/(2π) as (s·Q̃_n(K, p) + (π − θ)·P̃_n(K, p))/(2π)."""
    P, Q = arc_cosine_polynomials(n)
    tilde_p = homogeneous(m, {i: c for i, c in enumerate(P) if c}, K, p, n)
    out = (m.const(math.pi) - theta) * tilde_p
    if n:
        tilde_q = homogeneous(m, {i: c for i, c in enumerate(Q) if c}, K, p, n - 1)
        out = s * tilde_q + out
    return out * m.const(1 / (2 * math.pi))


@dataclass(frozen=True)
class RectifiedMonomial(ArcCosineKernel, Elementwise):
    degree: int = 2

    keyword = "rectified_monomial"
    options = (WholeUpTo("degree", 2, "the power n of max(x, 0)^n", minimum=0,
                         maximum=MAX_DEGREE),)
    summary = "max(x, 0)^degree (the arc-cosine kernel of that degree)"
    examples = ("degree=0", "degree=1", "degree=3")
    transcendentals_per_entry = 2

    @property
    def flops_per_entry(self) -> int:
        return 8 * self.degree + 12

    def entry(self, m, K, v1, v2, f1=None, f2=None):
        n = self.degree
        p, s, theta = self.sine_and_angle(m, K, v1, v2, f1, f2)
        new = arc_cosine(m, n, K, p, s, theta)
        if n == 0:
            return new, m.const(0)
        return new, m.const(n * n) * arc_cosine(m, n - 1, K, p, s, theta)


def hermite_coefficients(coef: tuple[float, ...]) -> list[list[float]]:
    """[R_l as coefficients in v] for l = 0 … n: R_l(v) = Σ_i c_{2i+l}(2i + l)!/(2^i i!) v^i."""
    n = len(coef) - 1
    return [[coef[2 * i + l] * math.factorial(2 * i + l) / (2 ** i * math.factorial(i))
             for i in range((n - l) // 2 + 1)] for l in range(n + 1)]


def _horner(m, coeffs: list[float], x):
    """Σ_i coeffs[i]·x^i (None where every coefficient is 0)."""
    while coeffs and coeffs[-1] == 0:
        coeffs = coeffs[:-1]
    if not coeffs:
        return None
    acc = m.const(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * x
        if c:
            acc = acc + m.const(c)
    return acc


@dataclass(frozen=True)
class Polynomial(Elementwise):
    coef: tuple[float, ...] | None = None

    keyword = "polynomial"
    options = (RealList("coef", None, "c_0, c_1, …: the polynomial Σ_k c_k x^k",
                        min_items=1, max_items=MAX_DEGREE + 1),)
    summary = "Σ_k coef[k]·x^k"
    examples = ("coef=[0.1, 1, 0.5]", "coef=[0.2, -0.6, 0, 0.3]", "coef=[0.5]")
    transcendentals_per_entry = 0

    @classmethod
    def build(cls, pos, size, values, flags, ctx):
        if values["coef"] is None:
            raise NetError("polynomial needs its coefficients: coef=[c0, c1, ...] (c0 + c1·x + "
                           "…, e.g. polynomial coef=[0.1, 1, 0.5])", pos)
        return super().build(pos, size, values, flags, ctx)

    @property
    def flops_per_entry(self) -> int:
        n = len(self.coef)
        return n * n + 4 * n

    def entry(self, m, K, v1, v2):
        R = hermite_coefficients(self.coef)
        # A_l = R_l(v) R_l(v') / l!  and  Σ' = Σ_l A_l Σ^l,  Σ̇ = Σ_l l A_l Σ^{l−1}
        products = []
        for l, r in enumerate(R):
            a, b = _horner(m, r, v1), _horner(m, r, v2)
            products.append(None if a is None else a * b)
        new = dot = None
        for l in range(len(R) - 1, -1, -1):
            if new is not None:
                new = new * K
            if products[l] is not None:
                term = products[l] * m.const(1 / math.factorial(l))
                new = term if new is None else new + term
            if l >= 1:
                if dot is not None:
                    dot = dot * K
                if products[l] is not None:
                    term = products[l] * m.const(1 / math.factorial(l - 1))
                    dot = term if dot is None else dot + term
        return (m.const(0) if new is None else new), (m.const(0) if dot is None else dot)


__all__ = ["Monomial", "Polynomial", "RectifiedMonomial"]
