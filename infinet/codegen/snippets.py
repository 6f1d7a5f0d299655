"""The C text of each op of a stage or tail, printed from the kernel program.

The templates (templates/macros.j2) hold the skeleton of a stage — the plane loops, the
local buffers, the sinks; the functions here print what one op does at one entry, with
every size, stride, offset and constant a literal.  In scope at an entry: the position
``d, h, w`` of the sweep's output state, the offsets ``dd, dh, dw`` of its plane (its
multiplier times the work item's plane D), ``rb`` (the row's base in the local buffers),
and the running values ``k`` (Σ) and ``t`` (Θ).
"""
from __future__ import annotations

from ..layers.affine import adds_bias
from .printer import lit
from .program import AxisGeom, Op, Source, Stage, Sweep
from .render_index import AXIS, buf, plane_of, plane_valid, pos, shifted


def _src(k: int) -> str:
    return f"src{k}"


def row_bases(stage: Stage, sweep: Sweep) -> list[str]:
    """Per-row bases: every access in the entry loop is then (base + rb)[w] — a pointer
    plus w, which GCC vectorises (and masks) better than an index expression."""
    out = [f"const int rb = {buf(stage, 'd', 'h', '0')};", "(void)rb;"]
    op = sweep.starter
    if op.kind == "conv":
        gd, gh, gw = op.axes
        out.append(f"const int crb = {buf(stage, f'{gd.stride} * d - {gd.low}', f'{gh.stride} * h - {gh.low}', f'-{gw.low}')};")
    for a in sweep.ops:
        if a.kind == "ew" and a.v_source == "table":
            out.append(f"const real* v1r_{a.index} = vt1 + {a.voff} + "
                       f"{pos(a.vsize, 'd', 'h', '0')};")
            out.append(f"const real* v2r_{a.index} = vt2 + {a.voff} + "
                       f"{pos(a.vsize, '(d + dd)', '(h + dh)', 'dw')};")
            out.append(f"(void)v1r_{a.index}; (void)v2r_{a.index};")
            size = 1
            for n in a.vsize:
                size *= n
            for k in range(a.fn.n_features if a.foff >= 0 else 0):
                off = a.foff + k * size
                out.append(f"const real* f1r_{a.index}_{k} = vt1 + {off} + "
                           f"{pos(a.vsize, 'd', 'h', '0')};")
                out.append(f"const real* f2r_{a.index}_{k} = vt2 + {off} + "
                           f"{pos(a.vsize, '(d + dd)', '(h + dh)', 'dw')};")
                out.append(f"(void)f1r_{a.index}_{k}; (void)f2r_{a.index}_{k};")
    return out


def _features(fn, op, index: str) -> list[str]:
    """The features of v1 and v2 (f1_k, f2_k): read from the variance tables beside v
    (pair passes) or computed from v here (self pass; a mean)."""
    if not fn.n_features:
        return []
    names = [f"f{i}_{k}" for i in (1, 2) for k in range(fn.n_features)]
    if op.foff >= 0:
        return [f"    const real {f} = f{f[1]}r_{op.index}_{f[3:]}[{index}];" for f in names]
    one = ", ".join(f"f1_{k}" for k in range(fn.n_features))
    two = ", ".join(f"f2_{k}" for k in range(fn.n_features))
    return [f"    real {', '.join(names)};",
            f"    {fn.features_name}<real>(v1, {one});",
            f"    {fn.features_name}<real>(v2, {two});"]


