"""Evaluation of constant expressions (numbers, params, + - * /, sqrt())."""
from __future__ import annotations

import math
from typing import Mapping

from ..errors import NetError
from . import ast

Value = int | float

FUNCTIONS = {"sqrt": math.sqrt}


def evaluate(expr: ast.Expr, params: Mapping[str, Value]) -> Value:
    """Value of ``expr``; ints stay ints through + - * (so repeat counts stay exact)."""
    if isinstance(expr, ast.Number):
        return expr.value
    if isinstance(expr, ast.Name):
        if expr.name not in params:
            known = ", ".join(sorted(params)) or "none"
            raise NetError(f"undefined param '{expr.name}' (params defined so far: {known})",
                           expr.pos)
        return params[expr.name]
    if isinstance(expr, ast.Neg):
        return -evaluate(expr.operand, params)
    if isinstance(expr, ast.Call):
        if expr.func not in FUNCTIONS:
            raise NetError(f"unknown function '{expr.func}' (known: {', '.join(FUNCTIONS)})",
                           expr.pos)
        arg = evaluate(expr.arg, params)
        if expr.func == "sqrt" and arg < 0:
            raise NetError(f"sqrt of a negative number ({arg:g})", expr.pos)
        return _finite(FUNCTIONS[expr.func](arg), expr)
    if isinstance(expr, ast.BinOp):
        left = evaluate(expr.left, params)
        right = evaluate(expr.right, params)
        if expr.op == "+":
            return _finite(left + right, expr)
        if expr.op == "-":
            return _finite(left - right, expr)
        if expr.op == "*":
            return _finite(left * right, expr)
        if right == 0:
            raise NetError("division by zero", expr.pos)
        result = left / right
        return _finite(result, expr)
    raise AssertionError(type(expr))  # pragma: no cover


def _finite(value: Value, expr: ast.Expr) -> Value:
    if isinstance(value, float) and not math.isfinite(value):
        raise NetError("the value of this expression is not finite", expr.pos)
    if isinstance(value, int) and abs(value) > 10 ** 18:
        raise NetError("the value of this expression is too large", expr.pos)
    return value


def as_whole(value: Value) -> int | None:
    """``value`` as an int if it is a whole number, else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None
