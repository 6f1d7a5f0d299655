"""AST → the network graph: params resolved, repeats unrolled, blocks wired, options checked.

The result is a list of :class:`Node` in topological order: node ``i`` produces state
``i`` from the states it reads (``inputs``); node 0 is the input.  A chain of layers reads
the previous state; a ``residual``/``sum`` block fans its input out to its branches and
adds their ends (layers/blocks.py).

Every check of a layer's options asks the layer registry (infinet/layers): its options
(each with its default and reader), flags and window.  Errors point at the token
responsible (the layer name, the option, the operator of a division by zero).  Repeat
counts are multiplied out *before* unrolling, so a network of a billion layers is
refused at once.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Mapping

from ..errors import NetError, SourcePos, UsageError
from ..ir.plan import MAX_LAYERS
from ..layers import BLOCKS, LAYERS, Input, Layer
from ..layers.base import WINDOW
from . import ast
from .expressions import Value, as_whole, evaluate


@dataclass(frozen=True)
class Node:
    """One layer of the graph: it produces state ``index`` from the states ``inputs``."""

    index: int
    layer: Layer
    inputs: tuple[int, ...]


@dataclass(frozen=True)
class Lowered:
    name: str
    params: dict[str, Value]
    nodes: list[Node]


def lower(program: ast.NetFile, overrides: Mapping[str, Value | str] | None = None,
          from_cli: bool = False) -> Lowered:
    """Resolve params (with ``overrides``), unroll repeats and build the graph.

    ``from_cli``: the overrides came as ``-D NAME=VALUE`` (errors say so); else as
    keyword arguments of ``infinet.compile`` (errors say ``NAME=value``)."""
    overrides = dict(overrides or {})
    declared = _declared_params(program.statements)
    unknown = [k for k in overrides if k not in declared]
    if unknown:
        names = ", ".join(sorted(declared)) or "none"
        what = f"-D {unknown[0]}" if from_cli else f"{unknown[0]}={overrides[unknown[0]]!r}"
        raise UsageError(f"{what}: {program.filename} has no param '{unknown[0]}' "
                         f"(its params: {names})")
    lowering = _Lowering(program, overrides, from_cli)
    lowering.block(program.statements, top=True)
    if not lowering.nodes:
        lines = program.source.splitlines() or [""]
        raise NetError("no `input` line: the network must say what its input is, e.g. "
                       "`input 32x32x3` or `input 784`",
                       SourcePos(program.filename, max(len(lines), 1), 1, lines[-1]))
    return Lowered(lowering.name or _stem(program.filename), lowering.params, lowering.nodes)


def _stem(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.endswith(".net") else base


def _bodies(statements):
    """The statement lists nested in ``statements`` (repeat and block bodies)."""
    return [st.body for st in statements if isinstance(st, (ast.Repeat, ast.Block))]


def _declared_params(statements) -> dict[str, ast.ParamDecl]:
    found: dict[str, ast.ParamDecl] = {}
    todo = [statements]
    while todo:
        body = todo.pop(0)
        for st in body:
            if isinstance(st, ast.ParamDecl):
                found.setdefault(st.name, st)
        todo += _bodies(body)
    return found


class _Lowering:
    def __init__(self, program: ast.NetFile, overrides: dict, from_cli: bool = False):
        self.program = program
        self.overrides = overrides
        self.from_cli = from_cli
        self.params: dict[str, Value] = {}
        self.name: str | None = None
        self.nodes: list[Node] = []
        self.current: int | None = None     # the state the next layer reads

    # -- the graph the blocks build (layers/blocks.py uses these) ---------------------------
    def add(self, layer: Layer, inputs: tuple[int, ...]) -> int:
        index = len(self.nodes)
        self.nodes.append(Node(index, layer, tuple(inputs)))
        self.current = index
        return index

    def branch(self, statements, start: int) -> tuple[int, bool]:
        """Lower a branch body reading state ``start``: (its last state, whether that state
        is independent of ``start`` given the data).

        It is independent when every path from ``start`` to it passes a dense or conv layer
        of the branch (fresh weights); a path around them — the empty branch, or a nested
        `residual`/`sum` whose shortcut carries ``start`` on — makes the branch's output
        contain ``start`` itself, correlated with any other branch that does the same."""
        first = len(self.nodes)
        self.current = start
        self.block(statements)
        carries = {start: True}
        for n in self.nodes[first:]:
            carries[n.index] = (not n.layer.has_weights
                                and any(carries.get(j, False) for j in n.inputs))
        return self.current, not carries[self.current]

    # -- statements ---------------------------------------------------------------------
    def block(self, statements, top: bool = False) -> None:
        for st in statements:
            if isinstance(st, ast.NetDecl):
                if not top:
                    raise NetError("`net` names the whole file; it cannot be inside a block",
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
            elif isinstance(st, ast.Block):
                self.braced(st)
            elif isinstance(st, ast.LayerStmt):
                self.add(self.layer(st), (self.current,))
            else:  # pragma: no cover
                raise AssertionError(type(st))

    def param(self, st: ast.ParamDecl, top: bool) -> None:
        if not top:
            raise NetError("params must be declared at the top level, not inside a block",
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
                    raise UsageError(f"{self.override_text(st.name)}: "
                                     f"{err.message}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{self.override_text(st.name)}: the value must be a number")
            if isinstance(value, float) and not (value == value and abs(value) != float("inf")):
                raise UsageError(f"{self.override_text(st.name)}: the value must be finite")
            self.params[st.name] = value
        else:
            self.params[st.name] = evaluate(st.value, self.params)

    def override_text(self, name: str) -> str:
        value = self.overrides[name]
        return f"-D {name}={value}" if self.from_cli else f"{name}={value!r}"

    def input_line(self, st, top: bool) -> None:
        if not top:
            raise NetError("`input` cannot be inside a block", st.pos)
        if self.nodes:
            raise NetError("a second `input` line; a network has one input", st.pos)
        if isinstance(st, ast.InputImage):
            layer = Input.from_size(st.pos, st.size.dims, st.size.pos)
        else:
            layer = Input.flat(st.pos, self.whole(st.features, "the number of input features",
                                                  minimum=1))
        self.add(layer, ())

    def repeat(self, st: ast.Repeat) -> None:
        count = self.whole(st.count, "a repeat count", minimum=0)
        body_layers = _count_layers(st.body, self.params)
        if len(self.nodes) + count * body_layers > MAX_LAYERS:
            raise NetError(f"this repeat unrolls to {count * body_layers:,} layers; the limit is "
                           f"{MAX_LAYERS:,} layers in all", st.pos)
        # A body without layers (only empty repeats) is checked once, not unrolled.
        for _ in range(count if body_layers else min(count, 1)):
            self.block(st.body)

    def braced(self, st: ast.Block) -> None:
        if st.kind not in BLOCKS:
            if st.kind == "branch":
                raise NetError("`branch { … }` belongs inside a `sum { … }` block", st.pos)
            raise NetError(f"unknown block '{st.kind}' (blocks: repeat, "
                           f"{', '.join(BLOCKS)})", st.pos)
        if self.current is None:
            raise NetError(f"a {st.kind} block before the `input` line", st.pos)
        if len(self.nodes) + _count_layers([st], self.params) > MAX_LAYERS:
            raise NetError(f"the network has more than {MAX_LAYERS:,} layers", st.pos)
        BLOCKS[st.kind](st, self)

    # -- layers -------------------------------------------------------------------------
    def layer(self, st: ast.LayerStmt) -> Layer:
        cls = LAYERS.get(st.kind)
        if cls is None:
            hint = ""
            if st.kind in BLOCKS or st.kind in ("repeat", "branch"):
                hint = f" ('{st.kind}' is a block: `{st.kind} {{ … }}`)"
            else:
                close = difflib.get_close_matches(st.kind, list(LAYERS) + ["input", "param"], 1)
                if close:
                    hint = f" (did you mean '{close[0]}'?)"
            raise NetError(f"unknown layer '{st.kind}'{hint}; layers: {', '.join(LAYERS)}",
                           st.pos)
        if self.current is None:
            raise NetError("a layer before the `input` line", st.pos)
        takes_size = cls.window == WINDOW
        if takes_size and st.size is None:
            raise NetError(f"{st.kind} needs a window size, e.g. `{st.kind} 3x3` (`{st.kind} 3`"
                           f" for sequences)", st.pos)
        if not takes_size and st.size is not None:
            raise NetError(f"{st.kind} takes no size", st.size.pos)
        if st.size is not None and min(st.size.dims) < 1:
            raise NetError(f"{st.kind} window sizes must be at least 1", st.size.pos)
        allowed = {opt.name: opt for opt in cls.options}
        seen: dict[str, ast.Option] = {}
        for opt in st.options:
            if opt.key not in allowed:
                names = ", ".join(allowed)
                hint = f" (options: {names})" if names else " (it has no options)"
                close = difflib.get_close_matches(opt.key, list(allowed), 1)
                if close:
                    hint = f" (did you mean '{close[0]}'? options: {names})"
                if opt.key in cls.flags:
                    hint = f" ('{opt.key}' is a flag: write it alone)"
                raise NetError(f"unknown option '{opt.key}' for {st.kind}{hint}", opt.pos)
            if opt.key in seen:
                raise NetError(f"option '{opt.key}' is given twice", opt.pos)
            seen[opt.key] = opt
        flags: set[str] = set()
        for flag in st.flags:
            if flag.name not in cls.flags:
                if flag.name in allowed:
                    raise NetError(f"option '{flag.name}' needs a value: {flag.name}=...",
                                   flag.pos)
                hint = f" (flags: {', '.join(cls.flags)})" if cls.flags else ""
                raise NetError(f"unknown flag '{flag.name}' for {st.kind}{hint}", flag.pos)
            flags.add(flag.name)
        values = {name: (opt.read(seen[name].value, self) if name in seen else opt.default)
                  for name, opt in allowed.items()}
        return cls.build(st.pos, st.size, values, flags, self)

    # -- values (the Option readers call these) -----------------------------------------
    def number(self, value) -> Value:
        if not isinstance(value, (ast.Number, ast.Name, ast.Call, ast.BinOp, ast.Neg)):
            raise NetError("expected a number here", value.pos)
        return evaluate(value, self.params)

    def whole(self, expr, what: str, minimum: int) -> int:
        value = self.number(expr)
        n = as_whole(value)
        if n is None:
            raise NetError(f"{what} must be a whole number, got {value:g}", expr.pos)
        if n < minimum:
            raise NetError(f"{what} must be at least {minimum}, got {n}", expr.pos)
        return n


def _count_layers(statements, params: dict) -> int:
    """Layers a block unrolls to, computed without unrolling it (a sum counts one)."""
    total = 0
    for st in statements:
        if isinstance(st, ast.LayerStmt):
            total += 1
        elif isinstance(st, ast.Block):
            total += 1 + _count_layers(st.body, params)
        elif isinstance(st, ast.Repeat):
            n = as_whole(evaluate(st.count, params))
            if n is None or n < 0:
                raise NetError("a repeat count must be a whole number >= 0", st.count.pos)
            total += n * _count_layers(st.body, params)
    return total
