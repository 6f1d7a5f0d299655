"""Memory sizes as users give them: ``--max-memory 512M`` on the command line,
``k(x, max_memory="512M")`` or ``max_memory=2**29`` in Python.

One parser for both; the caller passes the words its user typed (``shown``), so a
mistake reads ``--max-memory 1e400: ...`` on the command line and
``max_memory=inf: ...`` in Python.
"""
from __future__ import annotations

import math
import numbers

from ..errors import UsageError

UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
#: Larger sizes are surely a typo (and would overflow the batch arithmetic).
MAX_SIZE = 2 ** 60
EXAMPLE = "a size like 512M or 4G"


def parse_size(value, shown: str) -> int:
    """Bytes of a size given as ``"512M"``, ``"4GiB"``, ``"1e9"`` or a number of bytes."""
    if isinstance(value, bool):
        raise UsageError(f"{shown}: expected {EXAMPLE}")
    if isinstance(value, numbers.Real):
        number, unit = float(value), ""
    elif isinstance(value, str):
        t = value.strip().upper().removesuffix("B").removesuffix("I")
        unit = t[-1] if t and t[-1] in UNITS else ""
        try:
            number = float(t[:-1] if unit else t)
        except ValueError:
            raise UsageError(f"{shown}: expected {EXAMPLE}") from None
    else:
        raise UsageError(f"{shown}: expected {EXAMPLE}, not a {type(value).__name__}")
    if math.isnan(number) or math.isinf(number):
        raise UsageError(f"{shown}: expected a finite size, like 512M or 4G")
    if number <= 0:
        raise UsageError(f"{shown}: must be positive")
    size = number * UNITS[unit]
    if size > MAX_SIZE:
        raise UsageError(f"{shown}: is more than 2^60 bytes; expected {EXAMPLE}")
    if size < 1:
        raise UsageError(f"{shown}: is less than one byte")
    return int(size)
