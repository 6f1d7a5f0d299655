"""The examples at full CIFAR size against neural-tangents (tests/data/nt_cnn_gap_d3_32x32.npz,
made by benchmarks/nt_baseline.py: 3 × [conv 3x3 SAME W=√2 + relu], gap, dense W=1)."""
from __future__ import annotations

import numpy as np

import infinet

from conftest import DATA, EXAMPLES


def test_cntk_gap_example_matches_neural_tangents_on_32x32_images():
    ref = np.load(DATA / "nt_cnn_gap_d3_32x32.npz")
    # NT has no `fixed` layers: compare the example's architecture with every layer trained
    source = (EXAMPLES / "cntk_gap.net").read_text().replace(" fixed", "")
    k = infinet.compile(source, depth=4)
    assert [n.layer.keyword for n in k.plan.nodes].count("conv") == 3
    cross = k(ref["x1"], ref["x2"])
    same = k(ref["x1"])
    for ours, theirs in ((cross.nngp, ref["nngp"]), (cross.ntk, ref["ntk"]),
                         (same.nngp, ref["nngp_11"]), (same.ntk, ref["ntk_11"])):
        assert np.abs(ours - theirs).max() <= 1e-10 * np.abs(theirs).max()
    # the file's own .net text gives the same kernels
    again = infinet.compile(str(ref["net"]))(ref["x1"], ref["x2"])
    np.testing.assert_allclose(again.nngp, cross.nngp, rtol=1e-14)


def test_fixed_readout_removes_exactly_its_own_term():
    ref = np.load(DATA / "nt_cnn_gap_d3_32x32.npz")
    x1, x2 = ref["x1"][:2], ref["x2"][:1]
    text = (EXAMPLES / "cntk_gap.net").read_text()
    last_fixed = text.replace("b=0 fixed\nrelu", "b=0\nrelu")      # first conv trained
    assert last_fixed.count(" fixed") == 1
    out = infinet.compile(last_fixed, depth=4)(x1, x2)
    # a trained readout adds Σ_out to Θ (docs/semantics.md#fixed-layers); fixed, it does not
    np.testing.assert_allclose(out.nngp, ref["nngp"][:2, :1], rtol=1e-10)
    np.testing.assert_allclose(out.ntk, ref["ntk"][:2, :1] - ref["nngp"][:2, :1], rtol=1e-10)
    both = infinet.compile(EXAMPLES / "cntk_gap.net", depth=4)(x1, x2)
    np.testing.assert_allclose(both.nngp, out.nngp, rtol=1e-14)
    assert np.all(both.ntk < out.ntk)        # the fixed first conv removes a positive term
