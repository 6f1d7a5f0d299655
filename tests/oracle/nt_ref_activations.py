#!/usr/bin/env python
"""neural-tangents reference kernels for every activation of SPEC §3.1 (issue 10).

Writes nt_activations.npz next to this file (NT_REF_OUT=DIR to change): for each case NAME,
  NAME__net                           the .net source (a 0-d string array)
  NAME__x1 [4, ...], NAME__x2 [3, ...] inputs (float64; NHWC images or [N, D] vectors)
  NAME__nngp_12, NAME__ntk_12         K(x1, x2)
  NAME__nngp_11, NAME__ntk_11         K(x1, x1)  (NaN where neural-tangents gives NaN:
                                      RectifiedMonomial, tests/test_nt_activations.py)
and `names`.  MLPs (NT's diagonal path: the self-variances by each layer's nngp_fn_diag)
and CNNs with a gap readout (its full-spatial path: the general formula on cov1) or a
flatten readout.  `elementwise fn="..."` is NT's ElementwiseNumerical(fn, deg) with fn
written in jax.numpy from the same text (the derivative by jax.grad).

Run with the oracle environment of README.md:  nt-venv/bin/python nt_ref_activations.py
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

# jax 0.4.23 wraps scipy.linalg.tril/triu, which newer SciPy no longer has
scipy.linalg.tril = getattr(scipy.linalg, "tril", np.tril)
scipy.linalg.triu = getattr(scipy.linalg, "triu", np.triu)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.scipy.special import erf  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = os.environ.get("NT_REF_OUT", os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore", message=".*Numerical Activation Layer.*")
warnings.filterwarnings("ignore", message=".*Using JAX autodiff.*")

JNP = {"exp": jnp.exp, "log": jnp.log, "sqrt": jnp.sqrt, "abs": jnp.abs, "sin": jnp.sin,
       "cos": jnp.cos, "tanh": jnp.tanh, "erf": erf, "sigmoid": jax.nn.sigmoid,
       "softplus": jax.nn.softplus, "max": jnp.maximum, "min": jnp.minimum, "pi": np.pi}


def jax_fn(text):
    code = compile(text.replace("^", "**"), "<fn>", "eval")
    return lambda x: eval(code, dict(JNP), {"x": x})


def numerical(text, deg):
    return stax.ElementwiseNumerical(jax_fn(text), deg)


# (.net text of the activation, NT layer)
ACTS = {
    "gelu": ("gelu", stax.Gelu()),
    "sin": ("sin a=1.2 b=0.8 c=0.3", stax.Sin(1.2, 0.8, 0.3)),
    "sin_default": ("sin", stax.Sin()),
    "cos": ("cos a=0.9 b=1.1 c=-0.4", stax.Cos(0.9, 1.1, -0.4)),
    "cos_default": ("cos", stax.Cos()),
    "rbf": ("rbf gamma=0.5", stax.Rbf(0.5)),
    "exp": ("exp a=0.7 b=0.6", stax.Exp(0.7, 0.6)),
    "exp_default": ("exp", stax.Exp()),
    "gaussian": ("gaussian a=1.3 b=-0.4", stax.Gaussian(1.3, -0.4)),
    "gaussian_default": ("gaussian", stax.Gaussian()),
    "sign": ("sign", stax.Sign()),
    "abs": ("abs", stax.Abs()),
    "monomial0": ("monomial degree=0", stax.Monomial(0)),
    "monomial2": ("monomial degree=2", stax.Monomial(2)),
    "monomial3": ("monomial", stax.Monomial(3)),
    "monomial5": ("monomial degree=5", stax.Monomial(5)),
    "rect0": ("rectified_monomial degree=0", stax.RectifiedMonomial(0)),
    "rect1": ("rectified_monomial degree=1", stax.RectifiedMonomial(1)),
    "rect2": ("rectified_monomial", stax.RectifiedMonomial(2)),
    "rect3": ("rectified_monomial degree=3", stax.RectifiedMonomial(3)),
    "polynomial": ("polynomial coef=[0.1, 1, 0.5]", stax.Polynomial([0.1, 1, 0.5])),
    "polynomial4": ("polynomial coef=[0.2, -0.6, 0, 0.3, 0.05]",
                    stax.Polynomial([0.2, -0.6, 0, 0.3, 0.05])),
    "sigmoid_like": ("sigmoid_like", stax.Sigmoid_like()),
}
# added after the file was first made: appended last, so the other cases keep their seeds
LATER_ACTS = {"erf_abc": ("erf a=0.8 b=1.3 c=0.2", stax.Erf(0.8, 1.3, 0.2))}
# elementwise fn="..." deg=N: (text, deg)
EXPRESSIONS = {
    "ew_xtanh": ("x * tanh(x)", 25),
    "ew_sin": ("sin(x)", 25),
    "ew_erf": ("erf(x)", 25),
    "ew_poly": ("0.1 + x + 0.5*x^2", 25),
    "ew_softplus": ("softplus(x) - sigmoid(x)", 30),
    "ew_kinks": ("abs(x) + max(x, 0) - 0.2*min(x, 0)", 25),
    "ew_mixed": ("exp(-x^2/4)*cos(2*x) + log(1 + x^2) - sqrt(x^2 + 1)", 40),
}
for name, (text, deg) in EXPRESSIONS.items():
    ACTS[name] = (f'elementwise fn="{text}" deg={deg}', numerical(text, deg))


def dense(W, b):
    return stax.Dense(8, W_std=W, b_std=b)


def conv(W, b):
    return stax.Conv(8, (3, 3), padding="SAME", W_std=W, b_std=b)


def mlp(act):
    """input 6 → dense → act → dense → act → dense (the self-variance of the first act's
    output enters the second).  RectifiedMonomial once: after it NT is NaN everywhere."""
    text, layer = ACTS[act]
    if act.startswith("rect"):
        net = f"input 6\ndense W=1.1 b=0.2\n{text}\ndense W=0.9\n"
        return (6,), net, [dense(1.1, 0.2), layer, dense(0.9, None)]
    net = (f"input 6\ndense W=1.1 b=0.2\n{text}\ndense W=1.2 b=0.1\n{text}\ndense W=0.9\n")
    return (6,), net, [dense(1.1, 0.2), layer, dense(1.2, 0.1), layer, dense(0.9, None)]


def cnn(acts, readout):
    """input 5x5x2, then conv 3x3 → act for each act, then gap or flatten → dense."""
    lines, layers = ["input 5x5x2"], []
    for i, act in enumerate(acts):
        text, layer = ACTS[act]
        W, b = (1.2, 0.1) if i % 2 == 0 else (0.9, 0.2)
        lines += [f"conv 3x3 pad=same W={W} b={b}", text]
        layers += [conv(W, b), layer]
    lines += [readout, "dense W=1.1"]
    layers += [stax.GlobalAvgPool() if readout == "gap" else stax.Flatten(), dense(1.1, None)]
    return (5, 5, 2), "\n".join(lines) + "\n", layers


CASES = {f"mlp_{act}": mlp(act) for act in ACTS}
CASES.update({
    "cnn_gap_smooth": cnn(["gelu", "sin", "rbf"], "gap"),
    "cnn_flat_smooth": cnn(["cos", "exp", "gaussian"], "flatten"),
    "cnn_gap_exp": cnn(["exp", "gaussian", "sigmoid_like"], "gap"),
    "cnn_gap_piecewise": cnn(["abs", "sign"], "gap"),
    "cnn_flat_piecewise": cnn(["sign", "abs"], "flatten"),
    "cnn_gap_poly": cnn(["monomial3", "polynomial"], "gap"),
    "cnn_flat_poly": cnn(["polynomial4", "monomial2"], "flatten"),
    "cnn_flat_rect": cnn(["rect2", "rect3"], "flatten"),
    "cnn_gap_quadrature": cnn(["ew_xtanh", "ew_softplus"], "gap"),
    "cnn_flat_quadrature": cnn(["ew_sin", "ew_mixed"], "flatten"),
})
ACTS.update(LATER_ACTS)
CASES.update({f"mlp_{act}": mlp(act) for act in LATER_ACTS})


def main():
    out = {"names": np.array(list(CASES))}
    for i, (name, (shape, net, layers)) in enumerate(CASES.items()):
        _, _, kfn = stax.serial(*layers)
        rng = np.random.RandomState(900 + i)
        x1, x2 = rng.randn(4, *shape), rng.randn(3, *shape)
        k12, k11 = kfn(x1, x2, ("nngp", "ntk")), kfn(x1, None, ("nngp", "ntk"))
        out.update({f"{name}__net": np.array(net), f"{name}__x1": x1, f"{name}__x2": x2,
                    f"{name}__nngp_12": np.asarray(k12.nngp), f"{name}__ntk_12": np.asarray(k12.ntk),
                    f"{name}__nngp_11": np.asarray(k11.nngp), f"{name}__ntk_11": np.asarray(k11.ntk)})
        nan = "  (K(x1, x1) has NaN)" if np.isnan(np.asarray(k11.nngp)).any() else ""
        print(f"{name:24s} ntk12[0,0] = {float(k12.ntk[0, 0]):.12g}{nan}")
    np.savez_compressed(os.path.join(OUT, "nt_activations.npz"), **out)


if __name__ == "__main__":
    main()
