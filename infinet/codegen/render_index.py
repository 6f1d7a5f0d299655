"""Index expressions of the generated code: positions, planes and local buffers.

A position of a state is (d, h, w) on the canonical three axes, flattened row-major
with the state's sizes; axes of size 1 drop out of every expression (their coordinate
is always 0).
"""
from __future__ import annotations

AXIS = "dhw"


def pos(size, d="d", h="h", w="w") -> str:
    """Row-major index of position (d, h, w) in a state of ``size`` (size-1 axes drop:
    their coordinate is always 0)."""
    terms = [(v, n) for v, n in zip((d, h, w), size) if n > 1]
    if not terms:
        return "0"
    expr = terms[0][0]
    for var, n in terms[1:]:
        expr = f"({expr}) * {n} + {var}"
    return expr


def shifted(size, mult_vars=("dd", "dh", "dw")) -> str:
    """Index of position p + (dd, dh, dw) in a state of ``size``."""
    return pos(size, *(f"({v} + {o})" for v, o in zip("dhw", mult_vars)))


def offidx(offsets, n: int) -> list[int]:
    """Plane index of every offset -(n-1)..n-1 along an axis (-1 where not stored)."""
    where = {d: i for i, d in enumerate(offsets)}
    return [where.get(d, -1) for d in range(-(n - 1), n)]


def plane_of(src_name: str, src: Source, dvars=("dd", "dh", "dw")) -> str:
    """The plane index (flattened) of offset (dd, dh, dw) in a source; -1 if not stored."""
    parts = []
    for ax, (var, n, offs) in enumerate(zip(dvars, src.size, src.planes)):
        if len(offs) == 1 and n == 1:
            continue
        parts.append((f"{src_name}_i{AXIS[ax]}[{var} + {n - 1}]", len(offs)))
    if not parts:
        return "0"
    expr = parts[0][0]
    for text, count in parts[1:]:
        expr = f"({expr}) * {count} + {text}"
    return expr


def plane_valid(src_name: str, src: Source, dvars=("dd", "dh", "dw")) -> str:
    conds = [f"{src_name}_i{AXIS[ax]}[{var} + {n - 1}] >= 0"
             for ax, (var, n, offs) in enumerate(zip(dvars, src.size, src.planes))
             if not (len(offs) == 1 and n == 1)]
    return " && ".join(conds) or "true"


def buf(stage: Stage, d="d", h="h", w="w") -> str:
    """Index of position (d, h, w) in a stage's local plane buffer (with its halo)."""
    ed, eh, ew = stage.extent
    hd, hh, hw = stage.halo
    return pos((ed, eh, ew), f"({d} + {hd})" if ed > 1 else "0",
               f"({h} + {hh})" if eh > 1 else "0", f"({w} + {hw})")
