"""Compiling generated C++ with the system compiler, cached across calls and processes.

The shared library is named by sha256(cache layout + source + compiler command + compiler
version + CPU features), so the cache can never serve a stale binary, and entries of an
older layout are never looked at.  It lives in ``$INFINET_CACHE_DIR`` (default
``~/.cache/infinet``), which must be private: a loaded library runs with the user's
rights, so a directory not owned by the user, or writable by group or others, is not used
(a warning, then the private ``TMPDIR/infinet-cache-UID``).  Directories infinet creates
are 0700 and its files 0600 whatever the umask; files are created exclusively and never
through a symlink.  Each library's sha256 is recorded at build time in a sidecar
(``NAME-KEY.json``, written atomically) and checked before the library is loaded, so a
truncated, garbled or swapped ``.so`` is rebuilt, never loaded.  Builds run under a file
lock (a lock held longer than ``LOCK_TIMEOUT`` gives an error naming it and its holder)
and land with an atomic rename, so concurrent processes are safe.  A failed build raises
:class:`CompileError` with the command, the compiler's stderr and the kept source.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from functools import lru_cache
from pathlib import Path

from ..errors import InfinetError

FLAGS = ["-O3", "-std=c++17", "-fPIC", "-shared", "-fopenmp",
         # no fused multiply-add: round exactly like the NumPy reference (and the
         # GPU build, compiled with --fmad=false)
         "-ffp-contract=off", "-march=native", "-fno-math-errno"]
#: glibc's vector math library: lets `omp simd` loops call atan2 on whole vectors
MVEC_FLAGS = ["-DINFINET_MVEC", "-lmvec"]
#: The cache's layout: part of every key, so entries of another layout never match.
LAYOUT = 2
#: Seconds to wait for another process's build of the same library (builds time out
#: after ``BUILD_TIMEOUT``).
BUILD_TIMEOUT = 600
LOCK_TIMEOUT = 900.0


class CompileError(InfinetError):
    """The system compiler rejected generated code (a bug in infinet: please report)."""


class CacheError(InfinetError):
    """The compile cache cannot be used (uncreatable, unwritable, or a lock held too long)."""


class CacheWarning(UserWarning):
    """The compile cache directory is not private, or held a damaged library."""


# -- the cache directory ------------------------------------------------------------------------

def configured_cache_dir() -> str:
    return os.environ.get("INFINET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "infinet")


def _unsafe(st: os.stat_result) -> str | None:
    """Why a directory (or file) is not private enough to load code from, or None."""
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} " \
               f"(mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _make_dirs(path: str) -> None:
    """Create ``path`` and missing parents, each 0700 (whatever the umask)."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            if not os.path.isdir(d):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), d) from None


def _private_fallback() -> str:
    path = os.path.join(tempfile.gettempdir(), f"infinet-cache-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise CacheError(f"compile cache {path}: cannot create ({err.strerror}); set "
                         f"INFINET_CACHE_DIR to a private, writable directory") from None
    st = os.lstat(path)
    problem = "a symlink" if stat.S_ISLNK(st.st_mode) else \
        "not a directory" if not stat.S_ISDIR(st.st_mode) else _unsafe(st)
    if problem is None and stat.S_IMODE(st.st_mode) & 0o077:
        problem = f"readable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    if problem:
        raise CacheError(f"compile cache {path}: is {problem}; set INFINET_CACHE_DIR to a "
                         f"private, writable directory")
    return path


def cache_dir() -> Path:
    """The verified private directory libraries are built in and loaded from."""
    root = configured_cache_dir()
    try:
        _make_dirs(root)
        st = os.stat(root)
    except OSError as err:
        raise CacheError(f"compile cache {root}: cannot create ({err.strerror}); set "
                         f"INFINET_CACHE_DIR to a writable directory") from None
    problem = _unsafe(st)
    if problem is None:
        if not os.access(root, os.W_OK | os.X_OK):
            raise CacheError(f"compile cache {root}: not writable; set INFINET_CACHE_DIR to a "
                             f"writable directory")
        return Path(root)
    fallback = _private_fallback()
    warnings.warn(CacheWarning(f"compile cache {root}: not used, it is {problem} (another user "
                               f"could plant code in it); using the private {fallback}"),
                  stacklevel=3)
    return Path(fallback)


# -- the compiler ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def find_compiler() -> str | None:
    """The C++ compiler to use ($CXX, then g++, c++, clang++), or None."""
    for name in filter(None, (os.environ.get("CXX"), "g++", "c++", "clang++")):
        path = shutil.which(name)
        if path:
            return path
    return None


@lru_cache(maxsize=None)
def compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=None)
def unusable_reason() -> str | None:
    """Why the CPU target cannot be used here (no compiler, a failing test build, an
    unusable compile cache), or None when it builds a trivial OpenMP library."""
    if find_compiler() is None:
        return "no C++ compiler found (set CXX, or install g++)"
    try:
        build_library('extern "C" int infinet_probe(void) { return 42; }\n', "probe")
    except CacheError as err:
        return f"an unusable compile cache ({err.message})"
    except (CompileError, OSError):
        return "no working C++ compiler (a test build failed)"
    return None


def compiler_works() -> bool:
    """Whether a compiler exists and builds a trivial OpenMP shared library here."""
    return unusable_reason() is None


@lru_cache(maxsize=None)
def host_features() -> str:
    """The CPU's instruction-set flags: -march=native binaries are only valid on the same
    kind of CPU, so a cache shared between machines must not mix them."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.machine() + " " + platform.processor()


@lru_cache(maxsize=None)
def use_mvec(cxx: str) -> bool:
    """GCC on x86-64 with glibc's libmvec (>= 2.35) present."""
    import ctypes.util
    import platform
    if platform.machine() not in ("x86_64", "AMD64") or "clang" in compiler_version(cxx).lower():
        return False
    return ctypes.util.find_library("mvec") is not None


