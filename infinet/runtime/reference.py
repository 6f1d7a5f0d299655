"""The NumPy reference executor: the readable definition of every layer (SPEC §2).

A covariance *state* of a pair of inputs (x, x') is stored as an array
``S[b, i_h, i_w]``: ``b`` runs over a batch of input pairs, and ``i_h`` / ``i_w`` index
the (p, p') position pairs each spatial axis keeps — exactly the pairs whose offset
p' - p the demand analysis asked for (:class:`AxisPairs`).  A flat state is ``S[b]``.

Every spatial operation acts on each axis separately, so a conv is "gather the taps
along w, then along h": a filter tap a maps the output pair (P, P') of an axis to the
input pair (sP + a - pad, sP' + a - pad), or to a zero slot where that falls in the
padding.  Pooling maps (P, P') to (sP + a, sP' + a') for every pair of window taps.
Readouts (flatten, gap) are weighted sums over an axis's pairs.

Two passes use the same machinery:

* the *self pass*, once per input, computes Σ(x, x) where the nonlinearities need
  their input variances v(x)[p] (offset 0, plus what pooling needs), taking v from
  its own diagonal;
* the *pair pass* computes Σ(x, x') and Θ(x, x') for batches of pairs, with v(x) and
  v(x') read from the self pass's tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir.demand import Demand
from ..ir.layers import (Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Input, Shape,
                         conv_geometry)
from ..ir.plan import Plan


class AxisPairs:
    """The (h, h') position pairs one axis of a state keeps: h' = h + d, d in offsets."""

    def __init__(self, n: int, offsets: tuple[int, ...]):
        first = [h for d in offsets for h in range(max(0, -d), min(n, n - d))]
        second = [h + d for d in offsets for h in range(max(0, -d), min(n, n - d))]
        self.n = n
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

    @property
    def diagonal(self) -> np.ndarray:
        d = self.index[np.arange(self.n), np.arange(self.n)]
        assert (d >= 0).all()
        return d


def layout(shape: Shape, demand: Demand) -> tuple[AxisPairs, ...]:
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
    """Both positions move by the same tap a (weights are shared): SPEC §2, A(S)."""
    taps = []
    for a in range(q):
        i, ok_i = _window_positions(dst.first, src.n, q, stride, pad, a)
        j, ok_j = _window_positions(dst.second, src.n, q, stride, pad, a)
        taps.append(src.lookup(i, j, ok_i & ok_j))
    return AxisMap(np.stack(taps), 1.0 / q)


def pool_axis_map(src: AxisPairs, dst: AxisPairs, w: int, stride: int, pad: str) -> AxisMap:
    """Every pair of window taps (a, a'): the covariance of two window means."""
    taps = []
    for a in range(w):
        i, ok_i = _window_positions(dst.first, src.n, w, stride, pad, a)
        for a2 in range(w):
            j, ok_j = _window_positions(dst.second, src.n, w, stride, pad, a2)
            taps.append(src.lookup(i, j, ok_i & ok_j))
    return AxisMap(np.stack(taps), 1.0 / (w * w))


def apply_axis(S: np.ndarray, amap: AxisMap, axis: int) -> np.ndarray:
    zero = np.zeros(S.shape[:axis] + (1,) + S.shape[axis + 1:], S.dtype)
    padded = np.concatenate([S, zero], axis=axis)
    out = np.take(padded, amap.taps[0], axis=axis)
    for t in amap.taps[1:]:
        out += np.take(padded, t, axis=axis)
    out *= S.dtype.type(amap.weight)
    return out


def apply_maps(S: np.ndarray, maps: tuple[AxisMap, ...]) -> np.ndarray:
    for axis in range(len(maps), 0, -1):   # w first, then h (axis 0 is the batch)
        S = apply_axis(S, maps[axis - 1], axis)
    return S


def readout_entries(pairs: AxisPairs, kind: str) -> np.ndarray:
    """The pairs of an axis that a readout averages: all of them (gap) or p = p' (flatten)."""
    return np.arange(pairs.count) if kind == "gap" else pairs.diagonal


# -- activations (NT's arctan2 forms, SPEC §2) ------------------------------------------

def abrelu(K, v1, v2, T, a: float, b: float):
    """Σ' = (b-a)²/(2π)·s + ((a²+b²)/2 - (b-a)²θ/(2π))·Σ, Θ' = Σ̇·Θ (relu: a=0, b=1)."""
    dt = K.dtype.type
    s = np.sqrt(np.maximum(v1 * v2 - K * K, dt(0)))
    theta = np.arctan2(s, K)
    theta = np.where((s == 0) & (K == 0), dt(math.pi / 2), theta)  # NT's fill value
    factor = dt((a - b) ** 2 / (2 * math.pi))
    dot_sigma = dt((a * a + b * b) / 2) - factor * theta
    return factor * s + dot_sigma * K, (None if T is None else dot_sigma * T)


def erf(K, v1, v2, T):
    """Σ' = (2/π)·arcsin(2Σ/√((1+2v)(1+2v'))), Θ' = Θ·(4/π)/√((1+2v)(1+2v') - 4Σ²)."""
    dt = K.dtype.type
    prod = (dt(1) + dt(2) * v1) * (dt(1) + dt(2) * v2)
    root = np.sqrt(np.maximum(prod - dt(4) * K * K, dt(0)))
    new = dt(2 / math.pi) * np.arctan2(dt(2) * K, root)
    return new, (None if T is None else T * (dt(4 / math.pi) / root))


def activate(layer: Activation, K, v1, v2, T):
    if layer.fn == "abrelu":
        return abrelu(K, v1, v2, T, layer.a, layer.b)
    if layer.fn == "erf":
        return erf(K, v1, v2, T)
    return K, T  # identity


# -- steps ------------------------------------------------------------------------------

@dataclass
class Step:
    index: int
    layer: object
    maps: tuple[AxisMap, ...] = ()
    readout: tuple[np.ndarray, ...] = ()   # per axis: the pairs a readout averages
    first: tuple[np.ndarray, ...] = ()     # positions of x in each kept pair (per axis)
    second: tuple[np.ndarray, ...] = ()    # positions of x'
    diagonal: tuple[np.ndarray, ...] = ()  # self pass: where v sits in the input state
    output_needed: bool = True


def build_steps(plan: Plan, which: str) -> list[Step]:
    """Per-layer gather maps for the pair pass (``which='pair'``) or the self pass."""
    demands = [lp.pair_demand if which == "pair" else lp.self_demand for lp in plan.layers]
    layouts = [None if d is None else layout(lp.shape, d) for lp, d in zip(plan.layers, demands)]
    steps = []
    for lp in plan.layers:
        i, layer = lp.index, lp.layer
        out = layouts[i]
        src = layouts[i - 1] if i else None
        step = Step(i, layer, output_needed=out is not None)
        if out is None:
            # The self pass still reads the variances at the input of a last nonlinearity.
            if which == "self" and isinstance(layer, Activation) and layer.nonlinear:
                step.diagonal = tuple(p.diagonal for p in src)
                steps.append(step)
            break
        if isinstance(layer, Input):
            step.first = tuple(p.first for p in out)
            step.second = tuple(p.second for p in out)
        elif isinstance(layer, Conv):
            step.maps = tuple(conv_axis_map(s, d, q, layer.stride, layer.pad)
                              for s, d, q in zip(src, out, layer.size))
        elif isinstance(layer, AvgPool):
            step.maps = tuple(pool_axis_map(s, d, w, st, layer.pad)
                              for s, d, w, st in zip(src, out, layer.window, layer.stride))
        elif isinstance(layer, (GlobalAvgPool, Flatten)):
            step.readout = tuple(readout_entries(p, layer.kind) for p in src)
        elif isinstance(layer, Activation):
            step.first = tuple(p.first for p in src)
            step.second = tuple(p.second for p in src)
            if which == "self" and layer.nonlinear:
                step.diagonal = tuple(p.diagonal for p in src)
        steps.append(step)
    return steps


def _gather_positions(table: np.ndarray, rows: np.ndarray, pos: tuple[np.ndarray, ...]):
    """table[rows][:, pos_h[:, None], pos_w[None, :]] (or table[rows] when flat)."""
    if not pos:
        return table[rows]
    if len(pos) == 1:
        return table[rows][:, pos[0]]
    return table[rows][:, pos[0][:, None], pos[1][None, :]]


class ReferenceExecutor:
    """Evaluates a plan with NumPy, in float64 or float32."""

    name = "numpy"

    def __init__(self, plan: Plan, dtype: np.dtype):
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.pair_steps = build_steps(plan, "pair")
        self.self_steps = build_steps(plan, "self")
        self.activations = plan.activation_indices

    # the per-input pass -------------------------------------------------------------
    def self_variances(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """v(x)[p] at the input of every nonlinearity: {layer index: [N, *spatial]}."""
        x = np.asarray(x, self.dtype)
        rows = np.arange(len(x))
        tables: dict[int, np.ndarray] = {}
        S = None
        for step in self.self_steps:
            layer = step.layer
            if isinstance(layer, Input):
                S = self._input(x, x, rows, rows, step)
            elif isinstance(layer, Activation):
                if not layer.nonlinear:
                    continue
                v = S if not step.diagonal else _take_diagonal(S, step.diagonal)
                tables[step.index] = v
                if not step.output_needed:
                    break
                v1 = _gather_positions(v, rows, step.first)
                v2 = _gather_positions(v, rows, step.second)
                S, _ = activate(layer, S, v1, v2, None)
            else:
                S, _ = self._linear(step, S, None)
        return tables

    # the pair pass --------------------------------------------------------------------
    def pairs(self, x1, x2, rows1, rows2, v1, v2):
        """NNGP and NTK of the pairs (x1[rows1[b]], x2[rows2[b]]): two arrays [B]."""
        K = T = None
        for step in self.pair_steps:
            layer = step.layer
            if isinstance(layer, Input):
                K = self._input(x1, x2, rows1, rows2, step)
            elif isinstance(layer, Activation):
                if not layer.nonlinear:
                    continue
                a = _gather_positions(v1[step.index], rows1, step.first)
                b = _gather_positions(v2[step.index], rows2, step.second)
                K, T = activate(layer, K, a, b, T)
            else:
                K, T = self._linear(step, K, T, trains=self.plan.layers[step.index].trains_ntk)
        if T is None:
            T = np.zeros_like(K)
        return K, T

    # shared pieces ----------------------------------------------------------------------
    def _input(self, x1, x2, rows1, rows2, step: Step) -> np.ndarray:
        """Σ0[p, p'] = (1/C) Σ_c x[p, c] x'[p', c]."""
        a = _gather_positions(x1, rows1, step.first)
        b = _gather_positions(x2, rows2, step.second)
        # a per-entry sum along the contiguous channel axis: the same rounding for an entry
        # whatever the batch (einsum/BLAS would pick shape-dependent orders)
        return (a * b).sum(axis=-1) / self.dtype.type(a.shape[-1])

    def _linear(self, step: Step, K, T, trains: bool = False):
        layer = step.layer
        dt = self.dtype.type
        if isinstance(layer, (Dense, Conv)):
            w2, b2 = dt(layer.W ** 2), dt(layer.b ** 2)
            if step.maps:
                K = apply_maps(K, step.maps)
                T = None if T is None else apply_maps(T, step.maps)
            K = w2 * K + b2
            T = None if T is None else w2 * T
            if trains:
                T = K.copy() if T is None else T + K
            return K, T
        if isinstance(layer, AvgPool):
            return apply_maps(K, step.maps), (None if T is None else apply_maps(T, step.maps))
        if isinstance(layer, (GlobalAvgPool, Flatten)):
            return _readout(K, step.readout, dt), (None if T is None else
                                                  _readout(T, step.readout, dt))
        raise AssertionError(type(layer))  # pragma: no cover


def _readout(S: np.ndarray, entries: tuple[np.ndarray, ...], dt) -> np.ndarray:
    """Mean of the selected entries, summed along w, then h.

    Every reduction here runs along the last (contiguous) axis, whose summation order
    does not depend on the batch size, so the pair pass on (x, x) reproduces the self
    pass bit for bit (a relu after the readout then sees Σ(x, x) = v exactly).
    """
    count = 1
    for axis in range(len(entries), 0, -1):
        # axis is always the last one left
        S = np.take(S, entries[axis - 1], axis=axis).sum(axis=-1)
        count *= len(entries[axis - 1])
    return S / dt(count)


def _take_diagonal(S: np.ndarray, diagonal: tuple[np.ndarray, ...]) -> np.ndarray:
    if len(diagonal) == 1:
        return S[:, diagonal[0]]
    return S[:, diagonal[0][:, None], diagonal[1][None, :]]
