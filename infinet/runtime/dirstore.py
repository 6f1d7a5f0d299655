"""``--out DIR/``: results in a directory that a killed run resumes from.

::

    DIR/manifest.json        what is computed: net, params, inputs' checksums, dtype,
                             backend, version, tile grid; "status": running|complete
    DIR/nngp.partial.npy     the [N1, N2] float64 results while running (memory-mapped,
    DIR/ntk.partial.npy      their space reserved up front); renamed to nngp.npy /
                             ntk.npy once every tile is done
    DIR/tiles.sha256         journal: one line per finished tile with the sha256 of its
                             values, appended after the values are on disk (an msync of
                             the byte ranges the tile wrote, page-aligned: not of the
                             whole arrays), then fsync'ed; kept when the run is complete
    DIR/.lock                held (flock) while a run writes the directory

A tile counts as done only when its journal line is intact *and* the values on disk
still match its checksum: a run killed at any moment (SIGKILL, power loss, out of
memory) resumes from exactly the recorded tiles, and a damaged file (truncated, flipped
bytes) costs only the damaged tiles, which are computed again — it is never used.  A
finished directory is verified the same way before it is reported done.  Since every
tile's values depend only on its own pairs, the stored tile grid and the batch size, a
resumed run ends bit-identical to an uninterrupted one.  (A resume with a smaller
``--max-memory`` uses the smaller batches; values may then differ in the last bit.)  A
directory written for a different net, params, inputs, dtype or backend is refused
instead of mixed (``overwrite=True`` / ``--overwrite`` replaces it).
"""
from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import time
import warnings
import zlib

import numpy as np

from .. import __version__
from ..errors import DataError, UsageError
from .atomic import create_npy, fsync_dir, remove_temporaries, reserve, write_atomic
from .identity import differences
from .killpoints import reached
from .result import KernelResult
from .stores import (ARRAYS, Store, StoreWarning, io_errors, stored_digest, storage_error,
                     tile_digest)
from .tiles import TileGrid, place_tile

FORMAT = "infinet-kernels/2"
MANIFEST = "manifest.json"
JOURNAL = "tiles.sha256"
LOCK = ".lock"
#: files a run writes (all that ``--overwrite`` or clearing a scratch directory removes)
OWN_FILES = (JOURNAL, "tiles.done", *(f"{a}.npy" for a in ARRAYS),
             *(f"{a}.partial.npy" for a in ARRAYS), MANIFEST)


