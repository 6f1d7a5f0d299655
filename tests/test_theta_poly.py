"""The atan2-free angle of the generated code (codegen/theta_poly.py, templates/math.j2).

The C functions ``inf_acos_sc`` / ``inf_asin_sc`` are compiled through the project's CPU
compile path (the flags the kernels get: -O3 -march=native, no FMA contraction) and
evaluated on more than 10⁶ points per dtype — dense in the angle, c → ±1 as ±(1 − 2^-k),
tiny s, s = 0 exactly, inputs scaled away from the unit circle, and the inputs relu
really gives it — against atan2 in x87 extended precision (64-bit significand, checked
against mpmath on a sample), and every error is held to the bound the module proves.
"""
from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

from infinet.codegen import cpujit, theta_poly
from infinet.codegen.render import CPU, environment

pytestmark = pytest.mark.skipif(not cpujit.compiler_works(), reason="no C++ compiler")

LD = np.longdouble
if np.finfo(LD).eps > 1e-18:       # pragma: no cover - not x86
    pytest.skip("needs x87 extended precision for the reference", allow_module_level=True)

DTYPES = {"float32": (np.float32, "float"), "float64": (np.float64, "double")}


@pytest.fixture(scope="module")
def lib():
    math_src = environment().get_template("math.j2").render(target=CPU)
    drivers = []
    for suffix, (_, ctype) in DTYPES.items():
        for fn in ("acos_sc", "asin_sc"):
            drivers.append(
                f'extern "C" void {fn}_{suffix}(long long n, const {ctype}* a, '
                f"const {ctype}* b, const {ctype}* s, {ctype}* out)\n"
                "{\n#pragma omp simd\n    for (long long i = 0; i < n; ++i) "
                f"out[i] = inf_{fn}(a[i], b[i], s[i]);\n}}")
    source = ("#include <math.h>\n#define INF_FN static inline\n#define INF_UNROLL\n" +
              math_src + "\n" + "\n".join(drivers) + "\n")
    return cpujit.load(source, "infinet-theta-poly-test")


def run(lib, fn, dtype, a, b, n):
    np_t = DTYPES[dtype][0]
    a, b, n = (np.ascontiguousarray(z, np_t) for z in (a, b, n))
    out = np.empty_like(a)
    f = getattr(lib, f"{fn}_{dtype}")
    f.argtypes = [ctypes.c_longlong] + [ctypes.c_void_p] * 4
    f(len(a), a.ctypes.data, b.ctypes.data, n.ctypes.data, out.ctypes.data)
    return out


def unit_circle_points(dtype, rng):
    """(s >= 0, c, n) in the dtype: > 10⁶ points on and off the unit circle."""
    np_t = DTYPES[dtype][0]
    bits = 24 if dtype == "float32" else 53
    th = np.concatenate([np.linspace(0, np.pi, 600_001, dtype=LD),
                         LD(np.pi) * rng.random(200_000).astype(LD)])
    c = np.cos(th).astype(np_t)
    s = np.sin(th).astype(np_t)
    s[s < 0] = 0
    # c -> ±1: c = ±(1 − 2^-k) (and the next floats), s = √(1 − c²) rounded
    k = np.arange(1, bits + 1)
    near = np.concatenate([1 - np.ldexp(1.0, -k), 1 - np.ldexp(1.0, -k) * 1.5,
                           np.nextafter(np.ones(1), 0), [1.0]]).astype(np_t)
    near = np.concatenate([near, -near])
    s_near = np.sqrt(np.maximum(1 - near.astype(LD) ** 2, 0)).astype(np_t)
    # tiny s beside c = ±1, and s = 0 exactly
    # (from 2^-13: beside c = ±1, ρ − 1 = s²/2 must stay within the theorem's 10⁻⁵)
    tiny = np.ldexp(np.ones(1, np.float64), -np.arange(13, 150 if dtype == "float32"
                                                         else 1075)).astype(np_t)
    tiny = tiny[tiny > 0]
    ones = np.ones_like(tiny)
    s = np.concatenate([s, s_near, tiny, tiny, np.zeros(4, np_t)])
    c = np.concatenate([c, near, ones, -ones, np.array([1, -1, 0.5, -1e-3], np_t)])
    n = np.ones_like(s)
    n[-4:] = np_t(1) / np.abs(c[-4:])
    # off the unit circle: the same angles scaled by λ, normalised by n = fl(1/λ)
    m = 300_000
    lam = np.exp(rng.uniform(-20, 20, m)).astype(np_t)
    pick = rng.integers(0, len(s), m)
    s2 = (s[pick] * lam).astype(np_t)
    c2 = (c[pick] * lam).astype(np_t)
    n2 = (n[pick] / lam).astype(np_t)
    return (np.concatenate([s, s2]), np.concatenate([c, c2]), np.concatenate([n, n2]))


