"""The compiled kernel object that ``infinet.compile`` returns."""
from __future__ import annotations

import numpy as np

from ..dsl import ast
from ..ir.plan import Plan
from .backends import make_executor
from .data import check_inputs
from .evaluate import KernelResult, evaluate


class CompiledKernel:
    """A network compiled to its NNGP/NTK kernel function.

    ``k(x1, x2=None)`` → :class:`KernelResult` with ``.nngp`` and ``.ntk`` of shape
    [N1, N2] (float64 arrays; computed in ``dtype``).  ``x2=None`` means x2 = x1, and
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

    def executor(self, backend: str = "auto", dtype="float64"):
        key = (backend, np.dtype(dtype).name if not isinstance(dtype, str) else dtype)
        if key not in self._executors:
            self._executors[key] = make_executor(self.plan, backend, dtype)
        return self._executors[key]

    def __call__(self, x1, x2=None, *, dtype="float64", backend: str = "auto",
                 max_memory: int | None = None, progress=None) -> KernelResult:
        executor = self.executor(backend, dtype)
        a = check_inputs(self.plan, x1, "x1")
        b = None if x2 is None else check_inputs(self.plan, x2, "x2")
        return evaluate(executor, a, b, max_memory=max_memory, progress=progress)

    def __repr__(self) -> str:
        return f"<infinet kernel {self.plan.name}: {len(self.plan.layers) - 1} layers>"
