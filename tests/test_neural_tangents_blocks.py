"""Blocks, layer norms, sum pooling, sequences and volumes against neural-tangents 0.6.5.

tests/data/ref_blocks.npz (tests/oracle/nt_ref_blocks.py): 18 architectures, each with its
`.net` text, inputs x1 [4, ...] and x2 [3, ...], NT's K(x1, x2) and K(x1, x1), and the
exact diagonals K(x1[i], x1[i]) of a 40-digit recursion independent of NT and infinet.
tests/data/ref_fixed.npz (tests/oracle/nt_ref_fixed.py): 5 more with `fixed` layers inside
branches, laid out the same; NT has no frozen layers, so there NT's kernel has each fixed
layer's own Σ' taken out of Θ right after it (Θ' − Σ' = σw²·A(Θ), SPEC §2.2) — proven
against the empirical NTK of random finite networks with those layers frozen in
nt_ref_fixed.py and tests/test_monte_carlo_fixed.py.

Tolerances, relative to the largest entry of the block: 1e-10 against NT on every cross
entry and every off-diagonal entry of K(x1, x1); 1e-12 against the exact values on the
diagonal.  NT's own NTK diagonals are off by up to ~1e-8 (on a diagonal a relu sees
perfectly correlated inputs, θ = 0, and NT's θ = arctan2(√(v·v' − K²), K) turns a rounding
difference between v and K into θ ≈ 1e-8), so they are only checked against the exact
values at 1e-7 — which checks the reference file, not infinet.
"""
from __future__ import annotations

import numpy as np
import pytest

import infinet

from conftest import DATA

REF = np.load(DATA / "ref_blocks.npz")
FIXED = np.load(DATA / "ref_fixed.npz")
NAMES = [str(n) for n in REF["names"]]
FIXED_NAMES = [str(n) for n in FIXED["names"]]
CASES = [(REF, n) for n in NAMES] + [(FIXED, n) for n in FIXED_NAMES]

_KERNELS: dict = {}


def kernel(ref, name: str):
    if name not in _KERNELS:
        _KERNELS[name] = infinet.compile(str(ref[f"{name}__net"]))
    return _KERNELS[name]


def relative_errors(ours, theirs):
    return np.abs(np.asarray(ours) - theirs) / np.abs(theirs).max()


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("ref, name", CASES, ids=[n for _, n in CASES])
def test_agrees_with_neural_tangents(ref, name, backend):
    k = kernel(ref, name)
    x1, x2 = ref[f"{name}__x1"], ref[f"{name}__x2"]
    cross, same = k(x1, x2, backend=backend), k(x1, backend=backend)
    off = ~np.eye(len(x1), dtype=bool)
    for kind in ("nngp", "ntk"):
        nt12, nt11 = ref[f"{name}__{kind}_12"], ref[f"{name}__{kind}_11"]
        exact = ref[f"{name}__{kind}_exact_diag"]
        assert relative_errors(getattr(cross, kind), nt12).max() < 1e-10, (kind, "x1 x x2")
        err = relative_errors(getattr(same, kind), nt11)
        assert err[off].max() < 1e-10, (kind, "x1 x x1 off the diagonal")
        scale = np.abs(nt11).max()
        diag = np.abs(np.diag(getattr(same, kind)) - exact) / scale
        assert diag.max() < 1e-12, (kind, "diagonal vs exact", diag.max())
        assert np.abs(np.diag(nt11) - exact).max() / scale < 1e-7      # the reference file


def test_neural_tangents_ntk_diagonals_are_the_noisy_ones():
    """What the exact diagonals are for: NT's NTK diagonals are off by more than 1e-10
    in most cases, and always from below (θ ≥ 0 where it should be 0), while its NNGP
    diagonals are exact."""
    worse, below = 0, True
    for name in NAMES:
        nt, exact = np.diag(REF[f"{name}__ntk_11"]), REF[f"{name}__ntk_exact_diag"]
        err = (nt - exact) / np.abs(REF[f"{name}__ntk_11"]).max()
        worse += err.min() < -1e-10
        below &= bool(np.all(err < 1e-13))
        nngp = np.diag(REF[f"{name}__nngp_11"]) - REF[f"{name}__nngp_exact_diag"]
        assert np.abs(nngp).max() < 1e-13 * np.abs(REF[f"{name}__nngp_11"]).max(), name
    assert worse >= len(NAMES) // 2 and below