def _stencil(stage: Stage, op: Op, var: str, base: str) -> list[str]:
    """A(S): taps along w summed and scaled by 1/qw, then along h by 1/qh, then d."""
    gd, gh, gw = op.axes
    slab = stage.extent[1] * stage.extent[2]
    pitch = stage.extent[2]
    then_d = f", then along d by 1/{gd.q}" if gd.q > 1 else ""
    lines = [f"{{   // A(S): taps along w summed and scaled by 1/{gw.q}, then along h by "
             f"1/{gh.q}{then_d} (unrolled)",
             f"    const real* s_ = {base} + crb + {gw.stride} * w;"]
    d_terms = []
    for a in range(gd.q):
        h_terms = []
        for b in range(gh.q):
            taps = [f"s_[{a * slab + b * pitch + c}]" for c in range(gw.q)]
            w_sum = " + ".join(taps)
            h_terms.append(w_sum if gw.q == 1 else f"({w_sum}) * (real){lit(1.0 / gw.q)}")
        d_terms.append(_acc(lines, h_terms, gh.q, f"hsum{a}"))
    total = _acc(lines, d_terms, gd.q, "dsum")
    lines.append(f"    {var} = {total};")
    lines.append("}")
    return lines


def _acc(lines: list[str], terms: list[str], q: int, name: str) -> str:
    """Sum ``terms`` in order (as the reference accumulates them), scaled by 1/q."""
    if q == 1:
        return terms[0]
    lines.append(f"    real {name} = {terms[0]};")
    for t in terms[1:]:
        lines.append(f"    {name} += {t};")
    return f"{name} * (real){lit(1.0 / q)}"


def _affine_k(op: Op, k: str) -> str:
    """Σ' = W²·Σ + b² as C (layers/affine.py: affine_k, no bias term where b = 0)."""
    text = f"(real){lit(op.W2)} * {k}"
    return text + f" + (real){lit(op.B2)}" if adds_bias(op.B2) else text


def _affine(op: Op) -> list[str]:
    out = [f"k = {_affine_k(op, 'k')};"]
    if op.t_in:
        out.append(f"t = (real){lit(op.W2)} * t;")
        if op.trains:
            out.append("t = t + k;")
    elif op.trains:
        out.append("t = k;")
    return out


def _tap_reader(stage: Stage, op: Op) -> list[str]:
    """pool / cconv / gconv: window taps of a materialised source, with explicit offsets."""
    src: Source = stage.sources[op.source]
    name = _src(op.source)
    lines = ["{"]
    axes = list(zip(AXIS, op.axes))
    live = [(v, g) for v, g in axes if not (g.q == 1 and g.n_in == 1)]
    depth = 0
    indent = "    "
    for v, g in axes:
        if (v, g) not in live:
            lines.append(f"{indent}const int i{v} = 0, j{v} = 0; (void)i{v}; (void)j{v};")
    lines.append(f"{indent}real acc = 0, tacc = 0; (void)tacc;")
    accs = []
    for v, g in live:
        ntaps = g.q * g.q if op.kind == "pool" else g.q
        lines.append(f"{indent}real acc_{v} = 0, tacc_{v} = 0; (void)tacc_{v};")
        lines.append(f"{indent}for (int t{v} = 0; t{v} < {ntaps}; ++t{v}) {{")
        depth += 1
        ind = indent * (depth + 1)
        if op.kind == "pool":
            lines.append(f"{ind}const int i{v} = {g.stride} * {v} + t{v} / {g.q} - {g.low}, "
                         f"j{v} = {g.stride} * ({v} + d{v}) + t{v} % {g.q} - {g.low};")
            lines.append(f"{ind}if (i{v} < 0 || i{v} >= {g.n_in} || j{v} < 0 || j{v} >= "
                         f"{g.n_in}) continue;")
        elif op.kind == "cconv":
            lines.append(f"{ind}const int i{v} = inf_mod({g.stride} * {v} + t{v} - {g.low}, "
                         f"{g.n_in}), j{v} = inf_mod({g.stride} * ({v} + d{v}) + t{v} - "
                         f"{g.low}, {g.n_in});")
        else:
            lines.append(f"{ind}const int i{v} = {g.stride} * {v} + t{v} - {g.low}, "
                         f"j{v} = {g.stride} * ({v} + d{v}) + t{v} - {g.low};")
            lines.append(f"{ind}if (i{v} < 0 || i{v} >= {g.n_in} || j{v} < 0 || j{v} >= "
                         f"{g.n_in}) continue;")
        accs.append((v, g))
    ind = indent * (depth + 1)
    dv = tuple(f"(j{v} - i{v})" for v in AXIS)
    lines.append(f"{ind}if ({plane_valid(name, src, dv)}) {{")
    lines.append(f"{ind}    const long long e = (long long)({plane_of(name, src, dv)}) * "
                 f"{src.plane_size} + {pos(src.size, 'id', 'ih', 'iw')};")
    inner = accs[-1][0] if accs else None
    target = f"acc_{inner}" if inner else "acc"
    ttarget = f"tacc_{inner}" if inner else "tacc"
    lines.append(f"{ind}    {target} += {name}k[e];")
    if op.t_in:
        lines.append(f"{ind}    {ttarget} += {name}t[e];")
    lines.append(f"{ind}}}")
    # close the loops, folding each axis's sum into the one outside it
    for level in range(len(accs) - 1, -1, -1):
        v, g = accs[level]
        weight = op.weights[AXIS.index(v)] if op.kind == "pool" else 1.0 / g.q
        outer = f"acc_{accs[level - 1][0]}" if level else "acc"
        touter = f"tacc_{accs[level - 1][0]}" if level else "tacc"
        lines.append(f"{indent * (level + 1)}}}")
        lines.append(f"{indent * (level + 1)}{outer} += acc_{v} * (real){lit(weight)};")
        if op.t_in:
            lines.append(f"{indent * (level + 1)}{touter} += tacc_{v} * (real){lit(weight)};")
    lines.append(f"{indent}k = acc;")
    if op.t_in:
        lines.append(f"{indent}t = tacc;")
    lines.append("}")
    if op.kind in ("cconv", "gconv"):
        lines += _affine(op)
    return lines


