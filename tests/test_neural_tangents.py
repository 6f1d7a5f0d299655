"""Agreement with neural-tangents 0.6.5 (float64) on 23 architectures.

Tolerances (tests/oracle/CONVENTIONS.md §9): 1e-10 relative to the largest entry on
every cross block K(x1, x2) and every off-diagonal entry; on the diagonal of K(x, x)
of relu networks on NT's diagonal-spatial path NT itself is off by ~1e-9, so those
entries get 1e-7.
"""
from __future__ import annotations

import numpy as np
import pytest

import infinet

from conftest import DATA

REF = np.load(DATA / "ref_kernels.npz")
MORE = np.load(DATA / "ref_more.npz")


def _cnn(depth: int, act: str, readout: str, b: float) -> str:
    bias = f" b={b}" if b else ""
    body = "".join(f"conv 3x3 pad=same W=sqrt(2){bias}\n{act}\n" for _ in range(depth))
    return f"input 8x8x3\n{body}{readout}\ndense W=sqrt(2){bias}\n"


def _fc(act: str, b: float) -> str:
    bias = f" b={b}" if b else ""
    return ("input 8x8x3\nflatten\n" + f"dense W=sqrt(2){bias}\n{act}\n" * 2
            + f"dense W=sqrt(2){bias}\n")


def _pool(readout: str) -> str:
    block = "conv 3x3 W=sqrt(2)\nrelu\n"
    return (f"input 8x8x3\n{block}avgpool 2x2\n{block}avgpool 2x2\n{block}{readout}\n"
            "dense W=sqrt(2)\n")


# The .net text of each architecture of ref_kernels.npz (see its `arch_specs`).
REF_NETS = {
    "fc": _fc("relu", 0), "fc_b01": _fc("relu", 0.1), "fc_erf": _fc("erf", 0),
    "cnn_v": _cnn(3, "relu", "flatten", 0), "cnn_v_b01": _cnn(3, "relu", "flatten", 0.1),
    "cnn_gap": _cnn(3, "relu", "gap", 0), "cnn_gap_b01": _cnn(3, "relu", "gap", 0.1),
    "cnn_pool_gap": _pool("gap"), "cnn_pool_flat": _pool("flatten"),
    "cnn_v_erf": _cnn(3, "erf", "flatten", 0), "cnn_gap_erf": _cnn(3, "erf", "gap", 0),
    "cnn_gap_d1": _cnn(1, "relu", "gap", 0), "cnn_v_d1": _cnn(1, "relu", "flatten", 0),
}
# NT's diagonal-spatial relu path carries ~1e-9 on K(x, x)[i, i].
NT_NOISY_DIAGONAL = {"fc", "fc_b01", "cnn_v", "cnn_v_b01", "cnn_v_d1",
                     "vector_mlp", "stride2_same", "circular_flat"}


def assert_close_to_nt(name, ours, theirs, symmetric: bool):
    scale = np.abs(theirs).max()
    err = np.abs(ours - theirs) / scale
    if symmetric:
        diag_tol = 1e-7 if name in NT_NOISY_DIAGONAL else 1e-10
        assert np.diag(err).max() < diag_tol, (name, np.diag(err).max())
        err = err[~np.eye(len(err), dtype=bool)]
    assert err.max() < 1e-10, (name, err.max())


def test_every_reference_architecture_is_covered():
    assert set(REF_NETS) == set(REF["arch_names"])
    assert len(REF_NETS) + len(MORE["names"]) >= 20


@pytest.mark.parametrize("name", sorted(REF_NETS))
def test_ref_kernels(name):
    k = infinet.compile(REF_NETS[name])
    x1, x2 = REF["x1"], REF["x2"]
    for tag, a, b in (("12", x1, x2), ("11", x1, None), ("22", x2, None)):
        out = k(a, b)
        for kind in ("nngp", "ntk"):
            assert_close_to_nt(name, getattr(out, kind), REF[f"{name}__{kind}_{tag}"],
                               symmetric=b is None)


@pytest.mark.parametrize("name", [str(n) for n in MORE["names"]])
def test_ref_more(name):
    k = infinet.compile(str(MORE[f"{name}__net"]))
    x1, x2 = MORE[f"{name}__x1"], MORE[f"{name}__x2"]
    for tag, b in (("12", x2), ("11", None)):
        out = k(x1, b)
        for kind in ("nngp", "ntk"):
            assert_close_to_nt(name, getattr(out, kind), MORE[f"{name}__{kind}_{tag}"],
                               symmetric=b is None)


def test_more_cases_cover_every_layer_and_padding():
    text = "\n".join(str(MORE[f"{n}__net"]) for n in MORE["names"]) + "".join(REF_NETS.values())
    for needle in ("pad=same", "pad=valid", "pad=circular", "stride=2", "avgpool 3x3 stride=2 "
                   "pad=same", "avgpool 2x2", "gap", "flatten", "relu", "erf", "abrelu",
                   "leaky_relu", "identity", "dense", "conv 2x2", "conv 4x4", "conv 1x1",
                   "repeat", "param", "input 12"):
        assert needle in text, needle
