"""Property test: the executor equals a naive full-matrix implementation on random nets."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import infinet

import brute_force
from strategies import networks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2 ** 31 - 1))
def test_reference_executor_matches_full_matrix_recursion(net, seed):
    source, shape = net
    k = infinet.compile(source)
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(2,) + shape), rng.normal(size=(2,) + shape)
    got = k(x1, x2)
    want_K, want_T = brute_force.kernel_matrices(k.plan, x1, x2)
    scale_K = np.abs(want_K).max() + 1e-300
    scale_T = np.abs(want_T).max() + 1e-300
    assert np.abs(got.nngp - want_K).max() <= 1e-9 * scale_K, source
    assert np.abs(got.ntk - want_T).max() <= 1e-9 * scale_T + 1e-300, source
    sym = k(x1)
    assert np.array_equal(sym.nngp, sym.nngp.T) and np.array_equal(sym.ntk, sym.ntk.T)
