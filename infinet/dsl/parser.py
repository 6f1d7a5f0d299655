"""Source text → :class:`~infinet.dsl.ast.NetFile`, with syntax errors located.

The grammar lives in ``infinet/grammar.lark`` (LALR(1), positions kept).  The
transformer only builds AST dataclasses; all checks of meaning happen in lower.py.
Nothing here recurses on the depth of the source: the tree is built by lark's
non-recursive transformer, numbers are bounded in length and blocks in nesting depth,
so any input gives a located error or a tree, never a RecursionError.
"""
from __future__ import annotations

import functools
import math
from importlib import resources

import lark
from lark import Lark, Token, v_args
from lark.visitors import Transformer_NonRecursive

from ..errors import NetError, SourcePos
from . import ast

# How expected terminals are named in syntax error messages.
_TERMINAL_TEXT = {
    "NAME": "a name",
    "NUMBER": "a number",
    "SIZE": "a size such as 3x3",
    "_NL": "end of line",
    "SEMICOLON": "';'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "EQUAL": "'='",
    "ADD_OP": "'+' or '-'",
    "STRING": "a quoted string",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "MUL_OP": "'*' or '/'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "$END": "end of file",
}


@functools.lru_cache(maxsize=None)
def _parser() -> Lark:
    text = resources.files("infinet").joinpath("grammar.lark").read_text()
    return Lark(text, parser="lalr", start=["start", "expr"], propagate_positions=True,
                maybe_placeholders=False)


#: the longest number literal accepted (Python refuses to convert longer digit strings)
MAX_NUMBER_DIGITS = 400
#: how deeply `repeat` and other blocks may nest
MAX_BLOCK_DEPTH = 100


