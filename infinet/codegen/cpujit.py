"""Compiling generated C++ with the system compiler, cached across calls and processes.

The shared library is named by sha256(source + compiler command + compiler version), so
the cache can never serve a stale binary.  It lives in ``$INFINET_CACHE_DIR`` (default
``~/.cache/infinet``); builds run under a file lock and land with an atomic rename, so
concurrent processes are safe.  A failed build raises :class:`CompileError` with the
command, the compiler's stderr and the path where the source was kept.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from ..errors import InfinetError

FLAGS = ["-O3", "-std=c++17", "-fPIC", "-shared", "-fopenmp",
         # no fused multiply-add: round exactly like the NumPy reference (and the
         # GPU build, compiled with --fmad=false)
         "-ffp-contract=off", "-march=native", "-fno-math-errno"]
#: glibc's vector math library: lets `omp simd` loops call atan2 on whole vectors
MVEC_FLAGS = ["-DINFINET_MVEC", "-lmvec"]


class CompileError(InfinetError):
    """The system compiler rejected generated code (a bug in infinet: please report)."""


def cache_dir() -> Path:
    root = os.environ.get("INFINET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "infinet")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


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
def compiler_works() -> bool:
    """Whether a compiler exists and builds a trivial OpenMP shared library here."""
    cxx = find_compiler()
    if cxx is None:
        return False
    try:
        build_library('extern "C" int infinet_probe(void) { return 42; }\n', "probe")
        return True
    except (CompileError, OSError):
        return False


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


def build_library(source: str, name: str = "kernel") -> Path:
    """Compile ``source`` to a shared library (or find it in the cache); return its path."""
    cxx = find_compiler()
    if cxx is None:
        raise CompileError("no C++ compiler found (set CXX, or install g++) for --backend cpu")
    cmd_text = " ".join(command(cxx, "SRC", "OUT"))
    key = hashlib.sha256("\0".join((source, cmd_text, compiler_version(cxx),
                                    host_features())).encode())
    digest = key.hexdigest()[:32]
    root = cache_dir()
    lib = root / f"{name}-{digest}.so"
    if lib.exists():
        return lib
    with open(root / f"{name}-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if lib.exists():
                return lib
            src = root / f"{name}-{digest}.cpp"
            src.write_text(source)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=root)
            os.close(fd)
            cmd = command(cxx, str(src), tmp)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.SubprocessError) as err:
                os.unlink(tmp)
                raise CompileError(f"could not run the compiler: {' '.join(cmd)}: {err}; "
                                   f"source kept at {src}") from None
            if proc.returncode != 0:
                os.unlink(tmp)
                raise CompileError(f"compiling generated code failed (exit {proc.returncode})\n"
                                   f"  command: {' '.join(cmd)}\n  source kept at: {src}\n"
                                   f"{proc.stderr.strip()}")
            os.replace(tmp, lib)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return lib


def load(source: str, name: str = "kernel") -> ctypes.CDLL:
    return ctypes.CDLL(str(build_library(source, name)))
