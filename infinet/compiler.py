"""The pipeline, read top to bottom::

    source ─parse─▶ AST ─lower─▶ graph ─analyse─▶ plan ─lower_program─▶ kernel program
           ─render─▶ C++ / CUDA source ─(JIT, on first use)─▶ binary

``compile()`` returns a :class:`~infinet.runtime.kernel.CompiledKernel` that keeps every
stage: ``k.program`` (the AST), ``k.plan`` (the analysed graph), ``k.kernel_program``
(the code generator's stages), ``k.cpu_source`` and ``k.cuda_source``; the executors
of every backend receive these rather than lowering and rendering on their own.
"""
from __future__ import annotations

from typing import Mapping

from .dsl import ast
from .dsl.lower import lower
from .dsl.parser import parse
from .dsl.source import read_source
from .ir.plan import Plan, analyse


def parse_net(path_or_source) -> ast.NetFile:
    """Stage 1, parse: source text → AST."""
    filename, text = read_source(path_or_source)
    return parse(text, filename)


def build_plan(program: ast.NetFile, params: Mapping[str, object] | None = None,
               from_cli: bool = False) -> Plan:
    """Stages 2-3, lower and analyse: AST (with param overrides) → graph → plan."""
    lowered = lower(program, params, from_cli)
    return analyse(lowered.name, program.filename, program.source, lowered.params,
                   lowered.nodes)


def compile(path_or_source, **params):  # noqa: A001 - the public name of the API
    """Compile a ``.net`` file (path) or source text into a kernel function.

    ``params`` override the file's ``param`` values.  The result ``k`` is called as
    ``k(x1, x2=None, dtype="float64", backend="auto")`` and returns an object with
    ``.nngp`` and ``.ntk`` arrays of shape [N1, N2].  The code generator's stages
    (``k.kernel_program``, ``k.cpu_source``, ``k.cuda_source``) are made on first use.
    """
    from .runtime.kernel import CompiledKernel

    program = parse_net(path_or_source)
    plan = build_plan(program, params)
    return CompiledKernel(program, plan)
