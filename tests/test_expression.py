"""`elementwise fn="..." deg=N`: the formula language, its symbolic derivative, the
generated loop, and the accuracy of the quadrature against closed-form layers.

Accuracy (docs/semantics.md has the table): on an MLP whose pre-activation variances are
about 1, at the default deg=25 the kernels of fn="sin(x)" agree with `sin` to rounding
(3e-16), fn="erf(x)" with `erf` to 9e-4, and a polynomial with `polynomial` to rounding at
any degree above half its square's degree; 1e-8 needs deg=15 for sin(x) and deg=80 for
erf(x) (which is near a step at this scale, where Gauss–Hermite converges slowly).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import infinet
from infinet.errors import SourcePos
from infinet.layers.formula import evaluate, parse
from infinet.layers.mathns import NumpyMath

M = NumpyMath("float64")


def at(i):
    return SourcePos("t.net", 1, 1 + i, "")


def f_and_df(text, x, params=None):
    formula = parse(text, at, params or {})
    with np.errstate(all="ignore"):
        value, slope = evaluate(formula, M, np.asarray(x, float))
    return np.broadcast_to(value, np.shape(x)), np.broadcast_to(slope, np.shape(x))


X = np.array([-2.3, -1.0, -0.4, 0.3, 0.9, 1.7, 2.6])


@pytest.mark.parametrize("text,value", [
    ("-x^2", lambda x: -(x ** 2)),
    ("2^3^2 * x", lambda x: 512 * x),
    ("x^-1 + 1/x", lambda x: 2 / x),
    ("x - 2 - 3", lambda x: x - 5),
    ("x / 2 / 4", lambda x: x / 8),
    ("-(-x)", lambda x: x),
    ("+x - -x", lambda x: 2 * x),
    ("2*pi*x", lambda x: 2 * math.pi * x),
    ("a*x + b", lambda x: 0.5 * x - 3),
    (".5e1*x", lambda x: 5 * x),
    ("sigmoid(x) + softplus(x)", lambda x: 1 / (1 + np.exp(-x)) + np.log1p(np.exp(x))),
    ("max(x, 0.5) - min(x^2, 1)", lambda x: np.maximum(x, 0.5) - np.minimum(x * x, 1)),
])
def test_grammar_and_evaluation(text, value):
    got, _ = f_and_df(text, X, {"a": 0.5, "b": -3})
    np.testing.assert_allclose(got, value(X), rtol=1e-15)


@pytest.mark.parametrize("text", [
    "x * tanh(x)", "exp(-x^2/2) * sin(3*x)", "log(1 + x^2) / sqrt(2 + x^2)", "erf(x/2)^3",
    "sigmoid(2*x) * softplus(-x)", "x^2.5 + (x^2 + 1)^0.5", "(x^2 + 1)^(x/3)", "cos(x)^-2",
    "abs(x)^3", "max(x^2, 2 - x) + min(sin(x), cos(x))",
])
def test_the_derivative_is_the_derivative(text):
    x = np.abs(X) + 0.05 if "2.5" in text else X
    _, slope = f_and_df(text, x)
    h = 1e-5
    num = (f_and_df(text, x + h)[0] - f_and_df(text, x - h)[0]) / (2 * h)
    np.testing.assert_allclose(slope, num, rtol=1e-7, atol=1e-8)


def test_derivatives_at_kinks_are_jax_values():
    """NT differentiates fn with jax.grad: |u|' = 1 at 0, max/min give half of each side at
    a tie, √u' = ∞ at 0 (tests/oracle: the kinks case matches NT to 2e-15)."""
    zero = np.array([0.0])
    assert f_and_df("abs(x)", zero)[1][0] == 1.0
    assert f_and_df("max(x, 0)", zero)[1][0] == 0.5
    assert f_and_df("min(x, 0)", zero)[1][0] == 0.5
    assert f_and_df("max(2*x, 0) + 3*min(x, 0)", zero)[1][0] == 2.5
    assert f_and_df("max(x, x)", np.array([1.3]))[1][0] == 1.0
    assert f_and_df("sqrt(x)", zero)[1][0] == math.inf
    assert f_and_df("x^2", zero)[1][0] == 0.0