def starter(stage: Stage, sweep: Sweep, prog) -> list[str]:
    """C statements computing k (and t) of a sweep's first op at (d, h, w)."""
    op = sweep.starter
    if op.kind == "input":
        c = prog.channels
        size = op.size
        return [f"k = inf_input<real, {c}>(x1 + ({pos(size)}) * {c}, "
                f"x2 + ({shifted(size)}) * {c});"]
    if op.kind == "conv":
        lines = _stencil(stage, op, "k", f"K{op.src_slot}")
        if op.t_in:
            lines += _stencil(stage, op, "t", f"T{op.src_slot}")
        return lines + _affine(op)
    if op.kind in ("pool", "cconv", "gconv"):
        return _tap_reader(stage, op)
    if op.kind == "slot":
        out = [f"k = (K{op.src_slot} + rb)[w];"]
        if op.t_in:
            out.append(f"t = (T{op.src_slot} + rb)[w];")
        return out
    if op.kind == "load":
        return _load(stage, op.source, op.t_in, "k", "t")
    if op.kind == "sum":
        return _sum(stage, op)
    raise AssertionError(op.kind)  # pragma: no cover - program.py makes no other starter


def _load(stage: Stage, k: int, with_t: bool, kvar: str, tvar: str) -> list[str]:
    src = stage.sources[k]
    name = _src(k)
    idx = f"(long long)({plane_of(name, src)}) * {src.plane_size} + {pos(src.size)}"
    out = [f"{kvar} = {name}k[{idx}];"]
    if with_t:
        out.append(f"{tvar} = {name}t[{idx}];")
    return ["{"] + ["    " + x for x in out] + ["}"]


