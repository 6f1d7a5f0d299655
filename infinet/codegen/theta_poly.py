"""θ = atan2(s, c) without atan2 or a division: the polynomial the generated code uses.

The arccos-based layers (relu, abrelu, leaky_relu, abs, sign, rectified_monomial; erf,
sigmoid_like and gelu for an arcsine) need the angle of a point
(c, s) that lies on the unit circle up to rounding once it is scaled by n ≈ 1/√(s² + c²)
(a product of reciprocal square roots the variance tables hold once per input).  The
math namespace function ``acos_sc(s, c, n)`` (s ≥ 0) means θ = atan2(s, c) ∈ [0, π]:
NumPy evaluates exactly that (``np.arctan2``; n is only a hint), the generated C++/CUDA
(templates/math.j2, ``inf_acos_sc``) evaluates

    ŝ = s·n,  ĉ = c·n,  u = max(1 − |ĉ|, 0),  t = ŝ·P(u),  θ = (ĉ < 0) ? π − t : t,

where P ≈ R on [0, 1] and R(u) = θ/sin θ as a function of u = 1 − cos θ:
R(u) = arccos(1 − u)/√(u(2 − u)), R(0) = 1.  R is analytic in the disk |u| < 2 (its
nearest singularity is u = 2, θ = π), so on [0, 1] its Chebyshev coefficients fall like
(3 + √8)^-k = 5.83^-k: degree 9 is enough for float, 20 for double.  All the monomial
coefficients of P are small (Σ|p_k| < 1.8, against P ≤ π/2), so Horner's rule in u is
well conditioned.  There is no branch but the final select, no division, no atan2; and
where s = 0 (the diagonal K(x, x), and wherever v v′ − Σ² rounds to ≤ 0) t = 0·P = 0
exactly, so θ is exactly 0 (c > 0) or exactly the rounded π (c < 0), as np.arctan2.
``asin_sc(y, x, n)`` (x ≥ 0) is the mirror image, atan2(y, x) ∈ [−π/2, π/2] as
ŷ·P(max(1 − x̂, 0)) — no select at all (erf's arcsine).

Error bound (proved by :func:`derive`, rerun by the tests).  Let u_r be the unit
roundoff of the dtype (2^-24, 2^-53), E_A = max_{[0,1]} |P − R| for the *rounded*
coefficients, E_H = Σ_k γ_{2k+1}·|p_k| (γ_m = m·u_r/(1 − m·u_r)) Higham's bound
(Accuracy and Stability of Numerical Algorithms, §5.1) on the rounding of Horner's rule
for u ∈ [0, 1], L = max_{[0,1]} R′ (= R′(1) = 1), and ρ = n·√(s² + c²) the
normalisation of the inputs (exact arithmetic on the floats).
With θ′ = min(θ, π − θ) the part the polynomial computes,

    |θ_C − θ| ≤ θ′·B(ρ) + τ                       (c ≥ 0)
    |θ_C − θ| ≤ |π̂ − π| + θ′·B(ρ) + u_r·θ + τ     (c < 0, π̂ = π rounded)
    B(ρ) = (1 + 10⁻³)·(g·|ρ − 1| + (2 + 2L)·u_r + E_A + E_H),   g = 1,

τ = 3·2^-150 (float), 2^-1073 ≥ 3·2^-1075 (double): gradual underflow, where ŝ or t
is subnormal (an absolute error of half the smallest subnormal each, ŝ's times P ≤ π/2).

Derivation: ŝ = ρ·sin θ′·(1+δ1), |ĉ| = ρ·cos θ′·(1+δ2), u = fl(1 − |ĉ|) (exact for
|ĉ| ≥ 1/2, else one rounding δ3; the clamp only moves u towards 1 − cos θ′ ∈ [0, 1]),
fl(Horner) = P(u)(1 + η_H) (the bound holds with or without fused multiply-adds: math.j2
uses them where the hardware has them — the polynomial is not part of the NumPy
reference, and every pass of one target evaluates it the same way), P = R(1 + η_A)
with |η_A| ≤ E_A (R ≥ 1) and |η_H| ≤ E_H, t = fl(ŝ·P) (δ4).  In exact arithmetic
t(ρ) = ρ sin θ′·R(1 − ρ cos θ′), whose relative derivative in ρ at ρ = 1 is
(θ′ − sin θ′ cos θ′)/(θ′ sin² θ′) ∈ [2/3, 1] (= g ≤ 1), and δ2, δ3 move u by at most
u_r each, changing R by at most L·u_r relatively; δ1, δ4 add u_r each.  The factor
1 + 10⁻³ covers the products of the small terms (each < 10⁻⁵: the theorem assumes
|ρ − 1| ≤ 10⁻⁵).
For the relu tables n = fl(fl(1/√v)·fl(1/√v′)) and s = √max(v v′ − Σ², 0) (v at least
the smallest normal number; s within 3 ulp in CUDA float, math.j2's sqrt_fast): |ρ − 1|
is a few u_r (a relative θ error of a few 10⁻⁷ in float, 10⁻¹⁵ in double;
tests/test_theta_poly.py measures it on relu's own inputs).

E_A is bounded as the max over a grid of 2^14 + 1 points plus the extrema of the
Chebyshev error (the error evaluated with 60 digits) plus (h/2)·max|E′|, where
max|E′| ≤ 2·Σ k²·|e_k| over the Chebyshev coefficients e_k of E = P − R on [0, 1]
(|T_k′| ≤ k² on [−1, 1]; R's coefficients computed to degree 160 at 60 digits — they
fall as 5.83^-k to the 10⁻⁶⁰ floor of that precision by degree ~75 — and the rest of R's
series taken as C·ρ_B^-k with ρ_B = 5.8 < 5.83 and C fitted to the computed
coefficients: an estimate, not interval arithmetic).  L = max R′ is taken on every
16th grid point with a 1 % margin (R′ is increasing, R′(0) = 1/3, R′(1) = 1).  The grid
term dominates: the derivative term is 0.5 % (float) and 1.7 % (double) of E_A, the
tail's share ~10⁻⁵⁶.

Regenerate and re-prove with ``python -m infinet.codegen.theta_poly`` (needs mpmath);
it prints the tables below (``--write`` rewrites them here).  tests/test_theta_poly.py
checks that they still come out, then measures the compiled C functions on more than
10⁶ points per dtype against atan2 in x87 extended precision (itself checked against
mpmath) and holds every error to the bound above.
"""
from __future__ import annotations

