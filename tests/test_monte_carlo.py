"""Monte-Carlo check: the NNGP (and, for an MLP, the NTK) equal the moments of many
finite random networks of the same architecture, within the stated statistical error.

The finite networks use NT's 'ntk' parameterization: weights N(0, 1), a layer computes
W/sqrt(fan_in) · Σ w·x + b·β; a wide layer's pre-activations are drawn exactly in law
from the Gram matrix of its inputs (``times_gaussian``: the same random network for a
fraction of the random numbers).  For each random network the expectation over the
readout's weights is taken exactly (the empirical kernel of the last hidden features),
and the estimate is the mean over networks; its standard error is measured from the
spread across networks.  The bound allows 5 standard errors plus an O(1/width)
finite-width bias (3/width relative); each test also proves that its bound would reject
a kernel off by a stated resolution (3% for the CNN, 1% for the MLP).
"""
from __future__ import annotations

import math

import numpy as np
from threadpoolctl import threadpool_limits

import infinet
from scipy_free_erf import erf


def patches_same(x, q):
    """x [N, H, W, C] → im2col rows [N·H·W, q·q·C]: SAME zero padding, stride 1."""
    N, H, W, C = x.shape
    lo = (q - 1) // 2
    xp = np.zeros((N, H + q - 1, W + q - 1, C), x.dtype)
    xp[:, lo:lo + H, lo:lo + W] = x
    cols = np.stack([xp[:, a:a + H, c:c + W, :] for a in range(q) for c in range(q)], axis=3)
    return cols.reshape(N * H * W, q * q * C)


def times_gaussian(P, n, rng):
    """P @ w for w [fan_in, n] with i.i.d. N(0, 1) entries, sampled exactly in law.

    Given P, each column of P @ w is N(0, P Pᵀ), independently; when fan_in exceeds the
    rows of P it is much cheaper to draw it as V √Λ ε (P Pᵀ = V Λ Vᵀ, ε ~ N(0, I)) than
    to draw the fan_in × n weights: the same random network, fewer random numbers."""
    rows, fan_in = P.shape
    if fan_in <= rows:
        return P @ rng.standard_normal((fan_in, n), dtype=np.float32)
    lam, V = np.linalg.eigh((P @ P.T).astype(np.float64))
    root = (V * np.sqrt(np.clip(lam, 0, None))).astype(np.float32)
    return root @ rng.standard_normal((rows, n), dtype=np.float32)


def cnn_features(x, rng, width):
    """conv3x3(W=√2, b=0.1) → relu → conv3x3(W=√2) → relu → avgpool 2x2 →
    conv3x3(W=1.2) → erf → gap: the features that the readout sees."""
    n = width
    h = x.astype(np.float32)       # float32 is plenty for a Monte-Carlo estimate
    for (W, b, act) in ((math.sqrt(2), 0.1, "relu"), (math.sqrt(2), 0.0, "relu"), (1.2, 0.0, "erf")):
        N, H, Wd, C = h.shape
        P = patches_same(h, 3) * np.float32(W / math.sqrt(9 * C))
        z = times_gaussian(P, n, rng).reshape(N, H, Wd, n)
        z += np.float32(b) * rng.standard_normal(n, dtype=np.float32)
        h = np.maximum(z, 0) if act == "relu" else erf(z)
        if act == "relu" and b == 0.0:
            h = h.reshape(N, H // 2, 2, Wd // 2, 2, n).mean(axis=(2, 4))
    return h.mean(axis=(1, 2)).astype(np.float64)          # gap


CNN_NET = """
input 6x6x3
conv 3x3 pad=same W=sqrt(2) b=0.1
relu
conv 3x3 pad=same W=sqrt(2)
relu
avgpool 2x2
conv 3x3 pad=same W=1.2
erf
gap
dense W=1.5 b=0.2
"""


def within_error(mean, se, exact, width) -> bool:
    bias = 3.0 / width * np.abs(exact).max()
    return bool(np.all(np.abs(mean - exact) <= 5 * se + bias))


def check(estimates: np.ndarray, exact: np.ndarray, width: int, resolution: float):
    """Agreement within 5 standard errors + finite-width bias, and a bound tight enough
    that a kernel off by ``resolution`` (relative) would fail it."""
    mean = estimates.mean(axis=0)
    se = estimates.std(axis=0, ddof=1) / math.sqrt(len(estimates))
    assert within_error(mean, se, exact, width), (mean, exact, se)
    for wrong in (1 - resolution, 1 + resolution):
        assert not within_error(mean, se, exact * wrong, width), "the test cannot resolve this"


def test_nngp_of_a_pooled_cnn_matches_finite_networks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6, 6, 3))
    exact = infinet.compile(CNN_NET)(x).nngp
    width, networks = 512, 400
    est = []
    # small matrices: one BLAS thread (several thrash on a loaded machine: 4x-8x slower)
    with threadpool_limits(1, user_api="blas"):
        for _ in range(networks):
            g = cnn_features(x, rng, width)
            est.append(1.5 ** 2 * g @ g.T / width + 0.2 ** 2)
    check(np.array(est), exact, width, resolution=0.03)


MLP_NET = """
input 10
dense W=sqrt(2) b=0.3
relu
dense W=1.1 b=0.2
"""


def test_nngp_and_ntk_of_an_mlp_match_finite_networks():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 10))
    exact = infinet.compile(MLP_NET)(x)
    width, networks = 4096, 300
    W1, b1, W2, b2 = math.sqrt(2), 0.3, 1.1, 0.2
    K_est, T_est = [], []
    for _ in range(networks):
        w = rng.standard_normal((10, width))
        beta = rng.standard_normal(width)
        v = rng.standard_normal(width)          # readout weights
        z = W1 / math.sqrt(10) * x @ w + b1 * beta
        phi, dphi = np.maximum(z, 0), (z > 0).astype(float)
        K_est.append(W2 ** 2 * phi @ phi.T / width + b2 ** 2)
        # empirical NTK: Σ over every parameter of ∂f(x)/∂θ · ∂f(x')/∂θ
        first = W2 ** 2 / width * (dphi * v) @ (dphi * v).T          # hidden weights and bias
        inputs = W1 ** 2 * x @ x.T / 10 + b1 ** 2
        T_est.append(W2 ** 2 * phi @ phi.T / width + b2 ** 2 + first * inputs)
    check(np.array(K_est), exact.nngp, width, resolution=0.01)
    check(np.array(T_est), exact.ntk, width, resolution=0.01)
