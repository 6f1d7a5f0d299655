"""Layers with weights: ``dense`` and ``conv`` (σw = W, σb = b; ``fixed``: not trained).

dense:      Σ' = W²·Σ + b²,        Θ' = W²·Θ + Σ'   (Θ' = W²·Θ when fixed)
conv q:     Σ' = W²·A(Σ) + b²,     Θ' = W²·A(Θ) + Σ'

A is the conv's averaging operator: A(S)[p, p'] = (1/|q|) Σ_a S[p + a, p' + a] over the
filter taps a — both positions move by the same tap (the weights are shared), so a conv
maps each offset plane d = p' - p onto itself (times its stride).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import NetError, SourcePos
from .base import (WINDOW, Choice, Demand, Layer, LayerCost, Shape, Std, Whole, _fmt,
                   conv_geometry, describe_spatial, entries)


def check_spatial(layer: Layer, shape: Shape, what: str) -> None:
    if shape.is_flat:
        raise NetError(f"{what} needs a spatial input (sequence, image or volume), but its "
                       f"input is a flat vector", layer.pos)


def check_window_rank(layer: Layer, size: tuple[int, ...], shape: Shape, what: str) -> None:
    if len(size) != shape.rank:
        want = "x".join(["K"] * shape.rank)
        raise NetError(f"{what} window {'x'.join(map(str, size))} has {len(size)} "
                       f"{'axis' if len(size) == 1 else 'axes'}, but its input is "
                       f"{describe_spatial(shape)}: write a {shape.rank}-d window like "
                       f"`{layer.keyword} {want.replace('K', '3')}`",
                       layer.size_pos or layer.pos)


def window_out(layer: Layer, n: int, q: int, stride: int, pad: str, what: str) -> int:
    if pad == "valid" and q > n:
        raise NetError(f"the {q}-wide {what} is larger than its {n}-wide input (pad=valid)",
                       layer.pos)
    return conv_geometry(n, q, stride, pad)[0]


def affine_k(w2, b2, k):
    """Σ' = W²·Σ + b², the one rule of dense and conv (the NumPy reference applies it to
    arrays; codegen/snippets.py prints it through :func:`adds_bias`).  The bias term is
    added only where b ≠ 0: adding +0.0 changes nothing but −0.0 into +0.0, and every
    backend skips it the same way, so they stay bit-identical."""
    return w2 * k + b2 if adds_bias(b2) else w2 * k


def adds_bias(b2) -> bool:
    """Whether Σ' = W²·Σ + b² has a bias term to add (b ≠ 0)."""
    return b2 != 0


@dataclass(frozen=True)
class Dense(Layer):
    W: float = 1.0
    b: float = 0.0
    fixed: bool = False

    keyword = "dense"
    options = (Std("W", 1.0, "weight standard deviation"), Std("b", 0.0, "bias standard deviation"))
    flags = ("fixed",)
    summary = "fully connected layer (flat states)"
    family = "affine"
    locality = "flat"
    has_weights = True

    def output_shape(self, inputs):
        shape = inputs[0]
        if not shape.is_flat:
            raise NetError(f"dense needs a flat input, but its input is "
                           f"{describe_spatial(shape)}; add `flatten` or `gap` before it",
                           self.pos)
        return Shape(())

    def cost(self, inputs, out, demand_in, demand_out, with_ntk):
        n = entries(out, demand_out)
        kernels = 2 if with_ntk else 1
        return LayerCost(n, 2 * kernels * n, 0, n * 8 * kernels)


@dataclass(frozen=True)
class Conv(Layer):
    size: tuple[int, ...] = ()
    W: float = 1.0
    b: float = 0.0
    pad: str = "same"
    stride: int = 1
    fixed: bool = False
    size_pos: SourcePos | None = field(default=None, compare=False)

    keyword = "conv"
    window = WINDOW
    options = (Std("W", 1.0, "weight standard deviation"),
               Std("b", 0.0, "bias standard deviation"),
               Choice("pad", "same", "padding", choices=("same", "valid", "circular")),
               Whole("stride", 1, "stride (every axis)", minimum=1))
    flags = ("fixed",)
    summary = "convolution (shared weights over positions)"
    family = "conv"
    has_weights = True

    @property
    def locality(self) -> str:
        # wrapping couples offset d with d ± n: a circular conv mixes planes
        return "mixing" if self.pad == "circular" else "plane"

    def describe(self) -> str:
        text = f"conv {'x'.join(map(str, self.size))} pad={self.pad}"
        if self.stride != 1:
            text += f" stride={self.stride}"
        return text + f" W={_fmt(self.W)} b={_fmt(self.b)}" + (" fixed" if self.fixed else "")

    def output_shape(self, inputs):
        shape = inputs[0]
        check_spatial(self, shape, "conv")
        check_window_rank(self, self.size, shape, "conv")
        return Shape(tuple(window_out(self, n, q, self.stride, self.pad, "filter")
                           for n, q in zip(shape.spatial, self.size)))

    def geometry(self, shape: Shape):
        """Per axis: (n_in, q, stride, low padding)."""
        return tuple((n, q, self.stride, conv_geometry(n, q, self.stride, self.pad)[1])
                     for n, q in zip(shape.spatial, self.size))

    def plane_stride(self, rank):
        return (self.stride,) * rank

    def demand(self, needed: Demand, inputs, out):
        if needed is None:
            return [None]
        return [tuple(_conv_axis(n, self.stride, self.pad, offsets)
                      for n, offsets in zip(inputs[0].spatial, needed))]

    def cost(self, inputs, out, demand_in, demand_out, with_ntk):
        n = entries(out, demand_out)
        kernels = 2 if with_ntk else 1
        taps = math.prod(self.size)
        return LayerCost(n, kernels * 2 * taps * n + 2 * kernels * n, 0, n * 8 * kernels)


def _conv_axis(n: int, stride: int, pad: str, offsets) -> tuple[int, ...]:
    out: set[int] = set()
    for d in offsets:
        fine = stride * d
        if pad == "circular":
            r = fine % n       # wrapped pairs differ by r or r - n
            out.update(x for x in (r, r - n) if abs(x) < n)
        elif abs(fine) < n:
            out.add(fine)
    return tuple(sorted(out))
