"""What every backend's executor is: the interface and the numerical guard rails.

An executor provides ``self_variances(x)`` (the per-input pass: v(x)[p] of every state
whose variances the pair pass reads, ``{state: [N, *spatial]}``) and ``pairs(x1, x2,
rows1, rows2, v1, v2)`` (Σ and Θ of a batch of pairs); batching, symmetry and the memory
bound live in the drivers (tiling), once for all backends.  Subclasses implement
``_self_variances`` and ``_pairs``; this class checks what they return, so that no
backend ever hands back a kernel that silently overflowed or underflowed:

* a non-finite self-variance or kernel value is a :class:`NumericalError` (the exact
  value does not fit the dtype: the inputs are too large) — never written;
* float32 self-variances below float32's smallest normal number (subnormal: a few
  significant bits left) give one :class:`PrecisionWarning` naming float64.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..dtypes import DTYPES
from ..errors import NumericalError, PrecisionWarning, UsageError


def check_dtype(dtype) -> np.dtype:
    """The NumPy dtype of a dtype name or object; an error for anything but the two."""
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise UsageError(f"unknown dtype '{dtype}' (choose float64 or float32)")
    return DTYPES[name].numpy


def _xp(a):
    if type(a).__module__.startswith("cupy"):
        import cupy
        return cupy
    return np


class Executor:
    """Base of every backend's executor (see the module docstring)."""

    name = "executor"

    def __init__(self, plan, dtype, ntk: bool = True):
        self.plan = plan
        self.dtype = check_dtype(dtype)
        #: compute Θ (False: the NNGP only, Θ returned as zeros)
        self.ntk = bool(ntk)
        self._warned = False

    # -- the interface --------------------------------------------------------------------
    def self_variances(self, x):
        with np.errstate(over="ignore", invalid="ignore"):   # checked below, not warned
            tables = self._self_variances(x)
        self._check_variances(tables, x)
        return tables

    def pairs(self, x1, x2, rows1, rows2, v1, v2):
        with np.errstate(over="ignore", invalid="ignore"):
            k, t = self._pairs(x1, x2, rows1, rows2, v1, v2)
        for values in (k, t):
            xp = _xp(values)
            if values is not None and not bool(xp.isfinite(values).all()):
                raise NumericalError(self._overflow_text("the kernel values"))
        return k, t

    def _self_variances(self, x):  # pragma: no cover - every backend implements it
        raise NotImplementedError

    def _pairs(self, x1, x2, rows1, rows2, v1, v2):  # pragma: no cover
        raise NotImplementedError

    # -- checks ---------------------------------------------------------------------------
    def _check_variances(self, tables, x) -> None:
        values = [t for t in tables.values()]
        packed = getattr(tables, "packed", None)
        if packed is not None:
            values = [packed]
        for v in values:
            xp = _xp(v)
            if not bool(xp.isfinite(v).all()):
                with np.errstate(over="ignore"):
                    scale = float(np.max(np.abs(np.asarray(x, np.float64)))) if len(x) else 0.0
                if not np.isfinite(scale):
                    raise NumericalError(self._overflow_text("the inputs", "do not fit"))
                raise NumericalError(self._overflow_text(
                    f"the self-variances of the inputs (values up to {scale:.3g})"))
        if self.dtype == np.float32 and not self._warned:
            tiny = float(np.finfo(np.float32).tiny)
            smallest = None
            for v in values:
                xp = _xp(v)
                a = xp.abs(v)
                small = a[(a > 0) & (a < tiny)]
                if small.size:
                    m = float(small.min())
                    smallest = m if smallest is None else min(smallest, m)
            if smallest is not None:
                self._warned = True
                warnings.warn(
                    f"float32 underflow: self-variances as small as {smallest:.3g} are below "
                    f"float32's smallest normal number ({tiny:.3g}), so the kernel may be "
                    f"inaccurate; compute in float64 (--dtype float64, dtype='float64') or "
                    f"rescale the inputs", PrecisionWarning, stacklevel=3)

    def _overflow_text(self, what: str, verb: str = "are not finite in") -> str:
        limit = float(np.finfo(self.dtype).max)
        hint = ("compute in float64 (--dtype float64, dtype='float64') or rescale the inputs"
                if self.dtype == np.float32 else "rescale the inputs")
        return (f"{what} {verb} {self.dtype.name} (its largest value is {limit:.3g}): the "
                f"exact kernel does not fit; {hint}")
