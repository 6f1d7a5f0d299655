"""What every layer kind is: its DSL syntax, its geometry, its demand and its cost.

A layer kind is ONE class (registered in :mod:`infinet.layers`).  The class holds

* its syntax: ``keyword``, whether it takes a ``window`` size, its ``options`` (each an
  :class:`Option` with a default and a check) and ``flags``;
* how it is built from the parsed statement (:meth:`Layer.build`, driven by the options);
* its output shape (:meth:`Layer.output_shape`), the offsets it needs from its inputs
  (:meth:`Layer.demand`), its cost per pair (:meth:`Layer.cost`);
* how it acts on offset planes (``locality``: plane-local with a stride, plane-mixing,
  a readout, flat only) and whether it needs its input's self-variances
  (``variance_stat``);
* for layers that act elementwise given the self-variances (activations and
  normalisations), its per-entry math, written once over the math namespace of
  :mod:`infinet.layers.mathns`: NumPy evaluates it (the reference executor) and the code
  generator prints it as C for the CPU and CUDA targets.

The passes (shapes, demand, cost, the executors, the code generator) ask the layer; none
of them lists layer kinds.  Each executor implements the *families* of operations
(``family``: input, affine, window, pool, readout, elementwise, sum) and refuses a family
it does not know with an error naming the layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Optional

from ..errors import NetError, SourcePos

#: The most spatial axes an input may have (sequences, images, volumes).
MAX_SPATIAL_AXES = 3

AxisOffsets = tuple[int, ...]
#: None: nothing of a state is needed; (): a flat state; else sorted offsets per axis.
Demand = Optional[tuple[AxisOffsets, ...]]


# -- shapes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """The shape of one input's features after a layer.

    ``spatial`` is () for flat vectors, (L,), (H, W) or (D, H, W).  ``channels`` is the
    input's channel (or feature) count; hidden layers are infinitely wide (None).
    """

    spatial: tuple[int, ...]
    channels: int | None = None

    @property
    def is_flat(self) -> bool:
        return not self.spatial

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def positions(self) -> int:
        return math.prod(self.spatial)

    def __str__(self) -> str:
        width = "inf" if self.channels is None else str(self.channels)
        if self.is_flat:
            return f"flat x{width}" if self.channels is None else f"{width} features"
        return "x".join(str(n) for n in self.spatial) + "x" + width


def describe_spatial(shape: Shape) -> str:
    names = {1: "a sequence", 2: "an image", 3: "a volume"}
    return f"{names.get(shape.rank, 'a spatial input')} ({'x'.join(map(str, shape.spatial))})"


def conv_geometry(n: int, q: int, stride: int, pad: str) -> tuple[int, int]:
    """Output size and low-side padding of a conv/pool along one axis.

    SAME: out = ceil(n/s), total padding max((out-1)s + q - n, 0), floor half low.
    VALID: out = floor((n-q)/s) + 1, no padding.  CIRCULAR: wrap-pads floor((q-1)/2)
    low and the rest high, then acts as VALID on n + q - 1 entries.
    """
    if pad == "same":
        out = -(-n // stride)
        total = max((out - 1) * stride + q - n, 0)
        return out, total // 2
    if pad == "valid":
        return (n - q) // stride + 1, 0
    if pad == "circular":
        return (n - 1) // stride + 1, (q - 1) // 2
    raise ValueError(pad)


# -- demand helpers ------------------------------------------------------------------------

def all_offsets(n: int) -> AxisOffsets:
    return tuple(range(-(n - 1), n))


def zero_plane(shape: Shape) -> Demand:
    """Offset 0 on every axis (the diagonal p = p'), or () for a flat state."""
    return tuple((0,) for _ in shape.spatial)


def union(a: Demand, b: Demand) -> Demand:
    """Smallest product set holding both (per-axis union)."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(tuple(sorted(set(x) | set(y))) for x, y in zip(a, b))


def pairs_per_axis(n: int, offsets: AxisOffsets) -> int:
    """How many (p, p + d) pairs with both ends inside an axis of size n."""
    return sum(n - abs(d) for d in offsets if abs(d) < n)


def entries(shape: Shape, demand: Demand) -> int:
    """Covariance entries per pair of inputs that a state with this demand stores."""
    if demand is None:
        return 0
    count = 1
    for n, offsets in zip(shape.spatial, demand):
        count *= pairs_per_axis(n, offsets)
    return count


@dataclass(frozen=True)
class StateInfo:
    """What the analysis knows of a state besides its shape."""

    shape: Shape
    #: jointly Gaussian features (given the inputs): after a dense/conv, kept by linear maps
    gaussian: bool = True
    #: features identically distributed across channels (a nonlinearity needs it): not
    #: after flatten, until a dense layer
    iid: bool = True


# -- cost ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerCost:
    """Per pair (pair pass) or per input (self pass)."""

    entries: int           # entries of the output state
    flops: int             # arithmetic (a multiply-add counts 2)
    transcendentals: int   # sqrt / atan2 / exp ... calls
    bytes: int             # output state bytes at float64 (Σ, and Θ on the pair pass)

    def __add__(self, other: "LayerCost") -> "LayerCost":
        return LayerCost(self.entries + other.entries, self.flops + other.flops,
                         self.transcendentals + other.transcendentals, self.bytes + other.bytes)


ZERO_COST = LayerCost(0, 0, 0, 0)


# -- options -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One ``key=value`` option of a layer: its name, default and how its value is read.

    ``read(value, ctx)`` turns the parsed value (an AST expression, string or list) into
    the layer's field value, raising :class:`NetError` at ``value.pos`` when it does not
    fit.  ``ctx`` evaluates expressions (``ctx.number(expr)``).
    """

    name: str
    default: Any
    help: str = ""
    #: the dataclass field it sets (defaults to ``name``)
    field: str = ""

    @property
    def target(self) -> str:
        return self.field or self.name

    def read(self, value, ctx):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def show(self, value) -> str:
        return f"{self.name}={_fmt(value)}"


class Real(Option):
    """A finite real number."""

    def read(self, value, ctx):
        return float(ctx.number(value))


@dataclass(frozen=True)
class Std(Option):
    """A standard deviation (W, b): >= 0, with a finite square."""

    def read(self, value, ctx):
        x = float(ctx.number(value))
        if x < 0:
            raise NetError(f"{self.name} is a standard deviation and must be >= 0, got {x:g}",
                           value.pos)
        if not math.isfinite(x * x):
            raise NetError(f"{self.name}={x:g} is too large: its square (the variance) "
                           f"overflows a double", value.pos)
        return x


@dataclass(frozen=True)
class Whole(Option):
    """A whole number >= ``minimum``."""

    minimum: int = 0

    def read(self, value, ctx):
        return ctx.whole(value, f"a {self.name}", self.minimum)

    def show(self, value) -> str:
        return f"{self.name}={value}"


@dataclass(frozen=True)
class Choice(Option):
    """One of a few names (``pad=same``)."""

    choices: tuple[str, ...] = ()

    def read(self, value, ctx):
        name = getattr(value, "name", None)
        if name not in self.choices:
            raise NetError(f"{self.name} must be one of {', '.join(self.choices)}", value.pos)
        return name

    def show(self, value) -> str:
        return f"{self.name}={value}"


@dataclass(frozen=True)
class Scale(Option):
    """A real number whose square is finite (``a``, ``b`` of ``a·f(b·x)``), at least
    ``minimum`` where one is given."""

    minimum: Optional[float] = None

    def read(self, value, ctx):
        x = float(ctx.number(value))
        if self.minimum is not None and x < self.minimum:
            raise NetError(f"{self.name} must be at least {self.minimum:g}, got {x:g}", value.pos)
        if not math.isfinite(x * x):
            raise NetError(f"{self.name}={x:g} is too large: its square overflows a double",
                           value.pos)
        return x


@dataclass(frozen=True)
class WholeUpTo(Whole):
    """A whole number from ``minimum`` to ``maximum``."""

    maximum: int = 0

    def read(self, value, ctx):
        n = super().read(value, ctx)
        if n > self.maximum:
            raise NetError(f"a {self.name} must be at most {self.maximum}, got {n}", value.pos)
        return n


@dataclass(frozen=True)
class RealList(Option):
    """A bracketed list of real numbers (``coef=[0.1, 1, 0.5]``), read as a tuple."""

    min_items: int = 1
    max_items: int = 64

    def read(self, value, ctx):
        items = getattr(value, "items", None)
        if items is None:
            raise NetError(f"{self.name} must be a list of numbers, e.g. {self.name}=[0.1, 1, 0.5]",
                           value.pos)
        if not self.min_items <= len(items) <= self.max_items:
            raise NetError(f"{self.name} takes {self.min_items} to {self.max_items} numbers, "
                           f"got {len(items)}", value.pos)
        out = []
        for item in items:
            x = float(ctx.number(item))
            if not math.isfinite(x):
                raise NetError(f"{self.name}: {x:g} is not a finite number", item.pos)
            out.append(x)
        return tuple(out)


@dataclass(frozen=True)
class Text(Option):
    """A quoted string (``fn="x * tanh(x)"``).

    ``read`` hands the text to :meth:`convert` with ``at(i)``, the source position of the
    text's i-th character, so a subclass that parses the text reports its errors at the
    character responsible.  The base class keeps the text as it is.
    """

    def read(self, value, ctx):
        text = getattr(value, "value", None)
        if not isinstance(text, str):
            raise NetError(f'{self.name} must be a quoted string, e.g. {self.name}="..."',
                           value.pos)
        pos = value.pos

        def at(i: int) -> SourcePos:
            return SourcePos(pos.filename, pos.line, pos.column + 1 + i, pos.source_line)
        return self.convert(text, at, ctx)

    def convert(self, text: str, at, ctx):
        return text

    def show(self, value) -> str:
        return f'{self.name}="{value}"'


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (tuple, list)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return str(x)


# -- the layer base class ------------------------------------------------------------------

#: ``window``: the layer takes no size / needs one (``conv 3x3``, ``conv 5``)
NO_WINDOW, WINDOW = "none", "required"


@dataclass(frozen=True)
class Layer:
    """A configured layer of a network (one node of the IR graph).

    Subclasses are frozen dataclasses whose fields are the resolved option values; the
    class attributes below describe the kind.  ``pos`` is where the layer was written.
    """

    pos: SourcePos

    # -- syntax ---------------------------------------------------------------------------
    keyword: ClassVar[str] = ""
    window: ClassVar[str] = NO_WINDOW
    options: ClassVar[tuple[Option, ...]] = ()
    flags: ClassVar[tuple[str, ...]] = ()
    #: one line for tables and `infinet explain`
    summary: ClassVar[str] = ""
    #: option settings the property tests draw (the defaults are always drawn too)
    examples: ClassVar[tuple[str, ...]] = ()

    # -- semantics ------------------------------------------------------------------------
    #: the family of operations an executor implements for it
    family: ClassVar[str] = ""
    #: "plane": output plane D reads input plane(s) stride·D (conv, elementwise, sum);
    #: "mixing": reads arbitrary planes of its input (pooling, circular conv);
    #: "readout": spatial state -> one number per pair (gap, flatten);
    #: "flat": only on flat states (dense); "input": the network's input
    locality: ClassVar[str] = "plane"
    #: the self-variance statistic of its input it needs: None, "position" (v[p])
    variance_stat: ClassVar[Optional[str]] = None
    #: the output is no longer Gaussian (a nonlinearity)
    nonlinear: ClassVar[bool] = False
    #: it has weights of its own (dense, conv): its Σ' is added to Θ' unless fixed
    has_weights: ClassVar[bool] = False
    #: how many inputs it reads (None: any number >= 2, the sum of branches)
    arity: ClassVar[Optional[int]] = 1
    #: its output features are not identically distributed (flatten)
    mixes_features: ClassVar[bool] = False

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, pos: SourcePos, size, values: dict, flags: set, ctx) -> "Layer":
        """The layer from its checked option values (defaults filled in) and flags."""
        kwargs = {opt.target: values[opt.name] for opt in cls.options}
        kwargs.update({f: (f in flags) for f in cls.flags})
        if cls.window == WINDOW:
            kwargs["size"], kwargs["size_pos"] = tuple(size.dims), size.pos
        return cls(pos, **kwargs)

    @property
    def trains(self) -> bool:
        """Adds its own Σ' to Θ' (a layer with weights that is not ``fixed``)."""
        return self.has_weights and not getattr(self, "fixed", False)

    def describe(self) -> str:
        """The layer as it would be written (resolved values)."""
        parts = [self.keyword]
        size = getattr(self, "size", None)
        if size:
            parts.append("x".join(map(str, size)))
        for opt in self.options:
            value = getattr(self, opt.target)
            if opt.name in self.shown_options():
                parts.append(opt.show(value))
        parts += [f for f in self.flags if getattr(self, f)]
        return " ".join(parts)

    def shown_options(self) -> tuple[str, ...]:
        """Options ``describe`` prints (default: all)."""
        return tuple(opt.name for opt in self.options)

    # -- analysis -------------------------------------------------------------------------
    def output_shape(self, inputs: list[Shape]) -> Shape:
        """The output shape; raise :class:`NetError` at ``self.pos`` if an input does not fit."""
        return inputs[0]

    def infer(self, inputs: list[StateInfo]) -> StateInfo:
        """The output's shape and flags; raise :class:`NetError` where an input does not fit."""
        shape = self.output_shape([s.shape for s in inputs])
        if self.nonlinear and not all(s.iid for s in inputs):
            raise NetError(f"{self.keyword} right after flatten: the flattened features are not "
                           "identically distributed; put a dense layer in between", self.pos)
        gaussian = self.has_weights or (not self.nonlinear and all(s.gaussian for s in inputs))
        iid = self.has_weights or (all(s.iid for s in inputs) and not self.mixes_features)
        return StateInfo(shape, gaussian, iid)

    def plane_stride(self, rank: int) -> tuple[int, ...]:
        """Plane-local layers: output plane D reads input plane stride·D (per axis)."""
        return (1,) * rank

    def demand(self, needed: Demand, inputs: list[Shape], out: Shape) -> list[Demand]:
        """The offsets needed of each input, given those needed of the output."""
        return [needed] * len(inputs)

    def cost(self, inputs: list[Shape], out: Shape, demand_in: list[Demand],
             demand_out: Demand, with_ntk: bool) -> LayerCost:
        n_out = entries(out, demand_out)
        return LayerCost(n_out, 0, 0, n_out * 8 * (2 if with_ntk else 1))

    def fields_summary(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pos"}


class Elementwise(Layer):
    """A layer that maps every covariance entry on its own, given the self-variances.

    Subclasses write :meth:`entry` once over the math namespace ``m``
    (:mod:`infinet.layers.mathns`): ``K`` is Σ[p, p'], ``v1``, ``v2`` the statistic
    ``variance_stat`` of each input at p and p'.  It returns (Σ', Σ̇): the new covariance
    and the factor Θ is multiplied by (Θ' = Σ̇·Θ).  On the self pass (x = x') the same
    function runs with K = v1 = v2 = v, so both passes do the same operations.
    """

    family = "elementwise"
    locality = "plane"
    variance_stat = "position"
    nonlinear = True
    #: flops and transcendental calls per entry (for the cost model)
    flops_per_entry: ClassVar[int] = 10
    transcendentals_per_entry: ClassVar[int] = 1

    #: how many values :meth:`features` derives from one input's variance
    n_features: ClassVar[int] = 0

    def features(self, m, v) -> tuple:
        """Values derived from one input's variance v alone (e.g. 1/√v), as a tuple of
        ``n_features``: computed once per input and stored in the variance tables beside v
        by the generated-code backends, so a pair pays no per-entry square root or
        division for them.  :meth:`entry` gets them as ``f1``, ``f2`` (and computes them
        itself when called without).  Only correctly rounded operations (+ − × / √), so
        that every target gets the same bits as NumPy."""
        return ()

    def entry(self, m, K, v1, v2):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError(type(self).__name__)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return inputs[0]

    def cost(self, inputs, out, demand_in, demand_out, with_ntk):
        n = entries(out, demand_out)
        return LayerCost(n, self.flops_per_entry * n, self.transcendentals_per_entry * n,
                         n * 8 * (2 if with_ntk else 1))
