"""Where a tiled evaluation's results go: the store interface, and the in-memory store.

The driver (:func:`infinet.runtime.evaluate.evaluate_tiled`) talks to every kind of
store through these calls only::

    store.begin(grid, batch, describe, exact_grid)
                               start fresh, or resume what the store records: a resumed
                               store keeps its own tile grid and batch (``store.grid``,
                               ``store.batch``); ``store.done`` is the set of tiles finished
                               *and verified* (a damaged tile is not in it, so it is
                               computed again); ``store.complete``: every tile is done and
                               verified, and ``finish()`` only reads the results back
    digest = store.write(tile, K, T)
                               the tile's values (float64 blocks [rows, cols]) stored,
                               durably once it returns; ``digest`` is their checksum
    store.record(tile, digest) the tile counted as done (durably)
    store.finish()             every tile done: seal the result, return a KernelResult
    store.close()              release files and locks (always called)

``write`` and ``record`` are separate so that a tile can be written where it was computed
(a worker process) and recorded by the one process that tracks the run.  A store of a new
kind (a zarr group, chunks = tiles, the manifest in its attributes, per-chunk checksums)
implements these calls and is chosen in ``outputs.open_store``; the driver stays as it is.

Kinds: :class:`MemoryStore` (nothing survives the process), ``DirStore`` (``DIR/``:
memory-mappable .npy files, dirstore.py) and ``NpzStore`` (one ``K.npz``, npzstore.py).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib

import numpy as np

from ..errors import DataError, UsageError
from .atomic import no_space
from .result import KernelResult
from .tiles import Tile, TileGrid, place_tile

ARRAYS = ("nngp", "ntk")


class StoreWarning(UserWarning):
    """A stored result was found damaged (and is computed again)."""


class Store:
    """The interface every store implements (see the module docstring)."""

    grid: TileGrid | None = None
    batch: int | None = None
    complete: bool = False

    def __init__(self):
        self.done: set[int] = set()

    def begin(self, grid: TileGrid, batch: int, describe: dict | None = None,
              exact_grid: bool = False) -> None:
        raise NotImplementedError

    def write(self, tile: Tile, K: np.ndarray, T: np.ndarray) -> str | None:
        raise NotImplementedError

    def record(self, tile: Tile, digest: str | None) -> None:
        raise NotImplementedError

    def put(self, tile: Tile, K: np.ndarray, T: np.ndarray) -> None:
        """``write`` then ``record``: one tile stored and counted as done."""
        self.record(tile, self.write(tile, K, T))

    def finish(self) -> KernelResult:
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryStore(Store):
    """Results in memory: nothing survives the process."""

    def __init__(self, n1: int, n2: int):
        super().__init__()
        self.nngp = np.empty((n1, n2), np.float64)
        self.ntk = np.empty((n1, n2), np.float64)

    def begin(self, grid, batch, describe=None, exact_grid=False) -> None:
        self.grid, self.batch = grid, batch

    def write(self, tile, K, T) -> None:
        place_tile((self.nngp, self.ntk), tile, (K, T))

    def record(self, tile, digest) -> None:
        self.done.add(tile.index)

    def finish(self) -> KernelResult:
        return KernelResult(self.nngp, self.ntk)


# -- checksums of tiles ------------------------------------------------------------------------

def tile_digest(tile: Tile, blocks) -> str:
    """sha256 of everything a tile writes: for each array, its block and (mirrored tiles)
    the block's transpose, as float64 bytes in C order."""
    h = hashlib.sha256()
    for block in blocks:
        block = np.asarray(block, np.float64)
        for _, _, transposed in tile.regions():
            h.update(np.ascontiguousarray(block.T if transposed else block))
    return h.hexdigest()


def stored_digest(tile: Tile, arrays) -> str:
    """The same checksum, of what the [N1, N2] ``arrays`` hold where the tile writes."""
    h = hashlib.sha256()
    for arr in arrays:
        for rows, cols, _ in tile.regions():
            h.update(np.ascontiguousarray(arr[rows, cols], np.float64))
    return h.hexdigest()


def array_digest(arr: np.ndarray) -> str:
    """sha256 of a whole result array's float64 bytes (C order)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(arr, np.float64))
    return "sha256:" + h.hexdigest()


# -- errors of the file system -----------------------------------------------------------------

def storage_error(err: OSError, what: str, path: str, doing: str) -> DataError:
    """A one-line error for a failed file operation on an output."""
    name = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if no_space(err):
        reason = {errno.ENOSPC: "no space left on device",
                  errno.EFBIG: "the file size limit is exceeded"}.get(err.errno,
                                                                       "the disk quota is exceeded")
        return DataError(f"{what} {path}: {reason} while {doing}; nothing finished is lost: "
                         f"free some space and run the same command again to resume")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UsageError(f"{what} {path}: cannot write here ({err.strerror}{name}); "
                          f"choose another output")
    return DataError(f"{what} {path}: {doing} failed ({err.strerror or err}{name})")


@contextlib.contextmanager
def io_errors(what: str, path: str, doing: str):
    """Turn an OSError inside the block into a one-line :class:`DataError`."""
    try:
        yield
    except OSError as err:
        raise storage_error(err, what, path, doing) from None