class DirStore(Store):
    """Results in a directory that a killed run resumes from (see the module docstring).

    ``scratch``: the directory is infinet's own working state (``K.npz.partial/``), so
    leftovers of an interrupted removal may be cleared instead of refused.
    """

    def __init__(self, path: str, identity: dict, what: str = "--out",
                 overwrite: bool = False, scratch: bool = False):
        super().__init__()
        self.path = os.fspath(path)
        self.identity = identity
        self.what = what
        self.overwrite = overwrite
        self.scratch = scratch
        self.manifest: dict | None = None
        self._lock_fd: int | None = None
        self._journal_fd: int | None = None
        self.arrays: dict[str, np.memmap] = {}
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _io(self, doing: str):
        return io_errors(self.what, self.path, doing)

    # opening ---------------------------------------------------------------------------------
    def _open(self) -> None:
        path = self.path
        if os.path.lexists(path) and not os.path.isdir(path):
            raise UsageError(f"{self.what} {path}: exists and is not a directory")
        if not os.path.exists(path):
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise UsageError(f"{self.what} {path}: directory {parent} does not exist")
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            except OSError as err:
                raise storage_error(err, self.what, path, "creating the directory") from None
        self._lock()
        manifest, problem = self._read_manifest()
        if problem is not None:
            if not (self.overwrite or self.scratch):
                raise DataError(f"{self.what} {path}: {problem}; delete the directory, choose "
                                f"another output or use --overwrite")
            self._clear()
            return
        if manifest is None:
            leftovers = [f for f in os.listdir(path) if f != LOCK
                         and not (f.startswith(".infinet-") and f.endswith(".tmp"))]
            if leftovers and self.scratch and set(leftovers) <= set(OWN_FILES):
                self._clear()
            elif leftovers:
                raise UsageError(f"{self.what} {path}: directory exists, is not empty and holds "
                                 f"no infinet {MANIFEST}; refusing to write into it")
            return
        changed = differences(manifest.get("identity"), self.identity)
        if changed:
            if not self.overwrite:
                state = "a finished" if manifest.get("status") == "complete" else "an unfinished"
                raise DataError(
                    f"{self.what} {path}: holds {state} run of a different computation "
                    f"({', '.join(changed)} changed); refusing to mix results - delete {path}, "
                    f"choose another output or use --overwrite to replace it")
            self._clear()
            return
        self.manifest = manifest

    def _read_manifest(self) -> tuple[dict | None, str | None]:
        """(manifest, None), (None, None) when there is none, or (None, what is wrong)."""
        try:
            with open(self._file(MANIFEST), "rb") as fh:
                manifest = json.loads(fh.read().decode("utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as err:
            return None, f"{MANIFEST} is not an infinet kernel manifest ({type(err).__name__})"
        if not isinstance(manifest, dict):
            return None, f"{MANIFEST} is not an infinet kernel manifest"
        fmt = manifest.get("format")
        if fmt == "infinet-kernels/1":
            return None, (f"was written by an older infinet (format {fmt}, without tile "
                          f"checksums)")
        if fmt != FORMAT:
            return None, f"{MANIFEST} is not an infinet kernel manifest (format {fmt!r})"
        return manifest, None

    def _clear(self) -> None:
        """Remove a previous run's files (ours only): the journal first, so that nothing
        of it can count as done if this is interrupted."""
        with self._io("removing the previous results"):
            for name in OWN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._file(name))
            remove_temporaries(self.path)
            fsync_dir(self.path)
        self.manifest = None
        reached("dir.cleared")

    def _lock(self) -> None:
        import fcntl
        for _ in range(10):
            try:
                fd = os.open(self._file(LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644)
            except OSError as err:
                raise storage_error(err, self.what, self.path, "creating the lock file") \
                    from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _holder(fd)
                os.close(fd)
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    by = f" (process {holder})" if holder else ""
                    raise UsageError(f"{self.what} {self.path}: another infinet run{by} is "
                                     f"writing this directory") from None
                raise storage_error(err, self.what, self.path, "locking") from None
            # A finishing run may have removed the lock file (K.npz.partial/) meanwhile:
            # the lock counts only if it is still the file at that name.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self._file(LOCK)))
            except OSError:
                same = False
            if not same:
                os.close(fd)
                if not os.path.isdir(self.path):
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(self.path)
                continue
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, b"%d\n" % os.getpid())
            self._lock_fd = fd
            return
        raise UsageError(f"{self.what} {self.path}: another infinet run keeps replacing this "
                         f"directory")

    # starting / resuming ---------------------------------------------------------------------
    def begin(self, grid: TileGrid, batch: int, describe: dict | None = None,
              exact_grid: bool = False) -> None:
        """Start a fresh run, or continue (or verify) the one recorded here."""
        with self._io("cleaning up"):
            remove_temporaries(self.path)
        if self.manifest is None:
            self.manifest = {
                "format": FORMAT,
                "status": "running",
                "identity": self.identity,
                "infinet_version": __version__,
                "shape": [grid.n1, grid.n2],
                "result_dtype": "float64",
                "arrays": {name: f"{name}.npy" for name in ARRAYS},
                "journal": JOURNAL,
                "grid": {"rows": grid.rows, "cols": grid.cols, "symmetric": grid.symmetric,
                         "tiles": len(grid.tiles()), "batch": batch},
                "started": _now(),
            }
            if describe:
                self.manifest["inputs"] = describe
            self._write_manifest()
            reached("dir.manifest-written")
        g = self.manifest["grid"]
        if exact_grid and self.manifest.get("status") != "complete" and \
                (int(g["rows"]), int(g["cols"])) != (grid.rows, grid.cols):
            raise UsageError(f"{self.what} {self.path}: this run was started with tiles of "
                             f"{g['rows']}x{g['cols']}; resume it without --tile or with the "
                             f"same one")
        self.grid = TileGrid(grid.n1, grid.n2, int(g["rows"]), int(g["cols"]),
                             bool(g["symmetric"]))
        # The same command resumes with the same batch (bit-identical results); a smaller
        # --max-memory (after running out of memory, say) is honoured.
        self.batch = min(int(g["batch"]), batch)
        tiles = self.grid.tiles()
        repairing = None
        if self.manifest.get("status") == "complete":
            repairing = self._verify_complete(tiles)
            if repairing is None:
                self.complete = True
                self.done = {t.index for t in tiles}
                return
            warnings.warn(StoreWarning(
                f"{self.what} {self.path}: the finished results are damaged ({repairing}); "
                f"computing the damaged tiles again"), stacklevel=3)
            self._reopen()
        self._attach()
        records = self._read_journal(len(tiles))
        arrays = (self.arrays["nngp"], self.arrays["ntk"])
        with self._io("verifying the finished tiles"):
            self.done = {k for k, digest in records.items()
                         if stored_digest(tiles[k], arrays) == digest}
        damaged = len(records) - len(self.done)
        if damaged and repairing is None:
            warnings.warn(StoreWarning(
                f"{self.what} {self.path}: {damaged} of {len(records)} finished tiles are "
                f"damaged (their values no longer match their checksums); computing them "
                f"again"), stacklevel=3)
        with self._io(f"opening {JOURNAL}"):
            self._journal_fd = os.open(self._file(JOURNAL), os.O_WRONLY | os.O_CREAT
                                       | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)

    def _verify_complete(self, tiles) -> str | None:
        """None when the finished results are all there and match their checksums, else
        what is wrong."""
        arrays = []
        for name in ARRAYS:
            path = self._file(f"{name}.npy")
            if not os.path.exists(path):
                return f"{name}.npy is missing"
            try:
                mm = np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                return f"{name}.npy cannot be read as an array (truncated?)"
            if mm.shape != (self.grid.n1, self.grid.n2) or mm.dtype != np.float64:
                return f"{name}.npy holds {mm.dtype} {mm.shape}"
            arrays.append(mm)
        records = self._read_journal(len(tiles), repair=False)
        missing = len(tiles) - len(records)
        if missing:
            return f"{JOURNAL} has no checksum for {missing} of {len(tiles)} tiles"
        try:
            bad = sum(stored_digest(t, arrays) != records[t.index] for t in tiles)
        except OSError as err:
            return f"reading them failed ({err.strerror})"
        return f"{bad} of {len(tiles)} tiles do not match their checksums" if bad else None

    def _reopen(self) -> None:
        """A finished directory found damaged: make it a running one again, so that the
        damaged tiles are computed again (the intact ones are kept)."""
        with self._io("reopening the damaged results"):
            for name in ARRAYS:
                final, partial = self._file(f"{name}.npy"), self._file(f"{name}.partial.npy")
                if os.path.exists(final):
                    os.replace(final, partial)
            fsync_dir(self.path)
            self.manifest["status"] = "running"
            self.manifest.pop("finished", None)
            self._write_manifest()
        reached("dir.reopened")

    def _attach(self) -> None:
        """Memory-map the working arrays, creating missing ones and repairing their size;
        their whole space is reserved on disk (no SIGBUS on a full disk)."""
        shape = (self.grid.n1, self.grid.n2)
        for name in ARRAYS:
            partial, final = self._file(f"{name}.partial.npy"), self._file(f"{name}.npy")
            target = partial if os.path.exists(partial) or not os.path.exists(final) else final
            label = os.path.basename(target)
            if os.path.exists(target):
                header = _npy_layout(target)
                if header is None:
                    warnings.warn(StoreWarning(
                        f"{self.what} {self.path}: {label} is damaged (no readable .npy "
                        f"header); computing its tiles again"), stacklevel=4)
                    with self._io(f"removing the damaged {label}"):
                        os.unlink(target)
                else:
                    got_shape, dtype, offset = header
                    if got_shape != shape or dtype != np.float64:
                        raise DataError(
                            f"{self.what} {self.path}: {label} holds {dtype} {got_shape}, "
                            f"expected float64 {shape}; delete the directory to start over")
                    size = offset + shape[0] * shape[1] * 8
                    with self._io(f"reserving space for {label} ({_mib(size)})"):
                        with open(target, "r+b") as fh:
                            actual = os.fstat(fh.fileno()).st_size
                            if actual < size:
                                warnings.warn(StoreWarning(
                                    f"{self.what} {self.path}: {label} is shorter than it "
                                    f"should be ({actual:,} of {size:,} bytes): the tiles "
                                    f"it lost are computed again"), stacklevel=4)
                                fh.truncate(size)
                            reserve(fh.fileno(), size)
            if not os.path.exists(target):
                target = partial
                size = 128 + shape[0] * shape[1] * 8
                with self._io(f"creating {os.path.basename(target)} ({_mib(size)})"):
                    create_npy(target, shape)
            with self._io(f"opening {os.path.basename(target)}"):
                try:
                    self.arrays[name] = np.load(target, mmap_mode="r+")
                except ValueError as err:
                    raise DataError(f"{self.what} {self.path}: {os.path.basename(target)} is "
                                    f"damaged ({err}); delete the directory to start "
                                    f"over") from None

    def _read_journal(self, ntiles: int, repair: bool = True) -> dict[int, str]:
        """{tile: sha256} of the journal's intact lines (the last line of a tile wins).
        With ``repair`` a torn last line (a kill in mid-write) is cut off."""
        path = self._file(JOURNAL)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise storage_error(err, self.what, self.path, f"reading {JOURNAL}") from None
        records = {}
        end = data.rfind(b"\n") + 1
        for line in data[:end].split(b"\n")[:-1]:
            parts = line.split(b" ")
            if len(parts) != 4 or parts[0] != b"tile" or not parts[1].isdigit():
                continue
            if parts[3] != b"%08x" % zlib.crc32(b" ".join(parts[:3])):
                continue
            k = int(parts[1])
            if k < ntiles and len(parts[2]) == 64:
                records[k] = parts[2].decode("ascii")
        if repair and end < len(data):
            with self._io(f"repairing {JOURNAL}"):
                with open(path, "r+b") as fh:
                    fh.truncate(end)
                    os.fsync(fh.fileno())
        return records

    def _write_manifest(self) -> None:
        with self._io(f"writing {MANIFEST}"):
            write_atomic(self._file(MANIFEST),
                         (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode())

    # writing ---------------------------------------------------------------------------------
    def write(self, tile, K, T) -> str:
        nngp, ntk = self.arrays["nngp"], self.arrays["ntk"]
        with self._io("writing a tile"):
            place_tile((nngp, ntk), tile, (K, T))
            # msync of what the tile wrote: on disk before the journal says so
            for arr in (nngp, ntk):
                for start, stop in tile_byte_ranges(tile, arr.shape[1]):
                    flush_range(arr, start, stop)
        reached("dir.tile-written")
        return tile_digest(tile, (K, T))

    def record(self, tile, digest) -> None:
        text = b"tile %d %s" % (tile.index, digest.encode("ascii"))
        line = text + b" %08x\n" % zlib.crc32(text)
        with self._io(f"appending to {JOURNAL}"):
            written = 0
            while written < len(line):
                written += os.write(self._journal_fd, line[written:])
            os.fsync(self._journal_fd)
        self.done.add(tile.index)
        reached("dir.tile-recorded")

    def finish(self) -> KernelResult:
        if not self.complete:
            with self._io("finishing"):
                for mm in self.arrays.values():
                    mm.flush()
                self.arrays.clear()
                for i, name in enumerate(ARRAYS):
                    partial = self._file(f"{name}.partial.npy")
                    if os.path.exists(partial):
                        with open(partial, "rb+") as fh:
                            os.fsync(fh.fileno())
                        os.replace(partial, self._file(f"{name}.npy"))
                        if i == 0:
                            reached("dir.finish-renamed-one")
                fsync_dir(self.path)
            reached("dir.finish-renamed")
            self.manifest["status"] = "complete"
            self.manifest["finished"] = _now()
            self._write_manifest()
            self.complete = True
        return self.load()

    def load(self) -> KernelResult:
        try:
            return KernelResult(*(np.load(self._file(f"{name}.npy"), mmap_mode="r")
                                  for name in ARRAYS))
        except (OSError, ValueError) as err:
            raise DataError(f"{self.what} {self.path}: the finished results cannot be read "
                            f"({err}); run the same command again to recompute them") from None

    def close(self) -> None:
        self.arrays.clear()
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        """Delete the directory (a finished ``K.npz``'s working state): the arrays and the
        journal first, the manifest and the lock last."""
        self.arrays.clear()
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        for name in OWN_FILES:
            if name != MANIFEST:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._file(name))
        reached("npz.removing")
        remove_temporaries(self.path)
        for name in (MANIFEST, LOCK):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(name))
        self.close()
        with contextlib.suppress(OSError):
            os.rmdir(self.path)
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))


