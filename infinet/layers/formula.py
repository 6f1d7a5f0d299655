"""Activation formulas in x (``elementwise fn="x * tanh(x)"``): parsing, derivative, evaluation.

The language: numbers, the variable ``x``, params of the ``.net`` file (their values are
read when the formula is parsed), ``pi``, ``+ - * / ^`` (``^`` binds tightest and to the
right: ``-x^2`` is −(x²), ``2^3^2`` is 2⁹), parentheses, and the functions of
:data:`FUNCTIONS`.  Parts that do not depend on x are folded to constants when parsed;
a constant that is not a finite number (``log(-1)``, ``1/0``) is an error there.

The derivative is taken symbolically (:meth:`Node.derivative`).  Where a function has
no derivative the value is neural-tangents' (JAX's): d|u|/du = 1 at u = 0 (JAX's
``select(u >= 0, 1, -1)``), and max(a, b) / min(a, b) pass half of each side's
derivative where a = b (JAX's balanced ``max``/``min``); √u at 0 and u^c with c < 1 at 0
have an infinite derivative, as in JAX.

:func:`evaluate` writes a formula over the math namespace (layers/mathns.py), so the
NumPy reference and the generated C++/CUDA evaluate it with the same operations; shared
subexpressions (the ``tanh(x)`` of ``x * tanh(x)`` and of its derivative) are computed once.

Every mistake is a :class:`~infinet.errors.NetError` at the character responsible.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping

from ..errors import NetError, SourcePos

#: name -> number of arguments
FUNCTIONS: dict[str, int] = {
    "exp": 1, "log": 1, "sqrt": 1, "abs": 1, "sin": 1, "cos": 1, "tanh": 1, "erf": 1,
    "sigmoid": 1, "softplus": 1, "max": 2, "min": 2,
}
#: limits that keep the generated code compact and the parser's recursion shallow
MAX_NODES = 400
MAX_DEPTH = 60
#: integer powers up to this are multiplications (x^3 = x·x·x); others call pow
MAX_INT_POWER = 64

_TOKEN = re.compile(r"\s*(?:(?P<num>([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][-+]?[0-9]+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[-+*/^(),]))")


# -- the tree ------------------------------------------------------------------------------

class Node:
    """A formula.  Subclasses are frozen dataclasses: equal trees are equal and hash equal."""

    def derivative(self) -> "Node":  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    @property
    def constant(self) -> bool:
        return isinstance(self, Const)


@dataclass(frozen=True)
class Const(Node):
    value: float

    def derivative(self) -> Node:
        return ZERO


@dataclass(frozen=True)
class Var(Node):
    def derivative(self) -> Node:
        return ONE


ZERO, ONE = Const(0.0), Const(1.0)
X = Var()


@dataclass(frozen=True)
class Neg(Node):
    a: Node

    def derivative(self) -> Node:
        return neg(self.a.derivative())


@dataclass(frozen=True)
class Bin(Node):
    """a op b for op in + - * / ^."""

    op: str
    a: Node
    b: Node

    def derivative(self) -> Node:
        a, b, op = self.a, self.b, self.op
        da, db = a.derivative(), b.derivative()
        if op == "+":
            return add(da, db)
        if op == "-":
            return sub(da, db)
        if op == "*":
            return add(mul(da, b), mul(a, db))
        if op == "/":
            if b.constant:
                return div(da, b)
            return sub(div(da, b), div(mul(a, db), mul(b, b)))
        # a ^ b
        if b.constant:
            c = b.value
            if c == 0:
                return ZERO
            return mul(mul(Const(c), power(a, Const(c - 1))), da)
        # d(a^b) = a^b · (b'·log a + b·a'/a)
        return mul(self, add(mul(db, call("log", a)), div(mul(b, da), a)))


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]

    def derivative(self) -> Node:
        name, args = self.name, self.args
        if name in ("max", "min"):
            a, b = args
            da, db = a.derivative(), b.derivative()
            bigger, smaller = (da, db) if name == "max" else (db, da)
            return Select(a, b, bigger, smaller, mul(Const(0.5), add(da, db)))
        (u,) = args
        du = u.derivative()
        if du == ZERO:
            return ZERO
        if name == "exp":
            outer: Node = self
        elif name == "log":
            return div(du, u)
        elif name == "sqrt":
            outer = div(Const(0.5), self)
        elif name == "abs":
            outer = Select(u, ZERO, ONE, Const(-1.0), ONE)
        elif name == "sin":
            outer = call("cos", u)
        elif name == "cos":
            outer = neg(call("sin", u))
        elif name == "tanh":
            outer = sub(ONE, mul(self, self))
        elif name == "erf":
            outer = mul(Const(2 / math.sqrt(math.pi)), call("exp", neg(mul(u, u))))
        elif name == "sigmoid":
            outer = mul(self, sub(ONE, self))
        elif name == "softplus":
            outer = call("sigmoid", u)
        else:  # pragma: no cover - FUNCTIONS and this list agree
            raise AssertionError(name)
        return mul(outer, du)


@dataclass(frozen=True)
class Select(Node):
    """then if a > b, other if a < b, tie if a = b (or either is NaN)."""

    a: Node
    b: Node
    then: Node
    other: Node
    tie: Node

    def derivative(self) -> Node:   # the jump between the branches has no derivative
        return Select(self.a, self.b, self.then.derivative(), self.other.derivative(),
                      self.tie.derivative())


# -- constructors that fold constants and drop zeros and ones -------------------------------

def _fold(value: float) -> Const:
    if not math.isfinite(value):
        raise ArithmeticError
    return Const(float(value))


def neg(a: Node) -> Node:
    if isinstance(a, Const):
        return Const(-a.value)
    if isinstance(a, Neg):
        return a.a
    return Neg(a)


def add(a: Node, b: Node) -> Node:
    if a.constant and b.constant:
        return _fold(a.value + b.value)
    if a == ZERO:
        return b
    if b == ZERO:
        return a
    return Bin("+", a, b)


def sub(a: Node, b: Node) -> Node:
    if a.constant and b.constant:
        return _fold(a.value - b.value)
    if b == ZERO:
        return a
    if a == ZERO:
        return neg(b)
    return Bin("-", a, b)


def mul(a: Node, b: Node) -> Node:
    if a.constant and b.constant:
        return _fold(a.value * b.value)
    if a == ZERO or b == ZERO:
        return ZERO
    if a == ONE:
        return b
    if b == ONE:
        return a
    return Bin("*", a, b)


def div(a: Node, b: Node) -> Node:
    if b.constant and b.value == 0:
        raise ZeroDivisionError
    if a.constant and b.constant:
        return _fold(a.value / b.value)
    if a == ZERO:
        return ZERO
    if b == ONE:
        return a
    return Bin("/", a, b)


def power(a: Node, b: Node) -> Node:
    if a.constant and b.constant:
        try:
            return _fold(math.pow(a.value, b.value))
        except (ValueError, OverflowError):
            raise ArithmeticError from None
    if b.constant and b.value == 0:
        return ONE
    if b == ONE:
        return a
    return Bin("^", a, b)


_FOLD = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs, "sin": math.sin,
         "cos": math.cos, "tanh": math.tanh, "erf": math.erf,
         "sigmoid": lambda u: 1 / (1 + math.exp(-u)) if u >= 0 else
         math.exp(u) / (1 + math.exp(u)),
         "softplus": lambda u: max(u, 0.0) + math.log1p(math.exp(-abs(u))),
         "max": max, "min": min}


def call(name: str, *args: Node) -> Node:
    if all(a.constant for a in args):
        try:
            return _fold(_FOLD[name](*(a.value for a in args)))
        except (ValueError, OverflowError):
            raise ArithmeticError from None
    return Call(name, tuple(args))


# -- parsing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Formula:
    """A parsed activation: its text as written, its tree and its derivative's."""

    text: str
    tree: Node
    derivative: Node
    #: (name, value) of every param it reads, in order of first use
    params: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        return self.text

    def count(self) -> dict[str, int]:
        """Operations of one evaluation of f and f' (shared parts once): for the cost model."""
        seen: set = set()
        counts = {"flops": 0, "calls": 0}
        todo = [self.tree, self.derivative]
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            if isinstance(node, (Bin, Neg, Select)):
                counts["flops"] += 2 if isinstance(node, Select) else 1
            elif isinstance(node, Call):
                counts["calls"] += 1
            todo += [v for v in vars(node).values() if isinstance(v, Node)]
            if isinstance(node, Call):
                todo += list(node.args)
        return counts


