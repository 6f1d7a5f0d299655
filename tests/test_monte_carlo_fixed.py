"""Monte-Carlo checks of `fixed` layers inside blocks: the NTK is that of gradient descent on
the remaining parameters.

neural-tangents has no frozen layers, so these are the independent checks of SPEC §2.2
inside a sum (tests/data/ref_fixed.npz holds the exact references, made by
tests/oracle/nt_ref_fixed.py from NT's kernels with each fixed layer's own Σ' taken out of
Θ — an identity on NT's recursion that the same script proves by JAX autodiff):

* an MLP whose sum has a fixed dense in one branch, a trained dense in another and the
  identity in a third: the empirical NTK Σ_θ ∂f(x)/∂θ·∂f(x')/∂θ of random finite networks,
  the sum over the trainable parameters only, by hand-written backpropagation;
* the CNN with a fixed stem, a fixed conv inside the main branch and a fixed 1x1
  projection shortcut: the JAX estimate stored in ref_fixed.npz against infinet's kernel.

The finite networks use NT's 'ntk' parameterization (weights N(0, 1), a layer computes
W/√fan_in·Σ w·x + b·β).  The bound allows 5 standard errors plus an O(1/width) finite-width
bias (3/width of the largest entry, as tests/test_monte_carlo.py); each check also shows
that the bound rejects the kernel with every layer trained and a kernel 3% off (10% for
the CNN's NNGP, which the stored estimate resolves less finely and which is not what this
is about).
"""
from __future__ import annotations

import math

import numpy as np
from threadpoolctl import threadpool_limits

import infinet
from conftest import DATA
from scipy_free_erf import erf

FIXED = np.load(DATA / "ref_fixed.npz")

MLP = """
input 6
dense W=sqrt(2) b=0.2
sum {
  branch { relu; dense W=1.3 b=0.1 fixed }
  branch { erf; dense W=0.8 }
  branch { }
}
relu
dense W=1.5 b=0.1
"""


def bound_checks(mean, se, exact, trained, width, resolution=0.03):
    """Accepts `exact`; rejects exact·(1 ± resolution) and `trained` (if given)."""
    bound = 5 * se + 3.0 / width * np.abs(exact).max()
    assert np.all(np.abs(mean - exact) <= bound), np.abs(mean - exact) / bound
    for wrong in (exact * (1 + resolution), exact * (1 - resolution)):
        assert np.any(np.abs(mean - wrong) > bound), "the bound cannot resolve this"
    if trained is not None:
        assert np.any(np.abs(mean - trained) > bound), "the bound cannot tell fixed from trained"


def dense_in_law(a, n, rng):
    """A wide dense layer's weights w [fan_in, n] (i.i.d. N(0, 1)), drawn only through what
    the network sees of them: returns (a @ w, backward), where backward(d) = d @ wᵀ.

    Given a [N, fan_in], each column of a @ w is N(0, a aᵀ); given a @ w = Z, the weights
    are w = a⁺Z + (I − P)G with P the projection onto a's rows and G a fresh Gaussian
    matrix independent of everything before, so d @ wᵀ = (d Zᵀ)(a⁺)ᵀ + (d Gᵀ)(I − P), and
    d Gᵀ has i.i.d. columns N(0, d dᵀ).  The same random network in law, with (1 + rows
    of d)·fan_in random numbers instead of fan_in·n."""
    gram = a @ a.T
    root = np.linalg.cholesky(gram)
    Z = root @ rng.standard_normal((len(a), n))
    pinv_t = np.linalg.solve(gram, a)                      # (a⁺)ᵀ = (a aᵀ)⁻¹ a

    def backward(d):                                       # d [rows, n] -> d wᵀ [rows, fan_in]
        dG = np.linalg.cholesky(d @ d.T) @ rng.standard_normal((len(d), a.shape[1]))
        return (d @ Z.T) @ pinv_t + dG - (dG @ a.T) @ pinv_t

    return Z, backward


