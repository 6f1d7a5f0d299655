"""Independent kernels of the activations of issue 10, for brute_force.py.

Each maps (Σ, v, v', layer) to (Σ', Σ̇) = (E f(u)f(u'), E f'(u)f'(u')) over the bivariate
Gaussian, written from textbook identities in other algebraic forms than infinet's
layers (which must not be called here):

* sin, cos: products to sums, E cos(t) = exp(−Var t/2) cos(E t) for Gaussian t;
* rbf, exp: the moment generating function;  gaussian: det(I − 2bΣ)^{−1/2} and the
  tilted covariance Σ(I − 2bΣ)^{−1} as 2×2 matrices;
* gelu: Tsuchida et al.'s arcsine form;  sign: (2/π)·arcsin(ρ);  abs: the relu family;
* sigmoid_like: the erf kernel with the input scaled by β and NT's affine output;
* monomial, polynomial: Gauss–Hermite over the bivariate Gaussian, of a degree at which
  it is exact for the polynomial (Cholesky factor), with numpy.polynomial's derivative;
* rectified_monomial: Cho & Saul's arc-cosine kernel as the angular integral
  J_n(θ) = 2^n n! ∫_{θ−π/2}^{π/2} cos^n φ cos^n(φ − θ) dφ (polar coordinates), by
  Gauss–Legendre quadrature;
* elementwise: Gauss–Hermite of degree max(24, 2·deg) along the eigenvectors of the 2×2
  covariance (not its Cholesky factor), with f and f' from the fn text evaluated by
  Python on dual numbers (not infinet's parser or derivative).
"""
from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[float])


def _sin_cos(K, v1, v2, L, kind):
    a, b, c = L.a, L.b, L.c
    near = np.exp(-b * b * (v1 + v2 - 2 * K) / 2)      # E cos(b(u − u'))
    far = np.exp(-b * b * (v1 + v2 + 2 * K) / 2) * math.cos(2 * c)   # E cos(b(u + u') + 2c)
    sign = -1 if kind == "sin" else 1
    return a * a / 2 * (near + sign * far), a * a * b * b / 2 * (near - sign * far)


def _rbf(K, v1, v2, L):
    k = np.exp(-L.gamma * (v1 + v2 - 2 * K))
    return k, 2 * L.gamma * k


def _exp(K, v1, v2, L):
    k = L.a ** 2 * np.exp(L.b ** 2 * (v1 + v2 + 2 * K) / 2)     # E e^{b(u + u')}·a²
    return k, L.b ** 2 * k


def _gaussian(K, v1, v2, L):
    a, b = L.a, L.b
    m11, m12, m22 = 1 - 2 * b * v1, -2 * b * K, 1 - 2 * b * v2       # M = I − 2bΣ
    det = m11 * m22 - m12 * m12
    # tilted covariance S = Σ M^{-1} = Σ adj(M) / det: E[u u' e^{b(u²+u'²)}] = S12/√det
    s12 = (v1 * -m12 + K * m11) / det
    return a * a / np.sqrt(det), 4 * a * a * b * b * s12 / np.sqrt(det)


def _gelu(K, v1, v2, L):
    q = (1 + v1) * (1 + v2)
    arc = np.arcsin(K / np.sqrt(q))
    rest = np.sqrt(q - K * K)
    k = K / 4 + (K * arc + (K * K + v1 * v2 * (q - K * K)) / (q * rest)) / (2 * math.pi)
    d = 0.25 + arc / (2 * math.pi) + K / (2 * math.pi * rest) * (
        1 / (q - K * K) + (1 - v1 * v2) / q + 1)
    return k, d


def _rho(K, v1, v2):
    norm = np.sqrt(v1 * v2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, np.clip(K / np.where(norm > 0, norm, 1), -1, 1), 0.0)


def _sign(K, v1, v2, L):
    return 2 / math.pi * np.arcsin(_rho(K, v1, v2)), 0.0 * K


def _sigmoid_like(K, v1, v2, L):
    a, beta, c = 0.5, 1 / 2.4020563531719796, 0.5
    B = beta * beta
    q = (1 + 2 * B * v1) * (1 + 2 * B * v2)
    return (a * a * 2 / math.pi * np.arcsin(2 * B * K / np.sqrt(q)) + c * c,
            a * a * B * 4 / math.pi / np.sqrt(q - 4 * B * B * K * K))