def parse(text: str, at: Callable[[int], SourcePos], params: Mapping[str, float]) -> Formula:
    """The formula of ``text``; ``at(i)`` is the source position of its i-th character."""
    parser = _Parser(text, at, params)
    tree = parser.expression()
    if parser.peek() is not None:
        kind, value, start = parser.peek()
        parser.fail(f"unexpected '{value}' in fn", start)
    if parser.nodes > MAX_NODES:
        parser.fail(f"fn is too long ({parser.nodes} operations; at most {MAX_NODES})", 0)
    derivative = tree.derivative()
    return Formula(text, tree, derivative, tuple(parser.used.items()))


class _Parser:
    """Recursive descent over the tokens of one formula (depth bounded by MAX_DEPTH)."""

    def __init__(self, text: str, at, params: Mapping[str, float]):
        self.text, self.at, self.params = text, at, params
        self.tokens = self._tokens()
        self.i = 0
        self.depth = 0
        self.nodes = 0
        self.used: dict[str, float] = {}

    def fail(self, message: str, offset: int):
        raise NetError(message, self.at(offset))

    def _tokens(self) -> list[tuple[str, str, int]]:
        out, i, text = [], 0, self.text
        while i < len(text):
            if text[i:].strip() == "":
                break
            m = _TOKEN.match(text, i)
            if m is None or m.end() == i:
                j = i + len(text[i:]) - len(text[i:].lstrip())
                self.fail(f"unexpected character '{text[j]}' in fn", j)
            kind = m.lastgroup
            start = m.start(kind)
            out.append((kind, m.group(kind), start))
            i = m.end()
        if not out:
            self.fail('fn is empty: write an expression in x, e.g. fn="x * tanh(x)"', 0)
        return out

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        if tok is None:
            self.fail("fn ends too early: expected a number, x, a name or '('", len(self.text))
        self.i += 1
        return tok

    def expect(self, op: str, what: str):
        tok = self.peek()
        if tok is None or tok[1] != op:
            where = len(self.text) if tok is None else tok[2]
            found = "the end of fn" if tok is None else f"'{tok[1]}'"
            self.fail(f"expected {what} in fn, found {found}", where)
        self.i += 1

    def _build(self, make, offset: int) -> Node:
        self.nodes += 1
        try:
            return make()
        except ZeroDivisionError:
            self.fail("division by zero in fn", offset)
        except ArithmeticError:
            self.fail("this part of fn has no finite value", offset)

    def _enter(self, offset: int):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"fn is nested too deeply (at most {MAX_DEPTH} levels)", offset)

    def expression(self) -> Node:
        tok = self.peek()
        self._enter(tok[2] if tok else len(self.text))
        left = self.term()
        while (tok := self.peek()) is not None and tok[1] in "+-" and tok[0] == "op":
            self.i += 1
            right = self.term()
            left = self._build(lambda: (add if tok[1] == "+" else sub)(left, right), tok[2])
            if self.nodes > MAX_NODES:
                self.fail(f"fn is too long (at most {MAX_NODES} operations)", tok[2])
        self.depth -= 1
        return left

    def term(self) -> Node:
        left = self.unary()
        while (tok := self.peek()) is not None and tok[1] in "*/" and tok[0] == "op":
            self.i += 1
            right = self.unary()
            left = self._build(lambda: (mul if tok[1] == "*" else div)(left, right), tok[2])
            if self.nodes > MAX_NODES:
                self.fail(f"fn is too long (at most {MAX_NODES} operations)", tok[2])
        return left

    def unary(self) -> Node:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in "+-":
            self.i += 1
            self._enter(tok[2])
            operand = self.unary()
            self.depth -= 1
            return operand if tok[1] == "+" else self._build(lambda: neg(operand), tok[2])
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        tok = self.peek()
        if tok is not None and tok[1] == "^":
            self.i += 1
            self._enter(tok[2])
            exponent = self.unary()
            self.depth -= 1
            return self._build(lambda: power(base, exponent), tok[2])
        return base

    def atom(self) -> Node:
        kind, value, start = self.take()
        if kind == "num":
            x = float(value)
            if not math.isfinite(x):
                self.fail(f"the number {value} is too large", start)
            return Const(x)
        if kind == "name":
            nxt = self.peek()
            if nxt is not None and nxt[1] == "(":
                return self.function(value, start)
            if value == "x":
                return X
            if value in self.params:
                x = float(self.params[value])
                self.used.setdefault(value, x)
                return Const(x)
            if value == "pi":
                return Const(math.pi)
            if value in FUNCTIONS:
                self.fail(f"{value} is a function: write {value}(...)", start)
            known = ", ".join(sorted(self.params)) or "none"
            close = difflib.get_close_matches(value, ["x", "pi", *self.params], 1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            self.fail(f"unknown name '{value}' in fn ({hint}the variable is x; params: "
                      f"{known})", start)
        if value == "(":
            self._enter(start)
            inner = self.expression()
            self.depth -= 1
            self.expect(")", "')' to close the '(' of column "
                        f"{self.at(start).column}")
            return inner
        self.fail(f"unexpected '{value}' in fn: expected a number, x, a name or '('", start)

    def function(self, name: str, start: int) -> Node:
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, list(FUNCTIONS), 1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            self.fail(f"unknown function '{name}' in fn ({hint}functions: "
                      f"{', '.join(FUNCTIONS)})", start)
        self.expect("(", "'('")
        self._enter(start)
        args = [self.expression()]
        while (tok := self.peek()) is not None and tok[1] == ",":
            self.i += 1
            args.append(self.expression())
        self.expect(")", f"')' to close {name}(")
        self.depth -= 1
        if len(args) != FUNCTIONS[name]:
            n = FUNCTIONS[name]
            self.fail(f"{name} takes {n} argument{'s' if n > 1 else ''}, got {len(args)}",
                      start)
        return self._build(lambda: call(name, *args), start)


# -- evaluation over the math namespace ------------------------------------------------------

class Evaluator:
    """Values of formulas at one point x, over the math namespace m (shared parts once)."""

    def __init__(self, m, x):
        self.m, self.x = m, x
        self.memo: dict[Node, object] = {}

    def __call__(self, node: Node):
        if node in self.memo:
            return self.memo[node]
        value = self._value(node)
        self.memo[node] = value
        return value

    def _value(self, node: Node):
        m = self.m
        if isinstance(node, Const):
            return m.const(node.value)
        if isinstance(node, Var):
            return self.x
        if isinstance(node, Neg):
            return -self(node.a)
        if isinstance(node, Select):
            a, b = self(node.a), self(node.b)
            return m.where(a > b, self(node.then),
                           m.where(a < b, self(node.other), self(node.tie)))
        if isinstance(node, Bin):
            if node.op == "^":
                return self._power(node)
            a, b = self(node.a), self(node.b)
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: a / b}[node.op]()
        assert isinstance(node, Call), node
        args = [self(a) for a in node.args]
        name = node.name
        if name == "max":
            return m.max(*args)
        if name == "min":
            return m.min(*args)
        (u,) = args
        if name == "sigmoid":
            e = m.exp(-m.abs(u))
            one = m.const(1)
            return m.where(u >= m.const(0), one / (one + e), e / (one + e))
        if name == "softplus":
            return m.max0(u) + m.log1p(m.exp(-m.abs(u)))
        return m.call(name, u)

    def _power(self, node: Bin):
        m = self.m
        base = self(node.a)
        if node.b.constant:
            c = node.b.value
            if c == int(c) and abs(c) <= MAX_INT_POWER:
                n = int(abs(c))
                result, square = None, base
                while n:                       # binary powering: the same product everywhere
                    if n & 1:
                        result = square if result is None else result * square
                    n >>= 1
                    if n:
                        square = square * square
                return result if c > 0 else m.const(1) / result
        return m.pow(base, self(node.b))


def evaluate(formula: Formula, m, x, derivative: bool = True):
    """(f(x), f'(x)) over the math namespace m, or f(x) alone."""
    ev = Evaluator(m, x)
    value = ev(formula.tree)
    return (value, ev(formula.derivative)) if derivative else value
