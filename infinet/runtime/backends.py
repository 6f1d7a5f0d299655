"""Which executor runs a plan.  Every backend consumes the same :class:`Plan`.

A backend executor provides ``self_variances(x)`` and ``pairs(x1, x2, rows1, rows2, v1,
v2)`` with the semantics of :class:`~infinet.runtime.reference.ReferenceExecutor`; the
batching, symmetry and memory bound live in evaluate.py, once for all backends.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..ir.plan import Plan
from .reference import ReferenceExecutor

BACKENDS = ("auto", "numpy")
DTYPES = ("float64", "float32")


def check_dtype(dtype) -> np.dtype:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise UsageError(f"unknown dtype '{dtype}' (choose float64 or float32)")
    return np.dtype(name)


def resolve_backend(name: str) -> str:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}' (choose {', '.join(BACKENDS)})")
    if name == "auto":
        return "numpy"
    return name


def make_executor(plan: Plan, backend: str, dtype) -> ReferenceExecutor:
    backend = resolve_backend(backend)
    return ReferenceExecutor(plan, check_dtype(dtype))
