"""A small ctypes wrapper around NVRTC: compile CUDA source with no GPU present.

To PTX for a virtual architecture (``compile_ptx``), or to a CUBIN for a real one
(``compile_cubin``), which runs ptxas: only that sees the hardware limits (registers,
spills, static shared memory: a 52 KB ``__shared__`` array passes the PTX compile and
fails ptxas), reported per kernel from ``--ptxas-options=-v``.

Used to check generated CUDA in CI and by ``infinet cuda --check``.  The
library is looked up in ``$INFINET_NVRTC``, then in the ``nvidia-cuda-nvrtc`` pip
package (``nvidia/cu13/lib`` or ``nvidia/cuda_nvrtc/lib``), then on the system path.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
from dataclasses import dataclass, field
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
class KernelResources:
    """What ptxas reports for one kernel (``--ptxas-options=-v``)."""

    name: str
    arch: str
    registers: int
    barriers: int = 0
    shared: int = 0          # static shared memory, bytes
    stack: int = 0           # stack frame, bytes
    spill_stores: int = 0
    spill_loads: int = 0


@dataclass
class NvrtcResult:
    ptx: str
    log: str
    options: tuple[str, ...]
    cubin: bytes | None = None
    #: kernel name -> resources (a CUBIN compiled with --ptxas-options=-v)
    resources: dict[str, KernelResources] = field(default_factory=dict)

    @property
    def diagnostics(self) -> str:
        """The log without ptxas's informational lines: warnings and errors only."""
        return "\n".join(line for line in self.log.splitlines()
                         if not line.startswith(("ptxas info", "ptxas         ."))).strip()


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> dict[str, KernelResources]:
    """Per-kernel resources from a ptxas -v log (lines after each 'Compiling entry')."""
    out: dict[str, KernelResources] = {}
    cur: KernelResources | None = None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = out[m.group(1)] = KernelResources(m.group(1), m.group(2), registers=-1)
            continue
        if cur is None:
            continue
        m = _FRAME.search(line)
        if m:
            cur.stack, cur.spill_stores, cur.spill_loads = map(int, m.groups())
            continue
        m = _USED.search(line)
        if m:
            cur.registers = int(m.group(1))
            cur.barriers = int(m.group(2) or 0)
            smem = _SMEM.search(line)
            cur.shared = int(smem.group(1)) if smem else 0
    return out


def compile_ptx(source: str, arch: str = "compute_90", name: str = "infinet.cu",
                options: tuple[str, ...] = ()) -> NvrtcResult:
    """Compile ``source`` for a virtual architecture; raise :class:`NvrtcError` on failure."""
    return _compile(source, arch, name, tuple(options), cubin=False)


def compile_cubin(source: str, arch: str = "sm_90", name: str = "infinet.cu",
                  options: tuple[str, ...] = ()) -> NvrtcResult:
    """Compile ``source`` to a CUBIN for a real architecture (``sm_XY``), running ptxas
    verbosely: the result has the PTX, the CUBIN and every kernel's resources.  ptxas
    refusing a kernel (too much shared data, too many registers) raises NvrtcError."""
    if not arch.startswith("sm_"):
        raise NvrtcError(f"compile_cubin needs a real architecture (sm_XY), not {arch}")
    return _compile(source, arch, name, tuple(options) + ("--ptxas-options=-v",), cubin=True)


def _compile(source: str, arch: str, name: str, options: tuple[str, ...],
             cubin: bool) -> NvrtcResult:
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
        # (NVRTC 13 joins the front end's and ptxas's parts of the log with NULs)
        log = buf.raw.replace(b"\0", b"").decode(errors="replace")
        if status != 0:
            raise NvrtcError(f"NVRTC failed ({lib.nvrtcGetErrorString(status).decode()}) with "
                             f"options {' '.join(opts)}:\n{log}")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        result = NvrtcResult(ptx.value.decode(errors="replace"), log, opts)
        if cubin:
            _check(lib, lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
            binary = ctypes.create_string_buffer(size.value)
            _check(lib, lib.nvrtcGetCUBIN(prog, binary), "nvrtcGetCUBIN")
            result.cubin = binary.raw
            result.resources = parse_ptxas_log(log)
        return result
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _check(lib, status: int, what: str) -> None:
    if status != 0:
        raise NvrtcError(f"{what} failed: {lib.nvrtcGetErrorString(status).decode()}")
