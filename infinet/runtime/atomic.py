"""Files that are never torn: atomic replacement, fsync, space reserved up front.

Every result file is written to a temporary file in the same directory (or in a
directory on the same file system), fsync'ed and renamed over its final name, so a
reader — or a run resumed after a kill — sees the old file or the new one, never a mix.
Temporary files are named ``.infinet-STEM.XXXX….tmp`` (STEM: the final name) so that
the leftovers of a killed run can be told apart and removed.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile

import numpy as np

from .killpoints import reached

#: errno values that mean "the disk (or the quota, or the file size limit) is full"
NO_SPACE = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG)
                     if e is not None)


def no_space(err: BaseException) -> bool:
    """Whether ``err`` says the disk, a quota or the file size limit is exhausted."""
    return isinstance(err, OSError) and err.errno in NO_SPACE


def fsync_dir(path: str) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_prefix(stem: str) -> str:
    return f".infinet-{stem}."


def mkstemp_public(directory: str, suffix: str, stem: str = "") -> tuple[int, str]:
    """A new temporary file in ``directory`` (created exclusively, never through a
    symlink) with the permissions a plain ``open`` would give (mkstemp's are 0600)."""
    if not suffix.endswith(".tmp"):
        suffix += ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(stem), suffix=suffix, dir=directory)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def remove_temporaries(directory: str, stem: str | None = None) -> None:
    """Delete the temporary files a killed writer left in ``directory`` (those of final
    name ``stem`` only, when given).  Call only while holding the lock of the output."""
    prefix = temporary_prefix(stem) if stem is not None else ".infinet-"
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def replace_atomic(path: str, write, suffix: str = ".tmp", tmpdir: str | None = None) -> None:
    """Write a temporary file with ``write(fh)``, fsync it and rename it over ``path``:
    a reader sees the old file or the new one, never a mix.  ``tmpdir``: where the
    temporary file lives (default: next to ``path``; it must be on the same file system)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = mkstemp_public(tmpdir or directory, suffix, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        reached("write:" + os.path.basename(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    replace_atomic(path, lambda fh: fh.write(data))


def write_npz_atomic(path: str, tmpdir: str | None = None, comment: bytes = b"",
                     **arrays) -> None:
    """An ``.npz`` at ``path`` that is either absent (or the old file) or complete.

    ``comment``: the zip archive's comment (at most 65,535 bytes), where infinet keeps
    the manifest: ``np.load`` sees only the arrays."""
    import zipfile

    def write(fh):
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
            zf.comment = comment
    replace_atomic(path, write, ".npz.tmp", tmpdir)


def reserve(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of ``fd`` on disk now, so that writing through a memory map
    later cannot fail (a full disk would kill the process with SIGBUS).  Raises OSError
    (ENOSPC) when the space is not there; file systems that cannot reserve are left as
    they are."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", 0)):
            raise


def npy_header(shape: tuple[int, ...], dtype=np.float64) -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)})
    return buf.getvalue()


def create_npy(path: str, shape: tuple[int, ...], dtype=np.float64) -> None:
    """A zero-filled .npy of ``shape`` created atomically, its space reserved on disk."""
    header = npy_header(shape, dtype)
    size = len(header) + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

    def write(fh):
        fh.write(header)
        fh.truncate(size)
        fh.flush()
        reserve(fh.fileno(), size)
    replace_atomic(path, write, ".npy.tmp")
