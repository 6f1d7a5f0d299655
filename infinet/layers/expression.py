"""Any activation as an expression: ``elementwise fn="x * tanh(x)" deg=25``.

The kernel is neural-tangents' ElementwiseNumerical(fn, deg) (stax/elementwise.py
l.1134-1247): Gauss–Hermite quadrature of degree ``deg`` (nodes x_i, weights w_i of
∫ e^{−t²} g(t) dt) over the bivariate Gaussian of (u, u′), written through the Cholesky
factor of its covariance:

    u = a·x_i,  u′ = c·x_i + r·x_j,   a = √(2v),  c = Σ/√(v/2),  r = √(2(v v′ − Σ²)/v)
    Σ' = (1/π) Σ_i w_i f(u) Σ_j w_j f(u′),   Σ̇ = (1/π) Σ_i w_i f'(u) Σ_j w_j f'(u′)

with f' the derivative of the expression taken symbolically (formula.py; NT takes it with
jax.grad, with the same values at kinks).  v v′ − Σ² is formed once and clamped at 0, so
on the self pass (Σ = v = v′) r = 0 exactly and the double sum is the one-dimensional rule
(1/√π) Σ_i w_i f(√(2v) x_i)² of NT's diagonal path; where v = 0 the divisor is 1e-30 (NT's
floor), giving u = u′ = 0.  The generated code is one loop nest over static tables of the
deg nodes and weights (mathns.quadrature), not deg² copies.

The degree: 25 when not given (NT's recommended starting point; NT has no default) and
at most MAX_DEG.  Gauss–Hermite of degree n integrates polynomials up to degree 2n − 1
exactly, so a polynomial activation of degree d is exact (to rounding) from deg = d + 1;
for a smooth activation the error falls quickly with deg and grows with the variance, and
for a kink (abs, max, relu-like) it falls only like a power of deg: use the closed-form
layer where one exists (docs/semantics.md has the table of errors against degree).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import NetError
from .base import Elementwise, Text, WholeUpTo
from .formula import Formula, evaluate, parse

DEFAULT_DEG = 25
MAX_DEG = 200
#: NT's floor under v/2 before dividing by its square root
TINY = 1e-30


@lru_cache(maxsize=None)
def hermite_rule(deg: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Gauss–Hermite nodes and weights for ∫ e^{−t²} g(t) dt (numpy's hermgauss)."""
    x, w = np.polynomial.hermite.hermgauss(deg)
    return tuple(float(t) for t in x), tuple(float(t) for t in w)


@dataclass(frozen=True)
class FormulaOption(Text):
    """``fn="…"``: an expression in x, parsed when the layer is built."""

    def convert(self, text, at, ctx):
        return parse(text, at, ctx.params)


@dataclass(frozen=True)
class ElementwiseExpression(Elementwise):
    fn: Formula | None = None
    deg: int = DEFAULT_DEG

    keyword = "elementwise"
    options = (FormulaOption("fn", None, "the activation as an expression in x"),
               WholeUpTo("deg", DEFAULT_DEG, "Gauss-Hermite degree (points per axis)",
                         minimum=1, maximum=MAX_DEG))
    summary = "any activation as an expression in x, by Gauss–Hermite quadrature"
    # exact at their degrees (polynomials, and identities that reduce to one), so the
    # property tests can hold them to an independent high-degree quadrature
    examples = ('fn="x^3 - 0.5*x + 0.2" deg=4',
                'fn="(sin(x)^2 + cos(x)^2)*x/2 + (softplus(x) - softplus(-x) + max(x, 0) + '
                'min(x, 0))/4 + sigmoid(x) + sigmoid(-x) - 1 + tanh(x) - tanh(x) + erf(x) - '
                'erf(x) + abs(x) - abs(x) + exp(x - x) - 1 + log(2 + sin(x)^2 + cos(x)^2) - '
                'log(3) + sqrt(3 + sin(x)^2 + cos(x)^2) - 2 + (sin(x)^2 + cos(x)^2)^1.5 - 1" '
                'deg=3')

    @classmethod
    def build(cls, pos, size, values, flags, ctx):
        if values["fn"] is None:
            raise NetError('elementwise needs the activation: fn="..." (an expression in x, '
                           'e.g. elementwise fn="x * tanh(x)")', pos)
        return super().build(pos, size, values, flags, ctx)

    @property
    def flops_per_entry(self) -> int:
        ops = self.fn.count()["flops"] + 8
        return self.deg * self.deg * (2 * ops + 4) + self.deg * (2 * ops + 8) + 12

    @property
    def transcendentals_per_entry(self) -> int:
        return (self.deg * self.deg + self.deg) * self.fn.count()["calls"] + 2

    def entry(self, m, K, v1, v2):
        points, weights = hermite_rule(self.deg)
        tiny = m.const(TINY)
        a = m.sqrt(m.const(2) * v1)
        c = K / m.sqrt(m.max(v1 * m.const(0.5), tiny))
        r = m.sqrt(m.const(2) * m.max0(v1 * v2 - K * K) / m.max(v1, tiny))

        def outer(xi):
            f, df = evaluate(self.fn, m, a * xi)
            center = c * xi

            def inner(xj):
                return evaluate(self.fn, m, center + r * xj)
            g, dg = m.quadrature(points, weights, inner)
            return f * g, df * dg
        s, ds = m.quadrature(points, weights, outer)
        inv_pi = m.const(1 / math.pi)
        return s * inv_pi, ds * inv_pi


__all__ = ["ElementwiseExpression", "hermite_rule"]
