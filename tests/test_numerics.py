"""Nothing silently non-finite or underflowed: stable formulas where the exact value is
finite, an error where it is not (or, for float32, a warning naming float64)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import infinet
from infinet.errors import NetError, NumericalError, PrecisionWarning, UsageError
from infinet.cli import main

CNN = "input 8x8x3\nconv 3x3 W=sqrt(2)\nrelu\nconv 3x3 W=sqrt(2)\nrelu\ngap\ndense\n"
BACKENDS = ["numpy", "cpu"]


def images(scale, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 8, 8, 3)) * scale


def erf_diagonal(v):
    """The exact NTK diagonal of input -> dense -> erf -> dense at Σ1 = Θ1 = v:
    Θ = v·(4/π)/√(1 + 4v) + (2/π)·asin(2v/(1 + 2v)); on the diagonal (1+2v)² − 4v² is
    exactly 1 + 4v, so the value is finite at every scale."""
    return v * (4 / math.pi) / math.sqrt(1 + 4 * v) + (2 / math.pi) * math.asin(2 * v / (1 + 2 * v))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,scale", [("float64", 1e8), ("float32", 1e4)])
def test_erf_ntk_diagonal_is_finite_at_large_scales(backend, dtype, scale):
    x = np.random.default_rng(1).standard_normal((3, 5)) * scale
    k = infinet.compile("input 5\ndense\nerf\ndense\n")
    out = k(x, backend=backend, dtype=dtype)
    v = (x * x).sum(axis=1) / 5
    want = np.array([erf_diagonal(float(a)) for a in v])
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(np.diag(out.ntk), want, rtol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e300, 1e160])
def test_inputs_too_large_for_float64_are_an_error(backend, scale):
    with pytest.raises(NumericalError, match="not finite in float64 .* rescale the inputs"):
        infinet.compile(CNN)(images(scale), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_overflow_is_an_error_naming_float64(backend):
    with pytest.raises(NumericalError, match="float32 .*compute in float64"):
        infinet.compile(CNN)(images(1e20), backend=backend, dtype="float32")
    # the same inputs are fine in float64, and scale as they should (relu is homogeneous)
    a = infinet.compile(CNN)(images(1e20), backend=backend)
    b = infinet.compile(CNN)(images(1.0), backend=backend)
    np.testing.assert_allclose(a.nngp, b.nngp * 1e40, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_underflow_warns_naming_float64(backend):
    k = infinet.compile(CNN)
    with pytest.warns(PrecisionWarning, match="float32 underflow.*float64"):
        k(images(1e-20), backend=backend, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        k(images(1e-20), backend=backend, dtype="float64")   # float64: no warning, exact
        k(images(1.0), backend=backend, dtype="float32")


def test_cli_says_error_and_leaves_no_result(tmp_path, capsys):
    np.save(tmp_path / "x.npy", images(1e300))
    (tmp_path / "n.net").write_text(CNN)
    status = main(["eval", str(tmp_path / "n.net"), "--x1", str(tmp_path / "x.npy"),
                   "--out", str(tmp_path / "k.npz"), "--backend", "numpy", "-q"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.net", "x.npy"]   # nothing left
    status = main(["eval", str(tmp_path / "n.net"), "--x1", str(tmp_path / "x.npy"),
                   "--out", str(tmp_path / "K"), "--backend", "cpu", "-q"])
    assert status == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["n.net", "x.npy"]
    capsys.readouterr()
    np.save(tmp_path / "y.npy", images(1e-20))
    status = main(["eval", str(tmp_path / "n.net"), "--x1", str(tmp_path / "y.npy"),
                   "--out", str(tmp_path / "k2.npz"), "--dtype", "float32", "-q"])
    err = capsys.readouterr().err
    assert status == 0 and err.count("warning: float32 underflow") == 1


@pytest.mark.parametrize("text", ["W=1e309", "W=1e400", "b=1e999"])
def test_non_finite_literals_are_located_errors(text):
    with pytest.raises(NetError) as info:
        infinet.compile(f"input 3\ndense {text}\n")
    assert str(info.value).startswith("<string>:2:9: error:") and "too large" in str(info.value)


def test_non_finite_params_from_the_command_line(capsys, tmp_path):
    (tmp_path / "n.net").write_text("param w = 1\ninput 3\ndense W=w\n")
    for value in ("1e309", "inf", "nan"):
        assert main(["check", str(tmp_path / "n.net"), "-D", f"w={value}"]) == 2
        assert "error: -D w=" in capsys.readouterr().err
    with pytest.raises(UsageError, match="must be finite"):
        infinet.compile("param w = 1\ninput 3\ndense W=w\n", w=float("inf"))


@pytest.mark.parametrize("w", ["1.35e154", "1e200", "1e300"])
def test_weights_whose_square_overflows_are_located_errors(w):
    with pytest.raises(NetError, match="W=.* is too large: its square"):
        infinet.compile(f"input 3\ndense W={w}\n")
    with pytest.raises(NetError, match="b=.* is too large: its square"):
        infinet.compile(f"input 4x4x1\nconv 3x3 b={w}\nflatten\n")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_weight_whose_kernel_overflows_is_an_error_not_a_traceback(backend):
    k = infinet.compile("input 3\ndense W=1.34e154\nrelu\ndense\n")  # W² = 1.8e308 fits
    x = np.full((2, 3), 2.0)
    with pytest.raises(NumericalError, match="not finite in float64"):
        k(x, backend=backend)


def test_override_errors_speak_the_callers_language(tmp_path, capsys):
    src = "param w = 1\ninput 3\ndense W=w\n"
    with pytest.raises(UsageError, match=r"^error: depth=3: <string> has no param 'depth'"):
        infinet.compile(src, depth=3)
    with pytest.raises(UsageError, match=r"^error: w='1/0': division by zero"):
        infinet.compile(src, w="1/0")
    (tmp_path / "n.net").write_text(src)
    assert main(["check", str(tmp_path / "n.net"), "-D", "depth=3"]) == 2
    assert "error: -D depth: " in capsys.readouterr().err
