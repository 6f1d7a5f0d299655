"""A small ctypes wrapper around NVRTC: compile CUDA source to PTX with no GPU present.

Used to check generated CUDA in CI and by ``infinet cuda --check``.  The
library is looked up in ``$INFINET_NVRTC``, then in the ``nvidia-cuda-nvrtc`` pip
package (``nvidia/cu13/lib`` or ``nvidia/cuda_nvrtc/lib``), then on the system path.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InfinetError


class NvrtcError(InfinetError):
    """NVRTC is missing or rejected a program."""


def _candidates() -> list[str]:
    found: list[str] = []
    env = os.environ.get("INFINET_NVRTC")
    if env:
        found.append(env)
    try:
        import nvidia  # namespace package of the nvidia-* wheels
        for root in list(nvidia.__path__):
            for sub in ("cu13/lib", "cu12/lib", "cuda_nvrtc/lib"):
                found += sorted(glob.glob(os.path.join(root, sub, "libnvrtc.so*")), reverse=True)
    except ImportError:
        pass
    for name in ("nvrtc",):
        lib = ctypes.util.find_library(name)
        if lib:
            found.append(lib)
    found += ["libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so"]
    return [f for f in found if "builtins" not in os.path.basename(f)]


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as err:
            errors.append(f"{path}: {err}")
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib
    raise NvrtcError("NVRTC not found: install the `nvidia-cuda-nvrtc` package "
                     "(pip install 'infinet[test]') or set INFINET_NVRTC to libnvrtc.so")


def available() -> bool:
    try:
        library()
        return True
    except NvrtcError:
        return False


def version() -> tuple[int, int]:
    lib = library()
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


@dataclass
class NvrtcResult:
    ptx: str
    log: str
    options: tuple[str, ...]


def compile_ptx(source: str, arch: str = "compute_90", name: str = "infinet.cu",
                options: tuple[str, ...] = ()) -> NvrtcResult:
    """Compile ``source`` for a virtual architecture; raise :class:`NvrtcError` on failure."""
    lib = library()
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0,
                                       None, None), "nvrtcCreateProgram")
    opts = (f"--gpu-architecture={arch}",) + tuple(options)
    try:
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        status = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        if status != 0:
            raise NvrtcError(f"NVRTC failed ({lib.nvrtcGetErrorString(status).decode()}) with "
                             f"options {' '.join(opts)}:\n{log}")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        return NvrtcResult(ptx.value.decode(errors="replace"), log, opts)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _check(lib, status: int, what: str) -> None:
    if status != 0:
        raise NvrtcError(f"{what} failed: {lib.nvrtcGetErrorString(status).decode()}")
