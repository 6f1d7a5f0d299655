"""Each layer against its closed form (docs/semantics.md#layers), on inputs where the answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

import infinet


def kern(source, x1, x2=None, **kw):
    return infinet.compile(source)(x1, x2, **kw)


def relu_closed(K, v1, v2):
    theta = math.acos(K / math.sqrt(v1 * v2))
    return (math.sqrt(v1 * v2) / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * math.cos(theta)),
            (math.pi - theta) / (2 * math.pi))


RNG = np.random.default_rng(7)
X = RNG.normal(size=(3, 5))


def dots(x):
    return x @ x.T / x.shape[1]


def test_input_vector_is_mean_product():
    out = kern("input 5", X)
    np.testing.assert_allclose(out.nngp, dots(X), rtol=1e-14)
    assert np.all(out.ntk == 0)


def test_dense_adds_bias_and_trains():
    out = kern("input 5\ndense W=1.5 b=0.3", X)
    np.testing.assert_allclose(out.nngp, 2.25 * dots(X) + 0.09, rtol=1e-14)
    np.testing.assert_allclose(out.ntk, out.nngp, rtol=1e-14)    # Θ' = W²·0 + Σ'
    two = kern("input 5\ndense W=1.5 b=0.3\ndense W=2 b=0.1", X)
    s1 = 2.25 * dots(X) + 0.09
    np.testing.assert_allclose(two.nngp, 4 * s1 + 0.01, rtol=1e-14)
    np.testing.assert_allclose(two.ntk, 4 * s1 + (4 * s1 + 0.01), rtol=1e-14)


def test_fixed_layers_add_nothing_to_the_ntk():
    assert np.all(kern("input 5\ndense W=2 fixed\nrelu\ndense W=3 fixed", X).ntk == 0)
    # only the last layer fixed: Θ = 9 · Θ_relu = 9 · Σ̇ · Σ1
    out = kern("input 5\ndense W=2\nrelu\ndense W=3 fixed", X)
    s1 = 4 * dots(X)
    for i in range(3):
        for j in range(3):
            k2, deriv = relu_closed(s1[i, j], s1[i, i], s1[j, j])
            assert out.nngp[i, j] == pytest.approx(9 * k2, rel=1e-12)
            assert out.ntk[i, j] == pytest.approx(9 * deriv * s1[i, j], rel=1e-12)
    # only the first fixed: Θ = 9·Σ̇·(0) + Σ_out
    out = kern("input 5\ndense W=2 fixed\nrelu\ndense W=3", X)
    np.testing.assert_allclose(out.ntk, out.nngp, rtol=1e-14)


def test_relu_arc_cosine_kernel_and_self_variance():
    out = kern("input 5\nrelu", X)
    s = dots(X)
    for i in range(3):
        for j in range(3):
            assert out.nngp[i, j] == pytest.approx(relu_closed(s[i, j], s[i, i], s[j, j])[0],
                                                   rel=1e-12)
    np.testing.assert_allclose(np.diag(out.nngp), np.diag(s) / 2, rtol=1e-15)
    # orthogonal inputs: θ = π/2, Σ' = sqrt(v v')/(2π); opposite inputs: Σ' = 0
    e = np.array([[3.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    o = kern("input 2\nrelu", e).nngp
    assert o[0, 1] == pytest.approx(math.sqrt(4.5 * 2.0) / (2 * math.pi), rel=1e-15)
    assert o[0, 2] == pytest.approx(0.0, abs=1e-15)


def test_relu_ntk_of_one_hidden_layer_network():
    # Θ = Σ̇(Σ1)·Σ1·W2² + Σ2 for input → dense W1 → relu → dense W2 (Jacot et al.)
    out = kern("input 5\ndense W=sqrt(2)\nrelu\ndense W=1", X)
    s1 = 2 * dots(X)
    for i in range(3):
        for j in range(3):
            k2, deriv = relu_closed(s1[i, j], s1[i, i], s1[j, j])
            assert out.nngp[i, j] == pytest.approx(k2, rel=1e-12)
            assert out.ntk[i, j] == pytest.approx(deriv * s1[i, j] + k2, rel=1e-12)


def test_erf_arcsine_kernel():
    out = kern("input 5\ndense W=1\nerf\ndense W=1", X)
    s = dots(X)
    for i in range(3):
        for j in range(3):
            den = math.sqrt((1 + 2 * s[i, i]) * (1 + 2 * s[j, j]))
            k2 = 2 / math.pi * math.asin(2 * s[i, j] / den)
            d = 4 / math.pi / math.sqrt(den ** 2 - 4 * s[i, j] ** 2)
            assert out.nngp[i, j] == pytest.approx(k2, rel=1e-12)
            assert out.ntk[i, j] == pytest.approx(d * s[i, j] + k2, rel=1e-12)


@pytest.mark.parametrize("a,b", [(-0.5, 1.5), (0.2, 1.0), (1.0, 1.0), (0.0, 1.0)])
def test_abrelu_is_linear_plus_relu(a, b):
    # dense (Σ1 = Θ1 = s) → abrelu → dense W=1:  Σ = ab·s + (b−a)²·relu(s),
    # Θ = (ab + (b−a)²·(π−θ)/(2π))·s + Σ
    s = dots(X)
    act = "leaky_relu alpha=0.2" if (a, b) == (0.2, 1.0) else f"abrelu a={a} b={b}"
    out = kern(f"input 5\ndense\n{act}\ndense", X)
    for i in range(3):
        for j in range(3):
            relu, deriv = relu_closed(s[i, j], s[i, i], s[j, j])
            nngp = a * b * s[i, j] + (b - a) ** 2 * relu
            assert out.nngp[i, j] == pytest.approx(nngp, rel=1e-12)
            assert out.ntk[i, j] == pytest.approx((a * b + (b - a) ** 2 * deriv) * s[i, j] + nngp,
                                                  rel=1e-12)


def test_identity_changes_nothing():
    a = kern("input 5\ndense W=2\nidentity\ndense W=0.5", X)
    b = kern("input 5\ndense W=2\ndense W=0.5", X)
    np.testing.assert_array_equal(a.nngp, b.nngp)
    np.testing.assert_array_equal(a.ntk, b.ntk)


IMG = RNG.normal(size=(3, 4, 5, 2))


def test_flatten_of_input_is_mean_over_all_entries():
    out = kern("input 4x5x2\nflatten", IMG)
    flat = IMG.reshape(3, -1)
    np.testing.assert_allclose(out.nngp, flat @ flat.T / flat.shape[1], rtol=1e-13)


def test_gap_of_input_is_product_of_means():
    out = kern("input 4x5x2\ngap", IMG)
    m = IMG.mean(axis=(1, 2))
    np.testing.assert_allclose(out.nngp, m @ m.T / 2, rtol=1e-13)


def test_avgpool_is_covariance_of_window_means():
    out = kern("input 4x5x2\navgpool 2x2\nflatten", IMG)    # 2x2 output, column 5 dropped
    pooled = IMG[:, :4, :4, :].reshape(3, 2, 2, 2, 2, 2).mean(axis=(2, 4))
    flat = pooled.reshape(3, -1)
    np.testing.assert_allclose(out.nngp, flat @ flat.T / flat.shape[1], rtol=1e-13)


def test_avgpool_same_divides_by_full_window():
    ones = np.ones((1, 3, 3, 1))
    # 2x2 windows, stride 2, SAME: out 2x2, padding 1 on the high side; window sums 4, 2, 2, 1
    out = kern("input 3x3x1\navgpool 2x2 pad=same\nflatten", ones)
    assert out.nngp[0, 0] == pytest.approx(np.mean(np.array([4, 2, 2, 1]) ** 2 / 16), rel=1e-15)


@pytest.mark.parametrize("pad,expected", [
    ("same", (2.5 / 3) ** 2),      # per axis the in-image tap counts are 2,3,3,2 (divisor 3)
    ("circular", 1.0),             # every tap lands in the image
    ("valid", 1.0),                # every tap lands in the image, 2x2 output
])
def test_conv_padding_on_constant_image(pad, expected):
    ones = np.ones((1, 4, 4, 1))
    out = kern(f"input 4x4x1\nconv 3x3 pad={pad}\nflatten", ones)
    assert out.nngp[0, 0] == pytest.approx(expected, rel=1e-15)


def test_conv_shares_weights_between_positions():
    # Σ'[p, p'] for a 1-d image pair with a 3x1 filter: (1/3) Σ_a Σ[p+a, p'+a]
    x = RNG.normal(size=(2, 5, 1, 3))
    out = kern("input 5x1x3\nconv 3x1 pad=valid\ngap", x)
    S = np.einsum("hc,kc->hk", x[0, :, 0], x[1, :, 0]) / 3
    conv = sum(S[a:a + 3, a:a + 3] for a in range(3)) / 3
    assert out.nngp[0, 1] == pytest.approx(conv.mean(), rel=1e-13)


def test_even_filter_same_pads_low_side_less():
    # 2-tap SAME filter: total padding 1, all of it on the high side (floor(1/2) = 0 low)
    x = np.zeros((1, 3, 1, 1))
    x[0, 0, 0, 0] = 1.0
    # positions 0,1,2: taps (p, p+1); the 1 at position 0 is read only by output 0
    out = kern("input 3x1x1\nconv 2x1 pad=same\nflatten", x)
    assert out.nngp[0, 0] == pytest.approx((1 / 2) / 3, rel=1e-15)


def test_stride_keeps_every_sth_position():
    x = RNG.normal(size=(2, 5, 5, 2))
    a = kern("input 5x5x2\nconv 1x1 stride=2\nflatten", x)
    sub = x[:, ::2, ::2, :].reshape(2, -1)
    np.testing.assert_allclose(a.nngp, sub @ sub.T / sub.shape[1], rtol=1e-13)
