"""Code generation: the analysed plan → a kernel program → CUDA / C++ source text.

    plan ──lower_program──▶ KernelProgram ──render──▶ source text ──(JIT)──▶ binary

``generate(plan, "cuda")`` and ``generate(plan, "cpu")`` return the source; the
runtime (infinet/runtime/cpu.py, cuda.py) compiles and runs it.
"""
from __future__ import annotations

from ..ir.plan import Plan
from .program import KernelProgram, lower_program
from .render import render


def generate(plan: Plan, target: str) -> str:
    """Generated source text for ``target`` ('cuda' or 'cpu')."""
    return render(lower_program(plan), target)


__all__ = ["KernelProgram", "generate", "lower_program", "render"]
