"""Which executor runs a plan.  Every backend consumes the same :class:`Plan`.

A backend executor provides ``self_variances(x)`` and ``pairs(x1, x2, rows1, rows2, v1,
v2)`` with the semantics of :class:`~infinet.runtime.reference.ReferenceExecutor`; the
batching, symmetry and memory bound live in evaluate.py, once for all backends.
"""
from __future__ import annotations

import sys

import numpy as np

from ..errors import UsageError
from ..ir.plan import Plan
from .reference import ReferenceExecutor

BACKENDS = ("auto", "numpy", "cpu", "cuda")

#: `auto` runs small jobs (fewer flops than this in the pair pass) with NumPy: compiling
#: generated code takes a second or two, more than such a job takes in NumPy.
AUTO_MIN_FLOPS = 2e8
_notified: set[str] = set()
DTYPES = ("float64", "float32")


def check_dtype(dtype) -> np.dtype:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise UsageError(f"unknown dtype '{dtype}' (choose float64 or float32)")
    return np.dtype(name)


def cuda_usable() -> bool:
    """CuPy imports and sees a CUDA device."""
    from .cuda import cuda_usable as usable
    return usable()


def cpu_usable() -> bool:
    """A C++ compiler is found and builds an OpenMP shared library."""
    from ..codegen.cpujit import compiler_works
    return compiler_works()


def _notice(text: str) -> None:
    if text not in _notified:
        _notified.add(text)
        print(f"infinet: {text}", file=sys.stderr)


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}' (choose {', '.join(BACKENDS)})")
    return name


def resolve_backend(name: str, plan: Plan | None = None, pairs: int | None = None) -> str:
    """The backend that runs: ``auto`` → cuda where a GPU is usable, else cpu where a
    compiler works, else numpy (with a one-line notice).  Given the plan and the number
    of pairs, ``auto`` keeps jobs too small to repay compiling on numpy."""
    if check_backend(name) != "auto":
        return name
    if plan is not None and pairs is not None and \
            plan.pair_total.flops * pairs < AUTO_MIN_FLOPS:
        return "numpy"
    if cuda_usable():
        return "cuda"
    if cpu_usable():
        return "cpu"
    from ..codegen.cpujit import unusable_reason
    _notice(f"no CUDA GPU and {unusable_reason()}: using the NumPy executor (slow)")
    return "numpy"


def make_executor(plan: Plan, backend: str, dtype, pairs: int | None = None):
    """An executor for ``plan``; ``pairs`` (how many will be evaluated) guides ``auto``."""
    backend = resolve_backend(backend, plan, pairs)
    dtype = check_dtype(dtype)
    if backend == "cpu":
        from .cpu import CpuExecutor
        return CpuExecutor(plan, dtype)
    if backend == "cuda":
        from .cuda import CudaExecutor
        return CudaExecutor(plan, dtype)
    return ReferenceExecutor(plan, dtype)
