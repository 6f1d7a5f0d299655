"""One error type for everything a user can get wrong.

An :class:`InfinetError` carries an optional source position.  ``str(err)`` is the
exact text the CLI prints: ``FILE:LINE:COL: error: message`` followed by the
offending source line and a caret, or a one-line ``error: message`` when the
problem has no place in a ``.net`` file (bad data, bad command-line values).
"""
from __future__ import annotations

from dataclasses import dataclass


#: the most characters of a source line an error shows
MAX_SHOWN = 120


@dataclass(frozen=True)
class SourcePos:
    """A place in a ``.net`` source: 1-based line and column."""

    filename: str
    line: int
    column: int
    source_line: str = ""

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}:{self.column}"


class InfinetError(Exception):
    """An error the user caused.  Never shown as a traceback by the CLI."""

    def __init__(self, message: str, pos: SourcePos | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos

    def __str__(self) -> str:
        if self.pos is None:
            return f"error: {self.message}"
        text = f"{self.pos}: error: {self.message}"
        if self.pos.source_line:
            line = self.pos.source_line.rstrip("\n").expandtabs(1)
            col = max(self.pos.column, 1) - 1
            if len(line) > MAX_SHOWN:         # a window of the line around the caret
                start = max(0, min(col - MAX_SHOWN // 2, len(line) - MAX_SHOWN))
                line = ("..." if start else "") + line[start:start + MAX_SHOWN] + \
                    ("..." if start + MAX_SHOWN < len(line) else "")
                col = col - start + (3 if start else 0)
            text += f"\n    {line}\n    {' ' * col}^"
        return text


class NetError(InfinetError):
    """A mistake in a ``.net`` file: syntax, meaning, or shapes."""


class DataError(InfinetError, ValueError):
    """Input arrays or files that do not fit the network or cannot be read."""


class UsageError(InfinetError, ValueError):
    """A bad option value given on the command line or to the Python API."""


class NumericalError(InfinetError, ArithmeticError):
    """A kernel that cannot be represented in the chosen dtype (overflow to inf/NaN)."""


class InfinetWarning(UserWarning):
    """A warning the CLI prints as one ``warning: …`` line."""


class PrecisionWarning(InfinetWarning):
    """Results computed, but less accurate than the dtype promises (float32 underflow)."""
