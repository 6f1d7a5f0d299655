"""Printing a kernel program as source text: one skeleton, two small target descriptions.

The CUDA and C++ targets differ only in a :class:`Target` (qualifiers, barrier, lanes per
row, entry points); the stages, tails and per-entry arithmetic are the same text
(templates/kernel.j2, macros.j2, math.j2).  The output is deterministic: the same plan
always prints the same source, so caches keyed by the text never go stale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import jinja2

from .program import KernelProgram, PassProgram, Stage

#: static shared memory a CUDA block may use without opting in
SHARED_LIMIT = 48 * 1024


@dataclass(frozen=True)
class Target:
    name: str          # cuda | cpu
    title: str
    command: str       # the CLI command that prints it
    template: str
    #: walk a plane's valid entries as one flat range (GPU: no idle lanes on narrow
    #: planes) rather than rows x contiguous runs (CPU: SIMD along each row)
    flat_team: bool
    #: (not flat_team) walk each row of a uniform stage in whole vectors of INF_VW lanes,
    #: masking the loads and stores past its end, so that no row ends in a scalar loop
    #: (a scalar remainder calls the scalar libm atan2: most of the time on narrow planes).
    #: Only where the self pass is plane (0, 0) alone (KernelProgram.self_diagonal_only):
    #: elsewhere an entry's atan2 must come from the same implementation in both passes.
    vector_blocks: bool = False


CUDA = Target("cuda", "CUDA", "cuda", "cuda.cu.j2", flat_team=True)
CPU = Target("cpu", "C++ (CPU)", "cuda --cpu", "cpu.cpp.j2", flat_team=False,
             vector_blocks=True)
TARGETS = {"cuda": CUDA, "cpu": CPU}
DTYPES = (("float", "f32"), ("double", "f64"))


def lit(x: float) -> str:
    """A C literal that reads back as exactly the double ``x``."""
    x = float(x)
    if math.isinf(x) or math.isnan(x):  # pragma: no cover - constants are finite
        raise ValueError(f"non-finite constant {x}")
    text = repr(x)
    if "e" not in text and "." not in text:
        text += ".0"
    return text


def offidx(offsets, n: int) -> list[int]:
    """Plane index of every offset -(n-1)..n-1 along an axis (-1 where not stored)."""
    where = {d: i for i, d in enumerate(offsets)}
    return [where.get(d, -1) for d in range(-(n - 1), n)]


def ntaps(op, g) -> int:
    return g.q * g.q if op.kind == "pool" else g.q


def tapweight(op, g) -> float:
    return 1.0 / (g.q * g.q) if op.kind == "pool" else 1.0 / g.q


@dataclass
class Sweep:
    """One pass over a plane: a spatial op and the elementwise activations fused into it."""

    op: object
    acts: list
    src: int
    dst: int
    t_out: bool


def sweeps(stage: Stage) -> list[Sweep]:
    out: list[Sweep] = []
    cur = 1
    for op in stage.ops:
        if op.kind == "act" and out:
            out[-1].acts.append(op)
            out[-1].t_out = op.t_out
            continue
        out.append(Sweep(op, [], cur, 1 - cur, op.t_out))
        cur = 1 - cur
    return out


def per_item_entries(pas: PassProgram) -> int:
    total = pas.buffer_entries()
    if pas.readout_stage >= 0:
        total += 2 * pas.stages[pas.readout_stage].nplanes
    return total


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("infinet.codegen", "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             autoescape=False)
    env.globals.update(lit=lit, offidx=offidx, ntaps=ntaps, tapweight=tapweight,
                       sweeps=sweeps, per_item_entries=per_item_entries, pi=math.pi,
                       shared_limit=SHARED_LIMIT, dtypes=DTYPES)
    return env


def render(prog: KernelProgram, target: str) -> str:
    """The complete source text of a kernel program for ``target`` (cuda | cpu)."""
    tgt = TARGETS[target]
    env = environment()
    macros = env.get_template("macros.j2").make_module({"prog": prog, "target": tgt})
    passes = [p for p in (prog.self_, prog.pair) if p.active]
    text = env.get_template(tgt.template).render(
        prog=prog, target=tgt, passes=passes, stage_fn=macros.stage_fn,
        tail_fn=macros.tail_fn, source_lines=prog.plan.source.rstrip("\n").splitlines())
    # tidy: no trailing spaces, at most one blank line in a row
    lines = [ln.rstrip() for ln in text.splitlines()]
    tidy: list[str] = []
    for ln in lines:
        if ln or (tidy and tidy[-1]):
            tidy.append(ln)
    return "\n".join(tidy).rstrip("\n") + "\n"
