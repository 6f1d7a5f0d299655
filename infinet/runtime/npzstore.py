"""``--out K.npz``: one file with arrays ``nngp`` and ``ntk``, and a manifest.

Until every tile is done the resumable state lives in ``K.npz.partial/`` (a
:class:`~infinet.runtime.dirstore.DirStore`); then ``K.npz`` is written atomically (its
temporary file inside ``K.npz.partial/``, so a kill leaves nothing beside it) and the
directory is removed.  The manifest (JSON, kept as the zip archive's comment, so that
``np.load`` sees only the two arrays) records the computation's identity and the sha256
of both arrays, so the same command finds the file done — after verifying
it — without recomputing; a damaged file is computed again, and a file of a different
computation is refused unless ``overwrite`` (``--overwrite``) is given.  Every kill point
recovers: before the rename the working directory resumes; after it the verified
``K.npz`` counts and the leftovers are removed.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile

import numpy as np

from .. import __version__
from ..errors import DataError, UsageError
from .atomic import write_npz_atomic
from .dirstore import FORMAT, DirStore
from .identity import differences
from .killpoints import reached
from .result import KernelResult
from .stores import ARRAYS, Store, StoreWarning, array_digest, storage_error


MAX_MANIFEST = 65535


def read_manifest(comment: bytes) -> dict | None:
    """The manifest kept in a ``K.npz``'s zip comment, or None."""
    try:
        manifest = json.loads(comment.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def workdir(path: str) -> str:
    """Where a ``K.npz`` run keeps its resumable state until the file is written."""
    return path + ".partial"


class NpzStore(Store):
    def __init__(self, path: str, identity: dict, what: str = "--out",
                 overwrite: bool = False):
        super().__init__()
        self.path = os.fspath(path)
        self.identity = identity
        self.what = what
        self.overwrite = overwrite
        self.work: DirStore | None = None
        self.results: tuple[np.ndarray, np.ndarray] | None = None
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise UsageError(f"{what} {self.path}: directory {directory} does not exist")
        if self._check_finished():
            self._remove_leftovers()
            return
        self.work = DirStore(workdir(self.path), identity, what, overwrite=overwrite,
                             scratch=True)
        try:
            # Another run may have finished this file while we were getting the lock.
            if self._check_finished(quiet=True):
                self.work.remove()
                self.work = None
        except BaseException:
            self.close()
            raise

    def _check_finished(self, quiet: bool = False) -> bool:
        """Whether ``K.npz`` holds this computation's results, verified (they are kept
        in ``self.results``).  Refuses a different computation unless overwriting."""
        if not os.path.lexists(self.path):
            return False
        found = self._read()
        if isinstance(found, tuple):
            self.results = found
            self.complete = True
            return True
        kind, detail = found.split(":", 1)
        if kind == "damaged":
            if not quiet:
                warnings.warn(StoreWarning(f"{self.what} {self.path}: the finished results "
                                           f"are damaged ({detail}); computing them again"),
                              stacklevel=4)
            return False
        if self.overwrite:
            return False
        raise DataError(f"{self.what} {self.path}: {detail}; refusing to overwrite it - use "
                        f"--overwrite to replace it, or choose another output")

    def _read(self):
        """(nngp, ntk) verified, or "damaged:why" / "different:why"."""
        if not os.path.isfile(self.path):
            return "different:exists and is not a regular file"
        try:
            with zipfile.ZipFile(self.path) as zf:
                comment = zf.comment
            manifest = read_manifest(comment)
        except (OSError, zipfile.BadZipFile, EOFError) as err:
            return f"damaged:{type(err).__name__}: {_first_line(err)}"
        if manifest is None:
            return ("different:holds no infinet manifest (written by an older infinet, or not "
                    "by infinet)")
        if manifest.get("format") != FORMAT:
            return f"different:was written by another infinet version ({manifest.get('format')})"
        changed = differences(manifest.get("identity"), self.identity)
        if changed:
            return (f"different:holds the finished result of a different computation "
                    f"({', '.join(changed)} changed)")
        try:
            with np.load(self.path, allow_pickle=False) as f:
                arrays = tuple(f[name] for name in ARRAYS)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            return f"damaged:{type(err).__name__}: {_first_line(err)}"
        shape = tuple(manifest.get("shape", ()))
        for name, arr in zip(ARRAYS, arrays):
            if arr.shape != shape or arr.dtype != np.float64:
                return f"damaged:{name} holds {arr.dtype} {arr.shape}, expected float64 {shape}"
            if array_digest(arr) != manifest.get("sha256", {}).get(name):
                return f"damaged:{name} does not match its checksum"
        return arrays

    def _remove_leftovers(self) -> None:
        """A verified ``K.npz`` with its working directory still there (a kill while it
        was being removed): remove it, unless another run holds it."""
        if not os.path.isdir(workdir(self.path)):
            return
        try:
            work = DirStore(workdir(self.path), self.identity, self.what, scratch=True)
        except (UsageError, DataError):
            return          # busy, or another computation's: leave it
        work.remove()

    # the store interface -----------------------------------------------------------------
    def begin(self, grid, batch, describe=None, exact_grid=False) -> None:
        if self.complete:
            self.grid, self.batch = grid, batch
            self.done = {t.index for t in grid.tiles()}
            return
        self.work.begin(grid, batch, describe, exact_grid)
        self.grid, self.batch, self.done = self.work.grid, self.work.batch, self.work.done

    def write(self, tile, K, T):
        return self.work.write(tile, K, T)

    def record(self, tile, digest) -> None:
        self.work.record(tile, digest)

    def finish(self) -> KernelResult:
        if self.results is not None:
            return KernelResult(*self.results)
        result = self.work.finish()
        nngp, ntk = np.array(result.nngp), np.array(result.ntk)
        del result
        manifest = {
            "format": FORMAT,
            "identity": self.identity,
            "infinet_version": __version__,
            "shape": list(nngp.shape),
            "sha256": {"nngp": array_digest(nngp), "ntk": array_digest(ntk)},
        }
        if self.work.manifest.get("inputs"):
            manifest["inputs"] = self.work.manifest["inputs"]
        text = json.dumps(manifest, sort_keys=True).encode()
        if len(text) > MAX_MANIFEST:                 # the zip comment's limit
            manifest.pop("inputs", None)
            text = json.dumps(manifest, sort_keys=True).encode()
        try:
            write_npz_atomic(self.path, tmpdir=self.work.path, comment=text, nngp=nngp, ntk=ntk)
        except OSError as err:
            raise storage_error(err, self.what, self.path,
                                f"writing {os.path.basename(self.path)} (the computed tiles "
                                f"are kept in {self.work.path}/)") from None
        reached("npz.written")
        self.work.remove()
        self.work = None
        self.results = (nngp, ntk)
        self.complete = True
        return KernelResult(nngp, ntk)

    def close(self) -> None:
        if self.work is not None:
            self.work.close()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
