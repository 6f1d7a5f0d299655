#!/usr/bin/env python
"""neural-tangents references for blocks, layer norms, sum pooling and 1-d / 3-d inputs,
with exact (40-digit) diagonals of K(x, x).

Writes ref_blocks.npz next to this file (NT_REF_OUT=DIR to change): for each case NAME,
  NAME__net                          the .net source (SPEC §3.1 syntax, a 0-d string array)
  NAME__x1 [4, ...], NAME__x2 [3, ...]  inputs (float64; [N, L, C], [N, H, W, C],
                                     [N, D, H, W, C] or [N, D])
  NAME__nngp_12, NAME__ntk_12        K(x1, x2) from neural-tangents 0.6.5
  NAME__nngp_11, NAME__ntk_11        K(x1, x1) from neural-tangents 0.6.5
  NAME__nngp_exact_diag, NAME__ntk_exact_diag
                                     K(x1[i], x1[i]) from `Exact` below (mpmath, 40 digits)
and `names`.

Each case is written once as a list of ops (`conv`, `dense`, `relu`, `Sum(...)`, ...),
from which both the NT network and the exact recursion are built; the `.net` text beside
it is what the test compiles.  NT: every Conv/Dense is `parameterization='ntk'` with the
padding the .net text writes (NT's Conv defaults to VALID, ours to SAME); every pool gets
explicit strides (NT's default stride is 1, ours the window); `residual { body }` is
serial(FanOut(2), parallel(serial(body), Identity()), FanInSum()) and `sum { branch { b1 }
… }` is serial(FanOut(n), parallel(b1, …), FanInSum()), an empty branch Identity().

Why the exact diagonals: on K(x, x)[i, i] a relu sees two perfectly correlated inputs
(θ = 0, Σ̇ = 1/2 exactly on the p = p' entries).  NT computes θ = arctan2(√(v·v' − K²), K)
from a v and a K rounded differently, so √(±1e-16·v²) ≈ 1e-8·v enters θ and Σ̇ = (π − θ)/2π:
NT's NTK diagonals carry ~1e-9 relative error (its NNGP diagonals do not: the first-order
terms in θ cancel there).  `Exact` computes those entries in 40-digit arithmetic from the
textbook formulas (arccos of the correlation), sharing nothing with NT or infinet.  The
script checks it against NT: NNGP diagonals to 1e-12, NTK diagonals to 1e-7.

Run with the oracle environment of README.md (plus mpmath):  nt-venv/bin/python nt_ref_blocks.py
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import mpmath as mp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

# jax 0.4.23 wraps scipy.linalg.tril/triu, which newer SciPy no longer has
scipy.linalg.tril = getattr(scipy.linalg, "tril", np.tril)
scipy.linalg.triu = getattr(scipy.linalg, "triu", np.triu)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
from neural_tangents import stax  # noqa: E402

OUT = os.environ.get("NT_REF_OUT", os.path.dirname(os.path.abspath(__file__)))
S2 = float(np.sqrt(2.0))
WIDTH = 8           # NT's kernel_fn ignores widths; FanInSum only wants equal shapes
mp.mp.dps = 40


# -- the ops a case is written in -----------------------------------------------------------

def conv(q, W=S2, b=0.0, pad="same", stride=1, fixed=False):
    return ("conv", q, W, b, pad, stride, fixed)


def dense(W=1.0, b=0.0, fixed=False):
    return ("dense", W, b, fixed)


def layernorm(axes="channels", eps=1e-12):
    return ("layernorm", axes, eps)


def avgpool(w, stride, pad="valid"):
    return ("pool", "avg", w, stride, pad)


def sumpool(w, stride, pad="valid"):
    return ("pool", "sum", w, stride, pad)


def Sum(*branches):
    """A sum of branches, each a list of ops; [] is the identity branch."""
    return ("sum", tuple(tuple(b) for b in branches))


def residual(*body):
    return Sum(body, [])


RELU, ERF, GELU, GAP, FLATTEN = ("relu",), ("erf",), ("gelu",), ("gap",), ("flatten",)


def geometry(n, q, s, pad):
    """(output size, low padding, high padding) of a window along one axis (XLA rules)."""
    if pad == "same":
        out = -(-n // s)
        total = max((out - 1) * s + q - n, 0)
        return out, total // 2, total - total // 2
    if pad == "valid":
        return (n - q) // s + 1, 0, 0
    if pad == "circular":                       # wrap-pad, then VALID
        low = (q - 1) // 2
        return (n - 1) // s + 1, low, q - 1 - low
    raise ValueError(pad)


def out_spatial(op, spatial):
    kind = op[0]
    if kind == "conv":
        return tuple(geometry(n, op[1], op[5], op[4])[0] for n in spatial)
    if kind == "pool":
        return tuple(geometry(n, op[2], op[3], op[4])[0] for n in spatial)
    if kind in ("gap", "flatten", "dense"):
        return ()
    return spatial


# -- the NT network ----------------------------------------------------------------------

@stax.layer
def Freeze():
    """Placed right after an NT Dense/Conv: makes it a `fixed` layer (SPEC §2.2).

    NT's Dense and Conv compute Θ' = σw²·A(Θ) + Σ' with Σ' their new NNGP, bias included
    (CONVENTIONS.md §1, §2); a fixed layer's Θ' is σw²·A(Θ), so Θ' − Σ' is exactly the fixed
    layer's Θ', and everything after it is NT's own recursion.  nt_ref_fixed.py checks
    the result against the empirical NTK of random finite networks whose fixed layers'
    parameters are frozen.
    """
    def init_fn(rng, input_shape):
        return input_shape, ()

    def apply_fn(params, inputs, **kwargs):
        return inputs

    def kernel_fn(k, **kwargs):
        return k.replace(ntk=None if k.ntk is None else k.ntk - k.nngp)

    return init_fn, apply_fn, kernel_fn


def nt_layers(ops, spatial, in_sum=False):
    """NT layers of a list of ops on an input with these spatial sizes."""
    layers, rank = [], len(spatial)
    i = 0
    while i < len(ops):
        op, kind = ops[i], ops[i][0]
        if kind == "conv":
            _, q, W, b, pad, s, fixed = op
            layers.append(stax.Conv(WIDTH, (q,) * rank, strides=(s,) * rank, padding=pad.upper(),
                                    W_std=W, b_std=b or None, parameterization="ntk"))
            layers += [Freeze()] if fixed else []
        elif kind == "dense":
            _, W, b, fixed = op
            layers.append(stax.Dense(WIDTH, W_std=W, b_std=b or None, parameterization="ntk"))
            layers += [Freeze()] if fixed else []
        elif kind == "relu":
            layers.append(stax.Relu())
        elif kind == "erf":
            layers.append(stax.Erf())
        elif kind == "gelu":
            layers.append(stax.Gelu(approximate=False))
        elif kind == "layernorm":
            axis = -1 if op[1] == "channels" else tuple(range(1, rank + 2))
            layers.append(stax.LayerNorm(axis=axis, eps=op[2]))
        elif kind == "pool":
            _, how, w, s, pad = op
            pool = stax.AvgPool if how == "avg" else stax.SumPool
            layers.append(pool((w,) * rank, strides=(s,) * rank, padding=pad.upper()))
        elif kind == "gap":
            layers.append(stax.GlobalAvgPool())
        elif kind == "flatten" and in_sum and i + 1 < len(ops) and ops[i + 1][0] == "dense":
            # NT's parallel() cannot hold a Flatten branch (channel_axis=None) beside a
            # GlobalAvgPool one (channel_axis=-1): `_get_input_req_attr` compares None with 0
            # and raises TypeError.  The same kernel with other NT layers: a VALID conv whose
            # filter covers the whole input has one output position, K' = W²·(1/P)·Σ_p K[p, p]
            # + b² (both positions move by the same tap), Θ' = W²·(1/P)·Σ_p Θ[p, p] + K' —
            # Flatten then Dense — and GlobalAvgPool of one position is the identity.
            # check_flatten_dense() shows it equals Flatten + Dense on a serial net.
            _, W, b, fixed = ops[i + 1]
            layers += [stax.Conv(WIDTH, spatial, padding="VALID", W_std=W, b_std=b or None,
                                 parameterization="ntk"), stax.GlobalAvgPool()]
            layers += [Freeze()] if fixed else []
            spatial = ()
            i += 2
            continue
        elif kind == "flatten":
            layers.append(stax.Flatten())
        elif kind == "sum":
            paths = [stax.serial(*nt_layers(br, spatial, True)[0]) if br else stax.Identity()
                     for br in op[1]]
            layers.append(stax.serial(stax.FanOut(len(paths)), stax.parallel(*paths),
                                      stax.FanInSum()))
            spatial = _branch_spatial(op[1][0], spatial)
        else:
            raise ValueError(kind)
        if kind != "sum":
            spatial = out_spatial(op, spatial)
        i += 1
    return layers, spatial


def _branch_spatial(ops, spatial):
    for op in ops:
        spatial = _branch_spatial(op[1][0], spatial) if op[0] == "sum" else out_spatial(op, spatial)
    return spatial


def check_flatten_dense():
    """NT's Flatten + Dense equals the whole-input VALID conv + GlobalAvgPool of nt_layers."""
    rng = np.random.RandomState(1)
    x1, x2 = rng.randn(3, 6, 5, 2), rng.randn(2, 6, 5, 2)
    head = [stax.Conv(WIDTH, (3, 3), padding="SAME", W_std=1.2, b_std=0.2), stax.Relu()]
    tail = [stax.Relu(), stax.Dense(1)]
    _, _, a = stax.serial(*head, stax.Flatten(), stax.Dense(WIDTH, 1.5, 0.1), *tail)
    _, _, b = stax.serial(*head, stax.Conv(WIDTH, (6, 5), padding="VALID", W_std=1.5, b_std=0.1),
                          stax.GlobalAvgPool(), *tail)
    for x in (x2, None):
        ka, kb = a(x1, x, ("nngp", "ntk")), b(x1, x, ("nngp", "ntk"))
        for kind in ("nngp", "ntk"):
            u, v = np.asarray(getattr(ka, kind)), np.asarray(getattr(kb, kind))
            err = np.abs(u - v) / np.abs(u).max()
            if x is None:        # Flatten's diagonal path is noisy on K(x, x)[i, i]
                err = err[~np.eye(len(u), dtype=bool)]
            assert err.max() < 1e-12, (kind, err)


