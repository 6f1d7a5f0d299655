"""Architectures every code-generation test runs: the NT oracle's test nets, the examples
and the graph and input-rank cases.

``CASES`` maps a name to ``.net`` source: the 13 architectures of ref_kernels.npz, the 10
of ref_more.npz, examples/*.net with small sizes (32x32 inputs shrunk to 8x8 or 16x16,
depths cut) so the NumPy reference stays fast, and ``GRAPH_CASES``: residual and sum
blocks (fused on chip, with projection shortcuts, with pooling inside a branch, two
readouts), sequences and volumes; and ``ACTIVATION_CASES``: every activation of issue 10
in CNNs, a sequence net and an MLP.
"""
from __future__ import annotations

import numpy as np

from conftest import DATA, EXAMPLES

MORE = np.load(DATA / "ref_more.npz")


def _ref_nets() -> dict[str, str]:
    from test_neural_tangents import REF_NETS
    return dict(REF_NETS)


#: example -> text replacements that shrink it further (tests/oracle/nt_ref_examples.py
#: made its neural-tangents references from the same shrunk texts)
SHRINK = {
    "wide_resnet": [("input 32x32x3", "input 8x8x3"), ("param blocks = 2", "param blocks = 1")],
    "sequence_cnn": [("input 128x4", "input 16x4")],
    "mlp_layernorm": [("param depth = 4", "param depth = 2")],
}


def _examples() -> dict[str, str]:
    out = {}
    for path in sorted(EXAMPLES.glob("*.net")):
        text = path.read_text()
        for old, new in SHRINK.get(path.stem, ()):
            assert old in text, (path.name, old)
            text = text.replace(old, new)
        if path.stem == "myrtle":
            text = text.replace("input 32x32x3", "input 16x16x3").replace("avgpool 8x8",
                                                                          "avgpool 4x4")
        else:
            text = text.replace("input 32x32x3", "input 8x8x3")
        text = text.replace("param depth = 11", "param depth = 4")
        out[f"example_{path.stem}"] = text
    return out


GRAPH_CASES = {
    # a pre-activation ResNet block: the shortcut is kept on chip, one fused stage
    "graph_resnet": "input 8x8x3\nconv 3x3 W=sqrt(2)\nrepeat 2 {\n  residual {\n    relu\n"
                    "    conv 3x3 W=sqrt(2) b=0.1\n    relu\n    conv 3x3 W=sqrt(2)\n  }\n}\n"
                    "relu\ngap\ndense W=sqrt(2)\n",
    # a WideResNet-style downsampling block: strided convs in both branches
    "graph_projection": "input 8x8x2\nconv 3x3 W=sqrt(2) fixed\nsum {\n  branch { relu; conv 3x3 "
                        "stride=2 W=sqrt(2); relu; conv 3x3 W=sqrt(2) }\n  branch { conv 1x1 "
                        "stride=2 }\n}\nrelu\nflatten\ndense\n",
    # pooling inside a branch: the branches meet in a later stage
    "graph_pooled_branch": "input 6x6x2\nconv 3x3\nsum {\n  branch { relu; avgpool 2x2; conv 3x3 }\n"
                           "  branch { avgpool 2x2 stride=2 pad=same }\n}\nerf\ngap\ndense\n",
    # two readouts of the same state, added
    "graph_two_readouts": "input 5x4x2\nconv 3x3 W=1.2 b=0.2\nrelu\nconv 2x2 pad=valid\nsum {\n"
                          "  branch { gap; dense W=0.8 }\n  branch { flatten; dense W=1.5 b=0.1 }\n}\n"
                          "relu\ndense\n",
    # a residual MLP on flat data
    "graph_mlp": "input 6\ndense W=sqrt(2)\nrepeat 2 { residual { relu; dense W=sqrt(2) b=0.1 } }\n"
                 "erf\ndense\n",
    # sequences: 1-d convs and pools
    "rank1_sequence": "input 12x3\nconv 5 W=sqrt(2)\nrelu\navgpool 2\nconv 3 pad=valid "
                      "W=sqrt(2) b=0.1\nrelu\nconv 3 pad=circular\nerf\ngap\ndense\n",
    # layer norms (over channels, over everything: a mean of v per input) and sum pooling
    "norm_layernorm": "input 6x5x3\nconv 3x3 W=1.3 b=0.2\nlayernorm\nrelu\nsumpool 2x2 "
                      "stride=1\nconv 3x3\nlayernorm axes=all\nerf\ngap\ndense\nlayernorm "
                      "eps=0.1\nrelu\ndense\n",
    # volumes: 3-d convs with a strided projection block
    "rank3_volume": "input 4x4x4x2\nconv 3x3x3 W=sqrt(2)\nsum {\n  branch { relu; conv 3x3x3 "
                    "stride=2 }\n  branch { conv 1x1x1 stride=2 }\n}\nrelu\navgpool 2x2x2\n"
                    "flatten\ndense\n",
}