def _sum(stage: Stage, op: Op) -> list[str]:
    """The sum of a block's branches, added in the order of the graph (as the reference)."""
    lines = ["{", "    const real ck = k, ct = t; (void)ck; (void)ct;"]
    kterms, tterms = [], []
    for n, (kind, ref, t_live) in enumerate(op.operands):
        if kind == "chain":
            kterms.append("ck")
            if t_live:
                tterms.append("ct")
        elif kind == "slot":
            kterms.append(f"(K{ref} + rb)[w]")
            if t_live and op.t_out:
                tterms.append(f"(T{ref} + rb)[w]")
        else:
            lines.append(f"    real lk{n} = 0, lt{n} = 0; (void)lt{n};")
            lines += ["    " + x for x in _load(stage, ref, t_live and op.t_out, f"lk{n}",
                                                f"lt{n}")]
            kterms.append(f"lk{n}")
            if t_live and op.t_out:
                tterms.append(f"lt{n}")
    lines.append(f"    k = {' + '.join(kterms)};")
    if op.t_out:
        lines.append(f"    t = {' + '.join(tterms) if tterms else '(real)0'};")
    lines.append("}")
    return lines


def chain_op(stage: Stage, op: Op, masked: bool) -> list[str]:
    """C statements of an entry-wise op applied to the running (k, t)."""
    if op.kind == "sum":
        return [f"// layer {op.index} (line {op.line}): {op.text}"] + _sum(stage, op)
    assert op.kind == "ew", op.kind
    lines = [f"// layer {op.index} (line {op.line}): {op.text}", "{"]
    fn = op.fn
    if fn.uses_v:
        if op.v_source == "table" and op.vsize == (1, 1, 1):     # one number per input
            lines.append(f"    real v1 = v1r_{op.index}[0], v2 = v2r_{op.index}[0];")
        elif op.v_source == "table":
            lines.append(f"    real v1 = v1r_{op.index}[w], v2 = v2r_{op.index}[w];")
        elif op.v_source == "self":
            lines.append("    real v1 = k, v2 = k;   // plane 0: v(x)[p] is the entry itself")
        else:
            src = stage.sources[op.v_src]
            name = _src(op.v_src)
            zero = ("0", "0", "0")
            p0 = f"(long long)({plane_of(name, src, zero)}) * {src.plane_size}"
            lines.append(f"    real v1 = {name}k[{p0} + {pos(src.size)}], "
                         f"v2 = {name}k[{p0} + {shifted(src.size)}];")
        if masked:
            lines += ["    // lanes past the row end get Σ = 1, v = v' = 2: atan2 of ordinary",
                      "    // numbers (libmvec sends a vector with a zero, inf or NaN lane to",
                      "    // scalar libm)",
                      "    k = in_ ? k : (real)1;", "    v1 = in_ ? v1 : (real)2;",
                      "    v2 = in_ ? v2 : (real)2;"]
        lines += _features(fn, op, "0" if op.vsize == (1, 1, 1) else "w")
    else:
        lines.append("    const real v1 = 0, v2 = 0;")
    fa = fn.features_args("1") + fn.features_args("2")
    if fn.factor:
        lines.append("    real dot;")
        lines.append(f"    k = {fn.name}<real>(k, v1, v2{fa}, dot);")
        if op.t_in:
            lines.append("    t = dot * t;")
    else:
        lines.append(f"    k = {fn.name}<real>(k, v1, v2{fa});")
    lines.append("}")
    return lines


def record(op: Op, masked: bool) -> list[str]:
    """Self pass: plane 0 of a variance state is its v(x)[p]."""
    if not op.record:
        return []
    cond = ("in_ && " if masked else "") + "Dd == 0 && Dh == 0 && Dw == 0"
    return [f"if ({cond}) A.vrec[r1 * INF_VT + {op.record_off} + {pos(op.size)}] = k;"]


