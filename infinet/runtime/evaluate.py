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
    first = plan.nodes[0]
    channels = first.shape.channels or 1
    per_pair = itemsize * (WORKING_ARRAYS * plan.peak_entries
                           + 2 * channels * max(first.pair_cost.entries, first.self_cost.entries))
    return max(1, int(max_memory // max(per_pair, 1)))


def pair_count(n1: int, n2: int, symmetric: bool) -> int:
    return n1 * (n1 + 1) // 2 if symmetric else n1 * n2


def pair_indices(start: int, stop: int, n1: int, n2: int, symmetric: bool):
    """(rows, cols) of pairs number start..stop-1, in row-major order.

    Pairs are enumerated lazily, so no index array ever grows with N1 × N2: with
    ``symmetric`` only the upper triangle j >= i is enumerated.
    """
    k = np.arange(start, stop, dtype=np.int64)
    if not symmetric:
        return (k // n2).astype(np.intp), (k % n2).astype(np.intp)
    i = np.arange(n1, dtype=np.int64)
    row_start = i * n1 - i * (i - 1) // 2          # first pair number of row i
    rows = np.searchsorted(row_start, k, side="right") - 1
    return rows.astype(np.intp), (k - row_start[rows] + rows).astype(np.intp)


def evaluate(executor, x1: np.ndarray, x2: np.ndarray | None, *,
             max_memory: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> KernelResult:
    """K(x1, x2) (or K(x1, x1), exactly symmetric, when x2 is None) as float64 arrays.

    Evaluated tile by tile (runtime/tiling.py), exactly as ``infinet eval`` does, so the
    Python API and the command line give bit-identical results.
    """
    from .tiling import evaluate_tiled
    return evaluate_tiled(executor, x1, x2, max_memory=max_memory, progress=progress)


def evaluate_untiled(executor, x1: np.ndarray, x2: np.ndarray | None, *,
                     max_memory: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> KernelResult:
    """The plain pair loop (row-major batches of ``pair_batch_size`` pairs)."""
    dt = executor.dtype
    symmetric = x2 is None
    x1 = np.ascontiguousarray(x1, dtype=dt)
    x2 = x1 if symmetric else np.ascontiguousarray(x2, dtype=dt)
    v1 = executor.self_variances(x1)
    v2 = v1 if symmetric else executor.self_variances(x2)
    n1, n2 = len(x1), len(x2)
    nngp = np.empty((n1, n2), np.float64)
    ntk = np.empty((n1, n2), np.float64)
    batch = pair_batch_size(executor.plan, dt.itemsize, max_memory or DEFAULT_MAX_MEMORY)
    total = pair_count(n1, n2, symmetric)
    for start in range(0, total, batch):
        r, c = pair_indices(start, min(start + batch, total), n1, n2, symmetric)
        k, t = executor.pairs(x1, x2, r, c, v1, v2)
        nngp[r, c] = k
        ntk[r, c] = t
        if symmetric:
            nngp[c, r] = k
            ntk[c, r] = t
        if progress is not None:
            progress(min(start + batch, total), total)
    return KernelResult(nngp, ntk)