# the activations of issue 10, CNN and MLP, fused in plane-local stages and in tails
ACTIVATION_CASES = {
    "act_cnn_smooth": "input 6x6x2\nconv 3x3 W=1.2 b=0.1\ngelu\nconv 3x3 W=1.1\nsin a=1.2 b=0.8 "
                      "c=0.3\nconv 3x3 b=0.2\nrbf gamma=0.5\ngap\ndense\n",
    "act_cnn_exp": "input 5x5x3\nconv 3x3 W=0.9\nexp a=0.7 b=0.6\nconv 3x3 pad=valid\n"
                   "gaussian a=1.3 b=-0.4\nconv 2x2 pad=circular W=1.3\ncos b=0.7 c=0.2\n"
                   "conv 1x1\nsigmoid_like\nflatten\ndense\n",
    "act_cnn_poly": "input 6x5x2\nconv 3x3\nmonomial degree=2\nconv 3x3 stride=2 W=0.8\n"
                    "polynomial coef=[0.1, 1, 0.5]\nconv 1x1\nrectified_monomial degree=3\n"
                    "gap\ndense\n",
    "act_cnn_piecewise": "input 6x6x2\nconv 3x3\nsign\nconv 3x3 W=1.5 b=0.1\nabs\navgpool 2x2\n"
                         "conv 3x3\nrectified_monomial degree=0\nflatten\ndense\n",
    "act_cnn_quadrature": "input 5x5x2\nconv 3x3\nelementwise fn=\"x * tanh(x)\" deg=12\n"
                          "conv 3x3 W=1.2\nelementwise fn=\"softplus(x) - sigmoid(2*x) + "
                          "abs(x)/4 + max(x, 0.2) + x^3/9\" deg=9\ngap\ndense\n",
    "act_seq_residual": "input 10x2\nconv 3 W=1.1\nresidual { gelu; conv 3 W=0.7 }\n"
                        "elementwise fn=\"exp(-x^2)*cos(x) + erf(x)\" deg=8\nconv 3\n"
                        "monomial\ngap\ndense W=0.5\nsign\ndense\n",
    # the largest quadrature degree: weights far below float's range (1e-163)
    "act_mlp_deg200": "input 4\ndense W=0.8\nelementwise fn=\"sin(x) + 0.1*x^2\" deg=200\n"
                      "dense\n",
    # (sign first: at the correlations near 1 of a deep net its arcsine is ill-conditioned)
    "act_mlp_smooth": "input 6\n" + "".join(
        f"dense W=1.1 b=0.1\n{act}\n" for act in (
            "sign", "gelu", "sin a=1.2 b=0.8 c=0.3", "cos", "rbf gamma=0.3", "exp a=0.5 b=0.5",
            "gaussian a=1.3 b=-0.4")) + "dense\n",
    "act_mlp_polynomial": "input 6\n" + "".join(
        f"dense W=1.1 b=0.1\n{act}\n" for act in (
            "abs", "monomial degree=2", "rectified_monomial degree=2",
            "polynomial coef=[0.2, -0.6, 0, 0.3]", "sigmoid_like",
            "elementwise fn=\"x * tanh(x)\" deg=25")) + "dense\n",
}

CASES: dict[str, str] = {}
CASES.update({f"ref_{k}": v for k, v in _ref_nets().items()})
CASES.update({f"more_{n}": str(MORE[f"{n}__net"]) for n in MORE["names"]})
CASES.update(_examples())
CASES.update(GRAPH_CASES)
CASES.update(ACTIVATION_CASES)


def inputs(plan, seed: int, n1: int = 4, n2: int = 3):
    rng = np.random.default_rng(seed)
    shape = plan.data_shape
    return rng.standard_normal((n1,) + shape), rng.standard_normal((n2,) + shape)


def relative_error(got, ref) -> float:
    """max |got - ref| / max |ref|."""
    scale = np.abs(ref).max() or 1.0
    return float((np.abs(np.asarray(got, dtype=np.float64) - ref) / scale).max())


def assert_agrees(plan, ref, got, dtype: str, symmetric: bool, what: str = "",
                  floor: float = 0.0):
    """|got - ref| <= tol * max|ref| (1e-12 float64, 1e-5 float32; at least `floor`),
    elementwise."""
    tol = max(1e-12 if dtype == "float64" else 1e-5, floor)
    assert np.all(np.isfinite(got)), (what, "non-finite values")
    err = relative_error(got, ref)
    assert err <= tol, (what, err)


def check_random_architecture(source: str, data_shape, seed: int, make_executor) -> None:
    """A hypothesis-drawn net: ``make_executor(kernel, dtype)`` agrees with the reference on
    x1 × x2 and x1 × x1, in float64 and float32 (the property test of every target)."""
    import infinet
    from infinet.runtime.evaluate import evaluate
    from infinet.runtime.reference import ReferenceExecutor

    k = infinet.compile(source)
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((3,) + tuple(data_shape))
    x2 = rng.standard_normal((2,) + tuple(data_shape))
    exact = {}
    for dtype in ("float64", "float32"):
        ref = ReferenceExecutor(k.plan, dtype)
        other = make_executor(k, dtype)
        for a, b in ((x1, x2), (x1, None)):
            want, got = evaluate(ref, a, b), evaluate(other, a, b)
            for kind in ("nngp", "ntk"):
                want_k = getattr(want, kind)
                if dtype == "float64":
                    exact[b is None, kind] = want_k
                    floor = 0.0
                else:
                    # a drawn net can be ill-conditioned in float32 (sign's arcsine at
                    # correlations near 1 amplifies rounding ~100x): there two float32
                    # evaluations may differ by as much as the float32 reference differs
                    # from the float64 one, so that (×3) is the floor of the tolerance
                    floor = 3 * relative_error(want_k, exact[b is None, kind])
                assert_agrees(k.plan, want_k, getattr(got, kind), dtype,
                              symmetric=b is None, what=(source, dtype, kind), floor=floor)


_EXECUTORS: dict = {}


def cached_executor(backend: str, plan, dtype, ntk: bool = True):
    """One compiled executor per (backend, net, params, dtype) for the whole test session."""
    from infinet.runtime.kernel import CompiledKernel
    key = (backend, plan.source, tuple(sorted(plan.params.items())), dtype, ntk)
    if key not in _EXECUTORS:
        _EXECUTORS[key] = CompiledKernel.from_plan(plan).executor(backend, dtype, ntk=ntk)
    return _EXECUTORS[key]
