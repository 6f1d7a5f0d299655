"""Architectures every code-generation test runs: the NT oracle's test nets and the examples.

``CASES`` maps a name to ``.net`` source: the 13 architectures of ref_kernels.npz, the 10
of ref_more.npz, and examples/*.net with small sizes (32x32 inputs shrunk to 8x8 or
16x16, depths cut) so the NumPy reference stays fast.
"""
from __future__ import annotations

import numpy as np

from conftest import DATA, EXAMPLES

MORE = np.load(DATA / "ref_more.npz")


def _ref_nets() -> dict[str, str]:
    from test_neural_tangents import REF_NETS
    return dict(REF_NETS)


def _examples() -> dict[str, str]:
    out = {}
    for path in sorted(EXAMPLES.glob("*.net")):
        text = path.read_text()
        if path.stem == "myrtle":
            text = text.replace("input 32x32x3", "input 16x16x3").replace("avgpool 8x8",
                                                                          "avgpool 4x4")
        else:
            text = text.replace("input 32x32x3", "input 8x8x3")
        text = text.replace("param depth = 11", "param depth = 4")
        out[f"example_{path.stem}"] = text
    return out


CASES: dict[str, str] = {}
CASES.update({f"ref_{k}": v for k, v in _ref_nets().items()})
CASES.update({f"more_{n}": str(MORE[f"{n}__net"]) for n in MORE["names"]})
CASES.update(_examples())


def inputs(plan, seed: int, n1: int = 4, n2: int = 3):
    rng = np.random.default_rng(seed)
    shape = plan.data_shape
    return rng.standard_normal((n1,) + shape), rng.standard_normal((n2,) + shape)


def assert_agrees(plan, ref, got, dtype: str, symmetric: bool, what: str = ""):
    """|got - ref| <= tol * max|ref| (1e-12 float64, 1e-5 float32), elementwise."""
    tol = 1e-12 if dtype == "float64" else 1e-5
    scale = np.abs(ref).max() or 1.0
    err = np.abs(np.asarray(got) - ref) / scale
    assert np.all(np.isfinite(got)), (what, "non-finite values")
    assert err.max() <= tol, (what, float(err.max()))


def check_random_architecture(source: str, data_shape, seed: int, make_executor) -> None:
    """A hypothesis-drawn net: ``make_executor(plan, dtype)`` agrees with the reference on
    x1 × x2 and x1 × x1, in float64 and float32 (the property test of every target)."""
    import infinet
    from infinet.runtime.evaluate import evaluate
    from infinet.runtime.reference import ReferenceExecutor

    k = infinet.compile(source)
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((3,) + tuple(data_shape))
    x2 = rng.standard_normal((2,) + tuple(data_shape))
    for dtype in ("float64", "float32"):
        ref = ReferenceExecutor(k.plan, dtype)
        other = make_executor(k.plan, dtype)
        for a, b in ((x1, x2), (x1, None)):
            want, got = evaluate(ref, a, b), evaluate(other, a, b)
            for kind in ("nngp", "ntk"):
                assert_agrees(k.plan, getattr(want, kind), getattr(got, kind), dtype,
                              symmetric=b is None, what=(source, dtype, kind))


_EXECUTORS: dict = {}


def cached_executor(cls, plan, dtype):
    """One compiled executor per (target, net, params, dtype) for the whole test session."""
    key = (cls.__name__, plan.source, tuple(sorted(plan.params.items())), dtype)
    if key not in _EXECUTORS:
        _EXECUTORS[key] = cls(plan, dtype)
    return _EXECUTORS[key]
