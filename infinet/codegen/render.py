"""Printing a kernel program as source text: one skeleton, two small target descriptions.

The CUDA and C++ targets differ only in a :class:`Target` (qualifiers, barrier, lanes per
row, entry points); the stages, tails and per-entry arithmetic are the same text
(templates/kernel.j2, macros.j2, math.j2), and every layer's per-entry formula is
printed from its one definition (printer.py).  The output is deterministic: the same
plan always prints the same source, so caches keyed by the text never go stale.

Index arithmetic is printed here, in Python, so the templates stay skeletons: a
position of a state is (d, h, w) on the canonical three axes, flattened row-major with
the state's sizes; axes of size 1 drop out of every expression.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import jinja2
import numpy as np

from ..dtypes import DTYPES as _DTYPES
from . import columns, snippets, theta_poly
from .printer import lit
from .program import KernelProgram, PassProgram, Stage  # noqa: F401
from .render_index import AXIS, buf, offidx, plane_of, plane_valid, pos, shifted

#: static shared memory a CUDA block may use without opting in
SHARED_LIMIT = 48 * 1024
#: what the occupancy of a stage kernel is chosen from (sm_80 and sm_90 alike): registers
#: and shared memory per SM, the driver's share of each resident block, threads per SM,
#: and the register budget a stage thread is held to (the sweeps need up to ~90 registers
#: without spilling: float64, and float32 quadrature activations)
SM_REGISTERS = 65536
SM_SHARED = 164 * 1024            # sm_80's 164 KiB (sm_90 has 228): sized for both
SM_SHARED_RESERVED = 1024
SM_THREADS = 2048
SM_BLOCKS = 32
STAGE_REGISTERS = 96


def min_blocks(threads: int, shared_bytes: int) -> int:
    """The min-blocks value of a stage kernel's ``__launch_bounds__``: as many blocks per
    SM as its shared memory and threads allow, but not so many that ptxas must hold a
    thread to fewer than STAGE_REGISTERS registers (it would spill)."""
    by_shared = SM_SHARED // (shared_bytes + SM_SHARED_RESERVED)
    by_threads = SM_THREADS // threads
    by_registers = SM_REGISTERS // (threads * STAGE_REGISTERS)
    return max(1, min(by_shared, by_threads, by_registers, SM_BLOCKS))


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
    #: Only where KernelProgram.vector_blocks_safe (the self pass is plane 0 alone, or no
    #: per-entry function calls libm): elsewhere an entry's atan2 (say) must come from the
    #: same implementation in both passes.
    vector_blocks: bool = False


CUDA = Target("cuda", "CUDA", "cuda", "cuda.cu.j2", flat_team=True)
CPU = Target("cpu", "C++ (CPU)", "cuda --cpu", "cpu.cpp.j2", flat_team=False,
             vector_blocks=True)
TARGETS = {"cuda": CUDA, "cpu": CPU}
#: (C type, entry point suffix) of every dtype the kernels are printed for
DTYPES = tuple((d.ctype, d.suffix) for d in _DTYPES.values())


def per_item_entries(pas: PassProgram) -> int:
    return pas.buffer_entries()


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("infinet.codegen", "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             autoescape=False)
    env.globals.update(lit=lit, offidx=offidx, pi=math.pi, pos=pos, shifted=shifted,
                       plane_of=plane_of, plane_valid=plane_valid, buf=buf,
                       per_item_entries=per_item_entries, shared_limit=SHARED_LIMIT,
                       dtypes=DTYPES, AXIS=AXIS, prod=math.prod, snippets=snippets,
                       columns=columns, min_blocks=min_blocks,
                       theta_c=theta_poly.c_function,
                       pi_f32=repr(float(np.float32(math.pi))) + "f", pi_f64=repr(math.pi))
    return env


def render(prog: KernelProgram, target: str) -> str:
    """The complete source text of a kernel program for ``target`` (cuda | cpu)."""
    tgt = TARGETS[target]
    env = environment()
    macros = env.get_template("macros.j2").make_module({"prog": prog, "target": tgt})
    text = env.get_template(tgt.template).render(
        prog=prog, target=tgt, passes=prog.passes, stage_fn=macros.stage_fn,
        tail_fn=macros.tail_fn, source_lines=prog.plan.source.rstrip("\n").splitlines())
    # tidy: no trailing spaces, at most one blank line in a row
    lines = [ln.rstrip() for ln in text.splitlines()]
    tidy: list[str] = []
    for ln in lines:
        if ln or (tidy and tidy[-1]):
            tidy.append(ln)
    return "\n".join(tidy).rstrip("\n") + "\n"


__all__ = ["CPU", "CUDA", "SHARED_LIMIT", "TARGETS", "Target", "lit", "min_blocks", "offidx",
           "render"]
