"""The math namespace that per-entry layer formulas are written over.

An elementwise layer writes its formula once, as a Python function of a namespace ``m``
and values (``K``, ``v1``, ``v2``)::

    def entry(self, m, K, v1, v2):
        s = m.sqrt(m.max0(v1 * v2 - K * K))
        ...
        return new_K, theta_factor

Two namespaces implement it:

* :class:`NumpyMath` (here) evaluates it on NumPy arrays of one dtype: the reference
  executor, the definition of what the layer means;
* :class:`infinet.codegen.printer.CPrinter` records the same operations, in the same
  order, as C statements for the CPU and CUDA targets.

So every backend runs the same operations by construction.  The namespace is small on
purpose: arithmetic through the operators (``+ - * /``, unary ``-``, comparisons),
:meth:`const`, :meth:`tiny`, :meth:`where`, the functions in :data:`FUNCTIONS`, and one
loop construct, :meth:`quadrature` (a weighted sum over a constant table of nodes, e.g.
Gauss–Hermite; printers emit it as a loop over a static table, not as unrolled copies).  A function a
printer does not know is an error there, never a silent fallback.
"""
from __future__ import annotations

import math

import numpy as np

#: name -> (arity, NumPy implementation).  Printers map the same names to C.
FUNCTIONS: dict[str, tuple[int, object]] = {
    "sqrt": (1, np.sqrt),
    "abs": (1, np.abs),
    "exp": (1, np.exp),
    "log": (1, np.log),
    "sin": (1, np.sin),
    "cos": (1, np.cos),
    "tanh": (1, np.tanh),
    "asin": (1, np.arcsin),
    "atan2": (2, np.arctan2),
    "erf": (1, None),      # NumPy has no erf: math.erf per element (below)
    "expm1": (1, np.expm1),
    "log1p": (1, np.log1p),
    "pow": (2, np.power),
    # √x for x >= 0 where the last bits do not matter to exactness (never for a value
    # that must be exactly 0 elsewhere than at x = 0).  NumPy and the CPU target: sqrt;
    # CUDA float: PTX's sqrt.approx.f32 (within 3 ulp, subnormals included, 0 at 0: no
    # IEEE square root's fix-up and slow path); CUDA double: sqrt
    "sqrt_fast": (1, np.sqrt),
    # 1/√x.  NumPy: 1/np.sqrt(x), correctly rounded twice; the CPU target the same; CUDA
    # its rsqrt (within 2 ulp in float, 1 ulp in double: no IEEE division)
    "rsqrt": (1, lambda x: np.reciprocal(np.sqrt(x))),
    # θ = atan2(s, c) ∈ [0, π] for s >= 0, given n ≈ 1/√(s² + c²) (n > 0, only a hint:
    # NumPy ignores it and is exact).  The generated code evaluates a polynomial of
    # (s·n, c·n) with a proved error bound, no atan2 and no division
    # (codegen/theta_poly.py); t = 0·P = 0 exactly where s = 0.
    "acos_sc": (3, lambda s, c, n: np.arctan2(s, c)),
    # atan2(y, x) ∈ [-π/2, π/2] for x >= 0, given n ≈ 1/√(x² + y²): the arcsine
    # y/√(x² + y²) by the same polynomial (codegen/theta_poly.py)
    "asin_sc": (3, lambda y, x, n: np.arctan2(y, x)),
}

_erf = np.frompyfunc(math.erf, 1, 1)


class NumpyMath:
    """Evaluates a per-entry formula on NumPy arrays (or scalars) of ``dtype``."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.dt = self.dtype.type
        self.pi = self.dt(math.pi)

    def const(self, x: float):
        """A constant of the formula, rounded once to the working dtype."""
        return self.dt(x)

    def where(self, cond, a, b):
        return np.where(cond, a, b).astype(self.dtype, copy=False)

    def tiny(self):
        """The smallest normal number of the working dtype."""
        return self.dt(np.finfo(self.dtype).tiny)

    def max0(self, x):
        """max(x, 0), written so that every target evaluates it the same way."""
        return self.where(x > self.dt(0), x, self.dt(0))

    def max(self, a, b):
        return self.where(a > b, a, b)

    def min(self, a, b):
        return self.where(a < b, a, b)

    def quadrature(self, points, weights, body):
        """Σ_k weights[k]·body(points[k]), added in the order k = 0, 1, … from zero.

        ``points`` and ``weights`` are constant tables (Python floats, each rounded once to
        the working dtype); ``body(x)`` is a formula of the node ``x`` (it may use values
        from outside, and may itself call :meth:`quadrature`: a nested sum).  A body that
        returns a tuple gives a tuple of sums, accumulated in the same pass.
        """
        if len(points) != len(weights) or not len(points):
            raise ValueError("a quadrature needs as many weights as points, at least one")
        acc = None
        for x, w in zip(points, weights):
            out = body(self.const(x))
            terms = out if isinstance(out, tuple) else (out,)
            if acc is None:
                acc = [self.dt(0)] * len(terms)
            acc = [a + self.const(w) * t for a, t in zip(acc, terms)]
        return tuple(acc) if isinstance(out, tuple) else acc[0]

    def call(self, name: str, *args):
        arity, fn = FUNCTIONS[name]
        assert len(args) == arity, (name, args)
        if name == "erf":
            x = np.asarray(args[0])
            return _erf(x).astype(self.dtype) if x.ndim else self.dt(math.erf(float(x)))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return fn(*args)

    def __getattr__(self, name):
        if name in FUNCTIONS:
            return lambda *args: self.call(name, *args)
        raise AttributeError(f"the math namespace has no function '{name}'")