def test_constant_parts_are_folded_and_integer_powers_multiplied():
    k = infinet.compile('input 3\ndense\nelementwise fn="sqrt(2)*x^3 + exp(1)" deg=5\ndense\n')
    fn = k.cpu_source[k.cpu_source.index("// elementwise"):]
    fn = fn[:fn.index("\n}\n")]
    assert repr(math.sqrt(2)) in fn and repr(math.e) in fn
    assert "inf_pow" not in fn and "inf_exp" not in fn and "inf_sqrt(e" in fn   # a, c, r only
    k = infinet.compile('input 3\ndense\nelementwise fn="x^2.5" deg=5\ndense\n')
    assert "inf_pow(" in k.cpu_source


def test_params_are_read_and_can_be_overridden():
    src = 'param a = 0.5\ninput 3\ndense\nelementwise fn="a*x^3 + x" deg=4\ndense\n'
    x = np.random.default_rng(0).normal(size=(3, 3))
    poly = infinet.compile("input 3\ndense\npolynomial coef=[0, 1, 0, 2]\ndense\n")(x)
    got = infinet.compile(src, a=2)(x)
    np.testing.assert_allclose(got.nngp, poly.nngp, rtol=1e-13)
    np.testing.assert_allclose(got.ntk, poly.ntk, rtol=1e-13)
    assert "fn=\"a*x^3 + x\" deg=4" in infinet.compile(src).explain()


def test_generated_code_is_one_loop_nest_whatever_the_degree():
    sources = {}
    for deg in (7, 25, 120):
        k = infinet.compile(f'input 3\ndense\nelementwise fn="x * tanh(x)" deg={deg}\ndense\n')
        src = k.cuda_source
        fn = src[src.index("// elementwise"):]
        fn = fn[:fn.index("\n}\n")]
        assert fn.count("for (int q") == 2 and fn.count("inf_tanh(") == 2
        tables = [ln for ln in fn.splitlines() if "static constexpr double" in ln]
        assert len(tables) == 2 and all(f"[{deg}] = {{" in ln for ln in tables)  # read twice
        sources[deg] = [ln for ln in fn.splitlines() if ln not in tables and "deg=" not in ln]
    assert len(sources[7]) == len(sources[120])


def test_tables_are_named_by_their_content():
    """Function-scope statics of inline functions can be one symbol per process (GCC's
    STB_GNU_UNIQUE: the CUDA host emulation loads many modules into one process), so a
    table's name must say what it holds: two nets with different degrees in functions of
    the same name must not share one."""
    def names(deg):
        src = infinet.compile(f'input 3\ndense\nelementwise fn="sin(x)" deg={deg}\n'
                              'dense\n').cuda_source
        return {w for w in src.replace("[", " ").split() if w.startswith("inf_q")}
    assert names(8) == names(8)
    assert not names(8) & names(12)


def _mlp(act):
    return f"input 8\ndense W=1 b=0.1\n{act}\ndense\n"


X8 = np.random.default_rng(0).normal(size=(6, 8))


def quadrature_error(fn, closed, deg):
    ref = infinet.compile(_mlp(closed))(X8)
    got = infinet.compile(_mlp(f'elementwise fn="{fn}" deg={deg}'))(X8)
    return max(np.abs(got.nngp - ref.nngp).max() / np.abs(ref.nngp).max(),
               np.abs(got.ntk - ref.ntk).max() / np.abs(ref.ntk).max())


def test_accuracy_at_the_default_degree():
    from infinet.layers.expression import DEFAULT_DEG
    assert DEFAULT_DEG == 25
    assert quadrature_error("sin(x)", "sin", 25) < 1e-14
    assert quadrature_error("0.1 + x + 0.5*x^2", "polynomial coef=[0.1, 1, 0.5]", 25) < 1e-14
    assert quadrature_error("0.1 + x + 0.5*x^2", "polynomial coef=[0.1, 1, 0.5]", 3) < 1e-14
    assert 1e-4 < quadrature_error("erf(x)", "erf", 25) < 2e-3
    # and without deg=: the default
    ref = infinet.compile(_mlp('elementwise fn="erf(x)" deg=25'))(X8)
    dflt = infinet.compile(_mlp('elementwise fn="erf(x)"'))(X8)
    assert np.array_equal(ref.nngp, dflt.nngp)


def test_degree_needed_for_1e8():
    assert quadrature_error("sin(x)", "sin", 10) > 1e-8 > quadrature_error("sin(x)", "sin", 15)
    assert quadrature_error("erf(x)", "erf", 60) > 1e-8 > quadrature_error("erf(x)", "erf", 80)
