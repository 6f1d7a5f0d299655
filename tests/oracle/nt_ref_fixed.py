#!/usr/bin/env python
"""References for `fixed` layers inside blocks, and the Monte-Carlo proof of how they are made.

NT has no frozen layers.  A fixed layer's Θ' is σw²·A(Θ) instead of NT's σw²·A(Θ) + Σ'
(SPEC §2.2), so `Freeze()` (nt_ref_blocks.py), placed right after an NT Dense/Conv,
replaces Θ' by Θ' − Σ' and leaves everything after it to NT.  That is algebra on NT's own
recursion (CONVENTIONS.md §1, §2); what needs proof is that it is the right kernel: the
NTK of gradient descent on the remaining parameters.  `monte_carlo` proves it: the
empirical NTK Σ_θ ∂f(x)/∂θ·∂f(x')/∂θ over the trainable parameters only (JAX autodiff),
of many random finite networks of the same architecture, the frozen layers' parameters
left out, agrees with the Freeze() kernel within its statistical bound — and the bound
rejects the kernel with every layer trained and the Freeze() kernel 3% off (10% for the
NNGP, which the identity does not touch and which is estimated without a control variate).

Writes ref_fixed.npz next to this file (NT_REF_OUT=DIR to change), laid out as
ref_blocks.npz (NAME__net, NAME__x1, NAME__x2, NAME__{nngp,ntk}_{12,11},
NAME__{nngp,ntk}_exact_diag, names), plus for the Monte-Carlo cases NAME__mc_{nngp,ntk}
(the estimates of K(x1 ∪ x2, x1 ∪ x2)), NAME__mc_{nngp,ntk}_se (their standard errors),
NAME__mc_width and NAME__mc_networks.

Run with the oracle environment of README.md:  nt-venv/bin/python nt_ref_fixed.py
(~4 minutes on 2 cores, most of it the Monte-Carlo part; MC_NETWORKS=N to change its size)
"""
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nt_ref_blocks as blocks  # noqa: E402  (sets up jax, float64)
from nt_ref_blocks import (ERF, FLATTEN, GAP, RELU, S2, Sum, conv, dense, layernorm,  # noqa: E402
                           residual)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = blocks.OUT

CASES = [
    ("fixed_projection", (6, 6, 2), """input 6x6x2
conv 3x3 pad=same W=sqrt(2) fixed
sum {
  branch { relu; conv 3x3 pad=same stride=2 W=sqrt(2) b=0.1; relu; conv 3x3 pad=same W=sqrt(2) fixed }
  branch { conv 1x1 pad=same stride=2 fixed }
}
relu
gap
dense
""", [conv(3, fixed=True),
      Sum([RELU, conv(3, S2, 0.1, stride=2), RELU, conv(3, fixed=True)],
          [conv(1, 1.0, stride=2, fixed=True)]),
      RELU, GAP, dense()]),

    ("fixed_resnet_flatten", (6, 6, 2), """input 6x6x2
conv 3x3 pad=same W=sqrt(2) b=0.1
residual { relu; conv 3x3 pad=same W=sqrt(2) b=0.1 fixed; relu; conv 3x3 pad=same W=sqrt(2) }
layernorm
relu
flatten
dense W=sqrt(2) fixed
""", [conv(3, S2, 0.1), residual(RELU, conv(3, S2, 0.1, fixed=True), RELU, conv(3)), layernorm(),
      RELU, FLATTEN, dense(S2, fixed=True)]),

    ("fixed_mlp", (10,), """input 10
dense W=sqrt(2) b=0.1
residual { relu; dense W=sqrt(2) b=0.1 fixed; relu; dense W=sqrt(2) }
sum {
  branch { erf; dense W=1.5 fixed }
  branch { dense W=0.5 b=0.3 }
  branch { }
}
relu
dense fixed
""", [dense(S2, 0.1), residual(RELU, dense(S2, 0.1, fixed=True), RELU, dense(S2)),
      Sum([ERF, dense(1.5, fixed=True)], [dense(0.5, 0.3)], []), RELU, dense(fixed=True)]),

    ("fixed_seq_shortcut", (12, 2), """input 12x2
conv 3 pad=same W=sqrt(2)
sum {
  branch { relu; conv 3 pad=same stride=2 W=sqrt(2); relu; conv 3 pad=same W=sqrt(2) }
  branch { conv 1 pad=same stride=2 fixed }
}
relu
gap
dense
""", [conv(3), Sum([RELU, conv(3, stride=2), RELU, conv(3)], [conv(1, 1.0, stride=2, fixed=True)]),
      RELU, GAP, dense()]),

    ("fixed_two_readouts", (6, 5, 2), """input 6x5x2
conv 3x3 pad=same W=1.2 b=0.2
relu
conv 3x3 pad=same W=sqrt(2)
relu
sum {
  branch { gap; dense W=0.8 fixed }
  branch { flatten; dense W=1.5 b=0.1 }
}
relu
dense
""", [conv(3, 1.2, 0.2), RELU, conv(3), RELU,
      Sum([GAP, dense(0.8, fixed=True)], [FLATTEN, dense(1.5, 0.1)]), RELU, dense()]),
]

