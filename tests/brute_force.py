"""An independent, deliberately naive implementation of the covariance recursion for tests.

It keeps the *full* covariance matrix Σ[P, P'] over flattened positions P (any number of
spatial axes) of one pair of inputs and writes every layer as linear algebra on it: a
conv is Σ' = (W²/|q|) Σ_taps M_t Σ M_tᵀ + b², where M_t selects the input position of tap
t (zero rows in the padding, wrapped for circular; the Kronecker product of per-axis
tap matrices); an avgpool is A Σ Aᵀ with A the window-averaging matrix; gap is the mean
of all entries, flatten the mean of the diagonal; a sum of branches adds their
matrices.  Activations use the textbook forms (arccos of the clipped correlation for
the relu family, arcsin for erf; brute_activations.py for the others), not the
executor's formulas.  Nothing is shared with
infinet's executor except the constants the plan's layers carry and the output-size
rule (conv_geometry); a layer kind it does not know is an error.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from infinet.layers import conv_geometry

import brute_activations


def _axis_tap_matrix(n_in: int, q: int, stride: int, pad: str, tap: int) -> np.ndarray:
    n_out, low = conv_geometry(n_in, q, stride, pad)
    M = np.zeros((n_out, n_in))
    for P in range(n_out):
        i = stride * P + tap - low
        if pad == "circular":
            M[P, i % n_in] = 1.0
        elif 0 <= i < n_in:
            M[P, i] = 1.0
    return M


def _kron(mats) -> np.ndarray:
    return functools.reduce(np.kron, mats, np.ones((1, 1)))


def relu_like(K, v1, v2, a, b):
    """a·b·Σ + (b−a)²·relu(Σ), relu via arccos of the clipped correlation."""
    norm = np.sqrt(v1 * v2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, K / np.where(norm > 0, norm, 1), 0.0)
    theta = np.where(norm > 0, np.arccos(np.clip(rho, -1, 1)), math.pi / 2)
    relu = norm / (2 * math.pi) * (np.sin(theta) + (math.pi - theta) * np.cos(theta))
    deriv = (math.pi - theta) / (2 * math.pi)
    return a * b * K + (b - a) ** 2 * relu, a * b + (b - a) ** 2 * deriv


def erf_kernel(K, v1, v2):
    denom = np.sqrt((1 + 2 * v1) * (1 + 2 * v2))
    return ((2 / math.pi) * np.arcsin(2 * K / denom),
            (4 / math.pi) / np.sqrt(denom ** 2 - 4 * K ** 2))


def _scaled_erf(K, v1, v2, L):
    """a·erf(b·x) + c: E[(a erf(bu) + c)(a erf(bu') + c)] = a²·erf kernel of b²Σ + c²."""
    k, d = erf_kernel(L.b ** 2 * K, L.b ** 2 * v1, L.b ** 2 * v2)
    return L.a ** 2 * k + L.c ** 2, L.a ** 2 * L.b ** 2 * d


#: keyword -> (Σ', Σ̇) given (K, v1, v2, layer): independent textbook formulas
ACTIVATIONS = {
    "relu": lambda K, v1, v2, L: relu_like(K, v1, v2, 0.0, 1.0),
    "abrelu": lambda K, v1, v2, L: relu_like(K, v1, v2, L.a, L.b),
    "leaky_relu": lambda K, v1, v2, L: relu_like(K, v1, v2, L.a, 1.0),
    "erf": lambda K, v1, v2, L: _scaled_erf(K, v1, v2, L),
    "identity": lambda K, v1, v2, L: (K, 1.0),
    # gelu, sin, cos, rbf, exp, gaussian, sign, abs, monomial, rectified_monomial,
    # polynomial, sigmoid_like, elementwise: brute_activations.py
    **brute_activations.ACTIVATIONS,
}


def kernels(plan, x1: np.ndarray, x2: np.ndarray) -> tuple[float, float]:
    """(NNGP, NTK) of one pair of inputs (single samples, shape plan.data_shape)."""
    return _run(plan, x1, x2, None, None)


def _recursion(plan, x1, x2, var1=None, var2=None):
    """Full-matrix recursion over the graph: Σ of every state, and the final (Σ, Θ).
    var1/var2: self covariances per state (from ``_self``); for the self pass itself
    (x1 = x2, none given) each activation takes v from its input's Σ."""
    K: dict[int, np.ndarray] = {}
    T: dict[int, np.ndarray] = {}
    spatial: dict[int, tuple] = {}
    for node in plan.nodes:
        layer, i = node.layer, node.index
        if not node.inputs:
            shape = node.shape
            if shape.is_flat:
                K[i] = np.array(x1 @ x2 / len(x1))
            else:
                C = x1.shape[-1]
                P = math.prod(shape.spatial)
                K[i] = x1.reshape(P, C) @ x2.reshape(P, C).T / C
            spatial[i] = shape.spatial
            T[i] = np.zeros_like(K[i])
            continue
        j = node.inputs[0]
        S1 = K[j] if var1 is None else var1[j]
        S2 = K[j] if var2 is None else var2[j]
        K[i], T[i], spatial[i] = _layer(layer, node, K, T, spatial, S1, S2)
    last = plan.nodes[-1].index
    return K, K[last], T[last]


def _run(plan, x1, x2, var1, var2):
    if var1 is None:
        var1, var2 = _self(plan, x1), _self(plan, x2)
    _, K, T = _recursion(plan, x1, x2, var1, var2)
    return float(K), float(T)


def _self(plan, x):
    """Self covariances Σ(x, x) (full matrices) of every state."""
    return _recursion(plan, x, x)[0]


def _diag(S):
    return np.diag(S) if S.ndim == 2 else S


def _layer(layer, node, Ks, Ts, spatials, S1, S2):
    kw = layer.keyword
    j = node.inputs[0]
    K, T, spatial = Ks[j], Ts[j], spatials[j]
    if kw in ("dense", "conv"):
        if kw == "conv":
            acc_K = acc_T = 0.0
            per_axis = [[_axis_tap_matrix(n, q, layer.stride, layer.pad, a) for a in range(q)]
                        for n, q in zip(spatial, layer.size)]
            for taps in np.ndindex(*layer.size):
                M = _kron([per_axis[ax][t] for ax, t in enumerate(taps)])
                acc_K = acc_K + M @ K @ M.T
                acc_T = acc_T + M @ T @ M.T
            q = math.prod(layer.size)
            K, T = acc_K / q, acc_T / q
            spatial = tuple(m[0].shape[0] for m in per_axis)
        K = layer.W ** 2 * K + layer.b ** 2
        T = layer.W ** 2 * T + (0 if layer.fixed else K)
        return K, T, spatial
    if kw in ACTIVATIONS:
        d1, d2 = _diag(S1), _diag(S2)
        v1, v2 = (d1[:, None], d2[None, :]) if K.ndim == 2 else (d1, d2)
        K2, deriv = ACTIVATIONS[kw](K, v1, v2, layer)
        return K2, T * deriv, spatial
    if kw == "layernorm":
        d1, d2 = _diag(S1), _diag(S2)
        if layer.axes == "all":
            d1, d2 = np.mean(d1), np.mean(d2)
        v1, v2 = (np.reshape(d1, (-1, 1)), np.reshape(d2, (1, -1))) if K.ndim == 2 else (d1, d2)
        norm = np.sqrt((v1 + layer.eps) * (v2 + layer.eps))
        return K / norm, T / norm, spatial
    if kw in ("avgpool", "sumpool"):
        mats = []
        for n, w, s in zip(spatial, layer.size, layer.strides()):
            total = sum(_axis_tap_matrix(n, w, s, layer.pad, a) for a in range(w))
            mats.append(total / w if kw == "avgpool" else total)
        A = _kron(mats)
        return A @ K @ A.T, A @ T @ A.T, tuple(m.shape[0] for m in mats)
    if kw == "gap":
        return np.array(K.mean()), np.array(T.mean()), ()
    if kw == "flatten":
        return np.array(np.diag(K).mean()), np.array(np.diag(T).mean()), ()
    if kw == "sum":
        return (sum(Ks[k] for k in node.inputs), sum(Ts[k] for k in node.inputs),
                spatial)
    raise AssertionError(f"brute_force.py has no formula for layer '{kw}': add an "
                         f"independent one")


def kernel_matrices(plan, x1, x2):
    n1, n2 = len(x1), len(x2)
    K = np.empty((n1, n2))
    T = np.empty((n1, n2))
    selfs1 = [_self(plan, a) for a in x1]
    selfs2 = [_self(plan, b) for b in x2]
    for i in range(n1):
        for j in range(n2):
            K[i, j], T[i, j] = _run(plan, x1[i], x2[j], selfs1[i], selfs2[j])
    return K, T
