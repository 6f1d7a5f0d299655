"""The examples against neural-tangents: cntk_gap at full CIFAR size
(tests/data/nt_cnn_gap_d3_32x32.npz, made by benchmarks/nt_baseline.py: 3 × [conv 3x3 SAME
W=√2 + relu], gap, dense W=1), and the block examples shrunk (tests/data/ref_examples.npz)."""
from __future__ import annotations

import numpy as np
import pytest

import infinet

from codegen_cases import CASES
from conftest import DATA, EXAMPLES, run_cli


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


EXAMPLE_REF = np.load(DATA / "ref_examples.npz")


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name", [str(n) for n in EXAMPLE_REF["names"]])
def test_shrunk_examples_match_neural_tangents(name, backend):
    """examples/{wide_resnet,sequence_cnn,mlp_layernorm}.net shrunk as every backend test
    runs them (tests/codegen_cases.py) against neural-tangents (tests/data/ref_examples.npz,
    tests/oracle/nt_ref_examples.py): 1e-10 of the largest entry on x1 × x2 and off the
    diagonal of x1 × x1, 1e-12 against the exact diagonals (NT's own NTK diagonals carry
    ~1e-9, test_neural_tangents_blocks.py says why)."""
    text = str(EXAMPLE_REF[f"{name}__net"])
    assert CASES[name] == text            # the reference is of the example as it is now
    k = infinet.compile(text)
    x1, x2 = EXAMPLE_REF[f"{name}__x1"], EXAMPLE_REF[f"{name}__x2"]
    cross, same = k(x1, x2, backend=backend), k(x1, backend=backend)
    off = ~np.eye(len(x1), dtype=bool)
    for kind in ("nngp", "ntk"):
        nt12, nt11 = EXAMPLE_REF[f"{name}__{kind}_12"], EXAMPLE_REF[f"{name}__{kind}_11"]
        scale = np.abs(nt11).max()
        assert np.abs(getattr(cross, kind) - nt12).max() < 1e-10 * np.abs(nt12).max(), kind
        assert np.abs(getattr(same, kind) - nt11)[off].max() < 1e-10 * scale, kind
        exact = EXAMPLE_REF[f"{name}__{kind}_exact_diag"]
        assert np.abs(np.diag(getattr(same, kind)) - exact).max() < 1e-12 * scale, kind


@pytest.mark.parametrize("name", ["wide_resnet", "sequence_cnn", "mlp_layernorm"])
def test_block_examples_compile_at_full_size(name):
    status, out, err = run_cli("check", EXAMPLES / f"{name}.net")
    assert status == 0 and err == "", err
    assert f"net {name}" in out and "sum" in out
    plan = infinet.compile(EXAMPLES / f"{name}.net").plan
    want = {"wide_resnet": (32, 32, 3), "sequence_cnn": (128, 4), "mlp_layernorm": (64,)}
    assert plan.data_shape == want[name]
    counts = plan.counts()
    if name == "wide_resnet":      # 3 groups of 2 blocks, 2 of them projection blocks
        assert counts["sum"] == 6 and counts["conv"] == 1 + 6 * 2 + 2
        assert [n.shape.spatial for n in plan.nodes if n.layer.keyword == "sum"] == \
            [(32, 32)] * 2 + [(16, 16)] * 2 + [(8, 8)] * 2
    if name == "mlp_layernorm":
        assert counts["gelu"] == 4 and counts["layernorm"] == 5
