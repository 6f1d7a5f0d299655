"""The analysed intermediate representation: typed layers, shapes, demand and cost."""
from .layers import (Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Input, Layer,
                     Shape)
from .plan import LayerPlan, Plan

__all__ = ["Activation", "AvgPool", "Conv", "Dense", "Flatten", "GlobalAvgPool", "Input",
           "Layer", "LayerPlan", "Plan", "Shape"]