#: case -> (width, networks) of the Monte-Carlo check
MONTE_CARLO = {"fixed_projection": (256, 100)}
#: random readout directions per network (see monte_carlo)
READOUTS = 4


# -- finite networks (JAX) ------------------------------------------------------------------

class Finite:
    """A random finite network of the ops, 'ntk' parameterization: a layer computes
    σw/√fan_in · Σ w·x + σb·β with w, β ~ N(0, 1), hidden widths `width`."""

    def __init__(self, ops, shape, width):
        self.ops, self.shape, self.width = ops, shape, width

    def init(self, key):
        """(trainable, frozen): dicts path -> array, over every dense/conv of the ops."""
        trainable, frozen = {}, {}

        def walk(ops, spatial, chans, prefix):
            for j, op in enumerate(ops):
                path = f"{prefix}{j}"
                if op[0] == "sum":
                    outs = [walk(br, spatial, chans, f"{path}.{b}.") for b, br in enumerate(op[1])]
                    spatial, chans = outs[0]
                    continue
                if op[0] in ("conv", "dense"):
                    fan = chans * (op[1] ** len(spatial) if op[0] == "conv" else 1)
                    wshape = ((op[1],) * len(spatial) + (chans, self.width) if op[0] == "conv"
                              else (fan, self.width))
                    nonlocal key
                    key, k1, k2 = jax.random.split(key, 3)
                    fixed = op[-1]
                    target = frozen if fixed else trainable
                    target[path + ".w"] = jax.random.normal(k1, wshape)
                    if op[3 if op[0] == "conv" else 2]:
                        target[path + ".b"] = jax.random.normal(k2, (self.width,))
                    chans = self.width
                elif op[0] == "flatten":
                    chans *= int(np.prod(spatial)) if spatial else 1
                spatial = blocks.out_spatial(op, spatial)
            return spatial, chans

        walk(self.ops, self.shape[:-1], self.shape[-1], "")
        return trainable, frozen

    def features(self, params, x):
        """The readout's input h [N, n] (everything but the last op, the readout dense)."""
        return self.run(self.ops[:-1], params, x, "")

    def run(self, ops, params, h, prefix):
        for j, op in enumerate(ops):
            h = self.apply(op, params, h, f"{prefix}{j}")
        return h

    def apply(self, op, params, h, path):
        kind, rank = op[0], h.ndim - 2
        if kind == "sum":
            return sum(self.run(br, params, h, f"{path}.{b}.") for b, br in enumerate(op[1]))
        if kind == "conv":
            # im2col by strided slices and one matmul (XLA's float64 conv on CPU is ~70x slower)
            _, q, W, b, pad, s, _ = op
            geo = [blocks.geometry(n, q, s, pad) for n in h.shape[1:-1]]
            widths = [(0, 0)] + [(lo, hi) for _, lo, hi in geo] + [(0, 0)]
            hp = jnp.pad(h, widths, mode="wrap" if pad == "circular" else "constant")
            cols = []
            for taps in itertools.product(range(q), repeat=rank):
                index = (slice(None),) + tuple(slice(a, a + s * (out - 1) + 1, s)
                                               for a, (out, _, _) in zip(taps, geo))
                cols.append(hp[index])
            w = params[path + ".w"]
            y = jnp.concatenate(cols, axis=-1) @ w.reshape(-1, w.shape[-1])
            y = W / np.sqrt(h.shape[-1] * q ** rank) * y
            return y + b * params[path + ".b"] if b else y
        if kind == "dense":
            _, W, b, _ = op
            y = W / np.sqrt(h.shape[-1]) * h @ params[path + ".w"]
            return y + b * params[path + ".b"] if b else y
        if kind == "relu":
            return jax.nn.relu(h)
        if kind == "erf":
            return jax.scipy.special.erf(h)
        if kind == "layernorm":
            _, axes, eps = op
            ax = -1 if axes == "channels" else tuple(range(1, h.ndim))
            mean = jnp.mean(h, axis=ax, keepdims=True)
            var = jnp.var(h, axis=ax, keepdims=True)
            return (h - mean) / jnp.sqrt(var + eps)
        if kind == "gap":
            return jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))
        if kind == "flatten":
            return h.reshape(h.shape[0], -1)
        raise ValueError(kind)


