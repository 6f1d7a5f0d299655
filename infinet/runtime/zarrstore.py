"""``--out K.zarr``: results in a zarr (v3) group, one chunk per tile, that many
processes — the workers of a Dask cluster — write at once.

::

    K.zarr/zarr.json             the group; its attribute "infinet" is the manifest: what is
                                 computed (net name, source and sha256, params, inputs'
                                 checksums, dtype, backend, kernels: the identity), infinet
                                 version, shape, tile grid and batch, "status":
                                 running|complete, a "generation" id (new for every fresh
                                 start)
    K.zarr/nngp, K.zarr/ntk      float64 [N1, N2], chunks = the tile grid (tile rows x tile
                                 cols), crc32c on every chunk, NaN where nothing is written
    K.zarr/tiles_sha256          uint8 [tiles, 32], one chunk per tile: the sha256 of the
                                 tile's values once it is done (zeros: not done)

A tile is *written* (its chunk, or its chunk and the mirrored chunk of a symmetric run,
in every array) by whichever process computed it — a cluster worker, through the
picklable :class:`TileWriter` — and then *recorded* (its checksum stored in
``tiles_sha256``) by the one process that tracks the run.  Zarr replaces every chunk
atomically (temporary file and rename on a file system, one object put on an object
store), and on a local file system infinet also fsyncs each chunk before the tile is
recorded.  A tile counts as done only when its record is intact *and* the stored values
still match it: on resume, when a finished store is reported done, and when a run
finishes (so a chunk written by a stray writer is caught), every recorded tile is read
back and checked; a damaged chunk (flipped bytes: its crc32c fails; a lost chunk: NaN; a
chunk of other values) costs only its tile, which is computed again, with a warning.  A
store of a different computation is refused unless ``overwrite``; a zarr group that
infinet did not write is never touched.

The set of arrays is a parameter (``names``; "nngp" alone for an NNGP-only run).  The
store is a local path (``K.zarr``, ``file://…/K.zarr``, or a group inside one:
``K.zarr/train``) or an object store URL that zarr and fsspec support (``s3://…/K.zarr``,
``gs://…``; credentials as fsspec finds them, on the client and on every worker).  A
local store is locked (flock on its directory) while a run writes it; an object store
is not: do not point two runs at one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import uuid
import warnings

import numpy as np

from .. import __version__
from ..errors import DataError, UsageError
from .identity import differences
from .killpoints import reached
from .result import KernelResult
from .stores import ARRAYS, Store, StoreWarning, stored_digest, storage_error, tile_digest
from .tiles import Tile, TileGrid

FORMAT = "infinet-kernels-zarr/1"
ATTR = "infinet"
RECORDS = "tiles_sha256"
#: the status of a store cleared for a new run (``overwrite``) whose run has not begun
EMPTY = "empty"
#: the "kind" of the root group of ``classify --kernels K.zarr`` (groups train/, test/)
CLASSIFY = "classify"
DIGEST_BYTES = 32
#: zarr's own temporary files (LocalStore writes NAME.<32 hex>.partial, then renames) and
#: the probe file a cluster run writes to see that every worker sees the store
_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$|^\.infinet-probe-[0-9a-f]{32}$")
PROBE = ".infinet-probe-"


def needs_zarr(what: str = "--out"):
    """Import zarr, or a one-line error saying how to install it."""
    try:
        import zarr
    except ImportError:
        raise UsageError(f"{what}: a .zarr store needs zarr: pip install 'infinet[cluster]'") \
            from None
    return zarr


def is_zarr(out) -> bool:
    """Whether an output names a zarr store: a path or URL one of whose components ends
    in ``.zarr`` (``K.zarr``, ``K.zarr/train``, ``s3://bucket/K.zarr``)."""
    text = os.fspath(out).rstrip("/")
    return any(part.endswith(".zarr") for part in re.split(r"[/\\]", text) if part)


# -- where a store lives --------------------------------------------------------------------------

class Location:
    """A zarr group: ``root`` (a local directory, absolute, or a URL) and ``group`` (the
    path inside it, '' for the root).  Picklable: workers open the same group."""

    def __init__(self, out, what: str = "--out"):
        text = os.fspath(out)
        self.text = text
        if text.startswith("file://"):
            text = text[len("file://"):]
        self.url = "://" in text
        parts = [p for p in text.rstrip("/").split("/")]
        k = max(i for i, p in enumerate(parts) if p.endswith(".zarr"))
        root, group = "/".join(parts[:k + 1]), "/".join(p for p in parts[k + 1:] if p)
        if not self.url:
            root = os.path.abspath(root or "/")
        self.root, self.group = root, group
        self.what = what

    @property
    def local(self) -> bool:
        return not self.url

    @property
    def path(self) -> str:
        """The group's directory (local stores)."""
        return os.path.join(self.root, self.group) if self.group else self.root

    def key(self) -> str:
        return f"{self.root}::{self.group}"

    def store(self, read_only: bool = False):
        zarr = needs_zarr(self.what)
        if self.local:
            return zarr.storage.LocalStore(self.root, read_only=read_only)
        try:
            return zarr.storage.FsspecStore.from_url(self.root, read_only=read_only)
        except (ImportError, ValueError, TypeError) as err:
            raise UsageError(f"{self.what} {self.text}: cannot open this URL as a zarr store "
                             f"({_first_line(err)})") from None

    def open_group(self, mode: str = "r"):
        """The zarr group (``mode``: "r" — FileNotFoundError when there is none — or "a")."""
        zarr = needs_zarr(self.what)
        return zarr.open_group(self.store(read_only=mode == "r"), path=self.group or None,
                               mode=mode, zarr_format=3)

    def __repr__(self) -> str:
        return f"Location({self.text!r})"


# -- writing and reading tiles: also in worker processes ------------------------------------------

_OPEN: dict = {}          # (location key, session, names, mode) -> {name: zarr.Array}


def _arrays(location: Location, session: str, names, mode: str = "r+") -> dict:
    """The store's arrays, opened once per process and session (one run of the client:
    within it their layout never changes)."""
    key = (location.key(), session, tuple(names), mode)
    arrays = _OPEN.get(key)
    if arrays is None:
        group = location.open_group("a" if mode == "r+" else "r")
        arrays = {name: group[name] for name in names}
        if len(_OPEN) > 8:
            _OPEN.clear()
        _OPEN[key] = arrays
    return arrays


def _sync_chunks(location: Location, names, tile: Tile, grid: tuple[int, int]) -> None:
    """fsync the chunk files a tile wrote, and their directories (local stores)."""
    if not location.local:
        return
    rows, cols = grid
    chunks = [(tile.r0 // rows, tile.c0 // cols)]
    if tile.mirrored:
        chunks.append((tile.c0 // rows, tile.r0 // cols))
    dirs = set()
    for name in names:
        for bi, bj in chunks:
            path = os.path.join(location.path, name, "c", str(bi), str(bj))
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            dirs.add(os.path.dirname(path))
    for d in dirs:
        _fsync_dir(d)


class TileWriter:
    """Writes tiles into a store's chunks from any process that sees the store (picklable:
    a cluster task carries one).  ``write`` returns the tile's checksum, which the process
    tracking the run records."""

    def __init__(self, location: Location, session: str, names, grid: tuple[int, int]):
        self.location, self.session = location, session
        self.names, self.grid = tuple(names), tuple(grid)

    def write(self, tile: Tile, K, T) -> str:
        blocks = _blocks(self.names, K, T)
        arrays = _arrays(self.location, self.session, self.names)
        for name, block in zip(self.names, blocks):
            arr = arrays[name]
            arr[tile.r0:tile.r1, tile.c0:tile.c1] = block
            if tile.mirrored:
                arr[tile.c0:tile.c1, tile.r0:tile.r1] = block.T
        _sync_chunks(self.location, self.names, tile, self.grid)
        reached("zarr.tile-written")
        return tile_digest(tile, blocks)


class TileReader:
    """Checksums of what a store holds where tiles write (picklable: verification runs
    on cluster workers when there are some).  None for a tile that cannot be read (a
    chunk whose crc32c fails, say)."""

    def __init__(self, location: Location, session: str, names):
        self.location, self.session, self.names = location, session, tuple(names)

    def digests(self, tiles) -> list:
        arrays = _arrays(self.location, self.session, self.names, mode="r")
        arrs = [arrays[name] for name in self.names]
        out = []
        for tile in tiles:
            try:
                out.append(stored_digest(tile, arrs))
            except (ValueError, OSError, KeyError):
                out.append(None)
        return out


def _blocks(names, K, T) -> list:
    by_name = {"nngp": K, "ntk": T}
    return [np.asarray(by_name[name], np.float64) for name in names]


def local_map(fn, items: list) -> list:
    return [fn(item) for item in items]


# -- the store -------------------------------------------------------------------------------------

class ZarrStore(Store):
    """Results in a zarr group (see the module docstring).

    ``names``: the arrays kept (default ``("nngp", "ntk")``).  ``manifest_extra``: more
    entries of the manifest (the net's source).  ``parallel_map(fn, items)``: how
    verification is spread (a cluster's map; default: in this process).
    """

    def __init__(self, out, identity: dict, what: str = "--out", overwrite: bool = False,
                 names=ARRAYS, manifest_extra: dict | None = None):
        super().__init__()
        self.location = out if isinstance(out, Location) else Location(out, what)
        self.text = self.location.text
        self.identity = identity
        self.what = what
        self.overwrite = overwrite
        self.names = tuple(names)
        self.manifest_extra = manifest_extra or {}
        self.manifest: dict | None = None
        self.group = None
        self.parallel_map = local_map
        self._lock_fd: int | None = None
        self._records = None
        self.unreadable = 0
        #: this run's id: processes keep the store's arrays open per session
        self.session = uuid.uuid4().hex
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _io(self, doing: str):
        return _io_errors(self.what, self.text, doing)

    # opening ---------------------------------------------------------------------------------
    def _open(self) -> None:
        needs_zarr(self.what)
        loc = self.location
        if loc.local:
            path = loc.path
            if os.path.lexists(path) and not os.path.isdir(path):
                raise UsageError(f"{self.what} {self.text}: exists and is not a directory")
            parent = os.path.dirname(loc.root)
            if not os.path.isdir(parent):
                raise UsageError(f"{self.what} {self.text}: directory {parent} does not exist")
            with self._io("creating the store"):
                os.makedirs(path, exist_ok=True)
            self._lock()
        group = self._read_group()
        if group is None:
            self._check_empty()
            return
        manifest = group.attrs.get(ATTR)
        if not isinstance(manifest, dict):
            raise UsageError(f"{self.what} {self.text}: a zarr group that infinet did not write "
                             f"(no '{ATTR}' attribute); refusing to write into it")
        if manifest.get("kind") == CLASSIFY:
            raise UsageError(f"{self.what} {self.text}: holds the train and test kernels of "
                             f"'infinet classify' (its groups train/ and test/); choose another "
                             f"output")
        if manifest.get("format") != FORMAT:
            problem = f"was written by another infinet version (format {manifest.get('format')!r})"
        elif manifest.get("status") == EMPTY:     # cleared for a new run, not yet begun
            self.group = group
            return
        else:
            changed = differences(manifest.get("identity"), self.identity)
            state = "a finished" if manifest.get("status") == "complete" else "an unfinished"
            problem = (f"holds {state} run of a different computation ({', '.join(changed)} "
                       f"changed)") if changed else None
        if problem is None:
            self.group, self.manifest = group, manifest
            return
        if not self.overwrite:
            raise DataError(f"{self.what} {self.text}: {problem}; refusing to mix results - "
                            f"delete it, choose another output or use --overwrite to replace it")
        self.group = group
        self._clear()

    def _read_group(self):
        zarr = needs_zarr(self.what)
        try:
            with self._io("reading the store"):
                return self.location.open_group("r")
        except (FileNotFoundError, zarr.errors.NodeNotFoundError):
            return None
        except DataError:
            raise
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{self.what} {self.text}: not a readable zarr group "
                            f"({_first_line(err)})") from None

    def _check_empty(self) -> None:
        if not self.location.local:
            return
        leftovers = [f for f in os.listdir(self.location.path) if not _TEMPORARY.search(f)]
        if leftovers:
            raise UsageError(f"{self.what} {self.text}: directory exists, is not empty and is "
                             f"not an infinet zarr store; refusing to write into it")

    def _clear(self) -> None:
        """Forget a previous computation: its manifest first (the group then counts as
        empty, so nothing of it can count as done if this is interrupted), then its arrays."""
        with self._io("removing the previous results"):
            group = self.location.open_group("a")
            group.attrs.update({ATTR: {"format": FORMAT, "status": EMPTY}})
            for name in (RECORDS, *ARRAYS):
                if name in group:
                    del group[name]
        self.group, self.manifest = group, None
        reached("zarr.cleared")

    def _lock(self) -> None:
        import fcntl
        try:
            fd = os.open(self.location.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise storage_error(err, self.what, self.text, "opening the store") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"{self.what} {self.text}: another infinet run is writing this "
                                 f"store") from None
            return                   # a file system without flock: not locked
        self._lock_fd = fd

    # starting / resuming ---------------------------------------------------------------------
    def begin(self, grid: TileGrid, batch: int, describe: dict | None = None,
              exact_grid: bool = False) -> None:
        self._remove_temporaries()
        if self.manifest is None:
            self.manifest = {
                "format": FORMAT,
                "status": "running",
                "generation": uuid.uuid4().hex,
                "identity": self.identity,
                "infinet_version": __version__,
                "shape": [grid.n1, grid.n2],
                "arrays": list(self.names),
                "records": RECORDS,
                "result_dtype": "float64",
                "grid": {"rows": grid.rows, "cols": grid.cols, "symmetric": grid.symmetric,
                         "tiles": len(grid.tiles()), "batch": batch},
                "started": _now(),
                **self.manifest_extra,
            }
            if describe:
                self.manifest["inputs"] = describe
            self._write_manifest()
            reached("zarr.manifest-written")
        m = self.manifest
        g = m["grid"]
        if exact_grid and m.get("status") != "complete" and \
                (int(g["rows"]), int(g["cols"])) != (grid.rows, grid.cols):
            raise UsageError(f"{self.what} {self.text}: this run was started with tiles of "
                             f"{g['rows']}x{g['cols']}; resume it without --tile or with the "
                             f"same one")
        self.grid = TileGrid(grid.n1, grid.n2, int(g["rows"]), int(g["cols"]),
                             bool(g["symmetric"]))
        self.batch = min(int(g["batch"]), batch)
        self.names = tuple(m.get("arrays", self.names))
        tiles = self.grid.tiles()
        with self._io("opening the store"):
            self.group = self.location.open_group("a")
        self._attach(len(tiles))
        records = self._read_records(len(tiles))
        verified = self._verify(tiles, records)
        if m.get("status") == "complete":
            if len(verified) == len(tiles):
                self.complete = True
                self.done = verified
                return
            bad = len(tiles) - len(verified)
            warnings.warn(StoreWarning(
                f"{self.what} {self.text}: the finished results are damaged ({bad} of "
                f"{len(tiles)} tiles do not match their checksums); computing the damaged tiles "
                f"again"), stacklevel=3)
            m["status"] = "running"
            m.pop("finished", None)
            self._write_manifest()
            reached("zarr.reopened")
        else:
            damaged = len(records) - len(verified) + self.unreadable
            if damaged:
                warnings.warn(StoreWarning(
                    f"{self.what} {self.text}: {damaged} of {len(records) + self.unreadable} "
                    f"finished tiles are "
                    f"damaged (their values no longer match their checksums); computing them "
                    f"again"), stacklevel=3)
        self.done = verified

    def _write_manifest(self) -> None:
        with self._io("writing the manifest"):
            self.group = self.location.open_group("a")
            self.group.attrs.update({ATTR: self.manifest})

    def _attach(self, ntiles: int) -> None:
        """Create the arrays that are missing (or of the wrong layout: warned, replaced)."""
        zarr = needs_zarr(self.what)
        n1, n2 = self.grid.n1, self.grid.n2
        want = {name: ((n1, n2), (self.grid.rows, self.grid.cols), np.dtype(np.float64))
                for name in self.names}
        want[RECORDS] = ((ntiles, DIGEST_BYTES), (1, DIGEST_BYTES), np.dtype(np.uint8))
        group = self.group
        with self._io("creating the arrays"):
            for name, (shape, chunks, dtype) in want.items():
                if name in group:
                    arr = group[name]
                    if (tuple(arr.shape), tuple(arr.chunks), arr.dtype) == (shape, chunks, dtype):
                        continue
                    warnings.warn(StoreWarning(
                        f"{self.what} {self.text}: array {name} holds {arr.dtype} {arr.shape} in "
                        f"chunks {arr.chunks}, expected {dtype} {shape} in chunks {chunks}; "
                        f"replacing it"), stacklevel=4)
                fill = 0 if dtype == np.uint8 else np.nan
                group.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                                   fill_value=fill, compressors=[zarr.codecs.Crc32cCodec()],
                                   dimension_names=None if name == RECORDS else ("x1", "x2"),
                                   overwrite=True)
        self._records = group[RECORDS]

    def _read_records(self, ntiles: int) -> dict[int, str]:
        """{tile: sha256} of the recorded tiles; a record that cannot be read (its crc32c
        fails) is counted in ``self.unreadable`` and is none."""
        arr = self._records
        self.unreadable = 0
        try:
            with self._io("reading the tile records"):
                blocks = [(0, np.asarray(arr[:]))]
        except ValueError:                 # a damaged record chunk: read them one by one
            blocks = []
            for k in range(ntiles):
                try:
                    blocks.append((k, np.asarray(arr[k:k + 1])))
                except ValueError:
                    self.unreadable += 1
        records = {}
        for start, block in blocks:
            for i, row in enumerate(block):
                if row.any():
                    records[start + i] = bytes(row).hex()
        return records

    def reader(self) -> TileReader:
        return TileReader(self.location, self.session, self.names)

    def tile_writer(self) -> TileWriter:
        """What a worker process writes tiles with (the store must be visible to it)."""
        return TileWriter(self.location, self.session, self.names,
                          (self.grid.rows, self.grid.cols))

    def _verify(self, tiles, records: dict[int, str]) -> set[int]:
        """The recorded tiles whose stored values still match their records."""
        if not records:
            return set()
        wanted = [tiles[k] for k in sorted(records)]
        reader = self.reader()
        step = max(1, min(64, len(wanted) // 64 or 1))
        groups = [wanted[i:i + step] for i in range(0, len(wanted), step)]
        with self._io("verifying the finished tiles"):
            found = [d for part in self.parallel_map(reader.digests, groups) for d in part]
        return {t.index for t, d in zip(wanted, found) if d is not None and d == records[t.index]}

    def _remove_temporaries(self) -> None:
        """zarr's temporary files left by a killed writer (local stores, lock held)."""
        if not self.location.local:
            return
        for d, _, files in os.walk(self.location.path):
            for f in files:
                if _TEMPORARY.search(f):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(d, f))

    # writing ---------------------------------------------------------------------------------
    def write(self, tile, K, T) -> str:
        with self._io("writing a tile"):
            return self.tile_writer().write(tile, K, T)

    def record(self, tile, digest) -> None:
        row = np.frombuffer(bytes.fromhex(digest), np.uint8).reshape(1, DIGEST_BYTES)
        with self._io("recording a tile"):
            self._records[tile.index:tile.index + 1] = row
            if self.location.local:
                path = os.path.join(self.location.path, RECORDS, "c", str(tile.index), "0")
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                _fsync_dir(os.path.dirname(path))
        self.done.add(tile.index)
        reached("zarr.tile-recorded")

    def finish(self) -> KernelResult:
        if not self.complete:
            tiles = self.grid.tiles()
            records = self._read_records(len(tiles))
            verified = self._verify(tiles, records)
            bad = [t for t in tiles if t.index not in verified]
            if bad:
                self._forget(bad)
                raise DataError(f"{self.what} {self.text}: {len(bad)} of {len(tiles)} tiles do "
                                f"not hold the values that were recorded for them (written by "
                                f"another process meanwhile?); run the same command again to "
                                f"compute them again")
            reached("zarr.verified")
            self.manifest["status"] = "complete"
            self.manifest["finished"] = _now()
            self._write_manifest()
            self.complete = True
        return self.load()

    def _forget(self, tiles) -> None:
        zero = np.zeros((1, DIGEST_BYTES), np.uint8)
        with self._io("recording a tile"):
            for t in tiles:
                self._records[t.index:t.index + 1] = zero
                self.done.discard(t.index)

    def load(self) -> KernelResult:
        """The finished arrays, read lazily (zarr arrays: ``np.asarray`` or slicing reads
        them; the kernel not computed is None)."""
        group = self.location.open_group("r")
        arrays = {name: group[name] for name in self.names}
        return KernelResult(arrays.get("nngp"), arrays.get("ntk"))

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def classify_root(path, what: str = "--kernels") -> None:
    """The root group of ``classify --kernels K.zarr`` (its kernels are the groups
    ``train`` and ``test``): created, or checked to be one."""
    zarr = needs_zarr(what)
    loc = Location(path, what)
    if loc.local:
        if os.path.lexists(loc.path) and not os.path.isdir(loc.path):
            raise UsageError(f"{what} {loc.text}: exists and is not a directory")
        with _io_errors(what, loc.text, "creating the store"):
            os.makedirs(loc.path, exist_ok=True)
    try:
        group = loc.open_group("r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError):
        group = None
    if group is not None:
        manifest = group.attrs.get(ATTR)
        if isinstance(manifest, dict) and manifest.get("kind") == CLASSIFY:
            return
        if isinstance(manifest, dict):
            raise UsageError(f"{what} {loc.text}: holds a kernel of 'infinet eval', not the train "
                             f"and test kernels of 'infinet classify'; choose another store")
        if not set(group.keys()) <= {"train", "test"}:     # (eval --out K.zarr/train made it)
            raise UsageError(f"{what} {loc.text}: a zarr group that infinet did not write; "
                             f"refusing to write into it")
    elif loc.local and [f for f in os.listdir(loc.path) if not _TEMPORARY.search(f)]:
        raise UsageError(f"{what} {loc.text}: directory exists, is not empty and is not an "
                         f"infinet zarr store; refusing to write into it")
    with _io_errors(what, loc.text, "creating the store"):
        loc.open_group("a").attrs.update({ATTR: {"format": FORMAT, "kind": CLASSIFY,
                                                 "groups": ["train", "test"]}})


# -- reading a finished store ----------------------------------------------------------------------

def read_kernels(path, what: str = "--kernels", verify: bool = True) -> KernelResult:
    """The kernels of a finished zarr store (``infinet eval --out K.zarr``) as float64
    NumPy arrays, after checking every tile against its checksum (``verify``).  A store
    that is unfinished, damaged or not infinet's is a one-line error."""
    loc = Location(path, what)
    zarr = needs_zarr(what)
    try:
        group = loc.open_group("r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError):
        raise DataError(f"{what} {loc.text}: no zarr store here") from None
    manifest = group.attrs.get(ATTR)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{what} {loc.text}: not a kernel store written by this infinet")
    if manifest.get("status") != "complete":
        raise DataError(f"{what} {loc.text}: the run that writes it has not finished; run its "
                        f"command again to complete it")
    g = manifest["grid"]
    n1, n2 = manifest["shape"]
    grid = TileGrid(n1, n2, int(g["rows"]), int(g["cols"]), bool(g["symmetric"]))
    names = tuple(manifest.get("arrays", ARRAYS))
    try:
        stored = [group[name] for name in names]
        table = np.asarray(group[RECORDS][:]) if verify else None
    except (KeyError, ValueError) as err:
        raise DataError(f"{what} {loc.text}: cannot be read ({_first_line(err)}); run the "
                        f"command that wrote it again to repair it") from None
    arrays = [np.empty((n1, n2), np.float64) for _ in names]
    tiles = grid.tiles()
    bad = 0
    for t in tiles:                       # tile by tile: a damaged chunk is named, not raised
        try:
            for src, dst in zip(stored, arrays):
                for rows, cols, _ in t.regions():
                    dst[rows, cols] = src[rows, cols]
        except (ValueError, OSError):
            bad += 1
            continue
        if verify and stored_digest(t, arrays) != bytes(table[t.index]).hex():
            bad += 1
    if bad:
        raise DataError(f"{what} {loc.text}: {bad} of {len(tiles)} tiles do not match their "
                        f"checksums (damaged); run the command that wrote it again to repair it")
    by_name = dict(zip(names, arrays))
    return KernelResult(by_name.get("nngp"), by_name.get("ntk"))


# -- helpers -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _io_errors(what: str, path: str, doing: str):
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as err:
        raise storage_error(err, what, path, doing) from None


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
