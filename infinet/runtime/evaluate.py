"""Kernel matrices of whole datasets: the tile-by-tile driver, and the plain pair loop.

``evaluate_tiled`` cuts the pair space into tiles (tiles.py), computes the tiles a store
(stores.py; which one: outputs.py) does not yet hold — through the executor interface every backend provides
— and hands each finished tile to the store, which keeps it (in memory, in a directory,
in one ``.npz``, in a zarr group).  Batches stay within ``max_memory`` (batching.py).
With a Dask ``client`` the tiles are tasks on the cluster's workers (cluster.py), which
write them into a zarr store themselves (other stores get the values back here).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from .batching import DEFAULT_MAX_MEMORY, WORKING_ARRAYS, batch_size, pair_batch_size
from .identity import identity
from .outputs import open_store
from .result import KernelResult
from .tiles import choose_grid, compute_tile, pair_count, pair_indices

__all__ = ["DEFAULT_MAX_MEMORY", "WORKING_ARRAYS", "KernelResult", "evaluate",
           "evaluate_tiled", "evaluate_untiled", "pair_batch_size", "pair_count",
           "pair_indices"]


def evaluate(executor, x1: np.ndarray, x2: np.ndarray | None, *,
             max_memory: int | None = None,
             progress: Callable[[int, int], None] | None = None,
             client=None) -> KernelResult:
    """K(x1, x2) (or K(x1, x1), exactly symmetric, when x2 is None) as float64 arrays.

    Evaluated tile by tile, exactly as ``infinet eval`` does, so the Python API and the
    command line give bit-identical results (``client``: on a Dask cluster).
    """
    return evaluate_tiled(executor, x1, x2, max_memory=max_memory, progress=progress,
                          client=client)


def evaluate_tiled(executor, x1: np.ndarray, x2: np.ndarray | None = None, *,
                   out: str | None = None, overwrite: bool = False,
                   max_memory: int | None = None, tile: int | None = None, progress=None,
                   what: str = "--out", describe: dict | None = None,
                   client=None) -> KernelResult:
    """K(x1, x2) tile by tile; with ``out`` (``K.npz``, ``K.zarr`` or a directory)
    resumable after any kill, and reused (after verifying it) when it is already finished.

    ``overwrite``: replace an ``out`` that holds a different computation (else refused).
    ``progress(done, total)`` is called as pairs finish (``done`` counts resumed tiles
    too).  ``describe`` adds free-form entries to the manifest (e.g. the datasets' names
    and preprocessing).  Returns float64 arrays (memory-mapped, read-only, for a
    directory; zarr arrays, read lazily, for a zarr store); ``result.pairs_computed`` says
    how many pairs this call computed.  ``client``: a ``dask.distributed.Client``: the
    tiles are computed on its cluster's workers (``executor``: a real one, or
    ``cluster.cluster_executor(...)`` when the backend exists only on the workers), with
    the same values, bit for bit.
    """
    symmetric = x2 is None
    x1 = np.ascontiguousarray(x1, dtype=np.float64)
    x2c = None if symmetric else np.ascontiguousarray(x2, dtype=np.float64)
    n1 = len(x1)
    n2 = n1 if symmetric else len(x2c)
    batch = batch_size(executor, max_memory)
    grid = choose_grid(executor.plan, n1, n2, symmetric, batch, tile, max_memory,
                       getattr(executor, "tile_work", None))
    variances = None
    if client is None and (out is None or _fresh(out)):
        # before anything is written: a kernel that cannot be represented (NumericalError)
        # leaves no half-made output behind
        variances = _self_variances(executor, x1, x2c)
    store = open_store(out, lambda: identity(executor, x1, x2c), n1, n2, what=what,
                       overwrite=overwrite, names=kernel_names(executor),
                       manifest_extra=lambda: net_manifest(executor.plan))
    try:
        if client is not None:
            from .cluster import prepare_store
            prepare_store(client, store)
        store.begin(grid, batch, describe, exact_grid=tile is not None)
        grid, batch = store.grid, store.batch
        tiles = grid.tiles()
        total = grid.total_pairs
        done_pairs = sum(t.pairs for t in tiles if t.index in store.done)
        if progress is not None:
            progress(done_pairs, total)
        todo = [] if store.complete else [t for t in tiles if t.index not in store.done]
        computed = [0]
        if todo and client is not None:
            from .cluster import run_tiles

            def tile_done(t):
                computed[0] += t.pairs
                if progress is not None:
                    progress(done_pairs + computed[0], total)

            run_tiles(client, executor, x1, x2c, todo, batch, store, tile_done)
        elif todo:
            a, b, v1, v2 = variances or _self_variances(executor, x1, x2c)

            def step(n):
                computed[0] += n
                if progress is not None:
                    progress(done_pairs + computed[0], total)

            for t in todo:
                K, T = compute_tile(executor, a, b, v1, v2, t, batch, step)
                store.record(t, store.write(t, K, T))
        result = store.finish()
        result.pairs_computed = computed[0]
        return result
    finally:
        store.close()


def _self_variances(executor, x1, x2):
    """The inputs in the executor's dtype and their self-variances: (a, b, v1, v2)."""
    with np.errstate(over="ignore"):      # too large for float32: the executor says so
        a = x1.astype(executor.dtype, copy=False)
        b = a if x2 is None else x2.astype(executor.dtype, copy=False)
    v1 = executor.self_variances(a)
    v2 = v1 if x2 is None else executor.self_variances(b)
    return a, b, v1, v2


def _fresh(out) -> bool:
    """Whether ``out`` (a local path) holds nothing yet: no file, no working state."""
    path = os.fspath(out)
    if "://" in path:
        return False
    stem = path.rstrip("/" + os.sep)
    return not any(os.path.exists(p) for p in (stem, stem + ".partial"))


def kernel_names(executor) -> tuple[str, ...]:
    """The arrays a run produces: ("nngp", "ntk"), or ("nngp",) for an NNGP-only executor."""
    return ("nngp", "ntk") if getattr(executor, "ntk", True) else ("nngp",)


def net_manifest(plan) -> dict:
    """The net as a manifest records it (beside the identity's hash): name, file, source."""
    return {"net": {"name": plan.name, "file": plan.filename, "source": plan.source}}


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
    return KernelResult(nngp, ntk, pairs_computed=total)
