"""The analysed intermediate representation: the network graph with shapes, demand and cost.

The layer kinds themselves live in :mod:`infinet.layers` (one class per kind).
"""
from .plan import NodePlan, Plan, analyse

__all__ = ["NodePlan", "Plan", "analyse"]
