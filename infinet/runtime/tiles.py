"""The pair space and its tiles.

K(x1, x2) has N1 × N2 pairs; with x2 = x1 only the upper triangle (j >= i) is computed
and mirrored.  The pair space is cut into rectangular *tiles*: with x2 = x1 only the
tiles on or above the diagonal, and within a diagonal tile only its upper triangle.  A
tile is the unit of checkpointing and of distribution; it is evaluated in pair batches
through the executor interface every backend provides (``self_variances`` once per input,
then ``pairs``), so tiles work unchanged for every backend.  A tile's values depend only
on its own pairs and the batch size, so they are bit-identical however the run is split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .batching import DEFAULT_MAX_MEMORY

#: Work (flops + 20 per transcendental) one tile may hold: a few seconds of NumPy
#: time, so a kill loses little, while fast backends still get large tiles.
TILE_WORK = 1e10
TRANSCENDENTAL_FLOPS = 20
#: Bytes per pair a tile holds besides the executor's batch (two float64 results and
#: two index arrays).
TILE_BYTES_PER_PAIR = 32


def pair_count(n1: int, n2: int, symmetric: bool) -> int:
    """How many kernel entries K(x1, x2) computes: N1 (N1 + 1) / 2 when x2 = x1."""
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


@dataclass(frozen=True)
class Tile:
    index: int
    r0: int
    r1: int
    c0: int
    c1: int
    diagonal: bool   # a tile on the diagonal of a symmetric run: upper triangle only
    mirrored: bool   # an off-diagonal tile of a symmetric run: also written transposed

    @property
    def pairs(self) -> int:
        m, n = self.r1 - self.r0, self.c1 - self.c0
        return m * (m + 1) // 2 if self.diagonal else m * n

    def regions(self) -> list[tuple[slice, slice, bool]]:
        """Where the tile's [rows, cols] block lands in the [N1, N2] results:
        (rows, cols, transposed) — the block, and its mirror image for mirrored tiles."""
        block = (slice(self.r0, self.r1), slice(self.c0, self.c1), False)
        if not self.mirrored:
            return [block]
        return [block, (slice(self.c0, self.c1), slice(self.r0, self.r1), True)]


@dataclass(frozen=True)
class TileGrid:
    n1: int
    n2: int
    rows: int        # tile height
    cols: int        # tile width
    symmetric: bool

    def tiles(self) -> list[Tile]:
        out = []
        for bi, r0 in enumerate(range(0, self.n1, self.rows)):
            for bj, c0 in enumerate(range(0, self.n2, self.cols)):
                if self.symmetric and bj < bi:
                    continue
                diagonal = self.symmetric and bi == bj
                out.append(Tile(len(out), r0, min(r0 + self.rows, self.n1), c0,
                                min(c0 + self.cols, self.n2), diagonal,
                                self.symmetric and not diagonal))
        return out

    @property
    def total_pairs(self) -> int:
        return pair_count(self.n1, self.n2, self.symmetric)


def work_per_pair(plan) -> float:
    t = plan.pair_total
    return max(1.0, t.flops + TRANSCENDENTAL_FLOPS * t.transcendentals)


def choose_grid(plan, n1: int, n2: int, symmetric: bool, batch: int,
                tile: int | None = None, max_memory: int | None = None,
                tile_work: float | None = None) -> TileGrid:
    """Tiles of about ``tile_work`` (default ``TILE_WORK``) work and at least one batch,
    square where possible.  Fast executors may ask for more work per tile with a
    ``tile_work`` attribute (a tile is the unit of checkpointing)."""
    if tile is not None:
        side = int(tile)
        if side < 1:
            raise UsageError(f"tile size must be at least 1, got {tile}")
        rows = cols = side
    else:
        cap = (max_memory or DEFAULT_MAX_MEMORY) // (4 * TILE_BYTES_PER_PAIR)
        budget = tile_work or TILE_WORK
        pairs = max(1, int(min(max(batch, budget / work_per_pair(plan)), cap)))
        side = max(1, math.isqrt(pairs))
        if symmetric:
            rows = cols = side
        else:
            cols = min(n2, side)
            rows = max(1, pairs // cols)
    rows, cols = min(rows, n1), min(cols, n2)
    if symmetric:
        rows = cols = min(rows, cols)
    return TileGrid(n1, n2, rows, cols, symmetric)


def tile_pairs(tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """(local rows, local cols) of the pairs a tile computes, row-major."""
    m, n = tile.r1 - tile.r0, tile.c1 - tile.c0
    if tile.diagonal:
        i, j = np.triu_indices(m)
        return i.astype(np.intp), j.astype(np.intp)
    i, j = np.divmod(np.arange(m * n, dtype=np.intp), n)
    return i, j


def compute_tile(executor, x1, x2, v1, v2, tile: Tile, batch: int, progress=None):
    """NNGP and NTK of one tile as float64 blocks [rows, cols] (diagonal tiles mirrored).

    ``progress(n)`` is called after each batch of ``n`` pairs."""
    m, n = tile.r1 - tile.r0, tile.c1 - tile.c0
    K = np.zeros((m, n), np.float64)
    T = np.zeros((m, n), np.float64)
    li, lj = tile_pairs(tile)
    for s in range(0, len(li), batch):
        i, j = li[s:s + batch], lj[s:s + batch]
        k, t = executor.pairs(x1, x2, i + tile.r0, j + tile.c0, v1, v2)
        K[i, j] = k
        T[i, j] = t
        if progress is not None:
            progress(len(i))
    if tile.diagonal:
        lower = np.tril_indices(m, -1)
        K[lower] = K.T[lower]
        T[lower] = T.T[lower]
    return K, T


def place_tile(arrays, tile: Tile, blocks) -> None:
    """Write a tile's blocks (one per array: nngp, ntk) into the [N1, N2] ``arrays``."""
    for arr, block in zip(arrays, blocks):
        for rows, cols, transposed in tile.regions():
            arr[rows, cols] = block.T if transposed else block
