"""The CUDA target on a real GPU (marked `gpu`: skipped cleanly where none is usable).

Same architectures and tolerances as the CPU target, fresh random inputs, and every
output element written (outputs are poisoned with NaN before each launch).
"""
from __future__ import annotations

import numpy as np
import pytest

import infinet
from codegen_cases import CASES, assert_agrees, cached_executor, check_random_architecture, inputs
from infinet.runtime.evaluate import evaluate
from infinet.runtime.reference import ReferenceExecutor

pytestmark = pytest.mark.gpu

def cuda_executor(plan, dtype):
    return cached_executor("cuda", plan, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_matches_reference(name, dtype):
    k = infinet.compile(CASES[name])
    x1, x2 = inputs(k.plan, seed=np.random.SeedSequence().entropy % 2 ** 32)
    ref = ReferenceExecutor(k.plan, dtype)
    gpu = cuda_executor(k.plan, dtype)
    for a, b in ((x1, x2), (x1, None)):
        want = evaluate(ref, a, b)
        got = evaluate(gpu, a, b)
        for kind in ("nngp", "ntk"):
            assert_agrees(k.plan, getattr(want, kind), getattr(got, kind), dtype,
                          symmetric=b is None, what=(name, kind))


@pytest.mark.parametrize("name", ["example_cntk_gap", "more_myrtle_like", "ref_fc_erf"])
def test_cuda_writes_every_output_and_takes_cupy(name):
    import cupy as cp
    k = infinet.compile(CASES[name])
    gpu = cuda_executor(k.plan, "float64")
    x1, x2 = inputs(k.plan, seed=3, n1=6, n2=5)
    d1, d2 = cp.asarray(x1), cp.asarray(x2)
    v1, v2 = gpu.self_variances(d1), gpu.self_variances(d2)
    rows1 = np.repeat(np.arange(6), 5)
    rows2 = np.tile(np.arange(5), 6)
    nngp, ntk = gpu.pairs(d1, d2, cp.asarray(rows1), cp.asarray(rows2), v1, v2)
    assert isinstance(nngp, cp.ndarray)          # device in, device out
    assert bool(cp.isfinite(nngp).all()) and bool(cp.isfinite(ntk).all())   # poisoned with NaN
    ref = ReferenceExecutor(k.plan, "float64")
    want = ref.pairs(x1, x2, rows1, rows2, ref.self_variances(x1), ref.self_variances(x2))
    np.testing.assert_allclose(cp.asnumpy(nngp), want[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cp.asnumpy(ntk), want[1], rtol=1e-12, atol=1e-14)
    # and through the public API with CuPy inputs
    out = k(d1, d2, backend="cuda")
    assert isinstance(out.ntk, cp.ndarray) and isinstance(out.nngp, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(out.ntk), want[1].reshape(6, 5), rtol=1e-12)


def test_auto_prefers_cuda():
    k = infinet.compile(CASES["example_cntk_gap"])
    assert k.executor("auto").name == "cuda"


def test_random_architectures_cuda_matches_reference():
    """The property test of the CPU target, on the GPU (random .net sources)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from strategies import networks

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(net=networks(), seed=st.integers(0, 2 ** 16))
    def check(net, seed):
        source, data_shape = net
        check_random_architecture(source, data_shape, seed,
                                  lambda k, dtype: k.executor("cuda", dtype))

    check()
