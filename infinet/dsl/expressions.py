"""Evaluation of constant expressions (numbers, params, + - * /, sqrt()).

Evaluated with an explicit stack, so an expression of any length or nesting (a sum of
ten thousand terms, a chain of a thousand minus signs) gives its value or a located
error, never a RecursionError.
"""
from __future__ import annotations

import math
from typing import Mapping

from ..errors import NetError
from . import ast

Value = int | float

FUNCTIONS = {"sqrt": math.sqrt}
#: integers stay exact through + - *; beyond this they are refused (no one means them)
MAX_INT = 10 ** 18


def evaluate(expr: ast.Expr, params: Mapping[str, Value]) -> Value:
    """Value of ``expr``; ints stay ints through + - * (so repeat counts stay exact)."""
    values: list[Value] = []
    # (node, children done?) - post-order without recursion
    stack: list[tuple[ast.Expr, bool]] = [(expr, False)]
    while stack:
        node, ready = stack.pop()
        if isinstance(node, ast.Number):
            values.append(node.value)
        elif isinstance(node, ast.Name):
            if node.name not in params:
                known = ", ".join(sorted(params)) or "none"
                raise NetError(f"undefined param '{node.name}' (params defined so far: "
                               f"{known})", node.pos)
            values.append(params[node.name])
        elif not ready:
            stack.append((node, True))
            if isinstance(node, ast.BinOp):
                stack.append((node.right, False))
                stack.append((node.left, False))
            elif isinstance(node, ast.Neg):
                stack.append((node.operand, False))
            elif isinstance(node, ast.Call):
                if node.func not in FUNCTIONS:
                    raise NetError(f"unknown function '{node.func}' (known: "
                                   f"{', '.join(FUNCTIONS)})", node.pos)
                stack.append((node.arg, False))
            else:  # pragma: no cover
                raise AssertionError(type(node))
        elif isinstance(node, ast.Neg):
            values.append(-values.pop())
        elif isinstance(node, ast.Call):
            arg = values.pop()
            if node.func == "sqrt" and arg < 0:
                raise NetError(f"sqrt of a negative number ({arg:g})", node.pos)
            values.append(_finite(FUNCTIONS[node.func](arg), node))
        else:
            right = values.pop()
            left = values.pop()
            values.append(_binop(node, left, right))
    (result,) = values
    return result


def _binop(node: ast.BinOp, left: Value, right: Value) -> Value:
    try:
        if node.op == "+":
            return _finite(left + right, node)
        if node.op == "-":
            return _finite(left - right, node)
        if node.op == "*":
            return _finite(left * right, node)
        if right == 0:
            raise NetError("division by zero", node.pos)
        return _finite(left / right, node)
    except OverflowError:
        raise NetError("the value of this expression is too large", node.pos) from None


def _finite(value: Value, expr: ast.Expr) -> Value:
    if isinstance(value, float) and not math.isfinite(value):
        raise NetError("the value of this expression is not finite", expr.pos)
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise NetError("the value of this expression is too large", expr.pos)
    return value


def as_whole(value: Value) -> int | None:
    """``value`` as an int if it is a whole number, else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None
