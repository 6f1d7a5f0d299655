"""Each activation of issue 10 against an independent evaluation of its defining integrals
Σ' = E f(u) f(u'), Σ̇ = E f'(u) f'(u') over the bivariate Gaussian, at points (Σ, v, v'):
high-degree Gauss–Hermite quadrature of f and f' written here in NumPy for the smooth
ones, Cho & Saul's angular integral for rectified_monomial, closed forms for sign and abs.
Then the self pass (Σ = v = v'): neural-tangents' diagonal maps; numerical stability at
tiny and huge variances; and brute_force.py (the property tests' oracle) on whole nets.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import infinet
from infinet.errors import NumericalError
from infinet.layers.mathns import NumpyMath

import brute_activations
import brute_force

M64 = NumpyMath("float64")
POINTS = [(0.3, 0.7, 0.9), (-0.5, 1.1, 0.6), (0.8, 0.8, 0.8), (0.0, 0.5, 1.5),
          (1.4, 1.5, 2.0), (-0.79, 0.8, 0.8), (0.05, 0.1, 0.2)]


def layer(text: str):
    plan = infinet.compile(f"input 3\ndense\n{text}\ndense\n").plan
    return plan.nodes[2].layer


def entry(L, K, v1, v2):
    with np.errstate(all="ignore"):        # as the executors evaluate it (inf is checked)
        new, dot = L.entry(M64, np.float64(K), np.float64(v1), np.float64(v2))
    return float(new), (1.0 if dot is None else float(dot))


_T, _W = np.polynomial.hermite.hermgauss(160)


def gauss_expectation(f, K, v1, v2):
    """E f(u) f(u'): 160² Gauss–Hermite points along the eigenvectors of the covariance."""
    lam, V = np.linalg.eigh(np.array([[v1, K], [K, v2]]))
    z1, z2 = np.meshgrid(_T, _T, indexing="ij")
    pts = V @ (np.sqrt(2 * np.clip(lam, 0, None))[:, None] * np.stack([z1.ravel(), z2.ravel()]))
    return float(np.outer(_W, _W).ravel() @ (f(pts[0]) * f(pts[1]))) / math.pi


def phi_cdf(t):
    return 0.5 * (1 + brute_activations._erf(t / math.sqrt(2)))


BETA = 1 / 2.4020563531719796
SMOOTH = {   # text: (f, f')
    "gelu": (lambda t: t * phi_cdf(t),
             lambda t: phi_cdf(t) + t * np.exp(-t * t / 2) / math.sqrt(2 * math.pi)),
    "sin": (np.sin, np.cos),
    "sin a=1.2 b=0.8 c=0.3": (lambda t: 1.2 * np.sin(0.8 * t + 0.3),
                              lambda t: 0.96 * np.cos(0.8 * t + 0.3)),
    "cos": (np.cos, lambda t: -np.sin(t)),
    "cos a=0.9 b=1.1 c=-0.4": (lambda t: 0.9 * np.cos(1.1 * t - 0.4),
                               lambda t: -0.99 * np.sin(1.1 * t - 0.4)),
    "rbf gamma=0.3": (lambda t: math.sqrt(2) * np.sin(math.sqrt(0.6) * t + math.pi / 4),
                      lambda t: math.sqrt(1.2) * np.cos(math.sqrt(0.6) * t + math.pi / 4)),
    "exp a=0.5 b=0.5": (lambda t: 0.5 * np.exp(0.5 * t), lambda t: 0.25 * np.exp(0.5 * t)),
    "exp a=1.5 b=-0.3": (lambda t: 1.5 * np.exp(-0.3 * t), lambda t: -0.45 * np.exp(-0.3 * t)),
    "gaussian": (lambda t: np.exp(-t * t), lambda t: -2 * t * np.exp(-t * t)),
    "gaussian a=1.3 b=0.1": (lambda t: 1.3 * np.exp(0.1 * t * t),
                             lambda t: 0.26 * t * np.exp(0.1 * t * t)),
    "monomial": (lambda t: t ** 3, lambda t: 3 * t * t),
    "monomial degree=6": (lambda t: t ** 6, lambda t: 6 * t ** 5),
    "monomial degree=0": (lambda t: t ** 0, lambda t: 0 * t),
    "polynomial coef=[0.1, 1, 0.5]": (lambda t: 0.1 + t + 0.5 * t * t, lambda t: 1 + t),
    "polynomial coef=[0.2, -0.6, 0, 0.3, 0.05]": (
        lambda t: 0.2 - 0.6 * t + 0.3 * t ** 3 + 0.05 * t ** 4,
        lambda t: -0.6 + 0.9 * t * t + 0.2 * t ** 3),
    "sigmoid_like": (lambda t: 0.5 * brute_activations._erf(BETA * t) + 0.5,
                     lambda t: BETA / math.sqrt(math.pi) * np.exp(-(BETA * t) ** 2)),
    'elementwise fn="x^3 - 0.5*x + 0.2" deg=4': (lambda t: t ** 3 - 0.5 * t + 0.2,
                                                 lambda t: 3 * t * t - 0.5),
    'elementwise fn="sin(x) + x/2" deg=40': (lambda t: np.sin(t) + t / 2,
                                             lambda t: np.cos(t) + 0.5),
}


@pytest.mark.parametrize("text", sorted(SMOOTH))
def test_smooth_activations_are_their_gaussian_integrals(text):
    f, df = SMOOTH[text]
    L = layer(text)
    for K, v1, v2 in POINTS:
        new, dot = entry(L, K, v1, v2)
        # scale: the geometric mean of the self terms (the values may be near 0)
        scale = math.sqrt(gauss_expectation(f, v1, v1, v1) * gauss_expectation(f, v2, v2, v2))
        dscale = math.sqrt(gauss_expectation(df, v1, v1, v1) * gauss_expectation(df, v2, v2, v2))
        assert abs(new - gauss_expectation(f, K, v1, v2)) <= 1e-12 * scale, (text, K, v1, v2)
        assert abs(dot - gauss_expectation(df, K, v1, v2)) <= 1e-12 * (dscale or 1), (text, K)


def _df(n):
    return math.prod(range(n, 0, -2)) if n > 0 else 1


@pytest.mark.parametrize("n", range(9))
def test_rectified_monomial_is_the_arc_cosine_kernel(n):
    """Cho & Saul (2009): E[max(u,0)^n max(u',0)^n] = (v v')^{n/2} J_n(θ)/(2π), J_n by its
    angular integral (brute_activations); Σ̇ = n² × the kernel of degree n − 1."""
    L = layer(f"rectified_monomial degree={n}")
    for K, v1, v2 in POINTS + [(-0.8, 0.8, 0.8), (0.0, 0.0, 0.7)]:
        new, dot = entry(L, K, v1, v2)
        want, dwant = brute_activations._rectified_monomial(K, v1, v2, L)
        scale = (v1 * v2) ** (n / 2) * _df(2 * n - 1) / 2            # the diagonal value
        dscale = n * n * (v1 * v2) ** ((n - 1) / 2) * _df(2 * n - 3) / 2 if n else 1.0
        assert abs(new - float(want)) <= 1e-14 * max(scale, 1), (n, K, v1, v2)
        assert abs(dot - float(dwant)) <= 1e-14 * max(dscale, 1), (n, K, v1, v2)
        if n == 1:                                                    # relu
            assert (new, dot) == pytest.approx(entry(layer("relu"), K, v1, v2), abs=1e-15)


def test_sign_and_abs_are_the_arcsine_and_arccosine_kernels():
    sign, absolute = layer("sign"), layer("abs")
    for K, v1, v2 in POINTS:
        rho = K / math.sqrt(v1 * v2)
        theta = math.acos(rho)
        assert entry(sign, K, v1, v2) == pytest.approx((2 / math.pi * math.asin(rho), 0.0),
                                                       abs=1e-15)
        want = math.sqrt(v1 * v2) * 2 / math.pi * (math.sin(theta)
                                                  + (math.pi / 2 - theta) * math.cos(theta))
        assert entry(absolute, K, v1, v2) == pytest.approx((want, 1 - 2 * theta / math.pi),
                                                           rel=1e-14, abs=1e-16)


# -- the self pass: neural-tangents' diagonal maps (nngp_fn_diag) -----------------------------

DIAGONAL = {   # text: v -> Σ'(v, v, v), NT's nngp_fn_diag (stax/elementwise.py)
    "gelu": lambda v: v * ((v / ((v + 1) * math.sqrt(1 + 2 * v))
                            + math.atan2(v, math.sqrt(1 + 2 * v)) / 2) / math.pi + 0.25),
    "sin a=1.2 b=0.8 c=0.3": lambda v: 0.72 * (1 - math.exp(-2 * 0.64 * v) * math.cos(0.6)),
    "cos": lambda v: 0.5 * (1 - math.exp(-2 * v) * math.cos(math.pi)),
    "rbf gamma=0.3": lambda v: 1.0,
    "exp a=0.5 b=0.5": lambda v: 0.25 * math.exp(2 * 0.25 * v),
    "gaussian a=1.3 b=-0.4": lambda v: 1.69 / math.sqrt(1 + 1.6 * v),
    "sign": lambda v: 1.0,
    "abs": lambda v: v,
    "monomial": lambda v: _df(5) * v ** 3,
    "monomial degree=5": lambda v: _df(9) * v ** 5,
    "rectified_monomial": lambda v: _df(3) * v ** 2 / 2,
    "rectified_monomial degree=7": lambda v: _df(13) * v ** 7 / 2,
    # Σ_l r(v, l)² with r from NT's Polynomial: (0.1 + 0.5 v)² + v, for [0.1, 1, 0.5]
    "polynomial coef=[0.1, 1, 0.5]": lambda v: (0.1 + 0.5 * v) ** 2 + v + 0.5 * v * v,
    "sigmoid_like": lambda v: 0.25 * 2 / math.pi * math.atan2(
        BETA ** 2 * v, math.sqrt(BETA ** 2 * v + 0.25)) + 0.25,
}


@pytest.mark.parametrize("text", sorted(DIAGONAL))
def test_self_pass_is_nt_diagonal_map(text):
    L = layer(text)
    for v in (1e-6, 0.3, 1.0, 2.5, 40.0):
        assert entry(L, v, v, v)[0] == pytest.approx(DIAGONAL[text](v), rel=4e-15), (text, v)


def test_self_pass_is_exact_where_the_answer_is_a_constant():
    for v in (1e-300, 1e-8, 0.7, 3.0, 1e8):
        assert entry(layer("rbf"), v, v, v)[0] == 1.0
        assert entry(layer("sign"), v, v, v)[0] == 1.0
    assert entry(layer("sign"), 0.0, 0.0, 0.0) == (0.0, 0.0)       # sign(0) = 0


def test_tiny_variances_keep_full_relative_accuracy():
    """sin: a²/2·(1 − e^{−2b²v}) by expm1 — the textbook difference loses all digits."""
    L = layer("sin b=2")
    for v in (1e-12, 1e-9, 1e-6):
        assert entry(L, v, v, v)[0] == pytest.approx(-0.5 * math.expm1(-8 * v), rel=1e-15)
        k = v / 3           # off the diagonal too
        want = 0.5 * (math.exp(-4 * (v - k)) - math.exp(-4 * (v + k)))
        assert entry(L, k, v, v)[0] == pytest.approx(want, rel=1e-9)
        assert entry(L, k, v, v)[0] == pytest.approx(math.exp(-4 * v) * math.sinh(4 * k),
                                                     rel=1e-14)


def test_huge_variances_give_finite_values_where_the_exact_ones_are():
    # exp: a² e^{2b²v} = 1e-4·e^{712} ≈ 1.4e305 is finite although e^{712} is not
    new, dot = entry(layer("exp a=0.01 b=1"), 356.0, 356.0, 356.0)
    assert new == pytest.approx(math.exp(712 + 2 * math.log(0.01)), rel=1e-12)
    assert math.isfinite(dot)
    # sin, rbf, gaussian: bounded kernels stay bounded at any variance
    for text in ("sin", "cos b=3", "rbf gamma=2", "gaussian", "sigmoid_like", "gelu"):
        for K, v in ((1e6, 1e6), (-3e5, 1e6), (0.0, 1e100), (1e100, 1e100)):
            new, dot = entry(layer(text), K, v, v)
            assert math.isfinite(new) and math.isfinite(dot), (text, K, v)


def test_a_divergent_gaussian_is_a_numerical_error_not_a_wrong_number():
    """gaussian b > 0: E exp(b u² + b u'²) = ∞ unless I − 2bΣ is positive definite.  NT's
    formula only checks det(I − 2bΣ) > 0 (v = v' = 1, Σ = 0, b = 1: det = 1, NT says 1)."""
    L = layer("gaussian a=1 b=1")
    new, _ = entry(L, 0.0, 1.0, 1.0)
    assert new == math.inf
    assert entry(layer("gaussian a=1 b=0.1"), 0.0, 1.0, 1.0)[0] == pytest.approx(1 / 0.8)
    k = infinet.compile("input 4\ndense W=1 b=1\ngaussian b=1\ndense\n")
    with pytest.raises(NumericalError):
        k(np.ones((2, 4)), np.ones((1, 4)))


# -- brute_force.py agrees on whole nets (so the property tests hold every kind to it) ----------

NETS = [
    "input 5\ndense W=1.2 b=0.1\n{act}\ndense W=0.8 b=0.2\n{act}\ndense\n",
    "input 4x3x2\nconv 3x3 W=1.1 b=0.1\n{act}\nconv 2x2 pad=valid W=0.9\n{act}\ngap\ndense\n",
]
ALL = ["gelu", "sin a=1.2 b=0.8 c=0.3", "cos", "rbf gamma=0.3", "exp a=0.5 b=0.5",
       "gaussian a=1.3 b=-0.4", "sign", "abs", "monomial", "rectified_monomial degree=3",
       "polynomial coef=[0.2, -0.6, 0, 0.3]", "sigmoid_like",
       'elementwise fn="x^3 - 0.5*x + 0.2" deg=4']


@pytest.mark.parametrize("act", ALL)
@pytest.mark.parametrize("net", NETS, ids=["mlp", "cnn_gap"])
def test_brute_force_agrees(act, net):
    k = infinet.compile(net.format(act=act))
    rng = np.random.default_rng(3)
    x1, x2 = (rng.normal(size=(n,) + k.plan.data_shape) for n in (2, 2))
    got = k(x1, x2)
    want_K, want_T = brute_force.kernel_matrices(k.plan, x1, x2)
    assert np.abs(got.nngp - want_K).max() <= 1e-10 * np.abs(want_K).max()
    assert np.abs(got.ntk - want_T).max() <= 1e-10 * np.abs(want_T).max()
