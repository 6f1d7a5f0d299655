"""The layer registry: every layer kind, defined once (see base.py for what a kind holds).

``LAYERS`` maps a ``.net`` keyword to its class; ``BLOCKS`` maps a block keyword
(``residual``, ``sum``) to how it is lowered.  Adding a layer is adding its class to a
module here and to ``_KINDS`` — the parser, analyses, executors and code generator ask
the class, and the hypothesis strategies of the tests draw from this registry.
"""
from __future__ import annotations

from .activations import ABRelu, Erf, Identity, LeakyRelu, Relu
from .affine import Conv, Dense
from .base import (MAX_SPATIAL_AXES, Demand, Elementwise, Layer, LayerCost, Shape, StateInfo,
                   conv_geometry)
from .blocks import BLOCKS, Branch, Sum
from .expression import ElementwiseExpression
from .inputs import Input
from .normalization import LayerNorm
from .piecewise import Abs, Sign
from .polynomials import Monomial, Polynomial, RectifiedMonomial
from .pooling import AvgPool, Flatten, GlobalAvgPool, Readout, SumPool
from .smooth import Cos, Exp, Gaussian, Gelu, Rbf, SigmoidLike, Sin

#: the layer kinds a `.net` file can write, in the order the docs list them
_KINDS: tuple[type[Layer], ...] = (
    Dense, Conv, Relu, Erf, ABRelu, LeakyRelu, Identity,
    Gelu, Sin, Cos, Rbf, Exp, Gaussian, Sign, Abs, Monomial, RectifiedMonomial, Polynomial,
    SigmoidLike, ElementwiseExpression,
    LayerNorm, AvgPool, SumPool, GlobalAvgPool, Flatten,
)

LAYERS: dict[str, type[Layer]] = {cls.keyword: cls for cls in _KINDS}
assert len(LAYERS) == len(_KINDS), "two layer kinds share a keyword"


def elementwise_kinds() -> list[type[Elementwise]]:
    return [cls for cls in _KINDS if issubclass(cls, Elementwise)]


__all__ = ["ABRelu", "Abs", "AvgPool", "BLOCKS", "Branch", "Conv", "Cos", "Demand", "Dense",
           "Elementwise", "ElementwiseExpression", "Erf", "Exp", "Flatten", "Gaussian", "Gelu",
           "GlobalAvgPool", "Identity", "Input", "LAYERS", "Layer", "LayerCost", "LayerNorm",
           "LeakyRelu", "MAX_SPATIAL_AXES", "Monomial", "Polynomial", "Rbf", "Readout",
           "RectifiedMonomial", "Relu", "Shape", "SigmoidLike", "Sign", "Sin", "StateInfo",
           "Sum", "SumPool", "conv_geometry", "elementwise_kinds"]
