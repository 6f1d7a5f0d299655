"""The CPU target (generated C++) agrees with the NumPy reference on every test architecture."""
from __future__ import annotations

import numpy as np
import pytest

import infinet
from codegen_cases import CASES, assert_agrees, cached_executor, inputs
from infinet.codegen import cpujit
from infinet.runtime.evaluate import evaluate
from infinet.runtime.reference import ReferenceExecutor

pytestmark = pytest.mark.skipif(not cpujit.compiler_works(), reason="no working C++ compiler")

def cpu_executor(plan, dtype, ntk=True):
    return cached_executor("cpu", plan, dtype, ntk)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_matches_reference(name, dtype):
    k = infinet.compile(CASES[name])
    x1, x2 = inputs(k.plan, seed=hash(name) % 1000)
    ref = ReferenceExecutor(k.plan, dtype)
    cpu = cpu_executor(k.plan, dtype)
    for a, b in ((x1, x2), (x1, None)):
        want = evaluate(ref, a, b)
        got = evaluate(cpu, a, b)
        for kind in ("nngp", "ntk"):
            assert_agrees(k.plan, getattr(want, kind), getattr(got, kind), dtype,
                          symmetric=b is None, what=(name, kind))


@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_self_variances_match_reference(name):
    k = infinet.compile(CASES[name])
    x1, _ = inputs(k.plan, seed=1)
    want = ReferenceExecutor(k.plan, "float64").self_variances(x1)
    got = cpu_executor(k.plan, "float64").self_variances(x1)
    assert set(got) == set(want) == set(k.plan.variance_states)
    for i in want:
        np.testing.assert_allclose(got[i], want[i], rtol=1e-13, atol=1e-13 * np.abs(want[i]).max())


def test_cpu_matches_neural_tangents_oracle():
    """Against NT itself (ref_more.npz's own inputs), not only against our reference."""
    from codegen_cases import MORE
    for name in MORE["names"]:
        k = infinet.compile(str(MORE[f"{name}__net"]))
        cpu = cpu_executor(k.plan, "float64")
        got = evaluate(cpu, MORE[f"{name}__x1"], MORE[f"{name}__x2"])
        for kind in ("nngp", "ntk"):
            want = MORE[f"{name}__{kind}_12"]
            err = np.abs(getattr(got, kind) - want).max() / np.abs(want).max()
            assert err < 1e-10, (name, kind, err)


def test_backend_selection_and_sources():
    k = infinet.compile(CASES["example_cnn_gap_small"])
    x = np.random.default_rng(0).standard_normal((3,) + k.plan.data_shape)
    a = k(x, backend="cpu")
    b = k(x, backend="numpy")
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12)
    assert k.executor("cpu").name == "cpu"
    assert "extern \"C\" int infinet_pair_f64" in k.cpu_source
    assert "__global__" in k.cuda_source and "#include" not in k.cuda_source
    # tiny jobs under `auto` stay on NumPy (compiling would cost more than the job)
    assert k.executor("auto", pairs=1).name == "numpy"


def test_batches_of_any_size_and_row_order():
    k = infinet.compile(CASES["more_myrtle_like"])
    x1, x2 = inputs(k.plan, seed=5, n1=5, n2=4)
    cpu = cpu_executor(k.plan, "float64")
    ref = ReferenceExecutor(k.plan, "float64")
    v1, v2 = cpu.self_variances(x1), cpu.self_variances(x2)
    rows1 = np.array([4, 0, 3, 3, 1])
    rows2 = np.array([0, 3, 2, 1, 1])
    got = cpu.pairs(x1, x2, rows1, rows2, v1, v2)
    want = ref.pairs(x1, x2, rows1, rows2, ref.self_variances(x1), ref.self_variances(x2))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    empty = cpu.pairs(x1, x2, rows1[:0], rows2[:0], v1, v2)
    assert empty[0].shape == (0,)


def test_compile_error_shows_command_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("INFINET_CACHE_DIR", str(tmp_path))
    with pytest.raises(cpujit.CompileError) as info:
        cpujit.build_library("this is not C++;\n", "broken")
    text = str(info.value)
    assert "command:" in text and "source kept at:" in text and "broken-" in text
    kept = [p for p in tmp_path.iterdir() if p.suffix == ".cpp"]
    assert kept and kept[0].read_text() == "this is not C++;\n"


def test_library_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("INFINET_CACHE_DIR", str(tmp_path))
    src = 'extern "C" int f(void) { return 7; }\n'
    first = cpujit.build_library(src, "cached")
    mtime = first.stat().st_mtime_ns
    again = cpujit.build_library(src, "cached")
    assert again == first and again.stat().st_mtime_ns == mtime


def test_pair_pass_reproduces_the_self_pass_on_the_diagonal_with_pooled_self_passes():
    """A pooled self pass walks plane 0 in other loops than the pair pass: a vector atan2
    (libmvec) in one and the scalar libm one in the other would differ in the last bit,
    and relu's √(v v' − Σ²) on K(x, x) would no longer be 0 (found by hypothesis: 1e-9 off)."""
    src = ("input 3x3\navgpool 2 stride=1 pad=valid\nconv 1 pad=same\nsum {\n"
           "  branch { erf; conv 3 pad=same W=1 b=0.1 }\n  branch {  }\n}\n"
           "conv 1 pad=same stride=2 W=1 b=0\nrelu\nflatten\ndense W=1 b=0\n")
    k = infinet.compile(src)
    for seed in (0, 6, 18):
        x = np.random.default_rng(seed).standard_normal((3, 3, 3))
        want = evaluate(ReferenceExecutor(k.plan, "float64"), x, None)
        got = evaluate(cpu_executor(k.plan, "float64"), x, None)
        assert np.abs(got.ntk - want.ntk).max() <= 1e-13 * np.abs(want.ntk).max(), seed