def _cholesky_quadrature(f, K, v1, v2, deg):
    """(1/π) Σ_ij w_i w_j f(u_i) f(u'_ij) with u = √(2v) t_i, u' = √2(ρ√v' t_i + √(v'(1−ρ²)) t_j)."""
    t, w = np.polynomial.hermite.hermgauss(deg)
    K, v1, v2 = np.broadcast_arrays(*(np.asarray(a, float) for a in (K, v1, v2)))
    safe = np.where(v1 > 0, v1, 1.0)
    c = np.where(v1 > 0, K / np.sqrt(safe), 0.0)
    r = np.sqrt(np.clip(v2 - np.where(v1 > 0, K * K / safe, 0.0), 0, None))
    ti, tj = t[:, None], t[None, :]
    u = np.sqrt(2 * v1)[..., None, None] * ti
    u2 = math.sqrt(2) * (c[..., None, None] * ti + r[..., None, None] * tj)
    return np.einsum("i,j,...ij->...", w, w, f(u) * f(u2)) / math.pi


def _polynomial_kernel(coef, K, v1, v2):
    P = np.polynomial.Polynomial(coef)
    deg = len(coef) + 1                  # exact: f·f has degree ≤ 2(len − 1) per axis
    k = _cholesky_quadrature(P, K, v1, v2, deg)
    d = _cholesky_quadrature(P.deriv(), K, v1, v2, deg) if len(coef) > 1 else 0.0 * k
    return k, d


def _monomial(K, v1, v2, L):
    return _polynomial_kernel([0.0] * L.degree + [1.0], K, v1, v2)


def _polynomial(K, v1, v2, L):
    return _polynomial_kernel(list(L.coef), K, v1, v2)


_GL_T, _GL_W = np.polynomial.legendre.leggauss(64)


def _arc_cosine_J(n, theta):
    lo, hi = theta - math.pi / 2, math.pi / 2
    half = (hi - lo) / 2
    phi = half[..., None] * _GL_T + ((hi + lo) / 2)[..., None]
    integrand = np.cos(phi) ** n * np.cos(phi - theta[..., None]) ** n
    return 2 ** n * math.factorial(n) * half * (integrand @ _GL_W)


def _rectified_monomial(K, v1, v2, L):
    n = L.degree
    K, v1, v2 = np.broadcast_arrays(*(np.asarray(a, float) for a in (K, v1, v2)))
    theta = np.where(v1 * v2 > 0, np.arccos(_rho(K, v1, v2)), math.pi / 2)
    root = np.sqrt(v1 * v2)
    k = root ** n * _arc_cosine_J(n, theta) / (2 * math.pi)
    if n == 0:
        return k, 0.0 * k
    return k, n * n * root ** (n - 1) * _arc_cosine_J(n - 1, theta) / (2 * math.pi)


# -- elementwise fn="…": dual numbers ---------------------------------------------------------

class Dual:
    """v + d·ε with ε² = 0: f(Dual(x, 1)) carries f(x) and f'(x)."""

    def __init__(self, v, d):
        self.v, self.d = np.asarray(v, float), np.asarray(d, float)

    @staticmethod
    def of(x):
        return x if isinstance(x, Dual) else Dual(x, 0.0)

    def __add__(self, o):
        o = Dual.of(o)
        return Dual(self.v + o.v, self.d + o.d)

    __radd__ = __add__

    def __sub__(self, o):
        o = Dual.of(o)
        return Dual(self.v - o.v, self.d - o.d)

    def __rsub__(self, o):
        return Dual.of(o) - self

    def __mul__(self, o):
        o = Dual.of(o)
        return Dual(self.v * o.v, self.d * o.v + self.v * o.d)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = Dual.of(o)
        return Dual(self.v / o.v, (self.d * o.v - self.v * o.d) / (o.v * o.v))

    def __rtruediv__(self, o):
        return Dual.of(o) / self

    def __neg__(self):
        return Dual(-self.v, -self.d)

    def __pos__(self):
        return self

    def __pow__(self, o):
        if not isinstance(o, Dual):       # a constant exponent: c·x^(c−1)
            if o == 0:
                return Dual(np.ones_like(self.v), np.zeros_like(self.v))
            return Dual(self.v ** o, o * self.v ** (o - 1) * self.d)
        value = self.v ** o.v
        return Dual(value, value * (o.d * np.log(self.v) + o.v * self.d / self.v))

    def __rpow__(self, o):
        return Dual.of(o) ** self


def _lift(f, df):
    def g(x):
        if not isinstance(x, Dual):
            return f(np.asarray(x, float))
        return Dual(f(x.v), df(x.v) * x.d)
    return g