# -- the exact recursion (40 digits) ------------------------------------------------------

_mpf = np.frompyfunc(lambda t: mp.mpf(float(t)), 1, 1)
PI = mp.pi


def _relu(k, a, b):
    n = mp.sqrt(a * b)
    theta = PI / 2 if n == 0 else mp.acos(max(min(k / n, mp.mpf(1)), mp.mpf(-1)))
    return n / (2 * PI) * (mp.sin(theta) + (PI - theta) * mp.cos(theta)), (PI - theta) / (2 * PI)


def _erf(k, a, b):
    d = mp.sqrt((1 + 2 * a) * (1 + 2 * b))
    return 2 / PI * mp.asin(2 * k / d), 4 / PI / mp.sqrt(d * d - 4 * k * k)


RELU_F, ERF_F = np.frompyfunc(_relu, 3, 2), np.frompyfunc(_erf, 3, 2)


class Exact:
    """Σ(x, x) and Θ(x, x) of one input from the textbook recursion, in mpmath.

    The state is the full covariance over positions: an object array of shape S + S for
    spatial sizes S (shape () for flat states).  A conv is W²·(1/q^r)·Σ_taps of the
    covariance with both positions shifted by the same tap (zero padding, or wrapped for
    circular) + b²; a pool sums over every pair of window taps (avg: / w² per axis); gap is
    the mean of all entries, flatten of the diagonal; relu and erf act on each entry given
    the variances v[p] = Σ[p, p]; layernorm divides by √((v + ε)(v' + ε)) (axes=all: v's
    mean over positions); a sum adds its branches' (Σ, Θ).
    """

    def __call__(self, ops, x):
        x = _mpf(np.asarray(x, dtype=float))
        K = np.tensordot(x, x, axes=([-1], [-1])) / x.shape[-1]
        T = K * 0
        K, T = self.run(ops, K, T)
        return K[()] if isinstance(K, np.ndarray) else K, T[()] if isinstance(T, np.ndarray) else T

    def run(self, ops, K, T):
        for op in ops:
            K, T = getattr(self, op[0])(op, K, T)
        return K, T

    @staticmethod
    def rank(K):
        return np.ndim(K) // 2

    def variances(self, K):
        r = self.rank(K)
        if r == 0:
            return K, K
        S = K.shape[:r]
        v = np.diagonal(K.reshape(int(np.prod(S)), -1)).reshape(S)
        return v.reshape(S + (1,) * r), v.reshape((1,) * r + S)

    def window(self, K, q, s, pad, all_pairs):
        """Σ over the taps of every axis: the same tap on both positions (conv), or every
        pair of taps (pool)."""
        r = self.rank(K)
        for i in range(r):
            n = K.shape[i]
            out, low, high = geometry(n, q, s, pad)
            widths = [(0, 0)] * K.ndim
            widths[i] = widths[r + i] = (low, high)
            P = np.pad(K, widths, mode="wrap" if pad == "circular" else "constant",
                       **({} if pad == "circular" else {"constant_values": 0}))

            def take(A, axis, a):
                index = [slice(None)] * A.ndim
                index[axis] = slice(a, a + s * (out - 1) + 1, s)
                return A[tuple(index)]

            taps = [(a, a) for a in range(q)] if not all_pairs else \
                [(a, c) for a in range(q) for c in range(q)]
            K = sum(take(take(P, i, a), r + i, c) for a, c in taps)
        return K

    def conv(self, op, K, T):
        _, q, W, b, pad, s, fixed = op
        W, b, r = mp.mpf(W), mp.mpf(b), self.rank(K)
        K2 = W ** 2 * self.window(K, q, s, pad, False) / q ** r + b ** 2
        T2 = W ** 2 * self.window(T, q, s, pad, False) / q ** r
        return K2, T2 if fixed else T2 + K2

    def dense(self, op, K, T):
        _, W, b, fixed = op
        W, b = mp.mpf(W), mp.mpf(b)
        assert self.rank(K) == 0
        K2 = W ** 2 * K + b ** 2
        return K2, W ** 2 * T if fixed else W ** 2 * T + K2

    def relu(self, op, K, T):
        v1, v2 = self.variances(K)
        K2, D = RELU_F(K, v1, v2)
        return K2, D * T

    def erf(self, op, K, T):
        v1, v2 = self.variances(K)
        K2, D = ERF_F(K, v1, v2)
        return K2, D * T

    def gelu(self, op, K, T):
        """Flat states only (the exact diagonal of one input: u = u' ~ N(0, v)), by
        quadrature: E[φ(u)²] and E[φ'(u)²], φ(x) = x·Φ(x)."""
        assert self.rank(K) == 0, "exact gelu: flat states only"
        s = mp.sqrt(K[()] if isinstance(K, np.ndarray) else K)

        def mean(f):
            return mp.quad(lambda z: f(s * z) ** 2 * mp.npdf(z), [-mp.inf, 0, mp.inf])

        K2 = mean(lambda u: u * mp.ncdf(u))
        D = mean(lambda u: mp.ncdf(u) + u * mp.npdf(u))
        return np.array(K2, dtype=object), T * D

    def layernorm(self, op, K, T):
        _, axes, eps = op
        v1, v2 = self.variances(K)
        if axes == "all" and self.rank(K):
            v1 = v2 = np.mean(v1)
        scale = 1 / np.frompyfunc(mp.sqrt, 1, 1)((v1 + mp.mpf(eps)) * (v2 + mp.mpf(eps)))
        return K * scale, T * scale

    def pool(self, op, K, T):
        _, how, w, s, pad = op
        norm = mp.mpf(w) ** (2 * self.rank(K)) if how == "avg" else 1
        return (self.window(K, w, s, pad, True) / norm, self.window(T, w, s, pad, True) / norm)

    def gap(self, op, K, T):
        return np.array(np.mean(K), dtype=object), np.array(np.mean(T), dtype=object)

    def flatten(self, op, K, T):
        r = self.rank(K)
        P = int(np.prod(K.shape[:r]))
        return (np.array(np.mean(np.diagonal(K.reshape(P, P))), dtype=object),
                np.array(np.mean(np.diagonal(T.reshape(P, P))), dtype=object))

    def sum(self, op, K, T):
        outs = [self.run(br, K, T) for br in op[1]]
        return sum(o[0] for o in outs), sum(o[1] for o in outs)


