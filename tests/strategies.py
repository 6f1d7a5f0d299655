"""Hypothesis strategies: random valid `.net` sources over the whole language.

Layers are drawn from the layer registry (infinet.layers), so a new layer kind is
property-tested the day it is added: every elementwise kind with its defaults and each
of its ``examples`` option settings, and every window kind
(conv, pooling) with its own padding choices.  `networks()` draws a small architecture
— flat, sequence, image or volume input; convs and pools of any size, padding and
stride; every activation; residual and sum blocks; dense layers, fixed flags, biases;
flatten or gap readouts — as `.net` text that always compiles.  Sizes stay small so
brute-force checks are fast.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

from infinet.layers import LAYERS, conv_geometry, elementwise_kinds


def _elementwise_texts() -> list[str]:
    out = []
    for cls in elementwise_kinds():
        for example in ("",) + tuple(cls.examples):
            out.append(f"{cls.keyword} {example}".strip())
    return out


ACTIVATIONS = _elementwise_texts()
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
def activation(draw):
    return draw(st.sampled_from(ACTIVATIONS))


def _window(sizes) -> str:
    return "x".join(map(str, sizes))


@st.composite
def window_layer(draw, spatial: tuple[int, ...]):
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
                 f"{draw(weights())}", draw(activation())]
        return lines, out
    if min(spatial) < 2:
        return [], spatial
    win = draw(st.integers(2, min(3, min(spatial))))
    pad = draw(st.sampled_from(_choices(cls, "pad")))
    stride = draw(st.integers(1, win))
    out = tuple(conv_geometry(n, win, stride, pad)[0] for n in spatial)
    return [f"{cls.keyword} {_window([win] * len(spatial))} stride={stride} pad={pad}"], out


@st.composite
def block(draw, spatial: tuple[int, ...]):
    """A residual or sum block that keeps the spatial size (plane-local or pooled)."""
    win = _window([3] * len(spatial)) if spatial else ""
    one = _window([1] * len(spatial)) if spatial else ""
    layer = (lambda q: f"conv {q} pad=same {draw(weights())}") if spatial else \
        (lambda q: f"dense {draw(weights())}")
    body = [draw(activation()), layer(win)]
    if draw(st.booleans()):
        body += [draw(activation()), layer(win)]
    if draw(st.booleans()):
        return "residual { " + "; ".join(body) + " }"
    shortcut = draw(st.sampled_from(["", layer(one)]))
    return "sum {\n  branch { " + "; ".join(body) + " }\n  branch { " + shortcut + " }\n}"


@st.composite
def networks(draw, max_side: int = 5, blocks: bool = True):
    """(source, data_shape) of a random valid network."""
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
                lines.append(draw(block(spatial)))
            else:
                more, spatial = draw(window_layer(spatial))
                lines += more
        lines.append(draw(st.sampled_from(["flatten", "gap"])))
    else:
        d = draw(st.integers(2, 6))   # (as above: one feature gives correlations of ±1)
        lines = [f"input {d}"]
        data_shape = (d,)
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"dense {draw(weights())}")
        if blocks and draw(st.integers(0, 2)) == 0:
            lines.append(draw(block(())))
        else:
            lines.append(draw(activation()))
    lines.append(f"dense {draw(weights())}")
    assert math.prod(data_shape) > 0
    return "\n".join(lines) + "\n", data_shape
