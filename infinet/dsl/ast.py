"""The syntax tree of a ``.net`` file, as the parser builds it.

Nothing here is checked yet: names, option values and shapes are validated when
the tree is lowered to the IR (lower.py), where every node's position is at hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..errors import SourcePos


@dataclass(frozen=True)
class Number:
    value: int | float
    pos: SourcePos


@dataclass(frozen=True)
class Name:
    name: str
    pos: SourcePos


@dataclass(frozen=True)
class Call:
    func: str
    arg: "Expr"
    pos: SourcePos


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * /
    left: "Expr"
    right: "Expr"
    pos: SourcePos  # the operator's position (division by zero points here)


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    pos: SourcePos


Expr = Union[Number, Name, Call, BinOp, Neg]


@dataclass(frozen=True)
class Size:
    """A literal size: ``AxB``, ``AxBxC``, or a bare ``A`` (a 1-d window)."""

    dims: tuple[int, ...]
    pos: SourcePos


@dataclass(frozen=True)
class String:
    """A quoted option value (``fn="x * tanh(x)"``); ``pos`` is the opening quote."""

    value: str
    pos: SourcePos


@dataclass(frozen=True)
class ListValue:
    """A bracketed list of expressions (``coef=[0.1, 1, 0.5]``)."""

    items: tuple["Expr", ...]
    pos: SourcePos


@dataclass(frozen=True)
class Option:
    key: str
    value: "Expr | String | ListValue"
    pos: SourcePos


@dataclass(frozen=True)
class Flag:
    name: str
    pos: SourcePos


@dataclass(frozen=True)
class NetDecl:
    name: str
    pos: SourcePos


@dataclass(frozen=True)
class ParamDecl:
    name: str
    value: Expr
    pos: SourcePos


@dataclass(frozen=True)
class InputImage:
    size: Size
    pos: SourcePos


@dataclass(frozen=True)
class InputVector:
    features: Expr
    pos: SourcePos


@dataclass(frozen=True)
class LayerStmt:
    kind: str
    size: Size | None
    options: tuple[Option, ...]
    flags: tuple[Flag, ...]
    pos: SourcePos


@dataclass(frozen=True)
class Repeat:
    count: Expr
    body: tuple["Statement", ...]
    pos: SourcePos


@dataclass(frozen=True)
class Block:
    """``NAME { ... }``: residual, sum, branch (checked when lowered)."""

    kind: str
    body: tuple["Statement", ...]
    pos: SourcePos


Statement = Union[NetDecl, ParamDecl, InputImage, InputVector, LayerStmt, Repeat, Block]


@dataclass(frozen=True)
class NetFile:
    """A parsed ``.net`` file (or source text): its statements, in order."""

    filename: str
    source: str
    statements: tuple[Statement, ...] = field(default_factory=tuple)
