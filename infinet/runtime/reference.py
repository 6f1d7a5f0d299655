"""The NumPy reference executor: the readable definition of every layer.

A covariance *state* of a pair of inputs (x, x') is stored as an array
``S[b, i_1, ..., i_r]``: ``b`` runs over a batch of input pairs, and ``i_k`` indexes the
(p, p') position pairs spatial axis k keeps — exactly the pairs whose offset p' - p the
demand analysis asked for (:class:`AxisPairs`).  A flat state is ``S[b]``.

Every spatial operation acts on each axis separately, so a conv is "gather the taps
along the last axis, then along the one before": a filter tap a maps the output pair
(P, P') of an axis to the input pair (sP + a - pad, sP' + a - pad), or to a zero slot
where that falls in the padding.  Pooling maps (P, P') to (sP + a, sP' + a') for every
pair of window taps.  Readouts (flatten, gap) are sums over an axis's pairs.  The layers
that act entry by entry given the self-variances evaluate their own formula
(``Layer.entry``) with NumPy — the same formula the code generator prints.

Two passes use the same machinery:

* the *self pass*, once per input, computes Σ(x, x) where the nonlinearities need
  their input variances v(x)[p] (offset 0, plus what pooling needs), taking v from
  its own diagonal;
* the *pair pass* computes Σ(x, x') and Θ(x, x') for batches of pairs, with v(x) and
  v(x') read from the self pass's tables.

The network is a graph: a state may be read by several layers (a block's input) and a
sum reads several states.  Each layer reads its inputs in its own layout (the pairs its
output needs), so a state kept for several readers is restricted for each.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InfinetError
from ..ir.plan import NodePlan, Plan
from ..layers.base import Shape, conv_geometry
from ..layers.affine import affine_k
from ..layers.mathns import NumpyMath
from .executor import Executor


class AxisPairs:
    """The (h, h') position pairs one axis of a state keeps: h' = h + d, d in offsets."""

    def __init__(self, n: int, offsets: tuple[int, ...]):
        first = [h for d in offsets for h in range(max(0, -d), min(n, n - d))]
        second = [h + d for d in offsets for h in range(max(0, -d), min(n, n - d))]
        self.n = n
        self.offsets = tuple(offsets)
        self.first = np.asarray(first, dtype=np.intp)
        self.second = np.asarray(second, dtype=np.intp)
        self.count = len(first)
        self.index = np.full((n, n), -1, dtype=np.intp)
        self.index[self.first, self.second] = np.arange(self.count)

    def lookup(self, i: np.ndarray, j: np.ndarray, inside: np.ndarray) -> np.ndarray:
        """Pair indices of (i, j); ``count`` (the zero slot) where not ``inside``."""
        out = np.full(i.shape, self.count, dtype=np.intp)
        found = self.index[i[inside], j[inside]]
        assert (found >= 0).all(), "demand analysis missed a needed offset"
        out[inside] = found
        return out

    def pairs_of(self, other: "AxisPairs") -> np.ndarray:
        """Where each pair of ``other`` (a subset layout of the same axis) sits here."""
        return self.lookup(other.first, other.second, np.ones(other.count, bool))

    @property
    def diagonal(self) -> np.ndarray:
        d = self.index[np.arange(self.n), np.arange(self.n)]
        assert (d >= 0).all()
        return d


Layout = tuple[AxisPairs, ...]


def layout(shape: Shape, demand) -> Layout:
    return tuple(AxisPairs(n, offs) for n, offs in zip(shape.spatial, demand))


# -- per-axis maps ----------------------------------------------------------------------

@dataclass
class AxisMap:
    """out[..., k, ...] = weight * Σ_t in[..., taps[t, k], ...] along one axis."""

    taps: np.ndarray  # [ntaps, count_out] indices into the input pairs (count_in = zero)
    weight: float


def _window_positions(P: np.ndarray, n: int, q: int, stride: int, pad: str, tap: int):
    _, low = conv_geometry(n, q, stride, pad)
    i = stride * P + tap - low
    if pad == "circular":
        return i % n, np.ones(i.shape, bool)
    return np.clip(i, 0, n - 1), (i >= 0) & (i < n)


def conv_axis_map(src: AxisPairs, dst: AxisPairs, q: int, stride: int, pad: str) -> AxisMap:
    """Both positions move by the same tap a (weights are shared): A(S)."""
    taps = []
    for a in range(q):
        i, ok_i = _window_positions(dst.first, src.n, q, stride, pad, a)
        j, ok_j = _window_positions(dst.second, src.n, q, stride, pad, a)
        taps.append(src.lookup(i, j, ok_i & ok_j))
    return AxisMap(np.stack(taps), 1.0 / q)


def pool_axis_map(src: AxisPairs, dst: AxisPairs, w: int, stride: int, pad: str,
                  weight: float) -> AxisMap:
    """Every pair of window taps (a, a'): the covariance of two window sums."""
    taps = []
    for a in range(w):
        i, ok_i = _window_positions(dst.first, src.n, w, stride, pad, a)
        for a2 in range(w):
            j, ok_j = _window_positions(dst.second, src.n, w, stride, pad, a2)
            taps.append(src.lookup(i, j, ok_i & ok_j))
    return AxisMap(np.stack(taps), weight)


def apply_axis(S: np.ndarray, amap: AxisMap, axis: int) -> np.ndarray:
    zero = np.zeros(S.shape[:axis] + (1,) + S.shape[axis + 1:], S.dtype)
    padded = np.concatenate([S, zero], axis=axis)
    out = np.take(padded, amap.taps[0], axis=axis)
    for t in amap.taps[1:]:
        out += np.take(padded, t, axis=axis)
    out *= S.dtype.type(amap.weight)
    return out


def apply_maps(S: np.ndarray, maps: tuple[AxisMap, ...]) -> np.ndarray:
    for axis in range(len(maps), 0, -1):   # the last axis first (axis 0 is the batch)
        S = apply_axis(S, maps[axis - 1], axis)
    return S


def _restrict(S: np.ndarray, selections: tuple[np.ndarray | None, ...]) -> np.ndarray:
    """The sub-layout of a state (one index array per axis, None: the whole axis)."""
    for axis, sel in enumerate(selections, 1):
        if sel is not None:
            S = np.take(S, sel, axis=axis)
    return S


def _gather_positions(table: np.ndarray, rows: np.ndarray, pos: tuple[np.ndarray, ...]):
    """table[rows][:, pos_1[:, None, ...], pos_2[None, :, ...], ...] (table[rows] when flat)."""
    t = table[rows]
    if not pos:
        return t
    return t[(slice(None),) + np.ix_(*pos)]


# -- steps: what each node does, with its index maps precomputed -------------------------

@dataclass
class Step:
    node: NodePlan
    needed: bool                       # its output is needed on this pass
    maps: tuple[AxisMap, ...] = ()
    readout: tuple[np.ndarray, ...] = ()   # per axis: the pairs a readout sums (input layout)
    count: int = 1                         # how many pairs a readout averages
    first: tuple[np.ndarray, ...] = ()     # positions of x in each kept pair (per axis)
    second: tuple[np.ndarray, ...] = ()    # positions of x'
    restrict: list = field(default_factory=list)   # per input: selections into its layout
    record: tuple[np.ndarray, ...] | None = None   # self pass: where v sits in this state


class ReferenceExecutor(Executor):
    """Evaluates a plan with NumPy, in float64 or float32."""

    name = "numpy"

    def __init__(self, plan: Plan, dtype, ntk: bool = True):
        super().__init__(plan, dtype, ntk)
        self.math = NumpyMath(self.dtype)
        self.pair_steps = self._steps("pair")
        self.self_steps = self._steps("self")

    # -- step construction ---------------------------------------------------------------
    def _steps(self, which: str) -> list[Step]:
        nodes = self.plan.nodes
        demand = [n.pair_demand if which == "pair" else n.self_demand for n in nodes]
        layouts = [None if d is None else layout(n.shape, d) for n, d in zip(nodes, demand)]
        variance = set(self.plan.variance_states)
        steps = []
        for n in nodes:
            out = layouts[n.index]
            step = Step(n, needed=out is not None)
            if which == "self" and n.index in variance:
                step.record = tuple(p.diagonal for p in out)
            if out is None:
                steps.append(step)
                continue
            family = n.layer.family
            srcs = [layouts[j] for j in n.inputs]
            if family == "input":
                step.first = tuple(p.first for p in out)
                step.second = tuple(p.second for p in out)
            elif family == "conv":
                step.maps = tuple(conv_axis_map(s, d, q, n.layer.stride, n.layer.pad)
                                  for s, d, q in zip(srcs[0], out, n.layer.size))
            elif family == "pool":
                step.maps = tuple(pool_axis_map(s, d, w, st, n.layer.pad,
                                                n.layer.axis_weight(k))
                                  for k, (s, d, w, st) in enumerate(zip(
                                      srcs[0], out, n.layer.size, n.layer.strides())))
            elif family == "readout":
                own = layout(nodes[n.inputs[0]].shape, n.layer.demand(
                    (), [nodes[n.inputs[0]].shape], n.shape)[0])
                step.readout = tuple(s.pairs_of(o) for s, o in zip(srcs[0], own))
                step.count = int(np.prod([o.count for o in own]))
            elif family in ("elementwise", "sum"):
                step.first = tuple(p.first for p in out)
                step.second = tuple(p.second for p in out)
                step.restrict = [_selections(src, out) for src in srcs]
            elif family == "affine":
                pass
            else:
                raise InfinetError(f"the numpy backend has no implementation of layer "
                                   f"'{n.layer.keyword}' (family '{family}')")
            steps.append(step)
        return steps

    # -- the per-input pass -------------------------------------------------------------
    def _self_variances(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """v(x)[p] of every variance state: {state: [N, *spatial]}."""
        x = np.asarray(x, self.dtype)
        rows = np.arange(len(x))
        tables: dict[int, np.ndarray] = {}
        if not self.plan.variance_states:
            return tables
        states: dict[int, tuple] = {}
        last_needed = max(self.plan.variance_states)
        for step in self.self_steps:
            n = step.node
            if n.index > last_needed:
                break
            if not step.needed:
                continue
            states[n.index] = self._apply(step, states, x, x, rows, rows, tables, tables,
                                          with_t=False)
            if step.record is not None:
                tables[n.index] = _diagonal(states[n.index][0], step.record)
        return tables

    # -- the pair pass --------------------------------------------------------------------
    def _pairs(self, x1, x2, rows1, rows2, v1, v2):
        """NNGP and NTK of the pairs (x1[rows1[b]], x2[rows2[b]]): two arrays [B]."""
        states: dict[int, tuple] = {}
        remaining = {n.index: len(n.consumers) for n in self.plan.nodes}
        for step in self.pair_steps:
            if not step.needed:
                continue
            n = step.node
            states[n.index] = self._apply(step, states, x1, x2, rows1, rows2, v1, v2,
                                          with_t=self.ntk)
            for j in n.inputs:       # free what no later layer reads
                remaining[j] -= 1
                if remaining[j] == 0:
                    del states[j]
        K, T = states[self.plan.output.index]
        return K, (np.zeros_like(K) if T is None else T)

    # -- one node ---------------------------------------------------------------------------
    def _apply(self, step: Step, states, x1, x2, rows1, rows2, v1, v2, with_t: bool):
        """(K, T) of a node's output; T is None where Θ is zero (or not wanted)."""
        n = step.node
        layer = n.layer
        dt = self.dtype.type
        ins = [states[j] for j in n.inputs]
        family = layer.family
        if family == "input":
            return self._input(x1, x2, rows1, rows2, step), None
        if family in ("conv", "affine"):
            K, T = ins[0]
            if step.maps:
                K = apply_maps(K, step.maps)
                T = None if T is None else apply_maps(T, step.maps)
            w2, b2 = dt(layer.W ** 2), dt(layer.b ** 2)
            K = affine_k(w2, b2, K)
            T = None if T is None else w2 * T
            if with_t and layer.trains:
                T = K.copy() if T is None else T + K
            return K, T
        if family == "pool":
            K, T = ins[0]
            return apply_maps(K, step.maps), (None if T is None else apply_maps(T, step.maps))
        if family == "readout":
            K, T = ins[0]
            return (_readout(K, step.readout, step.count, dt),
                    None if T is None else _readout(T, step.readout, step.count, dt))
        if family == "sum":
            Ks = [_restrict(k, sel) for (k, _), sel in zip(ins, step.restrict)]
            Ts = [_restrict(t, sel) for (_, t), sel in zip(ins, step.restrict) if t is not None]
            K = Ks[0]
            for k in Ks[1:]:
                K = K + k
            T = None
            for t in Ts:
                T = t if T is None else T + t
            return K, T
        if family == "elementwise":
            K, T = ins[0]
            K = _restrict(K, step.restrict[0])
            T = None if T is None else _restrict(T, step.restrict[0])
            src = n.inputs[0]
            if layer.variance_stat is None:
                a = b = None
            elif layer.variance_stat == "mean" and step.first:
                # the mean of v over the positions, one number per input of the pair
                shape = (len(rows1),) + (1,) * len(step.first)
                a = v1[src][rows1].reshape(len(rows1), -1).mean(axis=1).reshape(shape)
                b = v2[src][rows2].reshape(len(rows2), -1).mean(axis=1).reshape(shape)
            else:
                a = _gather_positions(v1[src], rows1, step.first)
                b = _gather_positions(v2[src], rows2, step.second)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                K2, factor = layer.entry(self.math, K, a, b)
            K2 = np.asarray(K2, self.dtype)
            if K2.shape != K.shape:   # a constant formula (monomial degree=0): a scalar
                K2 = np.broadcast_to(K2, K.shape).copy()
            if T is not None and factor is not None:
                T = np.asarray(factor * T, self.dtype)
            return K2, T
        raise InfinetError(f"the numpy backend has no implementation of layer "
                           f"'{layer.keyword}' (family '{family}')")

    def _input(self, x1, x2, rows1, rows2, step: Step) -> np.ndarray:
        """Σ0[p, p'] = (1/C) Σ_c x[p, c] x'[p', c]."""
        a = _gather_positions(x1, rows1, step.first)
        b = _gather_positions(x2, rows2, step.second)
        # a per-entry sum along the contiguous channel axis: the same rounding for an entry
        # whatever the batch (einsum/BLAS would pick shape-dependent orders)
        return (a * b).sum(axis=-1) / self.dtype.type(a.shape[-1])


def _selections(src: Layout, out: Layout) -> tuple:
    """Per axis: None where the input's layout is the output's, else the indices."""
    return tuple(None if s.offsets == o.offsets else s.pairs_of(o) for s, o in zip(src, out))


def _readout(S: np.ndarray, entries: tuple[np.ndarray, ...], count: int, dt) -> np.ndarray:
    """Mean of the selected entries, summed along the last axis first.

    Every reduction here runs along the last (contiguous) axis, whose summation order
    does not depend on the batch size, so the pair pass on (x, x) reproduces the self
    pass bit for bit (a nonlinearity after the readout then sees Σ(x, x) = v exactly).
    """
    for axis in range(len(entries), 0, -1):
        # axis is always the last one left
        S = np.take(S, entries[axis - 1], axis=axis).sum(axis=-1)
    return S / dt(count)


def _diagonal(S: np.ndarray, diagonal: tuple[np.ndarray, ...]) -> np.ndarray:
    if not diagonal:
        return S
    return S[(slice(None),) + np.ix_(*diagonal)]
