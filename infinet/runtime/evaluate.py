"""Kernel matrices from an executor: pair batching, symmetry and the memory bound.

Memory: pairs are processed in batches of B, chosen so that the batch's working set
(about ``WORKING_ARRAYS`` arrays of the largest state, plus the input gather) fits in
``max_memory`` bytes (default ``DEFAULT_MAX_MEMORY``).  On top of that the run holds the
inputs, the self-variance tables ((N1 + N2) × ``plan.self_variance_entries()`` numbers)
and the two [N1, N2] float64 results.  Nothing else grows with the data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_MAX_MEMORY = 512 * 2 ** 20
WORKING_ARRAYS = 10


@dataclass
class KernelResult:
    """Infinite-width kernels of a network: ``nngp`` (Σ) and ``ntk`` (Θ), [N1, N2]."""

    nngp: np.ndarray
    ntk: np.ndarray

    def __iter__(self):
        return iter((self.nngp, self.ntk))


def pair_batch_size(plan, itemsize: int, max_memory: int) -> int:
    first = plan.layers[0]
    channels = first.shape.channels or 1
    per_pair = itemsize * (WORKING_ARRAYS * plan.peak_entries
                           + 2 * channels * max(first.pair_cost.entries, first.self_cost.entries))
    return max(1, int(max_memory // max(per_pair, 1)))


def upper_triangle(n: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.triu_indices(n)
    return rows.astype(np.intp), cols.astype(np.intp)


def evaluate(executor, x1: np.ndarray, x2: np.ndarray | None, *,
             max_memory: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> KernelResult:
    """K(x1, x2) (or K(x1, x1), exactly symmetric, when x2 is None) as float64 arrays."""
    dt = executor.dtype
    symmetric = x2 is None
    x1 = np.ascontiguousarray(x1, dtype=dt)
    x2 = x1 if symmetric else np.ascontiguousarray(x2, dtype=dt)
    v1 = executor.self_variances(x1)
    v2 = v1 if symmetric else executor.self_variances(x2)
    n1, n2 = len(x1), len(x2)
    if symmetric:
        rows, cols = upper_triangle(n1)
    else:
        rows, cols = (a.ravel().astype(np.intp) for a in np.meshgrid(np.arange(n1), np.arange(n2),
                                                                      indexing="ij"))
    nngp = np.empty((n1, n2), np.float64)
    ntk = np.empty((n1, n2), np.float64)
    batch = pair_batch_size(executor.plan, dt.itemsize, max_memory or DEFAULT_MAX_MEMORY)
    total = len(rows)
    for start in range(0, total, batch):
        r, c = rows[start:start + batch], cols[start:start + batch]
        k, t = executor.pairs(x1, x2, r, c, v1, v2)
        nngp[r, c] = k
        ntk[r, c] = t
        if symmetric:
            nngp[c, r] = k
            ntk[c, r] = t
        if progress is not None:
            progress(min(start + batch, total), total)
    return KernelResult(nngp, ntk)
