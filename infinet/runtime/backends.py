"""Which executor runs a compiled kernel.  Every backend consumes the same plan.

The NumPy reference reads the plan itself; the generated-code backends (cpu, cuda)
receive the kernel program and the source the pipeline made (``k.kernel_program``,
``k.cpu_source``, ``k.cuda_source``), so what runs is exactly what ``infinet cuda``
prints.  The executor interface is in executor.py.
"""
from __future__ import annotations

import sys

from ..errors import UsageError
from ..dtypes import DTYPES
from .executor import check_dtype
from .reference import ReferenceExecutor

BACKENDS = ("auto", "numpy", "cpu", "cuda")

#: `auto` runs small jobs (fewer flops than this in the pair pass) with NumPy: compiling
#: generated code takes a second or two, more than such a job takes in NumPy.
AUTO_MIN_FLOPS = 2e8
_notified: set[str] = set()


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


def resolve_backend(name: str, plan=None, pairs: int | None = None) -> str:
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


def make_executor(kernel, backend: str, dtype, pairs: int | None = None, ntk: bool = True):
    """An executor for a :class:`~infinet.runtime.kernel.CompiledKernel` (a bare plan is
    wrapped in one, so its later pipeline stages are made once, there); ``pairs`` (how
    many will be evaluated) guides ``auto``."""
    if not hasattr(kernel, "kernel_program"):
        from .kernel import CompiledKernel
        kernel = CompiledKernel.from_plan(kernel)
    plan = kernel.plan
    backend = resolve_backend(backend, plan, pairs)
    dtype = check_dtype(dtype)
    if backend == "cpu":
        from .cpu import CpuExecutor
        return CpuExecutor(kernel.kernel_program, kernel.cpu_source, dtype, ntk)
    if backend == "cuda":
        from .cuda import CudaExecutor
        return CudaExecutor(kernel.kernel_program, kernel.cuda_source, dtype, ntk)
    return ReferenceExecutor(plan, dtype, ntk)


__all__ = ["AUTO_MIN_FLOPS", "BACKENDS", "DTYPES", "check_backend", "check_dtype",
           "cpu_usable", "cuda_usable", "make_executor", "resolve_backend"]
