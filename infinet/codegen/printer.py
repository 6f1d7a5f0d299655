"""Printing per-entry layer formulas as C: the other implementation of the math namespace.

:class:`CPrinter` implements the namespace of :mod:`infinet.layers.mathns` by recording
every operation, in order, as one C statement (single assignment, ``const real eN =
…;``), so the printed function does exactly what NumPy does when it evaluates the same
formula — the same operations in the same order, each rounded to ``real``.  Constants
are literals that read back as the exact double the formula computed.  A function the
printer does not know is an error naming it.  A :meth:`~CPrinter.quadrature` becomes one
``for`` loop over a ``static constexpr double`` table of its nodes and weights (declared at
the top of the function, once per distinct table; each read rounded to ``real``), its body
printed once inside the loop and its sums accumulated in the order NumPy adds them.

The target prelude (templates/math.j2) defines ``inf_<name>`` for float and double.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from ..errors import InfinetError
from ..layers.mathns import FUNCTIONS


def lit(x: float) -> str:
    """A C literal that reads back as exactly the double ``x``."""
    x = float(x)
    if math.isinf(x) or math.isnan(x):
        raise InfinetError(f"a non-finite constant ({x}) cannot be printed")
    text = repr(x)
    if "e" not in text and "." not in text:
        text += ".0"
    return text


class CValue:
    """A value of a printed formula: the name of a C variable (or a literal)."""

    __array_priority__ = 1000     # NumPy scalars defer to our operators

    def __init__(self, printer: "CPrinter", text: str, ctype: str = "real"):
        self.p, self.text, self.ctype = printer, text, ctype

    def _bin(self, op: str, other, reverse: bool = False, ctype: str = "real") -> "CValue":
        other = self.p.value(other)
        a, b = (other, self) if reverse else (self, other)
        return self.p.emit(f"{a.text} {op} {b.text}", ctype)

    def __add__(self, o): return self._bin("+", o)
    def __radd__(self, o): return self._bin("+", o, True)
    def __sub__(self, o): return self._bin("-", o)
    def __rsub__(self, o): return self._bin("-", o, True)
    def __mul__(self, o): return self._bin("*", o)
    def __rmul__(self, o): return self._bin("*", o, True)
    def __truediv__(self, o): return self._bin("/", o)
    def __rtruediv__(self, o): return self._bin("/", o, True)
    def __neg__(self): return self.p.emit(f"-{self.text}")
    def __lt__(self, o): return self._bin("<", o, ctype="bool")
    def __le__(self, o): return self._bin("<=", o, ctype="bool")
    def __gt__(self, o): return self._bin(">", o, ctype="bool")
    def __ge__(self, o): return self._bin(">=", o, ctype="bool")
    def __eq__(self, o): return self._bin("==", o, ctype="bool")  # type: ignore[override]
    def __ne__(self, o): return self._bin("!=", o, ctype="bool")  # type: ignore[override]
    __hash__ = None  # type: ignore[assignment]

    def __bool__(self):
        raise InfinetError("a printed formula cannot branch on a value (use m.where)")


class CPrinter:
    """Records a formula as C statements (see the module docstring)."""

    def __init__(self):
        self.lines: list[str] = []
        self.count = 0
        self.loops = 0
        #: (points, weights) -> table name; their declarations, in order
        self.tables: dict[tuple, str] = {}
        self.table_lines: list[str] = []
        self.pi = self.const(math.pi)

    def emit(self, expr: str, ctype: str = "real") -> CValue:
        name = f"e{self.count}"
        self.count += 1
        self.lines.append(f"const {ctype} {name} = {expr};")
        return CValue(self, name, ctype)

    def value(self, x) -> CValue:
        if isinstance(x, CValue):
            return x
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return self.const(float(x))
        raise InfinetError(f"a printed formula got a {type(x).__name__} ({x!r})")

    def const(self, x: float) -> CValue:
        return CValue(self, f"(real){lit(x)}")

    def tiny(self) -> CValue:
        return CValue(self, "inf_tiny((real)0)")

    def where(self, cond, a, b) -> CValue:
        cond, a, b = self.value(cond), self.value(a), self.value(b)
        return self.emit(f"{cond.text} ? {a.text} : {b.text}")

    def max0(self, x) -> CValue:
        return self.where(self.value(x) > self.const(0), x, self.const(0))

    def max(self, a, b) -> CValue:
        return self.where(self.value(a) > b, a, b)

    def min(self, a, b) -> CValue:
        return self.where(self.value(a) < b, a, b)

    def table(self, points, weights) -> str:
        """The name of a static table of nodes and weights (``NAME_x``, ``NAME_w``)."""
        key = (tuple(float(x) for x in points), tuple(float(w) for w in weights))
        if key not in self.tables:
            # named by its content: a function-scope static of an inline function is one
            # symbol per process on some toolchains (GCC's STB_GNU_UNIQUE, across modules
            # loaded into one host process), so equal names must mean equal tables
            digest = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
            name = f"inf_q{len(key[0])}_{digest}"
            self.tables[key] = name
            n = len(key[0])
            for suffix, values in (("x", key[0]), ("w", key[1])):
                # double (a weight may lie below float's range, which NVRTC refuses in a
                # constexpr float); each read rounds it to real, as NumpyMath.const does
                self.table_lines.append(f"static constexpr double {name}_{suffix}[{n}] = {{"
                                        f"{', '.join(lit(v) for v in values)}}};")
        return self.tables[key]

    def quadrature(self, points, weights, body):
        """Σ_k weights[k]·body(points[k]) as a loop (see NumpyMath.quadrature)."""
        if len(points) != len(weights) or not len(points):
            raise InfinetError("a quadrature needs as many weights as points, at least one")
        table = self.table(points, weights)
        q = f"q{self.loops}"
        self.loops += 1
        outer, self.lines = self.lines, []
        out = body(self.emit(f"(real){table}_x[{q}]"))
        terms = [self.value(t) for t in (out if isinstance(out, tuple) else (out,))]
        inner, self.lines = self.lines, outer
        accs = []
        for _ in terms:
            accs.append(f"e{self.count}")
            self.count += 1
        self.lines.append("real " + ", ".join(f"{a} = (real)0" for a in accs) + ";")
        self.lines.append(f"for (int {q} = 0; {q} < {len(points)}; ++{q}) {{")
        self.lines += [f"    {ln}" for ln in inner]
        if terms:
            self.lines.append(f"    const real e{self.count} = (real){table}_w[{q}];")
            weight = f"e{self.count}"
            self.count += 1
        self.lines += [f"    {a} = {a} + {weight} * {t.text};" for a, t in zip(accs, terms)]
        self.lines.append("}")
        values = tuple(CValue(self, a) for a in accs)
        return values if isinstance(out, tuple) else values[0]

    def call(self, name: str, *args) -> CValue:
        if name not in FUNCTIONS:
            raise InfinetError(f"the C printer has no function '{name}'")
        arity, _ = FUNCTIONS[name]
        if len(args) != arity:
            raise InfinetError(f"{name} takes {arity} argument(s), got {len(args)}")
        text = ", ".join(self.value(a).text for a in args)
        return self.emit(f"inf_{name}({text})")

    def __getattr__(self, name):
        if name in FUNCTIONS:
            return lambda *args: self.call(name, *args)
        raise AttributeError(f"the math namespace has no function '{name}'")


@dataclass(frozen=True)
class ElementwiseFunction:
    """A printed per-entry function: ``real NAME(real K, real v1, real v2[, real& dot])``."""

    name: str
    body: tuple[str, ...]
    returns: str
    factor: str | None          # the Θ factor's variable (None: Θ unchanged)
    uses_v: bool
    layer_text: str
    #: static tables of constants the body reads (quadrature nodes and weights)
    tables: tuple[str, ...] = ()
    #: the layer's per-input features of v (Elementwise.features): how many, and the
    #: body of ``void NAME_features(real v, real& f0, ...)`` with the returned values
    n_features: int = 0
    features_body: tuple[str, ...] = ()
    features_returns: tuple[str, ...] = ()

    @property
    def body_key(self) -> str:
        """Functions with the same text are printed once."""
        return "\n".join(self.tables + self.body + self.features_body) + \
            f"\nreturn {self.returns}; dot {self.factor}; features {self.features_returns}"

    @property
    def features_name(self) -> str:
        return f"{self.name}_features"

    def features_args(self, which: str) -> str:
        """The feature arguments of a call (C names ``f<which>_<k>``)."""
        return "".join(f", f{which}_{k}" for k in range(self.n_features))

    def definition(self) -> str:
        feats = "".join(f", real f1_{k}" for k in range(self.n_features)) + \
            "".join(f", real f2_{k}" for k in range(self.n_features))
        params = "real K, real v1, real v2" + feats + (", real& dot" if self.factor else "")
        lines = []
        if self.n_features:
            outs = ", ".join(f"real& f{k}" for k in range(self.n_features))
            lines += [f"// {self.layer_text}: its features of one input's variance v "
                      "(stored in the variance tables)", "template <typename real>",
                      f"INF_FN void {self.features_name}(real v, {outs})", "{"]
            lines += [f"    {ln}" for ln in self.features_body]
            lines += [f"    f{k} = {r};" for k, r in enumerate(self.features_returns)]
            lines += ["}"]
        lines += [f"// {self.layer_text}", "template <typename real>",
                  f"INF_FN real {self.name}({params})", "{", "    (void)v1; (void)v2;"]
        lines += [f"    {ln}" for ln in self.tables + self.body]
        if self.factor:
            lines.append(f"    dot = {self.factor};")
        lines += [f"    return {self.returns};", "}"]
        return "\n".join(lines)


def print_elementwise(layer, name: str) -> ElementwiseFunction:
    """The C function of an elementwise layer's ``entry`` formula."""
    nf = getattr(layer, "n_features", 0) if layer.variance_stat is not None else 0
    fbody: tuple[str, ...] = ()
    freturns: tuple[str, ...] = ()
    if nf:
        fp = CPrinter()
        feats = tuple(fp.value(f) for f in layer.features(fp, CValue(fp, "v")))
        if len(feats) != nf:
            raise InfinetError(f"{layer.keyword}: features() gave {len(feats)} values, "
                               f"n_features is {nf}")
        if fp.table_lines:
            raise InfinetError(f"{layer.keyword}: features() cannot use a quadrature")
        fbody, freturns = tuple(fp.lines), tuple(f.text for f in feats)
    p = CPrinter()
    K, v1, v2 = CValue(p, "K"), CValue(p, "v1"), CValue(p, "v2")
    if nf:
        f1 = tuple(CValue(p, f"f1_{k}") for k in range(nf))
        f2 = tuple(CValue(p, f"f2_{k}") for k in range(nf))
        new, factor = layer.entry(p, K, v1, v2, f1, f2)
    else:
        new, factor = layer.entry(p, K, v1, v2)
    new = p.value(new)
    factor = None if factor is None else p.value(factor)
    return ElementwiseFunction(name, tuple(p.lines), new.text,
                               None if factor is None else factor.text,
                               layer.variance_stat is not None,
                               f"{layer.describe()} (line {layer.pos.line})",
                               tuple(p.table_lines), nf, fbody, freturns)
