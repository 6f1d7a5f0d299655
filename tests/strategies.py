"""Hypothesis strategies: random valid `.net` sources over the whole language.

`networks()` draws a small architecture (image or vector input; convs of any size,
padding and stride; avgpools; every activation; dense layers, fixed flags, biases;
flatten or gap readouts) as `.net` text that always compiles.  Sizes stay small so
brute-force checks are fast.
"""
from __future__ import annotations

from hypothesis import strategies as st

from infinet.ir.layers import conv_geometry

ACTIVATIONS = ["relu", "erf", "identity", "abrelu a=-0.3 b=1.2", "leaky_relu alpha=0.1"]


@st.composite
def weights(draw, prefix="W"):
    w = draw(st.sampled_from(["1", "sqrt(2)", "0.7", "1.3"]))
    b = draw(st.sampled_from(["0", "0.1", "0.5"]))
    fixed = draw(st.sampled_from(["", "", " fixed"]))
    return f"W={w} b={b}{fixed}"


@st.composite
def activation(draw):
    return draw(st.sampled_from(ACTIVATIONS))


@st.composite
def image_stack(draw, h: int, w: int, max_layers: int = 4):
    """Conv / activation / avgpool layers on an h x w image; returns (lines, h, w)."""
    lines = []
    for _ in range(draw(st.integers(1, max_layers))):
        kind = draw(st.sampled_from(["conv", "conv", "pool"]))
        if kind == "conv":
            q = draw(st.integers(1, 4))
            pad = draw(st.sampled_from(["same", "valid", "circular"]))
            stride = draw(st.sampled_from([1, 1, 2]))
            if pad == "valid" and q > min(h, w):
                pad = "same"
            nh, _ = conv_geometry(h, q, stride, pad)
            nw, _ = conv_geometry(w, q, stride, pad)
            if min(nh, nw) < 1:
                continue
            opt = f" stride={stride}" if stride != 1 else ""
            lines.append(f"conv {q}x{q} pad={pad}{opt} {draw(weights())}")
            lines.append(draw(activation()))
            h, w = nh, nw
        elif min(h, w) >= 2:
            win = draw(st.integers(2, min(3, h, w)))
            pad = draw(st.sampled_from(["valid", "same"]))
            stride = draw(st.integers(1, win))
            nh, _ = conv_geometry(h, win, stride, pad)
            nw, _ = conv_geometry(w, win, stride, pad)
            lines.append(f"avgpool {win}x{win} stride={stride} pad={pad}")
            h, w = nh, nw
    return lines, h, w


@st.composite
def networks(draw, max_side: int = 6):
    """(source, data_shape) of a random valid network."""
    if draw(st.booleans()):
        h = draw(st.integers(1, max_side))
        w = draw(st.integers(1, max_side))
        c = draw(st.integers(2, 3))   # one channel pooled to 1x1 makes every correlation ±1
        lines = [f"input {h}x{w}x{c}"]
        body, h, w = draw(image_stack(h, w))
        lines += body
        lines.append(draw(st.sampled_from(["flatten", "gap"])))
        data_shape = tuple(int(n) for n in lines[0].split()[1].split("x"))
    else:
        d = draw(st.integers(2, 6))   # (as above: one feature gives correlations of ±1)
        lines = [f"input {d}"]
        data_shape = (d,)
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"dense {draw(weights())}")
        lines.append(draw(activation()))
    lines.append(f"dense {draw(weights())}")
    return "\n".join(lines) + "\n", data_shape
