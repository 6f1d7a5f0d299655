"""Running Python code under a sanitizer build of the emulator (a subprocess).

The sanitizer runtimes must be loaded before anything else, so the code runs in a fresh
interpreter with ``LD_PRELOAD`` set to GCC's libtsan/libasan and
``INFINET_CUDA_EMU_MODE`` set: modules are then compiled with ``-fsanitize=thread`` or
``-fsanitize=address`` and the runtime tells the sanitizer about the fibers.  The
emulator is forced (``INFINET_CUDA_EMU_FORCE=1``) even where a GPU exists.
"""
from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from . import build

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
_LIB = {"tsan": "libtsan.so", "asan": "libasan.so"}
_OPTIONS = {
    # exitcode: a report makes the process fail even if the Python code succeeds
    "tsan": ("TSAN_OPTIONS", "exitcode=66:halt_on_error=0:report_signal_unsafe=0"),
    "asan": ("ASAN_OPTIONS", "exitcode=67:detect_leaks=0:halt_on_error=1"),
}


@lru_cache(maxsize=None)
def runtime_path(mode: str) -> str | None:
    """GCC's sanitizer runtime for ``mode``, or None where the compiler has none."""
    out = subprocess.run([build.compiler(), f"-print-file-name={_LIB[mode]}"],
                         capture_output=True, text=True).stdout.strip()
    return out if os.path.isabs(out) and os.path.exists(out) else None


def run(mode: str, code: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -c code args...`` with the emulator in ``mode`` (tsan or asan)."""
    lib = runtime_path(mode)
    if lib is None:
        raise RuntimeError(f"{build.compiler()} has no {_LIB[mode]} (-fsanitize unsupported)")
    env = dict(os.environ)
    env["LD_PRELOAD"] = lib
    env["INFINET_CUDA_EMU_MODE"] = mode
    env["INFINET_CUDA_EMU_FORCE"] = "1"
    key, value = _OPTIONS[mode]
    env[key] = value
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run([_interpreter(), "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(ROOT))


def _interpreter() -> str:
    """This interpreter's executable (a virtualenv's link keeps the virtualenv), never a
    wrapper script: a shell wrapper would load the sanitizer too, and ThreadSanitizer
    does not survive bash (a pyenv shim, say)."""
    for candidate in (sys.executable, getattr(sys, "_base_executable", "")):
        try:
            with open(candidate, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    return candidate
        except OSError:
            continue
    raise RuntimeError(f"no interpreter binary to run under a sanitizer ({sys.executable})")