def tail_op(prog, pas, op: Op) -> list[str]:
    """One flat node of a tail: its (k, t) in the variables k<i>, t<i>."""
    i = op.index
    lines = [f"// layer {i} (line {op.line}): {op.text}"]
    kin = f"k{op.reads}" if op.reads >= 0 else "0"
    tin = f"t{op.reads}" if op.reads >= 0 and op.t_in else "(real)0"
    if op.kind == "input":
        lines.append(f"real k{i} = inf_input<real, {op.channels}>(A.x1 + r1 * INF_XS, "
                     f"A.x2 + r2 * INF_XS), t{i} = 0;")
    elif op.kind == "readout":
        st, scale, planes = pas.readouts[i]
        lines.append(f"real k{i} = 0, t{i} = 0;")
        lines.append("{")
        lines.append("    real acc = 0, tacc = 0; (void)tacc;")
        if len(planes) == st.nplanes:
            lines.append(f"    for (int p = 0; p < {st.nplanes}; ++p) {{")
            idx = "p"
        else:
            lines.append(f"    for (int p = 0; p < {len(planes)}; ++p) {{")
            lines.append(f"        const int q = {op_planes_name(i)}[p];")
            idx = "q"
        lines.append(f"        acc += A.part{st.sink}_k[item * {st.nplanes} + {idx}];")
        if op.t_out:
            lines.append(f"        tacc += A.part{st.sink}_t[item * {st.nplanes} + {idx}];")
        lines.append("    }")
        lines.append(f"    k{i} = acc * (real){lit(scale)};")
        if op.t_out:
            lines.append(f"    t{i} = tacc * (real){lit(scale)};")
        lines.append("}")
    elif op.kind == "dense":
        lines.append(f"real k{i} = {_affine_k(op, kin)};")
        if op.t_in:
            lines.append(f"real t{i} = (real){lit(op.W2)} * {tin}" +
                         (f" + k{i};" if op.trains else ";"))
        else:
            lines.append(f"real t{i} = {'k' + str(i) if op.trains else '0'};")
    elif op.kind == "ew":
        fn = op.fn
        lines.append(f"real k{i}, t{i} = {tin};")
        lines.append("{")
        if fn.uses_v and op.v_source == "table":
            lines.append(f"    const real v1 = A.vt1[r1 * INF_VT + {op.voff}], "
                         f"v2 = A.vt2[r2 * INF_VT + {op.voff}];")
        elif fn.uses_v:
            lines.append(f"    const real v1 = {kin}, v2 = {kin};")
        else:
            lines.append("    const real v1 = 0, v2 = 0;")
        if fn.uses_v and fn.n_features and op.foff >= 0:
            for k in range(fn.n_features):
                lines.append(f"    const real f1_{k} = A.vt1[r1 * INF_VT + {op.foff + k}], "
                             f"f2_{k} = A.vt2[r2 * INF_VT + {op.foff + k}];")
        elif fn.uses_v and fn.n_features:
            lines += _features(fn, op, "0")
        fa = fn.features_args("1") + fn.features_args("2")
        if fn.factor:
            lines.append("    real dot;")
            lines.append(f"    k{i} = {fn.name}<real>({kin}, v1, v2{fa}, dot);")
            if op.t_in:
                lines.append(f"    t{i} = dot * t{i};")
        else:
            lines.append(f"    k{i} = {fn.name}<real>({kin}, v1, v2{fa});")
        lines.append("}")
    elif op.kind == "sum":
        ks = " + ".join(f"k{j}" for _, j, _ in op.operands)
        ts = " + ".join(f"t{j}" for _, j, live in op.operands if live) or "(real)0"
        lines.append(f"real k{i} = {ks}, t{i} = {ts};")
    else:  # pragma: no cover
        raise AssertionError(op.kind)
    lines.append(f"(void)k{i}; (void)t{i};")
    if op.record:
        lines.append(f"A.vrec[r1 * INF_VT + {op.record_off}] = k{i};")
    return lines


def op_planes_name(readout: int) -> str:
    return f"inf_readout{readout}_planes"


__all__ = ["AxisGeom", "chain_op", "op_planes_name", "record", "row_bases", "starter",
           "tail_op"]