import math

#: degree of P per dtype
DEGREE = {"float32": 9, "float64": 20}

#: monomial coefficients p_0 … p_n of P(u) (Horner in u), rounded to the dtype
#: (float32 values are printed as the doubles they are exactly)
COEFFS: dict[str, tuple[float, ...]] = {}   # filled below (generated)

#: the proved constants per dtype: unit roundoff, E_A, E_H, L
BOUNDS: dict[str, dict[str, float]] = {}    # filled below (generated)

#: τ, the absolute error gradual underflow may add (module docstring)
UNDERFLOW = {"float32": 3 * 2.0 ** -150, "float64": 2.0 ** -1073}   # ≥ 3·2^-1075

# ---- generated by `python -m infinet.codegen.theta_poly` (do not edit by hand) --------
# @generated-begin
COEFFS['float32'] = (
    1.0,
    0.33333536982536316,
    0.13326656818389893,
    0.05797780305147171,
    0.020163489505648613,
    0.030059175565838814,
    -0.033552996814250946,
    0.05097575858235359,
    -0.03259168937802315,
    0.011162823997437954,
)
BOUNDS['float32'] = {'u': 5.960464477539063e-08, 'E_A': 2.4397822019057316e-08, 'E_H': 3.302174244193385e-07, 'L': 1.01}
COEFFS['float64'] = (
    1.0,
    0.33333333333330945,
    0.13333333333682526,
    0.05714285694042784,
    0.025396831596651948,
    0.011543895604776996,
    0.00532944828305169,
    0.0024737607111697374,
    0.001251083869870826,
    0.00016421047913476515,
    0.0017011133906985544,
    -0.003976427223224787,
    0.009195329684833449,
    -0.01586170544127971,
    0.02153400343586953,
    -0.022454256450108755,
    0.01773831596916336,
    -0.01025927464062151,
    0.004114940516850556,
    -0.001025639660813829,
    0.00012117305831116537,
)
BOUNDS['float64'] = {'u': 1.1102230246251565e-16, 'E_A': 8.680748751268319e-17, 'E_H': 7.550008083793794e-16, 'L': 1.01}
# @generated-end