def _sigmoid(t):
    return np.where(t >= 0, 1 / (1 + np.exp(-np.abs(t))), np.exp(-np.abs(t)) / (1 + np.exp(-np.abs(t))))


def _balanced(pick_first):
    def g(a, b):
        a, b = Dual.of(a), Dual.of(b)
        first = pick_first(a.v, b.v)
        tie = a.v == b.v
        return Dual(np.where(first, a.v, b.v),
                    np.where(tie, (a.d + b.d) / 2, np.where(first, a.d, b.d)))
    return g


FUNCTIONS = {
    "exp": _lift(np.exp, np.exp),
    "log": _lift(np.log, lambda t: 1 / t),
    "sqrt": _lift(np.sqrt, lambda t: 0.5 / np.sqrt(t)),
    "abs": _lift(np.abs, lambda t: np.where(t >= 0, 1.0, -1.0)),    # JAX: d|u| = 1 at 0
    "sin": _lift(np.sin, np.cos),
    "cos": _lift(np.cos, lambda t: -np.sin(t)),
    "tanh": _lift(np.tanh, lambda t: 1 - np.tanh(t) ** 2),
    "erf": _lift(_erf, lambda t: 2 / math.sqrt(math.pi) * np.exp(-t * t)),
    "sigmoid": _lift(_sigmoid, lambda t: _sigmoid(t) * (1 - _sigmoid(t))),
    "softplus": _lift(lambda t: np.logaddexp(t, 0.0), _sigmoid),
    "max": _balanced(lambda a, b: a > b),       # JAX: half of each side's at a tie
    "min": _balanced(lambda a, b: a < b),
}


def _expression_kernel(K, v1, v2, L):
    code = compile(L.fn.text.replace("^", "**"), "<fn>", "eval")
    names = dict(FUNCTIONS, pi=math.pi, **dict(L.fn.params))

    def both(t):
        out = eval(code, {"__builtins__": {}}, dict(names, x=Dual(t, np.ones_like(t))))
        out = Dual.of(out)
        return np.broadcast_to(out.v, np.shape(t)), np.broadcast_to(out.d, np.shape(t))

    deg = max(24, 2 * L.deg)
    t, w = np.polynomial.hermite.hermgauss(deg)
    K, v1, v2 = np.broadcast_arrays(*(np.asarray(a, float) for a in (K, v1, v2)))
    # Σ = R diag(λ) Rᵀ, R the rotation by φ with tan 2φ = 2Σ12/(Σ11 − Σ22)
    phi = 0.5 * np.arctan2(2 * K, v1 - v2)
    mid, half = (v1 + v2) / 2, np.sqrt(((v1 - v2) / 2) ** 2 + K * K)
    s_big, s_small = np.sqrt(2 * (mid + half)), np.sqrt(2 * np.clip(mid - half, 0, None))
    cos, sin = np.cos(phi)[..., None, None], np.sin(phi)[..., None, None]
    z1, z2 = t[:, None], t[None, :]
    a, b = s_big[..., None, None] * z1, s_small[..., None, None] * z2
    f1, d1 = both(cos * a - sin * b)
    f2, d2 = both(sin * a + cos * b)
    k = np.einsum("i,j,...ij->...", w, w, f1 * f2) / math.pi
    d = np.einsum("i,j,...ij->...", w, w, d1 * d2) / math.pi
    return k, d


ACTIVATIONS = {
    "gelu": _gelu,
    "sin": lambda K, v1, v2, L: _sin_cos(K, v1, v2, L, "sin"),
    "cos": lambda K, v1, v2, L: _sin_cos(K, v1, v2, L, "cos"),
    "rbf": _rbf,
    "exp": _exp,
    "gaussian": _gaussian,
    "sign": _sign,
    "abs": lambda K, v1, v2, L: _abs(K, v1, v2),
    "monomial": _monomial,
    "rectified_monomial": _rectified_monomial,
    "polynomial": _polynomial,
    "sigmoid_like": _sigmoid_like,
    "elementwise": _expression_kernel,
}


def _abs(K, v1, v2):
    """E|u||u'| = √(v v')·(2/π)(sin θ + (π/2 − θ) cos θ), Σ̇ = E sign(u) sign(u') = 1 − 2θ/π."""
    rho = _rho(K, v1, v2)
    theta = np.where(v1 * v2 > 0, np.arccos(rho), math.pi / 2)
    k = np.sqrt(v1 * v2) * 2 / math.pi * (np.sin(theta) + (math.pi / 2 - theta) * np.cos(theta))
    return k, 1 - 2 * theta / math.pi
