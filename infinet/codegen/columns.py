"""The CUDA target's column walk of a uniform 2-D stage, and its register stencil.

In a stage whose every state keeps the sink's geometry (``Stage.uniform``) on an image
(depth 1, height > 1) no wider than the team, each thread owns one column ``w`` of the
plane's valid region and a band of consecutive rows ``[ha, hb)``: the team is split into
``bands = threads // cw`` bands of ``cw`` threads, band ``b`` takes rows
``zhlo + b * R ... + R`` with ``R = ceil(ch / bands)`` (threads past ``bands * cw`` have no
rows).  The walk's position, buffer index and variance-table pointers are computed once
per work item; the entry loop advances them by one row.

Walking down a column, a conv's stencil keeps the sums along w of the rows it has already
read in registers: each entry reads one new buffer row (``qw`` taps) per stencil instead
of ``qh`` rows, and adds the row sums in the order the reference does
(``snippets._stencil``: each row's taps summed and scaled by 1/qw, then the rows summed
in order and scaled by 1/qh), so the numbers are bit for bit those of the flat walk.

:func:`team_walk` is the same mapping for the static SASS report
(benchmarks/sass_report.py); :func:`uses_columns` decides where it applies.
"""
from __future__ import annotations

import numpy as np

from .printer import lit
from .program import Op, Stage, Sweep


def uses_columns(stage: Stage) -> bool:
    """Whether the CUDA target walks this stage by columns (else: the flat walk)."""
    return (stage.uniform and stage.extent[0] == 1 and stage.sink_size[0] == 1
            and stage.sink_size[1] > 1 and stage.sink_size[2] <= stage.threads)


#: the column walk's divisions by the plane's width and band count are multiplications by
#: ceil(2^RCP_SHIFT / n), shifted right (columns_setup in templates/macros.j2)
RCP_SHIFT = 20


