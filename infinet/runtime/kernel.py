"""The compiled kernel object that ``infinet.compile`` returns."""
from __future__ import annotations

import numpy as np

from ..dsl import ast
from ..ir.plan import Plan
from .backends import make_executor, resolve_backend
from .data import check_inputs
from .evaluate import KernelResult, evaluate


class CompiledKernel:
    """A network compiled to its NNGP/NTK kernel function.

    ``k(x1, x2=None)`` → :class:`KernelResult` with ``.nngp`` and ``.ntk`` of shape
    [N1, N2] (float64 arrays, CuPy arrays when x1 is one; computed in ``dtype``).  ``x2=None`` means x2 = x1, and
    then the result is exactly symmetric.  Every stage of the compilation is kept:
    ``k.program`` (the AST) and ``k.plan`` (the analysed IR).
    """

    def __init__(self, program: ast.Program, plan: Plan):
        self.program = program
        self.plan = plan
        self._executors: dict = {}

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def cuda_source(self) -> str:
        """The generated CUDA source (self-contained; compiles with plain NVRTC or nvcc)."""
        return self._source("cuda")

    @property
    def cpu_source(self) -> str:
        """The same kernels as C++ for the CPU target."""
        return self._source("cpu")

    def _source(self, target: str) -> str:
        sources = self.__dict__.setdefault("_sources", {})
        if target not in sources:
            from ..codegen import generate
            sources[target] = generate(self.plan, target)
        return sources[target]

    def executor(self, backend: str = "auto", dtype="float64", pairs: int | None = None):
        """The executor for a backend and dtype (``auto`` resolved with ``pairs``)."""
        backend = resolve_backend(backend, self.plan, pairs)
        key = (backend, np.dtype(dtype).name if not isinstance(dtype, str) else dtype)
        if key not in self._executors:
            self._executors[key] = make_executor(self.plan, backend, dtype)
        return self._executors[key]

    def __call__(self, x1, x2=None, *, dtype="float64", backend: str = "auto",
                 max_memory: int | None = None, progress=None) -> KernelResult:
        a = check_inputs(self.plan, _host(x1), "x1")
        b = None if x2 is None else check_inputs(self.plan, _host(x2), "x2")
        pairs = len(a) * (len(a) + 1) // 2 if b is None else len(a) * len(b)
        executor = self.executor(backend, dtype, pairs)
        result = evaluate(executor, a, b, max_memory=max_memory, progress=progress)
        if _is_cupy(x1):          # CuPy in, CuPy out
            import cupy
            result = KernelResult(cupy.asarray(result.nngp), cupy.asarray(result.ntk))
        return result

    def __repr__(self) -> str:
        return f"<infinet kernel {self.plan.name}: {len(self.plan.layers) - 1} layers>"


def _is_cupy(x) -> bool:
    return type(x).__module__.startswith("cupy")


def _host(x):
    """NumPy view of an input: CuPy arrays are copied to the host (``.get()``)."""
    return x.get() if _is_cupy(x) else x