# -- the cases ----------------------------------------------------------------------------

CASES = [
    # -- residual CNNs ---------------------------------------------------------------------
    ("resnet_gap", (6, 6, 3), """input 6x6x3
conv 3x3 pad=same W=sqrt(2)
repeat 2 {
  residual {                     # pre-activation ResNet block
    relu
    conv 3x3 pad=same W=sqrt(2)
    relu
    conv 3x3 pad=same W=sqrt(2)
  }
}
relu
gap
dense
""", [conv(3)] + [residual(RELU, conv(3), RELU, conv(3))] * 2 + [RELU, GAP, dense()]),

    ("resnet_bias_flatten", (6, 6, 2), """input 6x6x2
conv 3x3 pad=same W=1.2 b=0.1
residual {
  relu
  conv 3x3 pad=same W=sqrt(2) b=0.1
  relu
  conv 3x3 pad=same W=sqrt(2) b=0.2
}
residual { relu; conv 1x1 pad=same W=0.9 b=0.3 }
relu
flatten
dense W=sqrt(2) b=0.2
""", [conv(3, 1.2, 0.1), residual(RELU, conv(3, S2, 0.1), RELU, conv(3, S2, 0.2)),
      residual(RELU, conv(1, 0.9, 0.3)), RELU, FLATTEN, dense(S2, 0.2)]),

    # -- projection shortcuts (WideResNet downsampling) ------------------------------------
    ("projection_1x1", (8, 8, 2), """input 8x8x2
conv 3x3 pad=same W=sqrt(2)
sum {
  branch { relu; conv 3x3 pad=same stride=2 W=sqrt(2); relu; conv 3x3 pad=same W=sqrt(2) }
  branch { conv 1x1 pad=same stride=2 }
}
residual { relu; conv 3x3 pad=same W=sqrt(2); relu; conv 3x3 pad=same W=sqrt(2) }
relu
gap
dense
""", [conv(3), Sum([RELU, conv(3, stride=2), RELU, conv(3)], [conv(1, 1.0, stride=2)]),
      residual(RELU, conv(3), RELU, conv(3)), RELU, GAP, dense()]),

    ("projection_valid_odd", (7, 7, 2), """input 7x7x2
conv 3x3 pad=same W=sqrt(2) b=0.1
sum {
  branch { relu; conv 3x3 pad=same stride=2 W=sqrt(2) b=0.1; relu; conv 3x3 pad=same W=sqrt(2) }
  branch { relu; conv 3x3 pad=same stride=2 W=1 b=0.1 }
}
sum {
  branch { relu; conv 2x2 pad=valid W=sqrt(2) }
  branch { conv 2x2 pad=valid W=0.5 }
}
relu
flatten
dense
""", [conv(3, S2, 0.1),
      Sum([RELU, conv(3, S2, 0.1, stride=2), RELU, conv(3)], [RELU, conv(3, 1.0, 0.1, stride=2)]),
      Sum([RELU, conv(2, pad="valid")], [conv(2, 0.5, pad="valid")]),
      RELU, FLATTEN, dense()]),

    ("sum_three_pool_branch", (6, 6, 2), """input 6x6x2
conv 3x3 pad=same W=sqrt(2) b=0.1
sum {
  branch { relu; conv 3x3 pad=same W=sqrt(2) }
  branch { erf; conv 1x1 pad=same W=0.7 b=0.2 }
  branch { }
}
sum {
  branch { relu; avgpool 2x2; conv 3x3 pad=same W=sqrt(2) }
  branch { relu; sumpool 2x2 stride=2; conv 1x1 pad=same W=0.5 }
  branch { avgpool 2x2 }
}
relu
conv 3x3 pad=same W=sqrt(2)
relu
flatten
dense
""", [conv(3, S2, 0.1),
      Sum([RELU, conv(3)], [ERF, conv(1, 0.7, 0.2)], []),
      Sum([RELU, avgpool(2, 2), conv(3)], [RELU, sumpool(2, 2), conv(1, 0.5)], [avgpool(2, 2)]),
      RELU, conv(3), RELU, FLATTEN, dense()]),

    ("two_readouts", (6, 5, 2), """input 6x5x2
conv 3x3 pad=same W=1.2 b=0.2
relu
conv 3x3 pad=same W=sqrt(2)
relu
sum {
  branch { gap; dense W=0.8 }
  branch { flatten; dense W=1.5 b=0.1 }
}
relu
dense
""", [conv(3, 1.2, 0.2), RELU, conv(3), RELU, Sum([GAP, dense(0.8)], [FLATTEN, dense(1.5, 0.1)]),
      RELU, dense()]),

    # -- residual MLPs ---------------------------------------------------------------------
    ("resnet_mlp", (10,), """input 10
dense W=sqrt(2) b=0.1
repeat 2 {
  residual { relu; dense W=sqrt(2) b=0.1; relu; dense W=sqrt(2) }
}
sum {
  branch { erf; dense W=1.5 }
  branch { dense W=0.5 b=0.3 }
  branch { }
}
relu
dense
""", [dense(S2, 0.1)] + [residual(RELU, dense(S2, 0.1), RELU, dense(S2))] * 2
     + [Sum([ERF, dense(1.5)], [dense(0.5, 0.3)], []), RELU, dense()]),

    # -- layer norms -----------------------------------------------------------------------
    ("layernorm_cnn", (6, 6, 3), """input 6x6x3
conv 3x3 pad=same W=1.3 b=0.2
layernorm                        # over the channels at each position
relu
conv 3x3 pad=same W=sqrt(2)
layernorm axes=all               # over positions and channels
relu
conv 3x3 pad=same W=sqrt(2) b=0.1
layernorm eps=0.1
erf
gap
dense
""", [conv(3, 1.3, 0.2), layernorm(), RELU, conv(3), layernorm("all"), RELU, conv(3, S2, 0.1),
      layernorm(eps=0.1), ERF, GAP, dense()]),

    ("layernorm_flatten", (5, 6, 2), """input 5x6x2
conv 3x3 pad=same W=0.7 b=0.3
layernorm axes=all
relu
conv 3x3 pad=same W=sqrt(2)
layernorm
relu
flatten
dense
""", [conv(3, 0.7, 0.3), layernorm("all"), RELU, conv(3), layernorm(), RELU, FLATTEN, dense()]),

    ("layernorm_mlp", (10,), """input 10
dense W=sqrt(2) b=0.1
layernorm
relu
dense W=sqrt(2)
layernorm axes=all
erf
dense W=1.5 b=0.1
layernorm eps=0.1
relu
dense
""", [dense(S2, 0.1), layernorm(), RELU, dense(S2), layernorm("all"), ERF, dense(1.5, 0.1),
      layernorm(eps=0.1), RELU, dense()]),

    ("layernorm_resnet", (6, 6, 2), """input 6x6x2
conv 3x3 pad=same W=sqrt(2)
residual { layernorm; relu; conv 3x3 pad=same W=sqrt(2) b=0.1 }
residual { layernorm axes=all; relu; conv 3x3 pad=same W=sqrt(2) }
layernorm
relu
gap
dense
""", [conv(3), residual(layernorm(), RELU, conv(3, S2, 0.1)),
      residual(layernorm("all"), RELU, conv(3)), layernorm(), RELU, GAP, dense()]),

    # -- sum and average pooling -----------------------------------------------------------
    ("pools_gap", (7, 7, 2), """input 7x7x2
conv 3x3 pad=same W=sqrt(2)
relu
sumpool 2x2 stride=2             # VALID: 7 -> 3
conv 3x3 pad=same W=sqrt(2)
relu
avgpool 2x2 stride=1 pad=same    # 3 -> 3
conv 3x3 pad=same W=0.5
relu
sumpool 2x2 stride=2 pad=same    # 3 -> 2
gap
dense
""", [conv(3), RELU, sumpool(2, 2), conv(3), RELU, avgpool(2, 1, "same"), conv(3, 0.5), RELU,
      sumpool(2, 2, "same"), GAP, dense()]),

    ("pools_flatten", (8, 8, 2), """input 8x8x2
conv 3x3 pad=same W=sqrt(2) b=0.1
relu
avgpool 3x3 stride=2             # VALID: 8 -> 3
conv 3x3 pad=same W=sqrt(2)
relu
sumpool 3x3 stride=1 pad=same    # 3 -> 3
conv 2x2 pad=valid W=0.4
relu
sumpool 2x2                      # stride = the window: 2 -> 1
flatten
dense
""", [conv(3, S2, 0.1), RELU, avgpool(3, 2), conv(3), RELU, sumpool(3, 1, "same"),
      conv(2, 0.4, pad="valid"), RELU, sumpool(2, 2), FLATTEN, dense()]),

    # -- sequences [N, L, C] ---------------------------------------------------------------
    ("seq_gap", (12, 3), """input 12x3
conv 5 pad=same W=sqrt(2)
relu
avgpool 2                        # 12 -> 6
conv 3 pad=valid W=sqrt(2) b=0.1 # 6 -> 4
relu
sumpool 2 stride=1 pad=same
conv 3 pad=circular W=sqrt(2)
relu
gap
dense
""", [conv(5), RELU, avgpool(2, 2), conv(3, b=0.1, pad="valid"), RELU, sumpool(2, 1, "same"),
      conv(3, pad="circular"), RELU, GAP, dense()]),

    ("seq_flatten", (12, 2), """input 12x2
conv 3 pad=same stride=2 W=sqrt(2)   # 12 -> 6
relu
conv 4 pad=same W=1.1 b=0.2
layernorm
relu
sumpool 3 stride=2 pad=same          # 6 -> 3
conv 3 pad=same W=sqrt(2)
relu
flatten
dense b=0.1
""", [conv(3, stride=2), RELU, conv(4, 1.1, 0.2), layernorm(), RELU, sumpool(3, 2, "same"),
      conv(3), RELU, FLATTEN, dense(1.0, 0.1)]),

    ("seq_resnet", (12, 2), """input 12x2
conv 3 pad=same W=sqrt(2)
residual { relu; conv 3 pad=same W=sqrt(2); relu; conv 3 pad=same W=sqrt(2) }
sum {
  branch { relu; conv 3 pad=same stride=2 W=sqrt(2); relu; conv 3 pad=same W=sqrt(2) }
  branch { conv 1 pad=same stride=2 }
}
layernorm axes=all
relu
gap
dense
""", [conv(3), residual(RELU, conv(3), RELU, conv(3)),
      Sum([RELU, conv(3, stride=2), RELU, conv(3)], [conv(1, 1.0, stride=2)]),
      layernorm("all"), RELU, GAP, dense()]),

    # -- volumes [N, D, H, W, C] ------------------------------------------------------------
    ("vol_projection", (4, 4, 4, 2), """input 4x4x4x2
conv 3x3x3 pad=same W=sqrt(2)
sum {
  branch { relu; conv 3x3x3 pad=same stride=2 W=sqrt(2); relu; conv 3x3x3 pad=same W=sqrt(2) }
  branch { conv 1x1x1 pad=same stride=2 }
}
relu
gap
dense
""", [conv(3), Sum([RELU, conv(3, stride=2), RELU, conv(3)], [conv(1, 1.0, stride=2)]), RELU,
      GAP, dense()]),

    ("vol_pool", (5, 4, 4, 2), """input 5x4x4x2
conv 3x3x3 pad=same W=sqrt(2) b=0.1
relu
sumpool 2x2x2 stride=2 pad=same  # 5x4x4 -> 3x2x2
conv 2x2x2 pad=same W=sqrt(2)
layernorm axes=all
residual { relu; conv 3x3x3 pad=same W=sqrt(2) }
relu
avgpool 2x2x2 stride=1           # VALID: 3x2x2 -> 2x1x1
flatten
dense
""", [conv(3, S2, 0.1), RELU, sumpool(2, 2, "same"), conv(2), layernorm("all"),
      residual(RELU, conv(3)), RELU, avgpool(2, 1), FLATTEN, dense()]),
]