def relu_points(dtype, rng, m=200_000):
    """(s, Σ, n) exactly as relu computes them from v, v' and Σ."""
    np_t = DTYPES[dtype][0]
    v1 = np.exp(rng.uniform(-10, 10, m)).astype(np_t)
    v2 = np.exp(rng.uniform(-10, 10, m)).astype(np_t)
    rho = rng.uniform(-1, 1, m)
    rho[: m // 10] = 1 - np.exp(rng.uniform(-40, 0, m // 10))
    rho[m // 10: m // 5] = -rho[: m // 10]
    K = (rho * np.sqrt(v1.astype(np.float64) * v2)).astype(np_t)
    s = np.sqrt(np.maximum(v1 * v2 - K * K, np_t(0)))
    n = (np_t(1) / np.sqrt(v1)) * (np_t(1) / np.sqrt(v2))
    return s, K, n


def check(dtype, got, y, x, n, signed=False):
    """Every |θ_C − θ| against the proved bound (theta_poly docstring)."""
    b = theta_poly.BOUNDS[dtype]
    y, x, n = y.astype(LD), x.astype(LD), n.astype(LD)
    ref = np.arctan2(y, x)
    rho = n * np.sqrt(y * y + x * x)
    defect = np.abs(rho - 1)
    assert defect.max() <= 1e-5          # the theorem's premise (theta_poly docstring)
    if signed:                          # asin_sc: x >= 0, θ′ = |θ|
        part = np.abs(ref)
        extra = np.zeros_like(ref)
    else:                               # acos_sc: θ′ = min(θ, π − θ)
        part = np.where(x < 0, LD(np.pi) - ref, ref)
        pi_hat = LD(DTYPES[dtype][0](np.pi))
        extra = np.where(x < 0, np.abs(pi_hat - LD(np.pi)) + LD(b["u"]) * ref, 0)
    B = LD(1 + 1e-3) * (defect + LD((2 + 2 * b["L"]) * b["u"] + b["E_A"] + b["E_H"]))
    # the reference's own error (< 2 ulp of the extended format)
    bound = part * B + extra + LD(theta_poly.UNDERFLOW[dtype]) + LD(4e-19) * np.abs(ref)
    err = np.abs(got.astype(LD) - ref)
    ok = err <= bound
    worst = np.argmax(np.where(bound > 0, err / np.where(bound > 0, bound, 1), 0))
    assert ok.all(), (f"{(~ok).sum()} points over the bound, e.g. y={y[~ok][:3]}, "
                      f"x={x[~ok][:3]}, got={got[~ok][:3]}, ref={ref[~ok][:3]}")
    return float(err[worst] / bound[worst]), float(np.max(defect))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_acos_sc_bound_on_a_dense_grid(lib, dtype):
    rng = np.random.default_rng(7)
    s, c, n = unit_circle_points(dtype, rng)
    assert len(s) >= 1_000_000
    got = run(lib, "acos_sc", dtype, s, c, n)
    frac, _ = check(dtype, got, s, c, n)
    assert 0 < frac <= 1
    ref = np.arctan2(s.astype(LD), c.astype(LD))
    u = theta_poly.BOUNDS[dtype]["u"]
    rho = n.astype(LD) * np.sqrt(s.astype(LD) ** 2 + c.astype(LD) ** 2)
    sel = (s.astype(LD) * n.astype(LD) > LD(np.finfo(DTYPES[dtype][0]).tiny) * 4) & \
        (np.abs(rho - 1) <= 2 * u) & (c >= 0)
    rel = np.abs(got.astype(LD) - ref)[sel] / ref[sel]
    print(f"\n{dtype}: {len(s)} points, worst error / bound {frac:.3f}; on the unit circle "
          f"(|ρ − 1| <= 2 u_r, c >= 0, no underflow) worst relative error "
          f"{float(rel.max()) / u:.2f} u_r, bound {theta_poly.bound(dtype, 2 * u) / u:.2f} u_r")
    # the relu inputs: |ρ − 1| a few u_r, and the same bound
    s, K, n = relu_points(dtype, rng)
    got = run(lib, "acos_sc", dtype, s, K, n)
    _, defect = check(dtype, got, s, K, n)
    assert defect <= 8 * theta_poly.BOUNDS[dtype]["u"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_acos_sc_exact_where_s_is_zero(lib, dtype):
    """θ = 0 exactly where s = 0 < c (the diagonal stays exact), the rounded π where c < 0,
    whatever n (also where |c·n| passes 1), as np.arctan2."""
    np_t = DTYPES[dtype][0]
    rng = np.random.default_rng(3)
    c = np.exp(rng.uniform(-30, 30, 100_000)).astype(np_t)
    n = (np_t(1) / c * np.exp(rng.uniform(-1e-3, 1e-3, len(c)))).astype(np_t)
    zero = np.zeros_like(c)
    assert (run(lib, "acos_sc", dtype, zero, c, n) == 0).all()
    assert (run(lib, "acos_sc", dtype, zero, -c, n) == np_t(np.pi)).all()
    assert np_t(np.pi) == np.arctan2(np_t(0), np_t(-1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asin_sc_bound(lib, dtype):
    """erf's arcsine: atan2(y, x) for x >= 0, both signs of y, x → 0 and x → 1."""
    np_t = DTYPES[dtype][0]
    rng = np.random.default_rng(11)
    s, c, n = unit_circle_points(dtype, rng)
    keep = c >= 0                       # angle in [0, π/2]: y = ±s, x = c
    y = np.concatenate([s[keep], -s[keep]])
    x = np.concatenate([c[keep], c[keep]])
    n = np.concatenate([n[keep], n[keep]])
    got = run(lib, "asin_sc", dtype, y, x, n)
    check(dtype, got, y, x, n, signed=True)
    assert (run(lib, "asin_sc", dtype, np.zeros(3, np_t), np.ones(3, np_t),
                np.ones(3, np_t)) == 0).all()


def test_extended_reference_against_mpmath():
    """The extended-precision atan2 the bounds are checked against: within 2^-62
    relatively of mpmath's (40 digits) on a sample of doubles of all magnitudes."""
    mp = pytest.importorskip("mpmath")
    rng = np.random.default_rng(5)
    y = np.abs(rng.standard_normal(1000)) * 10.0 ** rng.integers(-30, 30, 1000)
    x = rng.standard_normal(1000) * 10.0 ** rng.integers(-30, 30, 1000)
    y[:10] = 0
    with mp.workdps(40):
        for a, b in zip(y, x):
            r = np.arctan2(LD(a), LD(b))
            hi = float(r)
            lo = float(r - LD(hi))          # r = hi + lo exactly
            exact = mp.atan2(mp.mpf(a), mp.mpf(b))
            assert abs(mp.mpf(hi) + mp.mpf(lo) - exact) <= abs(exact) * mp.mpf(2) ** -62


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_coefficients_and_bounds_regenerate(dtype):
    """The stored coefficients and proved constants are what the derivation gives."""
    pytest.importorskip("mpmath")
    coeffs, b = theta_poly.derive(dtype)
    assert coeffs == theta_poly.COEFFS[dtype]
    assert len(coeffs) == theta_poly.DEGREE[dtype] + 1
    for key, value in b.items():
        assert math.isclose(value, theta_poly.BOUNDS[dtype][key], rel_tol=1e-9), key
    # the proved E_A is below one unit roundoff: the polynomial is as good as the dtype
    assert b["E_A"] < b["u"]


def test_relu_and_erf_entries_have_no_atan2_and_no_division():
    """The printed per-entry code of the arccos layers: the polynomial, no atan2, no '/';
    the per-input features are where the division went (once per input)."""
    import infinet
    k = infinet.compile("input 4x4x2\nconv 3x3 W=1.3 b=0.2\nrelu\nconv 3x3\nerf b=0.7\n"
                        "conv 3x3\nleaky_relu alpha=0.1\nconv 3x3\ngelu\nconv 3x3\nsign\n"
                        "gap\ndense\n")
    from infinet.codegen.program import lower_program
    prog = lower_program(k.plan)
    for fn in prog.functions:
        body = "\n".join(fn.body)
        assert "atan2" not in body and "/" not in body, fn.layer_text
        assert "inf_acos_sc" in body or "inf_asin_sc" in body, fn.layer_text
        assert fn.n_features and "/" in "\n".join(fn.features_body)
    assert "inf_atan2(" not in k.cpu_source.split("per-entry functions")[1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_variance_tables_hold_the_features_of_v(dtype):
    """The CPU executor's tables: v from the self pass, then 1/√v beside it (relu) and
    1/√(1 + 2b²v) (erf b=0.7), bit for bit what NumPy computes from that v."""
    import infinet
    from infinet.runtime.backends import make_executor
    k = infinet.compile("input 4x4x2\nconv 3x3 W=1.3 b=0.2\nrelu\nconv 3x3\nerf b=0.7\n"
                        "gap\ndense\n")
    ex = make_executor(k.plan, "cpu", dtype)
    x = np.random.default_rng(0).standard_normal((3, 4, 4, 2))
    tables = ex.self_variances(x)
    prog = ex.program
    np_t = DTYPES[dtype][0]
    assert len(prog.vfeatures) == 2
    for blk, scale in zip(prog.vfeatures, (0.0, 0.7 * 0.7)):
        off, size = prog.vtable[blk.state]
        v = tables.packed[:, off:off + size]
        want = np_t(1) / np.sqrt(v if not scale else np_t(1) + np_t(2) * (np_t(scale) * v))
        assert np.array_equal(tables.packed[:, blk.offset:blk.offset + size], want)
