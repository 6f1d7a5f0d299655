"""Piecewise activations: abs (the relu family's a = −1, b = 1) and sign.

abs (NT Abs = ABRelu(−1, 1), stax/elementwise.py l.507-518): the ABRelu formula of
    activations.py with a = −1, b = 1.
sign (NT Sign, l.521-548): with s = √(v v' − Σ²), θ = atan2(s, Σ),
    Σ' = 1 − 2θ/π = (2/π)·arcsin(Σ/√(v v')),   Σ' = 0 where s = Σ = 0 (v = 0: sign(0) = 0),
    Σ̇ = 0: sign is flat wherever it has a derivative, so Θ' = 0 (NT's value).
    On the self pass θ = 0 exactly, so v' = 1 (0 where v = 0), NT's diagonal map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .activations import ABRelu, ArcCosineKernel
from .base import Elementwise


@dataclass(frozen=True)
class Abs(ABRelu):
    a: float = -1.0
    b: float = 1.0

    keyword = "abs"
    options = ()
    summary = "|x|"
    examples = ()

    def describe(self) -> str:
        return "abs"


@dataclass(frozen=True)
class Sign(ArcCosineKernel, Elementwise):
    keyword = "sign"
    summary = "sign(x): −1, 0 or 1 (its NTK factor is 0)"
    flops_per_entry = 10
    transcendentals_per_entry = 2

    def entry(self, m, K, v1, v2, f1=None, f2=None):
        _, s, theta = self.sine_and_angle(m, K, v1, v2, f1, f2)
        zero = m.const(0)
        new = m.where(s + m.abs(K) == zero, zero, m.const(1) - m.const(2 / math.pi) * theta)
        return new, zero


__all__ = ["Abs", "Sign"]
