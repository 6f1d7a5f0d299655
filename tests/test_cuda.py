"""The CUDA target run: on a real GPU where CuPy finds one, else on cuda-emu (never skipped).

Marked `cuda` (`python -m pytest -m cuda`): conftest.py hands these tests the real CuPy or
the stand-in whose kernels run in the host emulation of the CUDA execution model
(tests/cuda_emu: every CUDA thread a fiber, barriers and warp collectives checked,
shared and fresh global memory poisoned with NaN, launch arguments checked against the
kernels' C parameter types).  Same architectures and tolerances as the CPU target, fresh
random inputs, every output element written (outputs are poisoned with NaN before each
launch).  The architectures cover every stage kind: uniform (cntk_gap), full/strided/
valid (stride2_same, valid_gap, even_filter), pooling (pool_same, cnn_pool_*), circular
(circular_flat), flat tails (fc_*), and the large-plane fallback (global scratch) by
lowering the shared-memory limit.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager

import numpy as np
import pytest

import cuda_emu
import infinet
from codegen_cases import CASES, assert_agrees, cached_executor, check_random_architecture, inputs
from cuda_emu.build import find_kernels
from infinet.runtime.evaluate import evaluate
from infinet.runtime.reference import ReferenceExecutor

pytestmark = pytest.mark.cuda


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


@contextmanager
def shared_limit(limit: int, dynamic: int | None = None):
    """The code generator's static shared-memory limit lowered to ``limit`` bytes (where
    the source is printed and where the executor decides what is static), and the
    dynamic shared memory the executor opts in to set to ``dynamic`` (None: the
    device's limit)."""
    render = importlib.import_module("infinet.codegen.render")
    cuda_mod = importlib.import_module("infinet.runtime.cuda")
    old = render.SHARED_LIMIT, getattr(cuda_mod, "SHARED_LIMIT", None)
    old_dyn = getattr(cuda_mod, "DYNAMIC_SHARED_LIMIT", None)
    env = getattr(render, "environment", None)
    render.SHARED_LIMIT = limit
    if old[1] is not None:
        cuda_mod.SHARED_LIMIT = limit
    cuda_mod.DYNAMIC_SHARED_LIMIT = dynamic
    if hasattr(env, "cache_clear"):
        env.cache_clear()
    try:
        yield
    finally:
        render.SHARED_LIMIT = old[0]
        if old[1] is not None:
            cuda_mod.SHARED_LIMIT = old[1]
        cuda_mod.DYNAMIC_SHARED_LIMIT = old_dyn
        if hasattr(env, "cache_clear"):
            env.cache_clear()


@pytest.mark.parametrize("where", ["dynamic", "global"])
@pytest.mark.parametrize("name", ["example_cntk_gap", "more_pool_same"])
def test_large_plane_fallback_to_global_scratch(name, where):
    """Planes too big for static shared memory run from dynamic shared memory (opted in
    at launch), or from a global scratch buffer beyond the device's opt-in limit: forced
    here by a 1 KiB static limit (and a 1 KiB dynamic one for the global path), so every
    stage kernel of these nets takes that path."""
    import cupy as cp

    from infinet.runtime.kernel import CompiledKernel
    k = infinet.compile(CASES[name])
    x1, x2 = inputs(k.plan, seed=11)
    normal = k.cuda_source
    with shared_limit(1024, 1024 if where == "global" else None):
        fresh = CompiledKernel.from_plan(k.plan)     # printed again, under the lower limit
        for dtype in ("float64", "float32"):
            gpu = fresh.executor("cuda", dtype)
            assert gpu.source != normal, "the lowered limit did not change the generated code"
            mod = cp.RawModule(code=gpu.source, options=("--std=c++17",))
            for decl in find_kernels(gpu.source):
                assert mod.get_function(decl.name).shared_size_bytes <= 1024, decl.name
            for st in gpu.pair_pass.stages:
                _, shared, scratch = gpu._stage_launch(st, 4)
                if where == "global":
                    assert shared == 0 and isinstance(scratch, cp.ndarray), st.name
                else:
                    assert shared == st.scratch * np.dtype(dtype).itemsize > 1024, st.name
            ref = ReferenceExecutor(k.plan, dtype)
            for a, b in ((x1, x2), (x1, None)):
                want, got = evaluate(ref, a, b), evaluate(gpu, a, b)
                for kind in ("nngp", "ntk"):
                    assert_agrees(k.plan, getattr(want, kind), getattr(got, kind), dtype,
                                  symmetric=b is None, what=(name, dtype, kind))


BIG_PLANE = """net big_plane
input 48x48x2
conv 3x3 pad=same W=1.5 b=0.1
relu
conv 3x3 pad=same W=1.5 b=0
flatten
dense W=1 b=0
"""


def test_large_images_use_dynamic_shared_memory_up_to_the_opt_in():
    """A 48x48 float64 plane (2 slots of K and Θ: 80 KB) is beyond the 48 KiB of static
    shared memory: its kernel takes dynamic shared memory, which the runtime opts in to;
    launched without the opt-in the same kernel is refused."""
    import cupy as cp

    from infinet.runtime.cuda import NVRTC_OPTIONS
    k = infinet.compile(BIG_PLANE)
    gpu = cuda_executor(k.plan, "float64")
    st = gpu.pair_pass.stages[0]
    need = st.scratch * 8
    assert 48 * 1024 < need <= gpu.dynamic_shared_limit()
    assert "extern __shared__" in gpu.source
    x1, x2 = inputs(k.plan, seed=5, n1=2, n2=2)
    ref = ReferenceExecutor(k.plan, "float64")
    for a, b in ((x1, x2), (x1, None)):
        want, got = evaluate(ref, a, b), evaluate(gpu, a, b)
        for kind in ("nngp", "ntk"):
            assert_agrees(k.plan, getattr(want, kind), getattr(got, kind), "float64",
                          symmetric=b is None, what=("big_plane", kind))
    kern = gpu.module.get_function(f"{st.name}_f64")
    assert kern.max_dynamic_shared_size_bytes >= need          # opted in by the runtime
    # the same source in a module of its own: no opt-in, so a launch with that much
    # dynamic shared memory is refused before it runs (items = 0)
    mod = cp.RawModule(code=gpu.source, options=NVRTC_OPTIONS + ("-DINF_NO_OPT_IN=1",))
    fresh = mod.get_function(f"{st.name}_f64")
    nargs = 10 + len(gpu.program.buffer_names)
    args = (None,) * nargs + (np.int64(0),)
    with pytest.raises(Exception, match="opt in|INVALID_VALUE"):
        fresh((1,), (st.threads,), args, shared_mem=need)
    fresh.max_dynamic_shared_size_bytes = need
    fresh((1,), (st.threads,), args, shared_mem=need)


def test_random_architectures_cuda_matches_reference():
    """The property test of the CPU target, in CUDA (random .net sources)."""
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


def test_cuda_runs_where_it_should(cuda_device):
    """On a GPU machine the real CuPy runs these tests, elsewhere the emulator does."""
    import cupy
    assert cuda_device == ("gpu" if cuda_emu.real_gpu() else "emulator")
    assert getattr(cupy, "__cuda_emu__", False) == (cuda_device == "emulator")
