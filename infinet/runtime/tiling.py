"""Tiled, resumable kernel evaluation of whole datasets.

The N1 × N2 pair space is cut into rectangular *tiles* (with x2 = x1 only the tiles on
or above the diagonal are computed, and within a diagonal tile only the upper
triangle; the rest is mirrored).  A tile is evaluated in pair batches through the
executor interface every backend provides (``self_variances`` once per input, then
``pairs``), so the tiling works unchanged for every backend.

Results go to a :class:`MemoryStore` (in-memory arrays) or a :class:`DirStore`, a
directory that survives a kill at any moment::

    DIR/manifest.json        what is computed: net, params, inputs' checksums, dtype,
                             backend, version, tile grid; "status": running|complete
    DIR/nngp.partial.npy     the [N1, N2] float64 results while running (memory-mapped);
    DIR/ntk.partial.npy      renamed to nngp.npy / ntk.npy once every tile is done
    DIR/tiles.done           journal: one line per finished tile, appended after the
                             tile's values are on disk (msync), then fsync'ed
    DIR/.lock                held (flock) while a run writes the directory

A tile is recorded as done only after its values are durable, so a run killed at any
moment (SIGKILL, power loss, out of memory) and started again resumes from exactly
the recorded tiles, never recomputes one, and — since every tile's values depend only
on its own pairs, the stored tile grid and the batch size — produces results
bit-identical to an uninterrupted run of the same command.  (A resume with a smaller
``--max-memory`` uses the smaller batches; values may then differ in the last bit.)
A directory written for a different net,
params, inputs, dtype or backend is refused instead of mixed.  Files are replaced
atomically (temporary file, fsync, rename), so none is ever torn.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..errors import DataError, UsageError
from .datasets import checksum
from .evaluate import DEFAULT_MAX_MEMORY, KernelResult, pair_batch_size

FORMAT = "infinet-kernels/1"
MANIFEST = "manifest.json"
JOURNAL = "tiles.done"
LOCK = ".lock"
ARRAYS = ("nngp", "ntk")

#: Work (flops + 20 per transcendental) one tile may hold: a few seconds of NumPy
#: time, so a kill loses little, while fast backends still get large tiles.
TILE_WORK = 1e10
TRANSCENDENTAL_FLOPS = 20
#: Working memory of one pair batch, per executor: NumPy runs about 3x faster with
#: batches that fit in the CPU's cache than with 512 MiB ones.  Executors may say
#: their own with a ``batch_memory`` attribute; otherwise ``max_memory`` is used.
BATCH_MEMORY = {"numpy": 4 * 2 ** 20}
#: Bytes per pair a tile holds besides the executor's batch (two float64 results and
#: two index arrays).
TILE_BYTES_PER_PAIR = 32


# -- the tile grid ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Tile:
    index: int
    r0: int
    r1: int
    c0: int
    c1: int
    diagonal: bool   # a tile on the diagonal of a symmetric run: upper triangle only

    @property
    def pairs(self) -> int:
        m, n = self.r1 - self.r0, self.c1 - self.c0
        return m * (m + 1) // 2 if self.diagonal else m * n


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
                out.append(Tile(len(out), r0, min(r0 + self.rows, self.n1), c0,
                                min(c0 + self.cols, self.n2), self.symmetric and bi == bj))
        return out

    @property
    def total_pairs(self) -> int:
        n1, n2 = self.n1, self.n2
        return n1 * (n1 + 1) // 2 if self.symmetric else n1 * n2


def work_per_pair(plan) -> float:
    t = plan.pair_total
    return max(1.0, t.flops + TRANSCENDENTAL_FLOPS * t.transcendentals)


def batch_size(executor, max_memory: int | None = None) -> int:
    """Pairs per executor call: within ``max_memory``, and cache-sized for NumPy."""
    memory = max_memory or DEFAULT_MAX_MEMORY
    preferred = getattr(executor, "batch_memory", None) or BATCH_MEMORY.get(executor.name)
    if preferred:
        memory = min(memory, preferred)
    return pair_batch_size(executor.plan, executor.dtype.itemsize, memory)


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
    """NNGP and NTK of one tile as float64 blocks [rows, cols] (diagonal tiles mirrored)."""
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


# -- stores ----------------------------------------------------------------------------------

class MemoryStore:
    """Results in memory: nothing survives the process."""

    def __init__(self, n1: int, n2: int):
        self.nngp = np.empty((n1, n2), np.float64)
        self.ntk = np.empty((n1, n2), np.float64)
        self.done: set[int] = set()
        self.grid: TileGrid | None = None
        self.batch: int | None = None
        self.complete = False

    def put(self, tile: Tile, K, T, symmetric: bool) -> None:
        _write_block(self.nngp, self.ntk, tile, K, T, symmetric)
        self.done.add(tile.index)

    def finish(self) -> KernelResult:
        return KernelResult(self.nngp, self.ntk)

    def close(self) -> None:
        pass


def _write_block(nngp, ntk, tile: Tile, K, T, symmetric: bool) -> None:
    nngp[tile.r0:tile.r1, tile.c0:tile.c1] = K
    ntk[tile.r0:tile.r1, tile.c0:tile.c1] = T
    if symmetric and not tile.diagonal:
        nngp[tile.c0:tile.c1, tile.r0:tile.r1] = K.T
        ntk[tile.c0:tile.c1, tile.r0:tile.r1] = T.T


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def mkstemp_public(directory: str, suffix: str) -> tuple[int, str]:
    """A temporary file next to its final name, with the permissions a plain ``open``
    would give (mkstemp's are 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=".infinet-", suffix=suffix, dir=directory)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def _replace_atomic(path: str, suffix: str, write) -> None:
    """Write a temporary file next to ``path`` with ``write(fh)``, fsync it and rename it
    over ``path``: a reader sees the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = mkstemp_public(directory, suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    _replace_atomic(path, ".tmp", lambda fh: fh.write(data))


def write_npz_atomic(path: str, **arrays) -> None:
    """An ``.npz`` at ``path`` that is either absent (or the old file) or complete."""
    _replace_atomic(path, ".npz.tmp", lambda fh: np.savez(fh, **arrays))


def _create_array(path: str, n1: int, n2: int) -> None:
    """A zero-filled (sparse) .npy [n1, n2] float64, created atomically."""
    def write(fh):
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)),
                 "fortran_order": False, "shape": (n1, n2)})
        fh.truncate(fh.tell() + n1 * n2 * 8)      # a hole of zeros: no data written
    _replace_atomic(path, ".npy.tmp", write)


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


_DIFF_WORDS = {
    "net": "the net", "params": "the params", "x1": "the inputs x1", "x2": "the inputs x2",
    "dtype": "the dtype", "backend": "the backend", "symmetric": "whether x2 is x1",
}


class DirStore:
    """Results in a directory that a killed run resumes from (see the module docstring)."""

    def __init__(self, path: str, identity: dict, what: str = "--out"):
        self.path = path
        self.identity = identity
        self.what = what
        self.manifest: dict | None = None
        self.complete = False
        self.done: set[int] = set()
        self.grid: TileGrid | None = None
        self.batch: int | None = None
        self._lock_fd = None
        self._journal_fd = None
        self.arrays: dict[str, np.memmap] = {}
        self._open()

    # opening / resuming ------------------------------------------------------------------
    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _open(self) -> None:
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"{self.what} {path}: exists and is not a directory")
        if not os.path.exists(path):
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise UsageError(f"{self.what} {path}: directory {parent} does not exist")
            try:
                os.mkdir(path)
            except OSError as err:
                raise UsageError(f"{self.what} {path}: cannot create ({err.strerror})") from None
        self._lock()
        manifest_path = self._file(MANIFEST)
        if os.path.exists(manifest_path):
            try:
                with open(manifest_path, encoding="utf-8") as fh:
                    manifest = json.load(fh)
                if manifest.get("format") != FORMAT:
                    raise ValueError(manifest.get("format"))
            except (OSError, ValueError) as err:
                self.close()
                raise DataError(f"{self.what} {path}: {MANIFEST} is not an infinet kernel "
                                f"manifest ({type(err).__name__}); delete the directory or "
                                f"choose another output") from None
            changed = _diff(manifest.get("identity", {}), self.identity)
            if changed:
                self.close()
                parts = sorted({_DIFF_WORDS.get(c.split(".")[0], c) for c in changed})
                state = "a finished" if manifest.get("status") == "complete" else "an unfinished"
                raise DataError(
                    f"{self.what} {path}: holds {state} run of a different computation "
                    f"({', '.join(parts)} changed); refusing to mix results - delete {path} or "
                    f"choose another output")
            self.manifest = manifest
            self.complete = manifest.get("status") == "complete"
        else:
            leftovers = [f for f in os.listdir(path) if f != LOCK
                         and not (f.startswith(".infinet-") and f.endswith(".tmp"))]
            if leftovers:
                self.close()
                raise UsageError(f"{self.what} {path}: directory exists, is not empty and holds "
                                 f"no infinet {MANIFEST}; refusing to write into it")

    def _lock(self) -> None:
        import fcntl
        fd = os.open(self._file(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"{self.what} {self.path}: another infinet run is writing this "
                                 f"directory") from None
            raise
        self._lock_fd = fd

    def prepare(self, grid: TileGrid, batch: int) -> None:
        """Start a fresh run, or continue the one recorded here (keeping its grid)."""
        for name in os.listdir(self.path):     # temporaries of a killed run (we hold the lock)
            if name.startswith(".infinet-") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(self._file(name))
        if self.manifest is None:
            self.manifest = {
                "format": FORMAT,
                "status": "running",
                "identity": self.identity,
                "infinet_version": __version__,
                "shape": [grid.n1, grid.n2],
                "result_dtype": "float64",
                "arrays": {name: f"{name}.npy" for name in ARRAYS},
                "grid": {"rows": grid.rows, "cols": grid.cols, "symmetric": grid.symmetric,
                         "tiles": len(grid.tiles()), "batch": batch},
                "started": _now(),
            }
            self._write_manifest()
        g = self.manifest["grid"]
        self.grid = TileGrid(grid.n1, grid.n2, int(g["rows"]), int(g["cols"]),
                             bool(g["symmetric"]))
        # The same command resumes with the same batch (bit-identical results); a smaller
        # --max-memory (after running out of memory, say) is honoured.
        self.batch = min(int(g["batch"]), batch)
        if self.complete:
            with contextlib.suppress(OSError):     # left over by a kill just before the end
                os.unlink(self._file(JOURNAL))
            return
        for name in ARRAYS:
            partial, final = self._file(f"{name}.partial.npy"), self._file(f"{name}.npy")
            if not os.path.exists(partial) and not os.path.exists(final):
                if os.path.exists(self._file(JOURNAL)):
                    os.unlink(self._file(JOURNAL))   # values lost: nothing can count as done
                    _fsync_dir(self.path)
                _create_array(partial, grid.n1, grid.n2)
        for name in ARRAYS:
            partial, final = self._file(f"{name}.partial.npy"), self._file(f"{name}.npy")
            target = partial if os.path.exists(partial) else final
            try:
                mm = np.load(target, mmap_mode="r+")
            except (ValueError, OSError) as err:
                raise DataError(f"{self.what} {self.path}: {os.path.basename(target)} is "
                                f"damaged ({err}); delete the directory to start over") from None
            if mm.shape != (grid.n1, grid.n2) or mm.dtype != np.float64:
                raise DataError(f"{self.what} {self.path}: {os.path.basename(target)} has shape "
                                f"{mm.shape}, expected {(grid.n1, grid.n2)}")
            self.arrays[name] = mm
        self.done = self._read_journal(len(self.grid.tiles()))
        self._journal_fd = os.open(self._file(JOURNAL), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                   0o644)

    def _read_journal(self, ntiles: int) -> set[int]:
        try:
            with open(self._file(JOURNAL), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return set()
        done = set()
        for line in data.split(b"\n")[:-1]:          # a torn last line has no newline
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"tile" and parts[1].isdigit():
                k = int(parts[1])
                if parts[2] == _tag(k) and k < ntiles:
                    done.add(k)
        return done

    def _write_manifest(self) -> None:
        write_atomic(self._file(MANIFEST),
                     (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode())

    # writing -----------------------------------------------------------------------------
    def put(self, tile: Tile, K, T, symmetric: bool) -> None:
        nngp, ntk = self.arrays["nngp"], self.arrays["ntk"]
        _write_block(nngp, ntk, tile, K, T, symmetric)
        nngp.flush()           # msync: the values are on disk before the journal says so
        ntk.flush()
        os.write(self._journal_fd, b"tile %d %s\n" % (tile.index, _tag(tile.index)))
        os.fsync(self._journal_fd)
        self.done.add(tile.index)

    def finish(self) -> KernelResult:
        if not self.complete:
            for mm in self.arrays.values():
                mm.flush()
            self.arrays.clear()
            for name in ARRAYS:
                partial = self._file(f"{name}.partial.npy")
                if os.path.exists(partial):
                    with open(partial, "rb+") as fh:
                        os.fsync(fh.fileno())
                    os.replace(partial, self._file(f"{name}.npy"))
            _fsync_dir(self.path)
            self.manifest["status"] = "complete"
            self.manifest["finished"] = _now()
            self._write_manifest()
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(JOURNAL))
            _fsync_dir(self.path)
            self.complete = True
        return self.load()

    def load(self) -> KernelResult:
        try:
            return KernelResult(*(np.load(self._file(f"{name}.npy"), mmap_mode="r")
                                  for name in ARRAYS))
        except (OSError, ValueError) as err:
            raise DataError(f"{self.what} {self.path}: the finished results cannot be read "
                            f"({err}); delete the directory to recompute") from None

    def close(self) -> None:
        self.arrays.clear()
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _tag(k: int) -> bytes:
    """A check value per journal line, so a garbled line never counts as a finished tile."""
    return b"%08x" % ((k * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- identity of a computation ---------------------------------------------------------------

def identity(executor, x1: np.ndarray, x2: np.ndarray | None) -> dict:
    """Everything that determines the values: refusing a resume compares these."""
    import hashlib
    plan = executor.plan
    return {
        "net": {"name": plan.name,
                "source_sha256": hashlib.sha256(plan.source.encode()).hexdigest()},
        "params": {k: (float(v) if isinstance(v, float) else v) for k, v in plan.params.items()},
        "x1": {"shape": list(x1.shape), "checksum": checksum(x1)},
        "x2": "x1" if x2 is None else {"shape": list(x2.shape), "checksum": checksum(x2)},
        "symmetric": x2 is None,
        "dtype": executor.dtype.name,
        "backend": executor.name,
    }


# -- the driver ------------------------------------------------------------------------------

def evaluate_tiled(executor, x1: np.ndarray, x2: np.ndarray | None = None, *,
                   out: str | None = None, max_memory: int | None = None,
                   tile: int | None = None, progress=None, what: str = "--out",
                   describe: dict | None = None) -> KernelResult:
    """K(x1, x2) tile by tile; with ``out`` (a directory) resumable after any kill.

    ``progress(done, total)`` is called as pairs finish (``done`` counts resumed
    tiles too).  ``describe`` adds free-form entries to the manifest (e.g. the
    datasets' names and preprocessing).  Returns float64 arrays (memory-mapped,
    read-only, when ``out`` is given).
    """
    dt = executor.dtype
    symmetric = x2 is None
    x1 = np.ascontiguousarray(x1, dtype=np.float64)
    x2c = None if symmetric else np.ascontiguousarray(x2, dtype=np.float64)
    n1 = len(x1)
    n2 = n1 if symmetric else len(x2c)
    batch = batch_size(executor, max_memory)
    grid = choose_grid(executor.plan, n1, n2, symmetric, batch, tile, max_memory,
                       getattr(executor, "tile_work", None))
    if out is None:
        store = MemoryStore(n1, n2)
        store.grid, store.batch = grid, batch
    else:
        store = DirStore(out, identity(executor, x1, x2c), what)
        try:
            if store.manifest is not None and tile is not None and not store.complete:
                g = store.manifest["grid"]
                if (int(g["rows"]), int(g["cols"])) != (grid.rows, grid.cols):
                    raise UsageError(f"{what} {out}: this run was started with tiles of "
                                     f"{g['rows']}x{g['cols']}; resume it without --tile or "
                                     f"with the same one")
            store.prepare(grid, batch)
            if describe and "inputs" not in store.manifest:
                store.manifest["inputs"] = describe
                store._write_manifest()
        except BaseException:
            store.close()
            raise
    try:
        grid, batch = store.grid, store.batch
        tiles = grid.tiles()
        total = grid.total_pairs
        if store.complete:
            if progress is not None:
                progress(total, total)
            return store.load()
        done_pairs = sum(t.pairs for t in tiles if t.index in store.done)
        if progress is not None:
            progress(done_pairs, total)
        todo = [t for t in tiles if t.index not in store.done]
        if todo:
            a = x1.astype(dt, copy=False)
            b = a if symmetric else x2c.astype(dt, copy=False)
            v1 = executor.self_variances(a)
            v2 = v1 if symmetric else executor.self_variances(b)
            counter = [done_pairs]

            def step(n):
                counter[0] += n
                if progress is not None:
                    progress(counter[0], total)

            for t in todo:
                K, T = compute_tile(executor, a, b, v1, v2, t, batch, step)
                store.put(t, K, T, symmetric)
        return store.finish()
    finally:
        store.close()


def npz_workdir(path: str) -> str:
    """Where a ``--out K.npz`` run keeps its resumable state until the .npz is written."""
    return path + ".partial"


def evaluate_to_npz(executor, x1, x2, path: str, **kwargs) -> KernelResult:
    """Resumable evaluation whose final product is a single ``.npz`` (nngp, ntk)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--out {path}: directory {directory} does not exist")
    work = npz_workdir(path)
    result = evaluate_tiled(executor, x1, x2, out=work, **kwargs)
    nngp, ntk = np.array(result.nngp), np.array(result.ntk)
    del result
    write_npz_atomic(path, nngp=nngp, ntk=ntk)
    shutil.rmtree(work, ignore_errors=True)
    return KernelResult(nngp, ntk)


# -- progress ----------------------------------------------------------------------------------

class Progress:
    """Pairs done, pairs/s and ETA: a redrawn bar on a terminal, periodic log lines otherwise.

    ``mode``: "bar", "log", "quiet" or "auto" (bar on a terminal, else log).  Log mode
    writes a line every ``interval`` seconds (default 10) and a closing line, and stays
    silent for a job that finishes within the first interval.  ``keep``: leave the bar's
    final state on screen (else it is erased when done).
    """

    def __init__(self, label: str = "pairs", stream=None, mode: str = "auto",
                 interval: float | None = None, keep: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", lambda: False)
            try:
                mode = "bar" if isatty() else "log"
            except ValueError:      # a closed stream
                mode = "quiet"
        if mode not in ("bar", "log", "quiet"):
            raise UsageError(f"progress mode must be auto, bar, log or quiet, not {mode!r}")
        self.mode = mode
        self.label = label
        self.keep = keep
        self.interval = interval if interval is not None else (0.2 if mode == "bar" else 10.0)
        self.start = None
        self.first_done = 0
        self.last_shown = None
        self.shown = False
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        if self.mode == "quiet" or self.finished:
            return
        now = time.monotonic()
        if self.start is None:
            self.start, self.first_done, self.last_shown = now, done, now
            if done and done < total:
                self._emit(f"{self.label}: resuming: {done:,} of {total:,} pairs are already "
                           f"done", final=True)
            elif done >= total and total:
                self.finished = True
                if self.mode == "log" or self.keep:
                    self._emit(f"{self.label}: all {total:,} pairs already done", final=True)
                return
            if self.mode == "bar":
                self._emit(self._text(done, total, now), final=False)
            return
        if done >= total:
            self.finished = True
            if self.mode == "bar" and not self.keep:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            elif self.mode == "bar" or self.shown or now - self.start >= self.interval:
                self._emit(self._text(done, total, now), final=True)
            return
        if now - self.last_shown >= self.interval:
            self.last_shown = now
            self._emit(self._text(done, total, now), final=False)

    def _text(self, done: int, total: int, now: float) -> str:
        elapsed = now - self.start
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * done / total if total else 100.0
        if done >= total:
            return (f"{self.label}: {done:,}/{total:,} pairs (100%) in {_duration(elapsed)}"
                    + (f", {rate:,.0f} pairs/s" if rate > 0 else ""))
        eta = _duration((total - done) / rate) if rate > 0 else "?"
        if self.mode == "bar":
            width = 24
            fill = int(width * done / total) if total else width
            bar = "#" * fill + "." * (width - fill)
            return (f"{self.label} [{bar}] {pct:5.1f}% {done:,}/{total:,} pairs  "
                    f"{rate:,.0f} pairs/s  ETA {eta}")
        return (f"{self.label}: {done:,}/{total:,} pairs ({pct:.1f}%), {rate:,.0f} pairs/s, "
                f"ETA {eta}")

    def _emit(self, text: str, final: bool) -> None:
        self.shown = True
        if self.mode == "bar":
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
