"""The pipeline, read top to bottom::

    source ─parse─▶ AST ─lower─▶ graph ─analyse─▶ plan ─lower_program─▶ kernel program
           ─render─▶ C++ / CUDA source ─(JIT, on first use)─▶ binary

``compile()`` returns a :class:`~infinet.runtime.kernel.CompiledKernel` that keeps every
stage: ``k.program`` (the AST), ``k.plan`` (the analysed graph), ``k.kernel_program``
(the code generator's stages), ``k.cpu_source`` and ``k.cuda_source``; the executors
of every backend receive these rather than lowering and rendering on their own.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .dsl import ast
from .dsl.lower import lower
from .dsl.parser import parse
from .errors import UsageError
from .ir.plan import Plan, analyse


def read_source(path_or_source: str | os.PathLike) -> tuple[str, str]:
    """(filename, text) of a ``.net`` file path or of literal ``.net`` source text."""
    if isinstance(path_or_source, os.PathLike):
        path = Path(path_or_source)
    elif isinstance(path_or_source, str):
        text = path_or_source
        looks_like_path = "\n" not in text and (text.endswith(".net") or os.path.exists(text))
        if not looks_like_path:
            return "<string>", text
        path = Path(text)
    else:
        raise UsageError(f"expected a .net path or source text, got {type(path_or_source).__name__}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a .net file") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return str(path), data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (not UTF-8)") from None


def parse_program(path_or_source) -> ast.Program:
    """Stage 1, parse: source text → AST."""
    filename, text = read_source(path_or_source)
    return parse(text, filename)


def build_plan(program: ast.Program, params: Mapping[str, object] | None = None) -> Plan:
    """Stages 2-3, lower and analyse: AST (with param overrides) → graph → plan."""
    lowered = lower(program, params)
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

    program = parse_program(path_or_source)
    plan = build_plan(program, params)
    return CompiledKernel(program, plan)