def command(cxx: str, src: str, out: str) -> list[str]:
    return [cxx, *FLAGS, src, "-o", out] + (MVEC_FLAGS if use_mvec(cxx) else [])


# -- files in the cache ---------------------------------------------------------------------

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def _open_own(name: str, dfd: int, flags: int = os.O_RDONLY) -> int | None:
    """An fd of our own regular, not group/world-writable file ``name``, or None."""
    try:
        fd = os.open(name, flags | _NOFOLLOW, dir_fd=dfd)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or _unsafe(st):
        os.close(fd)
        return None
    return fd


def _read_own(name: str, dfd: int) -> bytes | None:
    fd = _open_own(name, dfd)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _replace(root: Path, name: str, data: bytes) -> None:
    """Write ``root/name`` atomically: an exclusive 0600 temporary, fsync, rename (which
    replaces a symlink at ``name`` itself, never its target)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, root / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _verified(dfd: int, stem: str, key: str) -> bool | None:
    """True: ``stem.so`` is what its sidecar recorded for ``key``.  None: there is no
    library.  False: there is one, and it is not (damaged, swapped, or foreign)."""
    data = _read_own(f"{stem}.so", dfd)
    if data is None:
        try:
            os.lstat(f"{stem}.so", dir_fd=dfd)
        except FileNotFoundError:
            return None
        return False
    side = _read_own(f"{stem}.json", dfd)
    try:
        record = json.loads(side) if side is not None else {}
    except ValueError:
        record = {}
    return (isinstance(record, dict) and record.get("layout") == LAYOUT
            and record.get("key") == key and record.get("size") == len(data)
            and record.get("sha256") == hashlib.sha256(data).hexdigest())


@contextlib.contextmanager
def _locked(root: Path, dfd: int, stem: str):
    name = f"{stem}.lock"
    path = root / name
    for _ in range(2):
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=dfd)
            break
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise CacheError(f"compile cache {root}: cannot create {name} "
                                 f"({err.strerror})") from None
            os.unlink(name, dir_fd=dfd)      # a symlink: remove the link, not its target
    else:
        raise CacheError(f"compile cache {root}: cannot create {name}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or _unsafe(st):
            raise CacheError(f"compile cache lock {path}: is not a private regular file "
                             f"({_unsafe(st) or 'not a regular file'})")
        deadline = time.monotonic() + LOCK_TIMEOUT
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    by = f"process {holder}" if holder.isdigit() else "another process"
                    raise CacheError(f"compile cache lock {path}: held by {by} for more than "
                                     f"{LOCK_TIMEOUT:g} s; if no infinet compile is running, "
                                     f"delete the lock file") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- building and loading -------------------------------------------------------------------

def build_library(source: str, name: str = "kernel") -> Path:
    """Compile ``source`` to a shared library (or find it, verified, in the cache); return
    its path."""
    cxx = find_compiler()
    if cxx is None:
        raise CompileError("no C++ compiler found (set CXX, or install g++) for --backend cpu")
    cmd_text = " ".join(command(cxx, "SRC", "OUT"))
    key = hashlib.sha256("\0".join((f"infinet cpu cache layout {LAYOUT}", source, cmd_text,
                                    compiler_version(cxx), host_features())).encode()).hexdigest()
    stem = f"{name}-{key[:32]}"
    root = cache_dir()
    lib = root / f"{stem}.so"
    try:
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise CacheError(f"compile cache {root}: cannot open ({err.strerror})") from None
    try:
        if _verified(dfd, stem, key):
            return lib
        with _locked(root, dfd, stem):
            state = _verified(dfd, stem, key)
            if state:
                return lib
            if state is False:
                warnings.warn(CacheWarning(f"compile cache: {lib} does not match the checksum "
                                           f"recorded when it was built; rebuilding it"),
                              stacklevel=2)
            try:
                _build(cxx, source, root, stem, key)
            except PermissionError as err:
                raise CacheError(f"compile cache {root}: not writable ({err.strerror}); set "
                                 f"INFINET_CACHE_DIR to a writable directory") from None
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    raise CacheError(f"compile cache {root}: cannot write ({err.strerror})") \
                        from None
                raise
    finally:
        os.close(dfd)
    return lib


def _build(cxx: str, source: str, root: Path, stem: str, key: str) -> None:
    src = root / f"{stem}.cpp"
    _replace(root, src.name, source.encode())
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".so", dir=root)
    os.close(fd)
    cmd = command(cxx, str(src), tmp)
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                                  umask=0o077)
        except (OSError, subprocess.SubprocessError) as err:
            raise CompileError(f"could not run the compiler: {' '.join(cmd)}: {err}; "
                               f"source kept at {src}") from None
        if proc.returncode != 0:
            raise CompileError(f"compiling generated code failed (exit {proc.returncode})\n"
                               f"  command: {' '.join(cmd)}\n  source kept at: {src}\n"
                               f"{proc.stderr.strip()}")
        fd = os.open(tmp, os.O_RDONLY | _NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            data = fh.read()
            os.fsync(fh.fileno())
        os.replace(tmp, root / f"{stem}.so")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    record = {"layout": LAYOUT, "key": key, "size": len(data),
              "sha256": hashlib.sha256(data).hexdigest(), "command": " ".join(cmd)}
    _replace(root, f"{stem}.json", (json.dumps(record, indent=1) + "\n").encode())


def load(source: str, name: str = "kernel") -> ctypes.CDLL:
    """The library for ``source``, built or found in the cache and verified, loaded."""
    path = build_library(source, name)
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        raise CacheError(f"compile cache: cannot load {path} ({err})") from None
