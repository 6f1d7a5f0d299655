"""The pipeline, read top to bottom: source → AST → IR → shapes → demand → plan.

``compile()`` returns a :class:`~infinet.runtime.kernel.CompiledKernel` that keeps
every stage (``k.program``, ``k.plan``) and evaluates kernels with a chosen backend.
"""
from __future__ import annotations

from typing import Mapping

from .dsl import ast
from .dsl.lower import lower
from .dsl.parser import parse
from .dsl.source import read_source
from .ir.plan import Plan, analyse


def parse_program(path_or_source) -> ast.Program:
    filename, text = read_source(path_or_source)
    return parse(text, filename)


def build_plan(program: ast.Program, params: Mapping[str, object] | None = None) -> Plan:
    """Lower a parsed program with param overrides and analyse it."""
    lowered = lower(program, params)
    return analyse(lowered.name, program.filename, program.source, lowered.params,
                   lowered.layers)


def compile(path_or_source, **params):  # noqa: A001 - the public name from SPEC §4
    """Compile a ``.net`` file (path) or source text into a kernel function.

    ``params`` override the file's ``param`` values.  The result ``k`` is called as
    ``k(x1, x2=None, dtype="float64", backend="auto")`` and returns an object with
    ``.nngp`` and ``.ntk`` arrays of shape [N1, N2].
    """
    from .runtime.kernel import CompiledKernel

    program = parse_program(path_or_source)
    plan = build_plan(program, params)
    return CompiledKernel(program, plan)
