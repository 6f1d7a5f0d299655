"""Emulated kernel modules and launches: what the CuPy stand-in's RawModule calls.

A launch is checked the way a GPU would fail, before anything runs: grid and block within
the device limits and the kernel's ``__launch_bounds__``, static + dynamic shared memory
within the limits (48 KiB, or the kernel's ``max_dynamic_shared_size_bytes`` opt-in),
and every argument against the C++ parameter type the compiler recorded: CuPy passes a
Python int as int64 and a float as float64, so ``int n`` given ``5`` or ``float s``
given ``0.5`` would silently corrupt the argument buffer on a GPU; here they raise.  A
device array given to a pointer must have the pointee's element type (``float*`` gets
float32, ``const long long*`` int64), be C-contiguous (a kernel sees only its data
pointer), and live on the emulated device.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from . import build

_DEVICE_LIMITS = {"block": (1024, 1024, 64), "threads": 1024,
                  "grid": (2 ** 31 - 1, 65535, 65535)}


class KernelFault(RuntimeError):
    """The emulator saw a kernel misbehave (a race-prone barrier, a divergent warp
    collective, ...): on a GPU this would hang, crash or compute garbage."""


class LaunchError(ValueError):
    """A launch a GPU would refuse (geometry, shared memory) or corrupt (arguments)."""


# ---- configuration -----------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    #: which ready thread runs next: mixed (forward, reverse, random, rotating over the
    #: blocks of every launch), forward, reverse or random
    order: str = "mixed"
    workers: int = 2
    seed: int = 0
    stack_kib: int = 0           # 0: by mode
    drop_barrier_line: int = -1  # mutation tests: the __syncthreads() of this line does nothing


_ORDERS = {"mixed": 0, "forward": 1, "reverse": 2, "random": 3}
_config = Config(workers=max(1, min(2, os.cpu_count() or 1)),
                 order=os.environ.get("INFINET_CUDA_EMU_ORDER", "mixed"))
#: source lines of the __syncthreads() executed since the last reset (mutation tests)
barrier_sites: set[int] = set()


def config() -> Config:
    return _config


def set_config(**changes) -> Config:
    """Change the configuration; returns the previous one (restore with restore_config)."""
    global _config
    old = _config
    _config = replace(_config, **changes)
    if _config.order not in _ORDERS:
        _config = old
        raise ValueError(f"order: one of {sorted(_ORDERS)}")
    return old


def restore_config(old: Config) -> None:
    global _config
    _config = old


def mode() -> str:
    """The build mode of this process (INFINET_CUDA_EMU_MODE: plain, asan or tsan): the
    sanitizer modes need the sanitizer runtime preloaded (see sanitize.py)."""
    m = os.environ.get("INFINET_CUDA_EMU_MODE", "plain")
    if m not in build.MODES:
        raise ValueError(f"INFINET_CUDA_EMU_MODE={m!r}: one of {build.MODES}")
    return m


# ---- ctypes mirror of abi.h ------------------------------------------------------------------
class _Param(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_char), ("pkind", ctypes.c_char), ("is_const", ctypes.c_char),
                ("pad", ctypes.c_char), ("size", ctypes.c_uint), ("psize", ctypes.c_uint)]


class _KernelInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("invoke", ctypes.c_void_p), ("nparams", ctypes.c_int),
                ("params", ctypes.POINTER(_Param)), ("max_threads", ctypes.c_int)]


class _Range(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_longlong), ("size", ctypes.c_longlong)]


class _LaunchCfg(ctypes.Structure):
    _fields_ = [("order", ctypes.c_int), ("workers", ctypes.c_int),
                ("seed", ctypes.c_ulonglong), ("stack_bytes", ctypes.c_size_t),
                ("tls_anchor", ctypes.c_void_p), ("anchor_offset", ctypes.c_longlong),
                ("shared", ctypes.POINTER(_Range)), ("nshared", ctypes.c_int),
                ("dyn_offset", ctypes.c_longlong), ("dyn_bytes", ctypes.c_longlong),
                ("dyn_capacity", ctypes.c_longlong), ("drop_barrier_line", ctypes.c_int),
                ("sites_out", ctypes.POINTER(ctypes.c_int)), ("max_sites", ctypes.c_int),
                ("nsites", ctypes.c_int)]


@lru_cache(maxsize=None)
def runtime() -> ctypes.CDLL:
    m = mode()
    if m != "plain" and not _sanitizer_loaded(m):
        raise RuntimeError(f"cuda-emu mode {m} needs its sanitizer runtime preloaded "
                           "(LD_PRELOAD): run it through tests/cuda_emu/sanitize.py")
    lib = ctypes.CDLL(str(build.runtime_library(m)), mode=ctypes.RTLD_GLOBAL)
    lib.emu_launch.restype = ctypes.c_int
    lib.emu_launch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                               ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                               ctypes.POINTER(_LaunchCfg), ctypes.c_char_p, ctypes.c_size_t]
    lib.emu_runtime_mode.restype = ctypes.c_char_p
    return lib


def _sanitizer_loaded(m: str) -> bool:
    lib = {"asan": "libasan", "tsan": "libtsan"}[m]
    try:
        with open("/proc/self/maps") as fh:
            return lib in fh.read()
    except OSError:
        return False


# ---- modules ---------------------------------------------------------------------------------
@dataclass
class Param:
    kind: str       # p f i u b s
    size: int
    pkind: str      # pointee: v f i u b s p ('' for non-pointers)
    psize: int
    is_const: bool

    def ctype(self) -> str:
        base = {"f": f"float{8 * self.size}", "i": f"int{8 * self.size}",
                "u": f"uint{8 * self.size}", "b": "bool", "s": f"{self.size}-byte struct",
                "p": "pointer"}
        if self.kind != "p":
            return base[self.kind]
        inner = {"v": "void", "f": f"float{8 * self.psize}", "i": f"int{8 * self.psize}",
                 "u": f"uint{8 * self.psize}", "b": "bool", "s": f"{self.psize}-byte struct",
                 "p": "pointer"}[self.pkind]
        return ("const " if self.is_const else "") + inner + "*"


class KernelImage:
    def __init__(self, module: "ModuleImage", info: _KernelInfo):
        self.module = module
        self.info = info
        self.name = info.name.decode()
        self.params = [Param(p.kind.decode(), p.size, p.pkind.decode(), p.psize,
                             p.is_const != b"\0")
                       for p in (info.params[k] for k in range(info.nparams))]
        self.max_threads = info.max_threads
        self.static_shared = module.build.static_shared[self.name]
        self.max_dynamic: int | None = None     # opted-in dynamic shared memory
        ranges = module.build.shared_ranges[self.name]
        self._ranges = (_Range * max(1, len(ranges)))(*[_Range(o, s) for o, s in ranges])
        self._nranges = len(ranges)


class ModuleImage:
    """A loaded emulated module (one per source, options and mode, per process)."""

    def __init__(self, b: build.ModuleBuild):
        runtime()          # its symbols resolve the module's
        self.build = b
        self.lib = ctypes.CDLL(str(b.library), mode=ctypes.RTLD_LOCAL)
        count = ctypes.c_int.in_dll(self.lib, "emu_kernel_count").value
        table = (_KernelInfo * (count + 1)).in_dll(self.lib, "emu_kernels")
        self.kernels = {k.name: k for k in (KernelImage(self, table[i]) for i in range(count))}
        self.anchor = ctypes.cast(self.lib.emu_module_tls_anchor, ctypes.c_void_p).value

    def global_address(self, name: str) -> int:
        try:
            return ctypes.cast(getattr(self.lib, name), ctypes.c_void_p).value
        except AttributeError:
            raise LaunchError(f"no global symbol {name!r} in the module "
                              "(CUDA_ERROR_NOT_FOUND)") from None


_MODULES: dict[tuple, ModuleImage] = {}


def load_module(source: str, options: build.Options) -> ModuleImage:
    key = (source, options, mode())
    if key not in _MODULES:
        _MODULES[key] = ModuleImage(build.build_module(source, options, mode()))
    return _MODULES[key]


# ---- arguments -------------------------------------------------------------------------------
_DTYPE_KIND = {"f": "f", "i": "i", "u": "u", "b": "b", "c": "c", "V": "s"}


def _pack(arg, device, index: int, param: Param, kname: str) -> bytes:
    """The bytes CuPy would pass for `arg`, checked against the parameter."""
    where = f"kernel {kname}, argument {index} ({param.ctype()})"
    if arg is None:
        value, arr = 0, None
    elif isinstance(arg, device.ndarray):
        value, arr = arg.data.ptr, arg
    elif isinstance(arg, device.MemoryPointer):
        value, arr = arg.ptr, None
    elif isinstance(arg, np.ndarray):
        if arg.size != 1:
            raise TypeError(f"{where}: a numpy.ndarray of shape {arg.shape} cannot be passed "
                            "(CuPy passes only numpy arrays of size one, by value; pass a "
                            "cupy.ndarray for a pointer)")
        raw = arg.tobytes()
        return _check_scalar(raw, _DTYPE_KIND.get(arg.dtype.kind, "s"), arg.dtype, param, where)
    else:
        if param.kind == "p" and isinstance(arg, (int, np.integer)) and not isinstance(arg, bool):
            address = int(arg)
            if address != 0 and not device.owns(address):
                raise LaunchError(f"{where}: given the integer {address:#x}, which is not a "
                                  "device address (0 or inside a live device array)")
        if type(arg) is bool:
            arg = np.bool_(arg)
        elif type(arg) is int:
            arg = np.uint64(arg) if arg >= 2 ** 63 else np.int64(arg)
        elif type(arg) is float:
            arg = np.float64(arg)
        elif type(arg) is complex:
            arg = np.complex128(arg)
        if not isinstance(arg, np.generic):
            raise TypeError(f"{where}: unsupported type {type(arg).__name__}")
        return _check_scalar(arg.tobytes(), _DTYPE_KIND.get(arg.dtype.kind, "s"), arg.dtype,
                             param, where)
    # a pointer value
    if param.kind != "p":
        given = "None" if arg is None else type(arg).__name__
        raise LaunchError(f"{where}: given a pointer ({given}); the kernel would read its "
                          "address as a value")
    if arr is not None:
        if not arr.flags.c_contiguous:
            raise LaunchError(f"{where}: a non-contiguous array (strides {arr.strides}): the "
                              "kernel sees only its data pointer")
        dt = arr.dtype
        if param.pkind not in ("v", "s") and not (param.pkind == "b" and dt.itemsize == 1):
            want = {"f": "f", "i": "iu", "u": "iu", "b": "b", "p": "iu"}[param.pkind]
            if dt.kind not in want or dt.itemsize != param.psize:
                raise LaunchError(f"{where}: given an array of {dt}: the kernel would read "
                                  f"its {dt.itemsize}-byte elements as {param.ctype()[:-1]}")
        if param.pkind == "s" and dt.itemsize % max(1, param.psize) and param.psize % dt.itemsize:
            raise LaunchError(f"{where}: given an array of {dt} ({dt.itemsize}-byte "
                              f"elements) for {param.psize}-byte structs")
    return int(value).to_bytes(8, "little")


def _check_scalar(raw: bytes, kind: str, dtype, param: Param, where: str) -> bytes:
    if param.kind == "p":
        if kind in "iu" and len(raw) == 8:
            return raw   # a raw device address (e.g. numpy.uint64(0) for NULL)
        raise LaunchError(f"{where}: given a {dtype} scalar for a pointer")
    if param.kind == "s":
        if len(raw) != param.size:
            raise LaunchError(f"{where}: given {len(raw)} bytes ({dtype}) for a "
                              f"{param.size}-byte parameter")
        return raw
    same_family = (kind == param.kind or (kind in "iu" and param.kind in "iu")
                   or (kind == "b" and param.kind in "biu" and param.size == 1))
    if not same_family or len(raw) != param.size:
        hint = ""
        if kind == "i" and len(raw) == 8:
            hint = " (a Python int is passed as int64)"
        elif kind == "f" and len(raw) == 8:
            hint = " (a Python float is passed as float64)"
        raise LaunchError(f"{where}: given {dtype}{hint}: a GPU would misread the argument "
                          f"buffer; pass numpy.{param.ctype()}(...)")
    return raw


# ---- launch ----------------------------------------------------------------------------------
def launch(kernel: KernelImage, grid, block, args, shared_mem: int, max_dynamic: int,
           device) -> None:
    grid = tuple(max(1, int(g)) for g in (tuple(grid) + (1, 1))[:3])
    block = tuple(max(1, int(b)) for b in (tuple(block) + (1, 1))[:3])
    name = kernel.name
    lim = _DEVICE_LIMITS
    if any(b > m for b, m in zip(block, lim["block"])) or np.prod(block) > lim["threads"]:
        raise LaunchError(f"kernel {name}: block {block} exceeds the device limits "
                          f"{lim['block']}, {lim['threads']} threads (CUDA_ERROR_INVALID_VALUE)")
    if any(g > m for g, m in zip(grid, lim["grid"])):
        raise LaunchError(f"kernel {name}: grid {grid} exceeds {lim['grid']} "
                          "(CUDA_ERROR_INVALID_VALUE)")
    nthreads = int(np.prod(block))
    if kernel.max_threads and nthreads > kernel.max_threads:
        raise LaunchError(f"kernel {name}: {nthreads} threads per block, but __launch_bounds__"
                          f"({kernel.max_threads}) (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)")
    if shared_mem < 0 or shared_mem > max_dynamic:
        raise LaunchError(f"kernel {name}: {shared_mem} bytes of dynamic shared memory, but "
                          f"the kernel allows {max_dynamic} ({kernel.static_shared} static; "
                          "raise max_dynamic_shared_size_bytes to opt in) "
                          "(CUDA_ERROR_INVALID_VALUE)")
    if len(args) != len(kernel.params):
        raise LaunchError(f"kernel {name}: {len(args)} arguments for {len(kernel.params)} "
                          "parameters")
    buffers = [ctypes.create_string_buffer(_pack(a, device, i, p, name), max(8, p.size))
               for i, (a, p) in enumerate(zip(args, kernel.params))]
    argv = (ctypes.c_void_p * max(1, len(buffers)))(*[ctypes.addressof(b) for b in buffers])
    c = config()
    m = kernel.module
    stack = c.stack_kib or {"plain": 64, "asan": 512, "tsan": 256}[mode()]
    sites = (ctypes.c_int * 256)()
    cfg = _LaunchCfg(order=_ORDERS[c.order], workers=c.workers, seed=c.seed,
                     stack_bytes=stack * 1024, tls_anchor=m.anchor,
                     anchor_offset=m.build.anchor_offset, shared=kernel._ranges,
                     nshared=kernel._nranges, dyn_offset=m.build.dyn_offset,
                     dyn_bytes=shared_mem, dyn_capacity=m.build.dyn_capacity,
                     drop_barrier_line=c.drop_barrier_line, sites_out=sites, max_sites=256,
                     nsites=0)
    err = ctypes.create_string_buffer(4096)
    g = (ctypes.c_uint * 3)(*grid)
    b = (ctypes.c_uint * 3)(*block)
    status = runtime().emu_launch(ctypes.cast(ctypes.pointer(kernel.info), ctypes.c_void_p),
                                  argv, g, b, ctypes.byref(cfg), err, len(err))
    barrier_sites.update(sites[k] for k in range(cfg.nsites))
    if status != 0:
        raise KernelFault("cuda-emu: " + err.value.decode(errors="replace"))