def bound(dtype: str, rho_defect: float = 0.0) -> float:
    """B(ρ): the relative bound on θ′ (module docstring) for |ρ − 1| = rho_defect."""
    b = BOUNDS[dtype]
    return (1 + 1e-3) * (abs(rho_defect) + (2 + 2 * b["L"]) * b["u"] + b["E_A"] + b["E_H"])


def c_function(dtype: str) -> list[str]:
    """Lines of C: the Horner polynomial P for one real type (templates/math.j2)."""
    ctype = "float" if dtype == "float32" else "double"
    suffix = "f" if dtype == "float32" else ""
    coeffs = COEFFS[dtype]
    lines = [f"INF_FN {ctype} inf_theta_p({ctype} u)", "{",
             f"    // R(u) = θ/sin θ, u = 1 − cos θ ∈ [0, 1]: degree {len(coeffs) - 1}, "
             f"|P − R| ≤ {BOUNDS[dtype]['E_A']:.3g} (codegen/theta_poly.py)",
             f"    {ctype} p = {_lit(coeffs[-1], suffix)};"]
    for c in reversed(coeffs[:-1]):
        lines.append(f"    p = inf_fma(p, u, {_lit(c, suffix)});")
    lines += ["    return p;", "}"]
    return lines


def _lit(x: float, suffix: str) -> str:
    text = repr(float(x))
    if "e" not in text and "." not in text:
        text += ".0"
    return text + suffix


# -- derivation (mpmath: only when regenerating or testing) --------------------------------