def references(cases, seed):
    """NT's kernels and the exact diagonals of each case (inputs drawn from seed + i)."""
    out = {"names": np.array([c[0] for c in cases])}
    exact = Exact()
    for i, (name, shape, net, ops) in enumerate(cases):
        layers, _ = nt_layers(ops, shape[:-1])
        _, _, kfn = stax.serial(*layers)
        kfn = jax.jit(kfn, static_argnames=("get",))
        rng = np.random.RandomState(seed + i)
        x1, x2 = rng.randn(4, *shape), rng.randn(3, *shape)
        k12, k11 = kfn(x1, x2, ("nngp", "ntk")), kfn(x1, None, ("nngp", "ntk"))
        diag = np.array([[float(v) for v in exact(ops, x)] for x in x1])      # [4, 2]
        row = {f"{name}__net": np.array(net), f"{name}__x1": x1, f"{name}__x2": x2,
               f"{name}__nngp_exact_diag": diag[:, 0], f"{name}__ntk_exact_diag": diag[:, 1]}
        errs = []
        for kind, tol, col in (("nngp", 1e-12, 0), ("ntk", 1e-7, 1)):
            for tag, k in (("12", k12), ("11", k11)):
                row[f"{name}__{kind}_{tag}"] = a = np.asarray(getattr(k, kind))
                assert np.all(np.isfinite(a)), (name, kind, tag)
            nt_diag = np.diag(row[f"{name}__{kind}_11"])
            err = np.abs(nt_diag - diag[:, col]).max() / np.abs(row[f"{name}__{kind}_11"]).max()
            assert err < tol, (name, kind, err)
            errs.append(err)
        out.update(row)
        print(f"{name:22s} ntk12[0,0] = {float(k12.ntk[0, 0]):.12g}   NT diagonal vs exact: "
              f"nngp {errs[0]:.1e}, ntk {errs[1]:.1e}", flush=True)
    return out


def main():
    check_flatten_dense()
    path = os.path.join(OUT, "ref_blocks.npz")
    np.savez_compressed(path, **references(CASES, 700))
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
