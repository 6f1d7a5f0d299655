"""AST → typed IR layers: params resolved, repeats unrolled, every option checked.

Errors point at the token responsible (the layer name, the option, the operator of a
division by zero).  Repeat counts are multiplied out *before* unrolling, so a network
of a billion layers is refused at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import NetError, SourcePos, UsageError
from ..ir.layers import (Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Input,
                         Layer, Shape)
from ..ir.plan import MAX_LAYERS
from . import ast
from .expressions import Value, as_whole, evaluate

PADDINGS = {"conv": ("same", "valid", "circular"), "avgpool": ("valid", "same")}

#: layer name → (takes a KxK size, allowed options, allowed flags)
LAYERS: dict[str, tuple[bool, tuple[str, ...], tuple[str, ...]]] = {
    "dense": (False, ("W", "b"), ("fixed",)),
    "conv": (True, ("W", "b", "pad", "stride"), ("fixed",)),
    "relu": (False, (), ()),
    "erf": (False, (), ()),
    "abrelu": (False, ("a", "b"), ()),
    "leaky_relu": (False, ("alpha",), ()),
    "identity": (False, (), ()),
    "avgpool": (True, ("stride", "pad"), ()),
    "gap": (False, (), ()),
    "flatten": (False, (), ()),
}


@dataclass(frozen=True)
class Lowered:
    name: str
    params: dict[str, Value]
    layers: list[Layer]


def lower(program: ast.Program, overrides: Mapping[str, Value | str] | None = None) -> Lowered:
    """Resolve params (with ``overrides``), unroll repeats and build IR layers."""
    overrides = dict(overrides or {})
    declared = _declared_params(program.statements)
    unknown = [k for k in overrides if k not in declared]
    if unknown:
        names = ", ".join(sorted(declared)) or "none"
        raise UsageError(f"-D {unknown[0]}: {program.filename} has no param '{unknown[0]}' "
                         f"(its params: {names})")
    lowering = _Lowering(program, overrides)
    lowering.block(program.statements, top=True)
    if lowering.input is None:
        lines = program.source.splitlines() or [""]
        raise NetError("no `input` line: the network must say what its input is, e.g. "
                       "`input 32x32x3` or `input 784`",
                       SourcePos(program.filename, max(len(lines), 1), 1, lines[-1]))
    return Lowered(lowering.name or _stem(program.filename), lowering.params,
                   [lowering.input] + lowering.layers)


def _stem(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.endswith(".net") else base


def _declared_params(statements) -> dict[str, ast.ParamDecl]:
    found: dict[str, ast.ParamDecl] = {}
    for st in statements:
        if isinstance(st, ast.ParamDecl):
            found.setdefault(st.name, st)
        elif isinstance(st, ast.Repeat):
            for k, v in _declared_params(st.body).items():
                found.setdefault(k, v)
    return found


class _Lowering:
    def __init__(self, program: ast.Program, overrides: dict):
        self.program = program
        self.overrides = overrides
        self.params: dict[str, Value] = {}
        self.name: str | None = None
        self.input: Input | None = None
        self.layers: list[Layer] = []

    # statements ------------------------------------------------------------------
    def block(self, statements, top: bool = False) -> None:
        for st in statements:
            if isinstance(st, ast.NetDecl):
                if not top:
                    raise NetError("`net` names the whole file; it cannot be inside a repeat",
                                   st.pos)
                if self.name is not None:
                    raise NetError("the net is already named", st.pos)
                self.name = st.name
            elif isinstance(st, ast.ParamDecl):
                self.param(st, top)
            elif isinstance(st, (ast.InputImage, ast.InputVector)):
                self.input_line(st, top)
            elif isinstance(st, ast.Repeat):
                self.repeat(st)
            elif isinstance(st, ast.LayerStmt):
                self.layers.append(self.layer(st))
            else:  # pragma: no cover
                raise AssertionError(type(st))

    def param(self, st: ast.ParamDecl, top: bool) -> None:
        if not top:
            raise NetError("params must be declared at the top level, not inside a repeat",
                           st.pos)
        if st.name in self.params:
            raise NetError(f"param '{st.name}' is already defined", st.pos)
        if st.name in self.overrides:
            value = self.overrides[st.name]
            if isinstance(value, str):
                from .parser import parse_expression
                try:
                    value = evaluate(parse_expression(value), self.params)
                except NetError as err:
                    raise UsageError(f"-D {st.name}={self.overrides[st.name]}: "
                                     f"{err.message}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"param {st.name}: value must be a number, got {value!r}")
            self.params[st.name] = value
        else:
            self.params[st.name] = evaluate(st.value, self.params)

    def input_line(self, st, top: bool) -> None:
        if not top:
            raise NetError("`input` cannot be inside a repeat", st.pos)
        if self.input is not None:
            raise NetError("a second `input` line; a network has one input", st.pos)
        if self.layers:
            raise NetError("`input` must come before the first layer", st.pos)
        if isinstance(st, ast.InputImage):
            dims = st.size.dims
            if len(dims) != 3:
                raise NetError(f"an image input is HxWxC (three numbers), got "
                               f"{'x'.join(map(str, dims))}", st.size.pos)
            if min(dims) < 1:
                raise NetError("input sizes must be at least 1", st.size.pos)
            shape = Shape(dims[:2], dims[2])
        else:
            d = self.whole(st.features, "the number of input features", minimum=1)
            shape = Shape((), d)
        self.input = Input(st.pos, shape)

    def repeat(self, st: ast.Repeat) -> None:
        count = self.whole(st.count, "a repeat count", minimum=0)
        body_layers = _count_layers(st.body, self.params)
        if len(self.layers) + count * body_layers > MAX_LAYERS:
            raise NetError(f"this repeat unrolls to {count * body_layers:,} layers; the limit is "
                           f"{MAX_LAYERS:,} layers in all", st.pos)
        # A body without layers (only empty repeats) is checked once, not unrolled.
        for _ in range(count if body_layers else min(count, 1)):
            self.block(st.body)

    # layers ----------------------------------------------------------------------
    def layer(self, st: ast.LayerStmt) -> Layer:
        if self.input is None:
            raise NetError("a layer before the `input` line", st.pos)
        if st.kind not in LAYERS:
            raise NetError(f"unknown layer '{st.kind}' (layers: {', '.join(LAYERS)})", st.pos)
        takes_size, allowed, flags = LAYERS[st.kind]
        if takes_size and st.size is None:
            raise NetError(f"{st.kind} needs a window size, e.g. `{st.kind} 3x3`", st.pos)
        if not takes_size and st.size is not None:
            raise NetError(f"{st.kind} takes no size", st.size.pos)
        seen: dict[str, ast.Option] = {}
        for opt in st.options:
            if opt.key not in allowed:
                hint = f" (options: {', '.join(allowed)})" if allowed else " (it has no options)"
                raise NetError(f"unknown option '{opt.key}' for {st.kind}{hint}", opt.pos)
            if opt.key in seen:
                raise NetError(f"option '{opt.key}' is given twice", opt.pos)
            seen[opt.key] = opt
        for flag in st.flags:
            if flag.name not in flags:
                if flag.name in allowed:
                    raise NetError(f"option '{flag.name}' needs a value: {flag.name}=...",
                                   flag.pos)
                hint = f" (flags: {', '.join(flags)})" if flags else ""
                raise NetError(f"unknown flag '{flag.name}' for {st.kind}{hint}", flag.pos)
        fixed = any(f.name == "fixed" for f in st.flags)
        size = self.size(st) if takes_size else None
        pos = st.pos

        if st.kind == "dense":
            return Dense(pos, self.std(seen, "W", 1.0), self.std(seen, "b", 0.0), fixed)
        if st.kind == "conv":
            stride = self.whole(seen["stride"].value, "a stride", 1) if "stride" in seen else 1
            return Conv(pos, size, stride, self.padding(seen, "conv", "same"),
                        self.std(seen, "W", 1.0), self.std(seen, "b", 0.0), fixed)
        if st.kind == "avgpool":
            if "stride" in seen:
                s = self.whole(seen["stride"].value, "a stride", 1)
                stride = (s, s)
            else:
                stride = size
            return AvgPool(pos, size, stride, self.padding(seen, "avgpool", "valid"))
        if st.kind == "relu":
            return Activation(pos, "abrelu", "relu", 0.0, 1.0)
        if st.kind == "abrelu":
            return Activation(pos, "abrelu", "abrelu", self.real(seen, "a", 0.0),
                              self.real(seen, "b", 1.0))
        if st.kind == "leaky_relu":
            alpha = self.real(seen, "alpha", 0.01)
            return Activation(pos, "abrelu", "leaky_relu", alpha, 1.0)
        if st.kind == "erf":
            return Activation(pos, "erf", "erf")
        if st.kind == "identity":
            return Activation(pos, "identity", "identity")
        if st.kind == "gap":
            return GlobalAvgPool(pos)
        if st.kind == "flatten":
            return Flatten(pos)
        raise AssertionError(st.kind)  # pragma: no cover

    # values ----------------------------------------------------------------------
    def whole(self, expr: ast.Expr, what: str, minimum: int) -> int:
        value = evaluate(expr, self.params)
        n = as_whole(value)
        if n is None:
            raise NetError(f"{what} must be a whole number, got {value:g}", expr.pos)
        if n < minimum:
            raise NetError(f"{what} must be at least {minimum}, got {n}", expr.pos)
        return n

    def size(self, st: ast.LayerStmt) -> tuple[int, int]:
        dims = st.size.dims
        if len(dims) != 2:
            raise NetError(f"{st.kind} takes a 2-d size like 3x3, got {'x'.join(map(str, dims))}",
                           st.size.pos)
        if min(dims) < 1:
            raise NetError(f"{st.kind} window sizes must be at least 1", st.size.pos)
        return dims[0], dims[1]

    def std(self, seen: dict, key: str, default: float) -> float:
        value = self.real(seen, key, default)
        if value < 0:
            raise NetError(f"{key} is a standard deviation and must be >= 0, got {value:g}",
                           seen[key].value.pos)
        return value

    def real(self, seen: dict, key: str, default: float) -> float:
        if key not in seen:
            return float(default)
        return float(evaluate(seen[key].value, self.params))

    def padding(self, seen: dict, kind: str, default: str) -> str:
        if "pad" not in seen:
            return default
        value = seen["pad"].value
        allowed = PADDINGS[kind]
        if not isinstance(value, ast.Name) or value.name not in allowed:
            raise NetError(f"pad must be one of {', '.join(allowed)} for {kind}", value.pos)
        return value.name


def _count_layers(statements, params: dict) -> int:
    """Layers a block unrolls to, computed without unrolling it."""
    total = 0
    for st in statements:
        if isinstance(st, ast.LayerStmt):
            total += 1
        elif isinstance(st, ast.Repeat):
            n = as_whole(evaluate(st.count, params))
            if n is None or n < 0:
                raise NetError("a repeat count must be a whole number >= 0", st.count.pos)
            total += n * _count_layers(st.body, params)
    return total