def tile_byte_ranges(tile, n2: int, itemsize: int = 8) -> list[tuple[int, int]]:
    """[start, stop) byte ranges of a C-order [N1, n2] array that a tile writes, relative
    to the array's first byte: from its first row's first column to its last row's last
    column, for its block and (mirrored tiles) the block's mirror image."""
    out = []
    for rows, cols, _ in tile.regions():
        if rows.stop > rows.start and cols.stop > cols.start:
            out.append(((rows.start * n2 + cols.start) * itemsize,
                        ((rows.stop - 1) * n2 + cols.stop) * itemsize))
    return out


def flush_range(arr: np.memmap, start: int, stop: int) -> None:
    """msync (MS_SYNC) the pages of a memory-mapped array that hold its bytes
    [start, stop): they are on disk when this returns (Linux msync writes back and waits
    for the file range, as fdatasync does for it)."""
    if stop <= start:
        return
    mm = arr._mmap
    if mm is None:          # not a memory map of its own (a view): the whole map
        arr.flush()
        return
    base = arr.ctypes.data - _map_address(mm)      # where the array starts in the map
    lo = (base + start) // mmap.PAGESIZE * mmap.PAGESIZE
    hi = min(base + stop, len(mm))
    _msync(mm, lo, hi - lo)


def _msync(mm: mmap.mmap, offset: int, size: int) -> None:
    mm.flush(offset, size)


def _map_address(mm: mmap.mmap) -> int:
    """The address of a mmap's first byte."""
    import ctypes
    first = ctypes.c_char.from_buffer(mm)
    try:
        return ctypes.addressof(first)
    finally:
        del first            # the buffer export ends here (the map stays closable)


def _holder(fd: int) -> str:
    """The process id a lock file names (written by its holder), or ''."""
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        if text.isdigit():
            return text
    return ""


def _npy_layout(path: str):
    """(shape, dtype, data offset) from an .npy header, or None when unreadable."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(fh)
            if fortran:
                return None
            return tuple(shape), dtype, fh.tell()
    except (OSError, ValueError, EOFError, SyntaxError, TypeError):
        return None


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