def mlp_estimates(x, width, networks, readouts, rng):
    """Per network: the NNGP (exact over the readout) and the empirical NTK over the
    trainable parameters (w1, β1, w3, the readout), averaged over `readouts` random
    readout vectors (an unbiased estimate of its expectation over the readout)."""
    n, m = width, readouts
    N, c_in = x.shape
    gram_x = x @ x.T
    K, T = [], []
    for _ in range(networks):
        w1 = rng.standard_normal((c_in, n))
        beta1, beta2 = rng.standard_normal(n), rng.standard_normal(n)
        v = rng.standard_normal((n, m))                    # m readout vectors
        z1 = math.sqrt(2) / math.sqrt(c_in) * x @ w1 + 0.2 * beta1
        a, e = np.maximum(z1, 0), erf(z1)
        za, back2 = dense_in_law(a, n, rng)                # the fixed dense (w2)
        zb, back3 = dense_in_law(e, n, rng)                # the trained dense (w3)
        s = (1.3 / math.sqrt(n) * za + 0.1 * beta2) + 0.8 / math.sqrt(n) * zb + z1
        h = np.maximum(s, 0)
        k = 1.5 ** 2 * h @ h.T / n + 0.1 ** 2
        # backpropagation of the m readouts, rows (j, sample): ∂f_j(x)/∂s and ∂f_j(x)/∂z1
        ds = (1.5 / math.sqrt(n) * v.T[:, None, :] * (s > 0)).reshape(m * N, n)
        d1 = (ds + 1.3 / math.sqrt(n) * back2(ds) * np.tile(z1 > 0, (m, 1))
              + 0.8 / math.sqrt(n) * back3(ds) * np.tile(2 / math.sqrt(math.pi) * np.exp(-z1 ** 2),
                                                         (m, 1)))
        dd_s = np.einsum("jan,jbn->ab", *(ds.reshape(m, N, n),) * 2) / m
        dd_1 = np.einsum("jan,jbn->ab", *(d1.reshape(m, N, n),) * 2) / m
        t = (k                                             # the readout's weights and bias
             + 0.8 ** 2 / n * (e @ e.T) * dd_s             # w3 (no bias)
             + (2 / c_in * gram_x + 0.2 ** 2) * dd_1)      # w1 and β1
        K.append(k)
        T.append(t)
    return np.array(K), np.array(T)


def test_mlp_with_a_fixed_dense_in_a_branch_matches_finite_networks():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(5, 6))
    exact = infinet.compile(MLP)(x)
    trained = infinet.compile(MLP.replace(" fixed", ""))(x)
    width, networks = 4096, 200
    with threadpool_limits(1, user_api="blas"):       # small matrices: one BLAS thread
        K, T = mlp_estimates(x, width, networks, readouts=4, rng=rng)
    for est, want, wrong in ((K, exact.nngp, None), (T, exact.ntk, trained.ntk)):
        mean, se = est.mean(0), est.std(0, ddof=1) / math.sqrt(networks)
        bound_checks(mean, se, want, wrong, width)


def test_cnn_with_fixed_convs_in_branches_matches_the_stored_autodiff_estimate():
    name = "fixed_projection"
    net = str(FIXED[f"{name}__net"])
    x = np.concatenate([FIXED[f"{name}__x1"], FIXED[f"{name}__x2"]])
    width = int(FIXED[f"{name}__mc_width"])
    assert int(FIXED[f"{name}__mc_networks"]) >= 100 and net.count(" fixed") == 3
    exact = infinet.compile(net)(x)
    trained = infinet.compile(net.replace(" fixed", ""))(x)
    # the NTK estimate has the NNGP estimate as a control variate (nt_ref_fixed.py): 3%;
    # the NNGP itself, estimated plainly from 100 networks, resolves 10%
    for kind, wrong, resolution in (("nngp", None, 0.10), ("ntk", trained.ntk, 0.03)):
        bound_checks(FIXED[f"{name}__mc_{kind}"], FIXED[f"{name}__mc_{kind}_se"],
                     getattr(exact, kind), wrong, width, resolution)