def reciprocals(stage: Stage) -> list[int]:
    """ceil(2^RCP_SHIFT / n) for n = 0 .. threads (0 at 0): the walk's divisors (the
    plane's width and the band count) are at most the team's size, which
    ``__launch_bounds__`` makes at least blockDim.  Checked exact for every dividend the
    walk forms (tid and nth below threads + 1, ch + bands - 1 below height + threads)."""
    n = stage.threads
    table = [0] + [-(-(1 << RCP_SHIFT) // d) for d in range(1, n + 1)]
    top = max(n + 1, stage.sink_size[1] + n)
    for d in range(1, n + 1):
        m = table[d]
        assert top * m < 2 ** 32
        # q = (x * m) >> s is floor(x / d) for all x < top iff it is at the top of each
        # quotient step (x = k*d - 1 and x = k*d), the error growing with x
        for x in list(range(d - 1, top, d)) + list(range(0, top, d)):
            assert (x * m) >> RCP_SHIFT == x // d, (d, x)
    return table


def register_stencil(stage: Stage, op: Op) -> bool:
    """Whether a sweep's conv starter keeps its stencil's row sums in registers."""
    if op.kind != "conv" or not uses_columns(stage):
        return False
    gd, gh, gw = op.axes
    return gd.q == 1 and gh.q > 1 and gh.stride == 1 and gw.stride == 1


def carried(stage: Stage, sweep: Sweep) -> list[str]:
    """Names of the carried row sums of a sweep's register stencil(s)."""
    op = sweep.starter
    if not register_stencil(stage, op):
        return []
    q = op.axes[1].q
    names = [f"rk{b}_" for b in range(q - 1)]
    if op.t_in and stage.t_pass:
        names += [f"rt{b}_" for b in range(q - 1)]
    return names


def _row_sum(op: Op, base: str, row: int, pitch: int) -> str:
    gw = op.axes[2]
    taps = [f"{base}[{row * pitch + c}]" for c in range(gw.q)]
    s = " + ".join(taps)
    return s if gw.q == 1 else f"({s}) * (real){lit(1.0 / gw.q)}"


def warm_up(stage: Stage, sweep: Sweep) -> list[str]:
    """Before a thread's first row: the row sums of the window rows above it (``crb`` is
    then the buffer index of the window's first tap for the entry at row ``ha``)."""
    op = sweep.starter
    if not register_stencil(stage, op):
        return []
    q = op.axes[1].q
    pitch = stage.extent[2]
    out = []
    for var, buf in (("rk", f"K{op.src_slot}"), ("rt", f"T{op.src_slot}")):
        if var == "rt" and not (op.t_in and stage.t_pass):
            continue
        out.append(f"const real* s_{var} = {buf} + crb + w;")
        for b in range(q - 1):
            out.append(f"{var}{b}_ = {_row_sum(op, f's_{var}', b, pitch)};")
    return out


def _stencil(stage: Stage, op: Op, var: str, buf: str, c: str) -> list[str]:
    gh = op.axes[1]
    q = gh.q
    pitch = stage.extent[2]
    lines = [f"{{   // A(S): this row's taps along w summed and scaled by 1/{op.axes[2].q}; the "
             f"rows above from registers; then along h by 1/{q}",
             f"    const real* s_ = {buf} + crb + w;",
             f"    const real rn_ = {_row_sum(op, 's_', q - 1, pitch)};",
             f"    real hsum0 = {c}0_;"]
    for b in range(1, q - 1):
        lines.append(f"    hsum0 += {c}{b}_;")
    lines.append("    hsum0 += rn_;")
    lines.append(f"    {var} = hsum0 * (real){lit(1.0 / q)};")
    for b in range(q - 2):
        lines.append(f"    {c}{b}_ = {c}{b + 1}_;")
    lines.append(f"    {c}{q - 2}_ = rn_;")
    lines.append("}")
    return lines


def starter(stage: Stage, sweep: Sweep) -> list[str] | None:
    """The conv starter with the register stencil (None: print the ordinary starter)."""
    op = sweep.starter
    if not register_stencil(stage, op):
        return None
    from .snippets import _affine
    lines = _stencil(stage, op, "k", f"K{op.src_slot}", "rk")
    if op.t_in and stage.t_pass:
        lines += _stencil(stage, op, "t", f"T{op.src_slot}", "rt")
    return lines + _affine(op)


def team_walk(stage: Stage, sweep: Sweep, D):
    """The report's model of a column-walked sweep over plane D: (entry-loop iterations
    per warp, row-loop iterations per warp, [iterations, 32, 3] lane positions,
    [iterations, 32] live lanes, valid entries); None where the stage is not walked by
    columns (the report then models the flat or full walk itself)."""
    if not uses_columns(stage):
        return None
    threads = stage.threads
    warps = threads // 32
    (lod, hid), (loh, hih), (low, hiw) = valid_region(sweep, D)
    cw, ch = hiw - low, hih - loh
    cw1 = max(cw, 1)
    tid = np.arange(threads)
    bands = threads // cw1
    band = tid // cw1
    rows = -(-ch // bands) if bands else 0
    ha = loh + band * rows
    hb = np.minimum(ha + rows, hih)
    hb = np.where((band < bands) & (cw > 0), hb, ha)
    n = np.maximum(hb - ha, 0)
    w = low + tid % cw1
    entry_iters = np.zeros(warps, dtype=np.int64)
    pos_parts, live_parts = [], []
    for wp in range(warps):
        lanes = slice(32 * wp, 32 * wp + 32)
        it = int(n[lanes].max(initial=0))
        entry_iters[wp] = it
        for i in range(it):
            live = n[lanes] > i
            h = np.where(live, ha[lanes] + i, 0)
            pos_parts.append(np.stack([np.zeros(32, int), h, np.where(live, w[lanes], 0)],
                                      axis=-1)[None])
            live_parts.append(live[None])
    pos = np.concatenate(pos_parts) if pos_parts else np.zeros((0, 32, 3), dtype=np.int64)
    live = np.concatenate(live_parts) if live_parts else np.zeros((0, 32), dtype=bool)
    entries = max(cw, 0) * max(ch, 0) * max(hid - lod, 0)
    return entry_iters, np.zeros(warps, dtype=np.int64), pos, live, entries


def valid_region(sweep: Sweep, D) -> list[tuple[int, int]]:
    """Per axis (lo, hi): the positions p of the sweep's state with p and p + mult·D inside."""
    out = []
    for ax in range(3):
        dv = sweep.mult[ax] * D[ax]
        lo = -dv if dv < 0 else 0
        hi = sweep.size[ax] - dv if dv > 0 else sweep.size[ax]
        out.append((lo, max(hi, lo)))
    return out
