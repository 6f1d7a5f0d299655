"""Properties every kernel must have: symmetry, positive semi-definiteness, float32
agreement, independence from batching, and a bounded memory footprint."""
from __future__ import annotations

import numpy as np
import pytest

import infinet
from infinet.runtime.evaluate import WORKING_ARRAYS, pair_batch_size

from conftest import EXAMPLES

NETS = {
    "cnn_gap": (EXAMPLES / "cnn_gap_small.net", {}, (8, 8, 1)),
    "myrtle": ("input 8x8x2\nconv 3x3 W=sqrt(2) b=0.1\nrelu\navgpool 2x2\nconv 3x3 W=sqrt(2)\n"
               "erf\navgpool 2x2 stride=1 pad=same\nflatten\ndense\n", {}, (8, 8, 2)),
    "cntk_v": (EXAMPLES / "cntk_v.net", {"depth": 4}, (32, 32, 3)),
    "fc": (EXAMPLES / "fc_ntk.net", {"features": 20}, (20,)),
}


def normalised(rng, n, shape):
    x = rng.normal(size=(n,) + shape)
    return x / np.sqrt((x.reshape(n, -1) ** 2).mean(axis=1)).reshape((n,) + (1,) * len(shape))


@pytest.fixture(scope="module", params=sorted(NETS))
def case(request):
    src, params, shape = NETS[request.param]
    k = infinet.compile(src, **params)
    x = normalised(np.random.default_rng(3), 7, shape)
    return k, x, k(x)


def test_symmetric_exactly_and_psd(case):
    _, _, out = case
    for K in (out.nngp, out.ntk):
        assert np.array_equal(K, K.T)
        eig = np.linalg.eigvalsh(K)
        assert eig.min() >= -1e-12 * eig.max()


def test_cross_blocks_agree_with_joint_kernel(case):
    k, x, out = case
    cross = k(x[:3], x[3:])
    np.testing.assert_allclose(cross.nngp, out.nngp[:3, 3:], rtol=1e-13)
    np.testing.assert_allclose(cross.ntk, out.ntk[:3, 3:], rtol=1e-13)


def test_float32_within_1e5_of_float64(case):
    k, x, out = case
    f32 = k(x, dtype="float32")
    for a, b in ((f32.nngp, out.nngp), (f32.ntk, out.ntk)):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
        assert not np.array_equal(a, b)      # really computed in float32


def test_batching_does_not_change_results(case):
    k, x, out = case
    tiny = k(x, max_memory=1)                # one pair per batch
    np.testing.assert_allclose(tiny.nngp, out.nngp, rtol=1e-14)
    np.testing.assert_allclose(tiny.ntk, out.ntk, rtol=1e-14)


def test_pair_batches_respect_the_memory_bound():
    # CIFAR-sized CNTK-GAP: 1M entries per pair per state; 10k x 10k images must batch
    plan = infinet.compile(EXAMPLES / "cntk_gap.net", depth=21).plan
    budget = 512 * 2 ** 20
    b = pair_batch_size(plan, 8, budget)
    assert b >= 1
    assert b * WORKING_ARRAYS * plan.peak_entries * 8 <= budget
    assert pair_batch_size(plan, 8, 1) == 1
    # and the self-variance table of 10k images stays modest (one number per position/relu)
    assert 10_000 * plan.self_variance_entries() * 8 < 2 * 2 ** 30


def test_self_variances_are_computed_once_per_input(monkeypatch):
    k = infinet.compile(EXAMPLES / "cnn_gap_small.net")
    ex = k.executor("numpy", "float64")
    calls = []
    original = ex.self_variances
    monkeypatch.setattr(ex, "self_variances", lambda x: calls.append(len(x)) or original(x))
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 1))
    k(x, max_memory=1, backend="numpy")
    assert calls == [6]
    k(x[:2], x[2:], max_memory=1, backend="numpy")
    assert calls == [6, 2, 4]


@pytest.mark.parametrize("n1,n2,symmetric", [(1, 1, True), (5, 5, True), (7, 7, True),
                                             (3, 4, False), (1, 6, False)])
def test_lazy_pair_enumeration_covers_each_pair_once(n1, n2, symmetric):
    from infinet.runtime.evaluate import pair_count, pair_indices
    total = pair_count(n1, n2, symmetric)
    seen = []
    for start in range(0, total, 3):
        r, c = pair_indices(start, min(start + 3, total), n1, n2, symmetric)
        seen += list(zip(r.tolist(), c.tolist()))
    want = [(i, j) for i in range(n1) for j in range(n2) if not symmetric or j >= i]
    assert seen == want


@pytest.mark.parametrize("readout", ["gap", "flatten", "avgpool 2x2\nflatten"])
def test_pair_pass_diagonal_equals_self_pass_exactly(readout):
    # After the readout a relu sees Σ(x, x) = v exactly, so K(x, x)[i, i] = v/2 bit for bit
    # (any rounding difference between the passes would show as ~1e-8 through the sqrt).
    head = f"input 6x6x2\nconv 3x3 W=sqrt(2) b=0.1\nrelu\nconv 3x3 W=1.3\nerf\n{readout}\ndense W=1.7 b=0.2\n"
    x = np.random.default_rng(5).normal(size=(9, 6, 6, 2))
    before = infinet.compile(head)(x, backend="numpy", max_memory=3000)
    after = infinet.compile(head + "relu\n")(x, backend="numpy", max_memory=3000)
    assert np.array_equal(np.diag(after.nngp), np.diag(before.nngp) / 2)
    assert np.array_equal(np.diag(after.ntk), np.diag(before.ntk) / 2)