def monte_carlo(name, shape, ops, x, width, networks, readouts=READOUTS, seed=0):
    """Per-network estimates of NNGP and NTK on the inputs x: [networks, N, N] each.

    For each random network the readout's weights are integrated out: with h the readout's
    input and f = σw/√n·u·h + σb·β, E_u[f f'] = σw²/n·h·h' + σb² exactly, and the NTK over
    the trainable parameters θ below the readout, E_u[σw²/n·(uᵀ∂h/∂θ)·(uᵀ∂h'/∂θ)], is
    estimated without bias by the mean over `readouts` random u (the Jacobian of h·U/√m,
    m = readouts, by reverse-mode autodiff), plus E_u[f f'] when the readout is trained."""
    net = Finite(ops, shape, width)
    _, Wr, br, fixed_r = ops[-1]

    @jax.jit
    def one(key):
        k_init, k_u = jax.random.split(key)
        trainable, frozen = net.init(k_init)
        h = net.features({**trainable, **frozen}, x)                    # [N, fan_in]
        fan = h.shape[-1]                  # n, or positions·n after flatten
        k = Wr ** 2 / fan * h @ h.T + br ** 2
        U = jax.random.normal(k_u, (fan, readouts)) / np.sqrt(readouts)
        jac = jax.jacrev(lambda tr: net.features({**tr, **frozen}, x) @ U)(trainable)
        t = sum(jnp.einsum("aj...,bj...->ab", leaf, leaf)
                for leaf in jax.tree_util.tree_leaves(jac))
        t = Wr ** 2 / fan * t
        return k, t if fixed_r else t + k

    key = jax.random.PRNGKey(seed)
    nngps, ntks = [], []
    for _ in range(networks):
        key, sub = jax.random.split(key)
        k, t = one(sub)
        nngps.append(np.asarray(k))
        ntks.append(np.asarray(t))
    return np.array(nngps), np.array(ntks)


def nt_kernel(ops, shape, x, trained_everywhere=False):
    """NT's K(x, x) of the ops (Freeze() after fixed layers unless trained_everywhere)."""
    if trained_everywhere:
        ops = unfix(ops)
    layers, _ = blocks.nt_layers(ops, shape[:-1])
    _, _, kfn = stax.serial(*layers)
    k = kfn(x, None, ("nngp", "ntk"), diagonal_batch=False)
    return np.asarray(k.nngp), np.asarray(k.ntk)


