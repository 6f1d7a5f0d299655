"""The CPU target's lane groups and its working memory.

The pair passes' uniform stages that read no materialised state run on groups of pairs,
one pair per SIMD lane (cpu.cpp.j2, cpu_lanes.j2); the kernels' working memory is one
workspace the executor keeps across calls, and the batch size comes from the kernels'
real memory per pair.  Structure and values only: nothing here is timed.
"""
from __future__ import annotations

import numpy as np
import pytest

import infinet
from codegen_cases import CASES
from infinet.codegen import cpujit
from infinet.runtime import batching
from infinet.runtime.backends import make_executor
from infinet.runtime.evaluate import evaluate
from infinet.runtime.reference import ReferenceExecutor

pytestmark = pytest.mark.skipif(not cpujit.compiler_works(), reason="no working C++ compiler")

CNN = "input 6x5x2\nconv 3x3 W=sqrt(2)\nrelu\nconv 3x3 W=sqrt(2) b=0.1\nrelu\ngap\ndense\n"
#: a readout feeding a relu in the tail: the pair pass's readout sums of K(x, x) must
#: equal the self pass's bit for bit, or the tail relu's √(v v' − Σ²) is not 0
FLAT_RELU = ("input 5x4x3\nconv 3x3 W=sqrt(2)\nrelu\nconv 3x3 W=1.3 b=0.2\nrelu\nflatten\n"
             "dense W=1.5 b=0.1\nrelu\ndense\n")
LANES = {"float32": 16, "float64": 8}
#: libm calls without a vector version in the generated code (atan2 has libmvec's where
#: the self pass is plane 0 alone)
SCALAR_CALLS = ("inf_atan2(", "inf_asin(", "inf_erf(", "inf_exp(", "inf_log(", "inf_sin(",
                "inf_cos(", "inf_tanh(", "inf_expm1(", "inf_log1p(", "inf_pow(")


def _vectorises(text, prog):
    return not any(f in text and not (f == "inf_atan2(" and prog.self_diagonal_only)
                   for f in SCALAR_CALLS)


def _x(k, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + k.plan.data_shape)


@pytest.mark.parametrize("src", [CNN, FLAT_RELU, CASES["example_myrtle"]])
def test_lane_stages_are_the_pair_passes_uniform_stages_without_sources(src):
    k = infinet.compile(src)
    prog, text = k.kernel_program, k.cpu_source
    for pas in prog.passes:
        for st in pas.stages:
            lanes = (st.uniform and pas.pass_ != "self" and not st.sources
                     and all(_vectorises(op.fn.definition(), prog) for op in st.nodes
                             if op.kind == "ew"))
            assert (f"{st.name}_lanes<real>(A, G," in text) == lanes, st.name
            assert (f"{st.name}<real>(A, wi" in text) == (not lanes), st.name
    # the first pair stage of the nets without pooled self passes runs in lane groups
    if prog.self_diagonal_only:
        assert "pair_stage0_lanes" in text


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [1, 3, 9, 17])
def test_partial_lane_groups_agree_with_the_reference(dtype, n):
    """Batches of any size: the lanes past the last pair repeat it and are never written."""
    k = infinet.compile(CNN)
    x1, x2 = _x(k, 5, 0), _x(k, 4, 1)
    rng = np.random.default_rng(n)
    rows1, rows2 = rng.integers(0, 5, n), rng.integers(0, 4, n)
    cpu = make_executor(k.plan, "cpu", dtype)
    ref = ReferenceExecutor(k.plan, "float64")
    a, b = x1.astype(dtype), x2.astype(dtype)
    got = cpu.pairs(a, b, rows1, rows2, cpu.self_variances(a), cpu.self_variances(b))
    want = ref.pairs(x1, x2, rows1, rows2, ref.self_variances(x1), ref.self_variances(x2))
    tol = 1e-12 if dtype == "float64" else 1e-5
    for g, w in zip(got, want):
        assert g.shape == (n,)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("src", [CNN, FLAT_RELU])
def test_lane_groups_keep_the_relu_diagonal_exact(src, dtype):
    """On K(x, x) the pair pass reproduces the self pass bit for bit in the lanes too, so
    relu's √(v v' − Σ²) is exactly 0 there: the diagonal is the reference's to rounding."""
    k = infinet.compile(src)
    x = _x(k, 2 * LANES[dtype] + 3, 2)
    want = evaluate(ReferenceExecutor(k.plan, dtype), x, None)
    got = evaluate(make_executor(k.plan, "cpu", dtype), x, None)
    tol = 1e-13 if dtype == "float64" else 2e-6
    for kind in ("nngp", "ntk"):
        w, g = np.diag(getattr(want, kind)), np.diag(getattr(got, kind))
        assert np.abs(g - w).max() <= tol * np.abs(w).max(), kind


