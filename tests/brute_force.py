"""An independent, deliberately naive implementation of SPEC §2 for tests.

It keeps the *full* covariance matrix Σ[P, P'] over flattened positions P = (h, w) of
one pair of inputs and writes every layer as linear algebra on it: a conv is
Σ' = (W²/q²) Σ_taps M_t Σ M_tᵀ + b², where M_t selects the input position of tap t
(zero rows in the padding, wrapped for circular); an avgpool is A Σ Aᵀ with A the
window-averaging matrix; gap is the mean of all entries, flatten the mean of the
diagonal.  Nothing is shared with infinet's executor except the layer objects of the
plan (which only carry constants) and the output-size rule of SPEC §2.
"""
from __future__ import annotations

import math

import numpy as np

from infinet.ir.layers import (Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool,
                               Input, conv_geometry)


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


def relu_like(K, v1, v2, a, b):
    """SPEC form: a·b·Σ + (b−a)²·relu(Σ), relu via arccos of the clipped correlation."""
    norm = np.sqrt(v1 * v2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, K / np.where(norm > 0, norm, 1), 0.0)
    theta = np.where(norm > 0, np.arccos(np.clip(rho, -1, 1)), math.pi / 2)
    relu = norm / (2 * math.pi) * (np.sin(theta) + (math.pi - theta) * np.cos(theta))
    deriv = (math.pi - theta) / (2 * math.pi)
    return a * b * K + (b - a) ** 2 * relu, a * b + (b - a) ** 2 * deriv


def erf_kernel(K, v1, v2):
    denom = np.sqrt((1 + 2 * v1) * (1 + 2 * v2))
    return (2 / math.pi) * np.arcsin(2 * K / denom), (4 / math.pi) / np.sqrt(denom ** 2 - 4 * K ** 2)


def kernels(plan, x1: np.ndarray, x2: np.ndarray) -> tuple[float, float]:
    """(NNGP, NTK) of one pair of inputs (single samples, shape plan.data_shape)."""
    K12, T12 = _run(plan, x1, x2, None, None)
    return K12, T12


def _recursion(plan, x1, x2, var1=None, var2=None):
    """Full-matrix recursion over every layer: the list of Σ after each layer, and the
    final (Σ, Θ).  var1/var2: self covariances per layer (from ``_self``); for the self
    pass itself (x1 = x2, none given) each activation takes v from the current Σ."""
    states = []
    K = T = None
    spatial = None
    for lp in plan.layers:
        layer = lp.layer
        if isinstance(layer, Input):
            if lp.shape.is_flat:
                K = np.array(x1 @ x2 / len(x1))
            else:
                H, W, C = x1.shape
                K = x1.reshape(H * W, C) @ x2.reshape(H * W, C).T / C
                spatial = (H, W)
            T = np.zeros_like(K)
        else:
            S1 = K if var1 is None else var1[lp.index - 1]
            S2 = K if var2 is None else var2[lp.index - 1]
            K, T, spatial = _layer(layer, lp, K, T, spatial, S1, S2)
        states.append(K)
    return states, K, T


def _run(plan, x1, x2, var1, var2):
    if var1 is None:
        var1, var2 = _self(plan, x1), _self(plan, x2)
    _, K, T = _recursion(plan, x1, x2, var1, var2)
    return float(K), float(T)


def _self(plan, x):
    """Self covariances Σ(x, x) (full matrices) after every layer."""
    return _recursion(plan, x, x)[0]


def _diag(S):
    return np.diag(S) if S.ndim == 2 else S


def _layer(layer, lp, K, T, spatial, S1, S2):
    if isinstance(layer, (Dense, Conv)):
        if isinstance(layer, Conv):
            (H, W), (qh, qw) = spatial, layer.size
            acc_K = 0.0
            acc_T = 0.0
            for a in range(qh):
                Mh = _axis_tap_matrix(H, qh, layer.stride, layer.pad, a)
                for c in range(qw):
                    Mw = _axis_tap_matrix(W, qw, layer.stride, layer.pad, c)
                    M = np.kron(Mh, Mw)
                    acc_K = acc_K + M @ K @ M.T
                    acc_T = acc_T + M @ T @ M.T
            K, T = acc_K / (qh * qw), acc_T / (qh * qw)
            spatial = (Mh.shape[0], Mw.shape[0])
        K = layer.W ** 2 * K + layer.b ** 2
        T = layer.W ** 2 * T + (0 if layer.fixed else K)
        return K, T, spatial
    if isinstance(layer, Activation):
        if layer.fn == "identity":
            return K, T, spatial
        d1, d2 = _diag(S1), _diag(S2)
        v1, v2 = (d1[:, None], d2[None, :]) if K.ndim == 2 else (d1, d2)
        if layer.fn == "erf":
            K2, deriv = erf_kernel(K, v1, v2)
        else:
            K2, deriv = relu_like(K, v1, v2, layer.a, layer.b)
        return K2, T * deriv, spatial
    if isinstance(layer, AvgPool):
        H, W = spatial
        (wh, ww), (sh, sw) = layer.window, layer.stride
        Ah = sum(_axis_tap_matrix(H, wh, sh, layer.pad, a) for a in range(wh)) / wh
        Aw = sum(_axis_tap_matrix(W, ww, sw, layer.pad, c) for c in range(ww)) / ww
        A = np.kron(Ah, Aw)
        return A @ K @ A.T, A @ T @ A.T, (Ah.shape[0], Aw.shape[0])
    if isinstance(layer, GlobalAvgPool):
        return np.array(K.mean()), np.array(T.mean()), None
    if isinstance(layer, Flatten):
        return np.array(np.diag(K).mean()), np.array(np.diag(T).mean()), None
    raise AssertionError(type(layer))


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