def unfix(ops):
    out = []
    for op in ops:
        if op[0] == "sum":
            out.append(("sum", tuple(tuple(unfix(br)) for br in op[1])))
        elif op[0] in ("conv", "dense"):
            out.append(op[:-1] + (False,))
        else:
            out.append(op)
    return out


def control_variate(t, k, k_exact):
    """The NTK estimate with the NNGP estimate as a control variate: t − β·(k − K), β the
    per-entry regression slope of t on k over the networks.  Both come from the same
    random networks; K (NT's NNGP, which the Freeze() identity does not touch) is known,
    so the mean is unchanged and, where t and k are strongly correlated (their fluctuations
    share the random features' scale: ρ ≈ 0.99 for fixed_projection), the spread drops
    ~10x."""
    kc, tc = k - k.mean(0), t - t.mean(0)
    beta = (kc * tc).sum(0) / (kc * kc).sum(0)
    return t - beta * (k - k_exact)


def check_monte_carlo(name, mean, se, exact, trained, width, resolution=0.03):
    """The bound: 5 standard errors plus a 3/width finite-width allowance (relative to the
    largest entry).  It must accept `exact` and reject exact·(1 ± resolution) and, for the
    NTK, the kernel with every layer trained.  Returns max |mean − exact| / bound."""
    bound = 5 * se + 3 / width * np.abs(exact).max()
    assert np.all(np.abs(mean - exact) <= bound), (name, np.abs(mean - exact) / bound)
    for wrong in (exact * (1 + resolution), exact * (1 - resolution)):
        assert np.any(np.abs(mean - wrong) > bound), (name, "cannot resolve", resolution)
    if trained is not None:
        assert np.any(np.abs(mean - trained) > bound), (name, "cannot tell fixed from trained")
    return float((np.abs(mean - exact) / bound).max())


def main():
    out = blocks.references(CASES, 900)
    networks_env = os.environ.get("MC_NETWORKS")
    for name, shape, _, ops in CASES:
        if name not in MONTE_CARLO:
            continue
        width, networks = MONTE_CARLO[name]
        networks = int(networks_env or networks)
        x = np.concatenate([out[f"{name}__x1"], out[f"{name}__x2"]])
        nngp, ntk = monte_carlo(name, shape, ops, x, width, networks)
        k_exact, t_exact = nt_kernel(ops, shape, x)
        _, t_trained = nt_kernel(ops, shape, x, trained_everywhere=True)
        ntk = control_variate(ntk, nngp, k_exact)
        # the NNGP (not what this is about, and without a control variate) to 10%
        for kind, est, exact, trained, resolution in (("nngp", nngp, k_exact, None, 0.10),
                                                      ("ntk", ntk, t_exact, t_trained, 0.03)):
            mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(est))
            worst = check_monte_carlo(name, mean, se, exact, trained, width, resolution)
            scale = np.abs(exact).max()
            gap = np.abs(trained - exact).max() / scale if trained is not None else 0
            print(f"{name:20s} {kind}: width {width}, {networks} networks, max |mean - NT| / "
                  f"bound = {worst:.2f}, max |mean - NT| = {np.abs(mean - exact).max() / scale:.2%},"
                  f" bound <= {(5 * se.max() + 3 / width * scale) / scale:.2%} of the largest entry"
                  + (f"; the every-layer-trained kernel is {gap:.0%} away" if gap else ""),
                  flush=True)
            out.update({f"{name}__mc_{kind}": mean, f"{name}__mc_{kind}_se": se})
        out.update({f"{name}__mc_width": np.array(width), f"{name}__mc_networks": np.array(networks)})
    path = os.path.join(OUT, "ref_fixed.npz")
    np.savez_compressed(path, **out)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
