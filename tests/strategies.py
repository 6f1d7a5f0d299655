"""Hypothesis strategies: random valid `.net` sources over the whole language.

Layers are drawn from the layer registry (infinet.layers), so a new layer kind is
property-tested the day it is added: every elementwise kind with its defaults (where it
builds without options; `elementwise` and `polynomial` need theirs) and each of its
``examples`` option settings, and every window kind
(conv, pooling) with its own padding choices.  `networks()` draws a small architecture
— flat, sequence, image or volume input; convs and pools of any size, padding and
stride; every activation; residual and sum blocks; dense layers, fixed flags, biases;
flatten or gap readouts — as `.net` text that always compiles.  Sizes stay small so
brute-force checks are fast.

Activations whose output variance grows faster than their input's (monomial, exp,
polynomials: ``EXPANDING``, measured from each layer's own formula at v = 30) are drawn at
most once per network, and after one only ``TAME`` activations (not expanding, and whose
kernel is not ill-conditioned at large variances: rbf, sin and gaussian lose ~κ·ε of
their accuracy at a variance where κ = |∂ln Σ'/∂ln Σ| is large): a chain of several
would overflow float32 or make float32 agree only to κ·ε, which is the kernel's
conditioning, not a defect of any target.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

import infinet
from infinet.errors import NetError
from infinet.layers import LAYERS, conv_geometry, elementwise_kinds
from infinet.layers.mathns import NumpyMath


def _built(text: str):
    """The layer a text builds, or None where it needs options (elementwise fn=...)."""
    try:
        plan = infinet.compile(f"input 3\ndense\n{text}\ndense\n").plan
    except NetError:
        return None
    return plan.nodes[2].layer


def _elementwise_texts() -> list[str]:
    out = []
    for cls in elementwise_kinds():
        for example in ("",) + tuple(cls.examples):
            text = f"{cls.keyword} {example}".strip()
            if example or _built(text) is not None:     # defaults, where they build alone
                out.append(text)
    return out


def _growth_and_condition(layer, v: float = 30.0) -> tuple[float, float]:
    """Σ'(v, v, v)/v and max |∂ln Σ'/∂ln Σ| (and of Σ̇) near the diagonal at variance v."""
    m = NumpyMath("float64")
    f = m.dt
    new = layer.entry(m, f(v), f(v), f(v))[0]
    growth = abs(float(new)) / v
    cond, K, h = 0.0, 0.9 * v, 1e-6
    outs = [layer.entry(m, f(K * (1 + s * h)), f(v), f(v)) for s in (-1, 0, 1)]
    for i in range(2):
        lo, mid, hi = (None if o[i] is None else float(np.asarray(o[i])) for o in outs)
        if mid is None or mid == 0:
            continue
        cond = max(cond, abs((hi - lo) / (2 * h * mid)))
    return growth, cond


ACTIVATIONS = _elementwise_texts()
_MEASURED = {text: _growth_and_condition(_built(text)) for text in ACTIVATIONS}
EXPANDING = [t for t in ACTIVATIONS if _MEASURED[t][0] > 2]
TAME = [t for t in ACTIVATIONS if _MEASURED[t][0] <= 2 and _MEASURED[t][1] <= 4]
WINDOW_KINDS = [cls for cls in LAYERS.values() if cls.family in ("conv", "pool")]


def _choices(cls, name: str) -> tuple[str, ...]:
    for opt in cls.options:
        if opt.name == name:
            return opt.choices
    return ()


@st.composite
def weights(draw):
    w = draw(st.sampled_from(["1", "sqrt(2)", "0.7", "1.3"]))
    b = draw(st.sampled_from(["0", "0.1", "0.5"]))
    fixed = draw(st.sampled_from(["", "", " fixed"]))
    return f"W={w} b={b}{fixed}"


@st.composite
def activation(draw, budget: list | None = None):
    """Any activation; with a ``budget`` (one per network), at most one EXPANDING one and
    only TAME ones after it."""
    if budget:
        return draw(st.sampled_from(TAME))
    text = draw(st.sampled_from(ACTIVATIONS))
    if budget is not None and text in EXPANDING:
        budget.append(text)
    return text


def _window(sizes) -> str:
    return "x".join(map(str, sizes))


@st.composite
def window_layer(draw, spatial: tuple[int, ...], budget: list | None = None):
    """A conv (with an activation after it) or a pooling layer: (lines, new spatial)."""
    cls = draw(st.sampled_from(WINDOW_KINDS))
    if cls.family == "conv":
        q = draw(st.integers(1, 3))
        pads = _choices(cls, "pad")
        pad = draw(st.sampled_from(pads))
        stride = draw(st.sampled_from([1, 1, 2]))
        if pad == "valid" and q > min(spatial):
            pad = "same"
        out = tuple(conv_geometry(n, q, stride, pad)[0] for n in spatial)
        if min(out) < 1:
            return [], spatial
        opt = f" stride={stride}" if stride != 1 else ""
        lines = [f"{cls.keyword} {_window([q] * len(spatial))} pad={pad}{opt} "
                 f"{draw(weights())}", draw(activation(budget))]
        return lines, out
    if min(spatial) < 2:
        return [], spatial
    win = draw(st.integers(2, min(3, min(spatial))))
    pad = draw(st.sampled_from(_choices(cls, "pad")))
    stride = draw(st.integers(1, win))
    out = tuple(conv_geometry(n, win, stride, pad)[0] for n in spatial)
    return [f"{cls.keyword} {_window([win] * len(spatial))} stride={stride} pad={pad}"], out


@st.composite
def block(draw, spatial: tuple[int, ...], budget: list | None = None):
    """A residual or sum block that keeps the spatial size (plane-local or pooled)."""
    win = _window([3] * len(spatial)) if spatial else ""
    one = _window([1] * len(spatial)) if spatial else ""
    layer = (lambda q: f"conv {q} pad=same {draw(weights())}") if spatial else \
        (lambda q: f"dense {draw(weights())}")
    body = [draw(activation(budget)), layer(win)]
    if draw(st.booleans()):
        body += [draw(activation(budget)), layer(win)]
    if draw(st.booleans()):
        return "residual { " + "; ".join(body) + " }"
    shortcut = draw(st.sampled_from(["", layer(one)]))
    return "sum {\n  branch { " + "; ".join(body) + " }\n  branch { " + shortcut + " }\n}"


@st.composite
def networks(draw, max_side: int = 5, blocks: bool = True):
    """(source, data_shape) of a random valid network."""
    budget: list = []
    rank = draw(st.sampled_from([0, 1, 2, 2, 3]))
    if rank:
        side = max_side if rank < 3 else 3
        spatial = tuple(draw(st.integers(1, side)) for _ in range(rank))
        if rank == 1:
            spatial = (draw(st.integers(2, 8)),)
        c = draw(st.integers(2, 3))   # one channel pooled to one position makes every
        lines = [f"input {_window(spatial + (c,))}"]   # correlation ±1
        data_shape = spatial + (c,)
        for _ in range(draw(st.integers(1, 3))):
            if blocks and draw(st.integers(0, 3)) == 0:
                lines.append(f"conv {_window([1] * len(spatial))} pad=same")
                lines.append(draw(block(spatial, budget)))
            else:
                more, spatial = draw(window_layer(spatial, budget))
                lines += more
        lines.append(draw(st.sampled_from(["flatten", "gap"])))
    else:
        d = draw(st.integers(2, 6))   # (as above: one feature gives correlations of ±1)
        lines = [f"input {d}"]
        data_shape = (d,)
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"dense {draw(weights())}")
        if blocks and draw(st.integers(0, 2)) == 0:
            lines.append(draw(block((), budget)))
        else:
            lines.append(draw(activation(budget)))
    lines.append(f"dense {draw(weights())}")
    assert math.prod(data_shape) > 0
    return "\n".join(lines) + "\n", data_shape