def test_the_executor_reuses_its_workspace_between_calls():
    k = infinet.compile(CNN)
    cpu = make_executor(k.plan, "cpu", "float64")
    x = _x(k, 6, 3)
    v = cpu.self_variances(x)
    rows = np.arange(6)
    first = cpu.pairs(x, x, rows, rows[::-1].copy(), v, v)
    ws = cpu.workspace
    assert ws.size > 0
    address = ws.ctypes.data
    for _ in range(3):                      # the same batch again, and smaller ones
        again = cpu.pairs(x, x, rows, rows[::-1].copy(), v, v)
        cpu.pairs(x, x, rows[:2], rows[:2], v, v)
        cpu.self_variances(x)
        assert cpu.workspace is ws and cpu.workspace.ctypes.data == address
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # a batch that needs more memory grows it once; later calls of that size reuse it
    big = np.arange(200) % 6
    cpu.pairs(x, x, big, big[::-1].copy(), v, v)
    grown = cpu.workspace
    assert grown.size > ws.size
    cpu.pairs(x, x, big, big[::-1].copy(), v, v)
    cpu.pairs(x, x, rows, rows, v, v)
    assert cpu.workspace is grown


def test_the_workspace_size_follows_the_kernels_layout():
    """The C entry points say how much memory a call needs; a call with less is refused
    (nothing computed), so no kernel ever writes past the workspace."""
    k = infinet.compile(CNN)
    cpu = make_executor(k.plan, "cpu", "float32")
    need = cpu._pair.workspace
    threads = cpu._threads()
    # a fixed part (thread scratch) plus a part per pair (lane groups round it up to 16)
    per_pair = (need(16000, threads) - need(8000, threads)) / 8000
    assert per_pair == pytest.approx((cpu.pair_bytes - 32) / 4, rel=1e-3)
    assert need(1, threads + 1) > need(1, threads)
    x = _x(k, 2, 4).astype("float32")
    v = cpu.self_variances(x)
    rows = np.zeros(3, np.int64)
    ptr = lambda a: a.ctypes.data  # noqa: E731
    small = np.zeros(need(3, threads) - 1, np.float32)
    out = np.full(3, -7.0, np.float32)
    xp = cpu._x(x)
    status = cpu._pair(3, ptr(xp), ptr(xp), ptr(rows), ptr(rows), ptr(v.packed), ptr(v.packed),
                       None, ptr(out), ptr(out), ptr(small), small.size)
    assert status == 2 and (out == -7.0).all()


def test_batches_come_from_the_kernels_memory_per_pair():
    """Not the NumPy reference's model (ten arrays of the largest state per pair): the CPU
    kernels hold a pair's readout partials and its share of the lane groups' inputs."""
    k = infinet.compile(CNN.replace("6x5x2", "32x32x3"))
    cpu = make_executor(k.plan, "cpu", "float32")
    limit = batching.DEFAULT_MAX_MEMORY
    assert batching.batch_size(cpu) == limit // cpu.pair_bytes
    assert batching.batch_size(cpu) > 1000
    assert batching.batch_size(cpu) > 20 * batching.pair_batch_size(k.plan, 4, limit)
    assert batching.batch_size(cpu, 2 ** 20) == 2 ** 20 // cpu.pair_bytes
    # the NumPy executor keeps the model
    ref = ReferenceExecutor(k.plan, "float32")
    assert batching.batch_size(ref) == batching.pair_batch_size(k.plan, 4, 4 * 2 ** 20)


def test_every_scalar_libm_function_of_the_math_namespace_keeps_the_per_pair_form():
    """The lane rule (cpu_lanes.j2 `scalar_calls`, mirrored in SCALAR_CALLS) names every
    function of math.j2 that is neither exact in a vector lane (VECTOR_EXACT) nor inlined
    as an instruction (fma) nor a helper of the templates: a new libm function must be
    added to it, or its stages would run their lane loops in scalar code."""
    import re
    from pathlib import Path

    from infinet.codegen.program import VECTOR_EXACT
    math_j2 = Path(infinet.__file__).parent / "codegen" / "templates" / "math.j2"
    lanes_j2 = math_j2.with_name("cpu_lanes.j2")
    names = set(re.findall(r"INF_FN \w+ inf_(\w+)\(", math_j2.read_text()))
    scalar = names - VECTOR_EXACT - {"fma", "input", "mod"}
    listed = {f[len("inf_"):-1] for f in SCALAR_CALLS}
    assert scalar <= listed, scalar - listed
    assert all(f'"{f}"' in lanes_j2.read_text() for f in SCALAR_CALLS)
