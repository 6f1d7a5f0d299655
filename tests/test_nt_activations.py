"""Every activation against neural-tangents 0.6.5 (tests/data/nt_activations.npz, made by
tests/oracle/nt_ref_activations.py): MLPs and CNNs (gap: NT's full-spatial path, flatten:
its diagonal path), the cross block K(x1, x2) and the symmetric block K(x1, x1).

Measured agreement (float64, relative to the largest entry): ≤ 4e-15 on every cross block
and every off-diagonal entry NT computes the way we do.  Three kinds of entry differ, each
because neural-tangents is off there, not infinet:

* RectifiedMonomial: NT's K(x1, x1) is NaN on the diagonal (its general formula divides
  0 by sin 0 there; a diagonal entry is finite only where rounding puts the correlation
  below 1), and after a second such layer everywhere: only single-layer nets and
  diagonal-path CNNs give NT values off the diagonal.  The test checks that NT is NaN
  there and that ours is finite; test_activation_formulas.py holds it to the
  Cho & Saul closed form and test_monte_carlo_activations.py to finite networks.
* ElementwiseNumerical: the quadrature is not symmetric in (x, x'), so NT's K(x1, x1)
  differs from its transpose by the quadrature error (~1e-5 at deg=25 for x·tanh x).
  Ours is symmetric: its upper triangle is NT's upper triangle (≤ 3e-15).
* sign and abs on NT's diagonal path: NT's v v' − Σ² on the diagonal of K(x, x) is
  rounding noise instead of 0 and its square root (~1e-8 v) enters arcsin; after sign the
  noise is amplified again by the next square root, so NT's diagonal entries are off by up
  to 2e-5.  Ours are exact (sign: K(x, x)[i, i] = 1; tested below against NT's own
  noiseless diagonal path).
"""
from __future__ import annotations

import numpy as np
import pytest

import infinet

from conftest import DATA

REF = np.load(DATA / "nt_activations.npz")
NAMES = [str(n) for n in REF["names"]]
#: NT's diagonal of K(x, x) carries √(rounding) noise (see the module docstring)
NOISY_DIAGONAL = {"mlp_abs", "cnn_flat_piecewise"}
TOL = 1e-10


def _rel(ours, theirs):
    return np.abs(ours - theirs) / np.abs(theirs).max()


def _net(name):
    return infinet.compile(str(REF[f"{name}__net"]))


def test_every_activation_and_expression_is_covered():
    from infinet.layers import elementwise_kinds
    written = " ".join(str(REF[f"{n}__net"]) for n in NAMES)
    new = {"gelu", "sin", "cos", "rbf", "exp", "gaussian", "sign", "abs", "monomial",
           "rectified_monomial", "polynomial", "sigmoid_like", "elementwise"}
    assert new <= {cls.keyword for cls in elementwise_kinds()}
    for keyword in new:
        assert f"\n{keyword}" in written, keyword
        assert any(n.startswith("mlp_") and f"\n{keyword}" in str(REF[f"{n}__net"])
                   for n in NAMES), keyword
        assert any(n.startswith("cnn_") and f"\n{keyword}" in str(REF[f"{n}__net"])
                   for n in NAMES), keyword


@pytest.mark.parametrize("name", NAMES)
def test_cross_block(name):
    k = _net(name)
    out = k(REF[f"{name}__x1"], REF[f"{name}__x2"])
    for kind in ("nngp", "ntk"):
        theirs = REF[f"{name}__{kind}_12"]
        assert np.isfinite(theirs).all()
        assert _rel(getattr(out, kind), theirs).max() < TOL, (name, kind)


@pytest.mark.parametrize("name", NAMES)
def test_symmetric_block(name):
    k = _net(name)
    out = k(REF[f"{name}__x1"])
    for kind in ("nngp", "ntk"):
        ours, theirs = getattr(out, kind), REF[f"{name}__{kind}_11"]
        assert np.isfinite(ours).all() and np.array_equal(ours, ours.T)
        upper = np.triu_indices(len(ours), 1)
        if "rectified_monomial" in str(REF[f"{name}__net"]):
            # NT: NaN on the diagonal where rounding puts Σ/√(v v') at 1 (and everywhere
            # after a second such layer): its other entries agree
            # where it is finite; its NTK there is not even positive (mlp_rect2: -2.15,
            # ours 3.57; Θ(x, x) = E|∂f/∂θ|² >= 0)
            d = np.diag(theirs)
            assert np.isnan(d).any(), name
            if kind == "nngp":
                assert np.allclose(np.diag(ours)[~np.isnan(d)], d[~np.isnan(d)], rtol=1e-6)
            assert (np.diag(ours) > 0).all()
            if np.isfinite(theirs[upper]).all():
                assert _rel(ours, np.nan_to_num(theirs))[upper].max() < TOL, (name, kind)
            continue
        assert _rel(ours, theirs)[upper].max() < TOL, (name, kind)
        if "elementwise" in str(REF[f"{name}__net"]):
            # NT's quadrature is not symmetric; ours mirrors its upper triangle
            asym = _rel(theirs, theirs.T).max()
            assert abs(_rel(ours, theirs).max() - asym) <= 1e-12, (name, kind)
        else:
            assert _rel(ours, theirs)[np.tril_indices(len(ours), -1)].max() < TOL
        diag = np.diag(_rel(ours, theirs)).max()
        assert diag < (1e-4 if name in NOISY_DIAGONAL else TOL), (name, kind, diag)


def test_sign_self_kernel_is_exact_where_nt_is_noisy():
    """K(x, x)[i, i] after sign is exactly 1 (sign(u)² = 1); NT's diagonal path for the
    self-variances (cov1: where(v == 0, 0, 1)) agrees, its pair path does not."""
    x = REF["cnn_flat_piecewise__x1"]
    k = infinet.compile("input 5x5x2\nconv 3x3 W=1.2 b=0.1\nsign\nflatten\n")
    assert np.array_equal(np.diag(k(x).nngp), np.ones(len(x)))
    # the pair pass on (x, x) and the self pass agree bit for bit
    assert np.array_equal(np.diag(k(x, x).nngp), np.ones(len(x)))


def test_rectified_monomial_cross_blocks_match_nt_where_it_is_finite():
    for name in NAMES:
        if "rectified_monomial" not in str(REF[f"{name}__net"]):
            continue
        assert np.isnan(REF[f"{name}__nngp_11"]).any(), name
        assert np.isfinite(_net(name)(REF[f"{name}__x1"]).nngp).all()