class _Builder(Transformer_NonRecursive):
    def __init__(self, filename: str, lines: list[str]):
        super().__init__()
        self.filename = filename
        self.lines = lines

    def pos_of(self, item) -> SourcePos:
        if isinstance(item, Token):
            line, col = item.line, item.column
        else:
            meta = item if isinstance(item, lark.tree.Meta) else item.meta
            line, col = meta.line, meta.column
        src = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return SourcePos(self.filename, line, col, src)

    def __default__(self, data, children, meta):  # every rule must be handled below
        raise AssertionError(f"grammar rule {data!r} has no AST builder")

    # statements --------------------------------------------------------------
    def start(self, children):
        return tuple(children)

    @v_args(meta=True)
    def net_decl(self, meta, children):
        return ast.NetDecl(str(children[0]), self.pos_of(children[0]))

    @v_args(meta=True)
    def param_decl(self, meta, children):
        name, value = children
        return ast.ParamDecl(str(name), value, self.pos_of(name))

    @v_args(meta=True)
    def input_image(self, meta, children):
        return ast.InputImage(self._size(children[0]), self.pos_of(meta))

    @v_args(meta=True)
    def input_vector(self, meta, children):
        return ast.InputVector(children[0], self.pos_of(meta))

    @v_args(meta=True)
    def repeat(self, meta, children):
        return ast.Repeat(children[0], tuple(children[1:]), self.pos_of(meta))

    @v_args(meta=True)
    def block(self, meta, children):
        return ast.Block(str(children[0]), tuple(children[1:]), self.pos_of(children[0]))

    @v_args(meta=True)
    def layer(self, meta, children):
        kind = children[0]
        rest = children[1:]
        size = None
        if rest and isinstance(rest[0], Token) and rest[0].type == "SIZE":
            size = self._size(rest[0])
            rest = rest[1:]
        elif rest and isinstance(rest[0], Token) and rest[0].type == "NUMBER":
            text = str(rest[0])
            if not text.isdigit():
                raise _Located(f"a window size must be a whole number, got {text}",
                               self.pos_of(rest[0]))
            if len(text) > 9:
                raise _Located("this window size is too large", self.pos_of(rest[0]))
            size = ast.Size((int(text),), self.pos_of(rest[0]))
            rest = rest[1:]
        options = tuple(c for c in rest if isinstance(c, ast.Option))
        flags = tuple(c for c in rest if isinstance(c, ast.Flag))
        return ast.LayerStmt(str(kind), size, options, flags, self.pos_of(kind))

    def option(self, children):
        key, value = children
        return ast.Option(str(key), value, self.pos_of(key))

    def string(self, children):
        tok = children[0]
        return ast.String(str(tok)[1:-1], self.pos_of(tok))

    @v_args(meta=True)
    def list(self, meta, children):
        return ast.ListValue(tuple(children), self.pos_of(meta))

    def flag(self, children):
        return ast.Flag(str(children[0]), self.pos_of(children[0]))

    def _size(self, tok: Token) -> ast.Size:
        parts = str(tok).split("x")
        if any(len(d) > 9 for d in parts):
            raise _Located("this size is too large", self.pos_of(tok))
        return ast.Size(tuple(int(d) for d in parts), self.pos_of(tok))

    # expressions -------------------------------------------------------------
    def number(self, children):
        tok = children[0]
        text = str(tok)
        if len(text) > MAX_NUMBER_DIGITS:
            raise _Located(f"this number has {len(text):,} characters; the longest accepted is "
                           f"{MAX_NUMBER_DIGITS}", self.pos_of(tok))
        value = int(text) if text.isdigit() else float(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise _Located(f"{text} is too large for a double (it would be inf)",
                           self.pos_of(tok))
        return ast.Number(value, self.pos_of(tok))

    def name(self, children):
        return ast.Name(str(children[0]), self.pos_of(children[0]))

    def call(self, children):
        func, arg = children
        return ast.Call(str(func), arg, self.pos_of(func))

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.Neg(children[0], self.pos_of(meta))

    def binop(self, children):
        left, op, right = children
        return ast.BinOp(str(op), left, right, self.pos_of(op))


def _syntax_error(err: lark.exceptions.UnexpectedInput, filename: str, lines: list[str]) -> NetError:
    line = max(getattr(err, "line", 1) or 1, 1)
    col = max(getattr(err, "column", 1) or 1, 1)
    src = lines[line - 1] if line <= len(lines) else ""
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        ch = src[col - 1] if col - 1 < len(src) else "?"
        msg = f"unexpected character {ch!r}"
    elif isinstance(err, lark.exceptions.UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            what = "end of file"
            if lines:
                line = len(lines)
                src = lines[-1]
                col = len(src.rstrip()) + 1
        elif tok.type == "_NL":
            what = "end of line"
            # lark reports a newline token at the start of the next line; point at the line end
            if tok.line and tok.line <= len(lines):
                line = tok.line
                src = lines[line - 1]
                col = len(src.rstrip("\r\n")) + 1
        else:
            what = repr(str(tok))
        expected = sorted({_TERMINAL_TEXT.get(t, repr(t.lower())) for t in err.expected
                           if not t.startswith("__")})
        msg = f"unexpected {what}"
        if expected:
            msg += "; expected " + (expected[0] if len(expected) == 1 else
                                    ", ".join(expected[:-1]) + " or " + expected[-1])
    else:
        msg = "syntax error"
    return NetError(msg, SourcePos(filename, line, col, src))


class _Located(Exception):
    """A check of the builder (raised inside lark, re-raised as a NetError)."""

    def __init__(self, message: str, pos: SourcePos):
        super().__init__(message)
        self.message, self.pos = message, pos


def _build(tree, filename: str, lines: list[str]):
    try:
        return _Builder(filename, lines).transform(tree)
    except _Located as err:
        raise NetError(err.message, err.pos) from None
    except lark.exceptions.VisitError as err:
        if isinstance(err.orig_exc, _Located):
            raise NetError(err.orig_exc.message, err.orig_exc.pos) from None
        raise


def _check_nesting(source: str, filename: str, lines: list[str]) -> None:
    """Blocks nested deeper than MAX_BLOCK_DEPTH are refused before anything recurses."""
    depth = 0
    for number, line in enumerate(lines, 1):
        code = line.split("#", 1)[0]
        for col, ch in enumerate(code, 1):
            if ch == "{":
                depth += 1
                if depth > MAX_BLOCK_DEPTH:
                    raise NetError(f"blocks are nested more than {MAX_BLOCK_DEPTH} deep",
                                   SourcePos(filename, number, col, line))
            elif ch == "}":
                depth -= 1


def parse(source: str, filename: str = "<string>") -> ast.NetFile:
    """Parse ``.net`` source text; raise :class:`NetError` on a syntax error."""
    source = source.removeprefix("\ufeff")          # a UTF-8 byte order mark
    lines = source.splitlines()
    _check_nesting(source, filename, lines)
    try:
        tree = _parser().parse(source, start="start")
    except lark.exceptions.UnexpectedInput as err:
        raise _syntax_error(err, filename, lines) from None
    statements = _build(tree, filename, lines)
    return ast.NetFile(filename, source, statements)


def parse_expression(text: str, filename: str = "<command line>") -> ast.Expr:
    """Parse one expression (used for ``-D name=value`` overrides)."""
    lines = text.splitlines() or [""]
    try:
        tree = _parser().parse(text, start="expr")
    except lark.exceptions.UnexpectedInput as err:
        raise _syntax_error(err, filename, lines) from None
    return _build(tree, filename, lines)