def test_cpu_pair_and_self_pass_agree_on_the_diagonal():
    """Found with these references (seq_flatten's cpu diagonal was 7e-10 off the exact
    value): the generated C++ must round K(x, x)[p, p] (pair pass) and v(x)[p] (self pass)
    alike, or the relu's θ turns one ulp into ~1e-9.  A minimal net that showed it on 7 of
    80 inputs (fixed in the code generator: libmvec's atan2 only where both passes walk
    plane 0 alike); the numpy reference is exact there."""
    k = infinet.compile("input 12x2\nconv 3 stride=2\nrelu\nconv 3\nrelu\navgpool 2\nrelu\n"
                        "flatten\ndense\n")
    x = np.random.default_rng(3).standard_normal((80, 12, 2))
    ref, cpu = k(x, backend="numpy"), k(x, backend="cpu")
    err = np.abs(np.diag(cpu.ntk) - np.diag(ref.ntk)) / np.abs(np.diag(ref.ntk))
    assert err.max() < 1e-13, (int(np.sum(err > 1e-13)), err.max())


def test_fixed_cases_put_fixed_layers_in_every_kind_of_branch():
    text = {n: str(FIXED[f"{n}__net"]) for n in FIXED_NAMES}
    for needle in ("W=sqrt(2) fixed }", "conv 1x1 pad=same stride=2 fixed }", "b=0.1 fixed;",
                   "dense W=1.5 fixed }", "dense W=0.8 fixed }", "conv 1 pad=same stride=2 fixed",
                   "dense W=sqrt(2) fixed\n", "dense fixed\n", "residual {", "branch { }"):
        assert any(needle in t for t in text.values()), needle
    for name, net in text.items():        # a fixed layer changes Θ, so every case tests it
        k = infinet.compile(net)
        trained = infinet.compile(net.replace(" fixed", ""))
        x = FIXED[f"{name}__x1"][:2]
        assert np.abs(k(x, backend="numpy").ntk - trained(x, backend="numpy").ntk).min() > 1e-3


def test_the_cases_cover_every_block_form_and_rank():
    text = "\n".join(str(REF[f"{n}__net"]) for n in NAMES)
    for needle in ("residual {", "sum {", "branch { }", "stride=2 }", "branch { gap; dense",
                   "branch { flatten; dense", "avgpool 2x2; conv", "branch { avgpool 2x2 }",
                   "layernorm\n", "layernorm axes=all", "layernorm eps=0.1", "; sumpool 2x2 stride=2;",
                   "sumpool 2x2 stride=2 pad=same", "sumpool 3x3 stride=1 pad=same",
                   "sumpool 2x2   ", "avgpool 2x2 stride=1 pad=same", "avgpool 3x3 stride=2",
                   "input 12x3", "conv 5 ", "avgpool 2 ", "sumpool 2 stride=1 pad=same",
                   "conv 3 pad=circular", "conv 1 pad=same stride=2", "input 4x4x4x2",
                   "conv 3x3x3", "conv 1x1x1 pad=same stride=2", "sumpool 2x2x2", "avgpool 2x2x2",
                   "input 10", "dense W=sqrt(2) b=0.1", "erf", "pad=valid", "repeat 2 {"):
        assert needle in text, needle
    three = [n for n in NAMES if str(REF[f"{n}__net"]).count("branch") >= 3]
    assert three, "a sum of three branches"
    for rank, shape in ((1, "seq"), (3, "vol")):
        names = [n for n in NAMES if REF[f"{n}__x1"].ndim == rank + 2]
        assert len(names) >= 2 and all(n.startswith(shape) for n in names)