def derive(dtype: str, degree: int | None = None, grid_log2: int = 14, digits: int = 60):
    """(coefficients rounded to dtype, {u, E_A, E_H, L}) — see the module docstring."""
    import mpmath as mp
    import numpy as np

    n = DEGREE[dtype] if degree is None else degree
    ur = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}[dtype]
    rnd = np.float32 if dtype == "float32" else np.float64
    with mp.workdps(digits):
        def R(u):
            u = mp.mpf(u)
            if u == 0:
                return mp.mpf(1)
            return mp.acos(1 - u) / mp.sqrt(u * (2 - u))

        def dR(u):         # R′(u) = (sin θ − θ cos θ)/sin³ θ; R′(0) = 1/3
            u = mp.mpf(u)
            if u < mp.mpf(10) ** (-digits // 3):
                return mp.mpf(1) / 3 + u * 4 / 45 * 2   # series: 1/3 + 8u/45 + …
            th = mp.acos(1 - u)
            s = mp.sin(th)
            return (s - th * mp.cos(th)) / s ** 3

        # Chebyshev interpolant of degree n on [0, 1] (x = 2u − 1), then monomials in u
        a = _cheb_coeffs(mp, R, n)
        mono = _cheb_to_monomial_u(mp, a)
        coeffs = tuple(float(rnd(float(c))) for c in mono)
        P = [mp.mpf(c) for c in coeffs]

        def Pu(u):
            acc = mp.mpf(0)
            for c in reversed(P):
                acc = acc * u + c
            return acc

        # E on a grid (plus the Chebyshev extrema of the interpolation error)
        m = 2 ** grid_log2
        pts = [mp.mpf(k) / m for k in range(m + 1)]
        pts += [(1 + mp.cos(mp.pi * k / (n + 1))) / 2 for k in range(n + 2)]
        e_grid = max(abs(Pu(u) - R(u)) for u in pts)
        # max|E′| from the Chebyshev coefficients of E = P − R
        M = 160
        aR = _cheb_coeffs(mp, R, M)
        aP = _monomial_u_to_cheb(mp, P)
        e = [(aP[k] if k < len(aP) else 0) - aR[k] for k in range(M + 1)]
        rho_b = mp.mpf("5.8")
        C = max(abs(aR[k]) * rho_b ** k for k in range(M // 2, M + 1))
        tail = sum(k * k * C * rho_b ** (-k) for k in range(M + 1, 4 * M))
        dE = 2 * (mp.fsum(k * k * abs(e[k]) for k in range(M + 1)) + tail)
        E_A = e_grid + dE / (2 * m)
        gam = lambda j: j * ur / (1 - j * ur)  # noqa: E731
        E_H = mp.fsum(gam(min(2 * k + 1, 2 * n)) * abs(P[k]) for k in range(n + 1))
        L = max(dR(u) for u in pts[: m + 1 : 16]) * (1 + mp.mpf("1e-2"))
        out = {"u": ur, "E_A": float(E_A) * (1 + 1e-6), "E_H": float(E_H) * (1 + 1e-6),
               "L": float(L)}
    return coeffs, out


def _cheb_coeffs(mp, f, n):
    """Chebyshev coefficients of the interpolant of f(u), u ∈ [0, 1], at n + 1 points."""
    N = n + 1
    xs = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / N) for k in range(N)]
    fs = [f((x + 1) / 2) for x in xs]
    out = []
    for j in range(N):
        s = mp.fsum(fs[k] * mp.cos(j * mp.pi * (k + mp.mpf(1) / 2) / N) for k in range(N))
        out.append(s * 2 / N if j else s / N)
    return out


def _cheb_to_monomial_u(mp, a):
    """Σ a_j T_j(2u − 1) as monomial coefficients in u."""
    n = len(a) - 1
    x_poly = [mp.mpf(-1), mp.mpf(2)]            # x = 2u − 1
    T = [[mp.mpf(1)], x_poly]
    for _ in range(2, n + 1):
        prev, cur = T[-2], T[-1]
        nxt = [mp.mpf(0)] * (len(cur) + 1)
        for i, c in enumerate(cur):            # 2x·T_k
            for j, d in enumerate(x_poly):
                nxt[i + j] += 2 * c * d
        for i, c in enumerate(prev):
            nxt[i] -= c
        T.append(nxt)
    out = [mp.mpf(0)] * (n + 1)
    for j, aj in enumerate(a):
        for i, c in enumerate(T[j]):
            out[i] += aj * c
    return out


def _monomial_u_to_cheb(mp, p):
    """Chebyshev coefficients (in x = 2u − 1) of the polynomial Σ p_k u^k (exact)."""
    n = len(p) - 1
    N = n + 1
    # interpolation at n + 1 Chebyshev points is exact for a polynomial of degree n

    def f(u):
        acc = mp.mpf(0)
        for c in reversed(p):
            acc = acc * u + c
        return acc
    return _cheb_coeffs(mp, f, N - 1)


def _generated_block() -> str:
    lines = []
    for dtype in ("float32", "float64"):
        coeffs, b = derive(dtype)
        lines.append(f"COEFFS[{dtype!r}] = (")
        lines += [f"    {c!r}," for c in coeffs]
        lines.append(")")
        lines.append(f"BOUNDS[{dtype!r}] = {{" +
                     ", ".join(f"{k!r}: {v!r}" for k, v in b.items()) + "}")
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - a maintenance tool
    import sys
    block = _generated_block()
    if "--write" in sys.argv:
        path = __file__
        text = open(path, encoding="utf-8").read()
        head, rest = text.split("# @generated-begin\n", 1)
        _, tail = rest.split("# @generated-end\n", 1)
        with open(path, "w", encoding="utf-8") as f:
            f.write(head + "# @generated-begin\n" + block + "\n# @generated-end\n" + tail)
        print(f"wrote {path}")
    else:
        print(block)
    for dtype in ("float32", "float64"):
        print(f"# {dtype}: B(1) = {bound(dtype) if dtype in BOUNDS else float('nan'):.3g} "
              f"relative (u_r = {math.ldexp(1, -24 if dtype == 'float32' else -53):.3g})")


if __name__ == "__main__":  # pragma: no cover
    main()
