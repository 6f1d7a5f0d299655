"""Monte-Carlo checks of the activations of issue 10 against finite random networks (the
conventions, estimator and bound of test_monte_carlo.py: 5 standard errors plus a 3/width
finite-width bias, and a proof that the bound rejects a kernel off by `resolution`).

rectified_monomial is where neural-tangents is wrong: its K(x, x) is NaN, and so is every
kernel after a second nonlinearity; these estimates include the diagonal K(x, x).
"""
from __future__ import annotations

import math

import numpy as np
from threadpoolctl import threadpool_limits

import infinet
from scipy_free_erf import erf
from test_monte_carlo import check, times_gaussian

X = np.random.default_rng(11).normal(size=(5, 10))


def _hidden(x, W, b, width, rng):
    return W / math.sqrt(x.shape[1]) * x @ rng.standard_normal((x.shape[1], width)) \
        + b * rng.standard_normal(width)


def _wide(h, W, b, rng):
    """The next layer's pre-activations from features h [N, width], exactly in law."""
    width = h.shape[1]
    z = times_gaussian((h * (W / math.sqrt(width))).astype(np.float32), width, rng)
    return z.astype(np.float64) + b * rng.standard_normal(width)


def test_rectified_monomial_nngp_and_ntk_of_a_one_hidden_layer_net():
    """max(z, 0)² after dense W=1.2 b=0.3, then dense W=1.1 b=0.1: Σ and Θ, diagonal included
    (Θ: the readout's expectation taken exactly, E v_j² = 1)."""
    net = "input 10\ndense W=1.2 b=0.3\nrectified_monomial\ndense W=1.1 b=0.1\n"
    exact = infinet.compile(net)(X)
    assert np.isfinite(exact.nngp).all() and np.isfinite(exact.ntk).all()
    rng = np.random.default_rng(12)
    width, networks = 2048, 1000
    inputs = 1.2 ** 2 * X @ X.T / 10 + 0.3 ** 2
    K_est, T_est = [], []
    with threadpool_limits(1, user_api="blas"):
        for _ in range(networks):
            z = _hidden(X, 1.2, 0.3, width, rng)
            phi, dphi = np.maximum(z, 0) ** 2, 2 * np.maximum(z, 0)
            K = 1.1 ** 2 * phi @ phi.T / width + 0.1 ** 2
            K_est.append(K)
            # Θ = Σ over the readout's and the hidden layer's parameters of ∂f ∂f'
            T_est.append(K + 1.1 ** 2 / width * dphi @ dphi.T * inputs)
    check(np.array(K_est), exact.nngp, width, resolution=0.03)
    check(np.array(T_est), exact.ntk, width, resolution=0.03)


def test_layers_after_a_rectified_monomial():
    """max(z,0)² then relu, and max(z,0)³ then the step max(z,0)⁰ (NT: NaN everywhere)."""
    rng = np.random.default_rng(13)
    for first, second, resolution, networks in ((2, "relu", 0.03, 1600), (3, "rectified_monomial "
                                                "degree=0", 0.02, 400)):
        net = (f"input 10\ndense W=1.2 b=0.3\nrectified_monomial degree={first}\n"
               f"dense W=0.8 b=0.2\n{second}\ndense W=1.1 b=0.1\n")
        exact = infinet.compile(net)(X).nngp
        width, est = 2048, []
        with threadpool_limits(1, user_api="blas"):
            for _ in range(networks):
                h = np.maximum(_hidden(X, 1.2, 0.3, width, rng), 0) ** first
                z = _wide(h, 0.8, 0.2, rng)
                g = np.maximum(z, 0) if second == "relu" else (z >= 0).astype(float)
                est.append(1.1 ** 2 * g @ g.T / width + 0.1 ** 2)
        check(np.array(est), exact, width, resolution=resolution)


def test_smooth_activations_and_an_expression_in_a_deep_mlp():
    """gelu → elementwise fn="x * tanh(x)" → sin a=1.2 b=0.8 c=0.3 → gaussian: Σ."""
    net = ("input 10\ndense W=1.2 b=0.3\ngelu\ndense W=1.3 b=0.1\nelementwise fn=\"x * tanh(x)\"\n"
           "dense W=0.9 b=0.2\nsin a=1.2 b=0.8 c=0.3\ndense W=1.1\ngaussian a=1.3 b=-0.4\n"
           "dense W=1.2 b=0.1\n")
    exact = infinet.compile(net)(X).nngp
    rng = np.random.default_rng(14)
    width, networks, est = 2048, 200, []
    with threadpool_limits(1, user_api="blas"):
        for _ in range(networks):
            z = _hidden(X, 1.2, 0.3, width, rng)
            h = z * 0.5 * (1 + erf(z / math.sqrt(2)))
            z = _wide(h, 1.3, 0.1, rng)
            h = z * np.tanh(z)
            z = _wide(h, 0.9, 0.2, rng)
            h = 1.2 * np.sin(0.8 * z + 0.3)
            z = _wide(h, 1.1, 0.0, rng)
            h = 1.3 * np.exp(-0.4 * z * z)
            est.append(1.2 ** 2 * h @ h.T / width + 0.1 ** 2)
    check(np.array(est), exact, width, resolution=0.02)
