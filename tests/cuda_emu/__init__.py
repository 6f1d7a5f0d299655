"""cuda-emu: the generated CUDA runs in the tests without a GPU (a test harness only).

``activated()`` is the one switch: inside it, ``import cupy`` gives the real CuPy where
CuPy finds a GPU, and otherwise the stand-in (cupy_standin.py) whose kernels run in the
host emulation of the CUDA execution model (cuda_emu.h, runtime.cpp).  Outside it,
nothing of the stand-in is visible: infinet's cached ``cuda_usable()`` and CUDA module
cache are cleared on the way in and on the way out.  See README.md.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from functools import lru_cache

from .kernels import KernelFault, LaunchError, barrier_sites, config, restore_config, set_config

__all__ = ["activated", "real_gpu", "KernelFault", "LaunchError", "barrier_sites", "config",
           "set_config", "restore_config", "configured"]


@lru_cache(maxsize=1)
def real_gpu() -> bool:
    """CuPy imports, sees a device and runs a kernel there (never with
    INFINET_CUDA_EMU_FORCE=1: the sanitizer runs, tests of the emulator itself)."""
    if os.environ.get("INFINET_CUDA_EMU_FORCE") == "1":
        return False
    saved = {k: v for k, v in sys.modules.items() if k == "cupy" or k.startswith("cupy.")}
    if any(getattr(v, "__cuda_emu__", False) for v in saved.values()):
        return False
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        cupy.zeros(1).sum().item()
        return True
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device
        return False


def _clear_infinet_caches() -> None:
    mod = sys.modules.get("infinet.runtime.cuda")
    if mod is not None:
        mod.cuda_usable.cache_clear()
        mod._MODULES.clear()


@contextmanager
def activated(emulator: bool = False):
    """Yield "gpu" (real CuPy) or "emulator" (the stand-in installed as ``cupy``; always
    with ``emulator=True``).  With INFINET_CUDA_REQUIRE_GPU=1 (benchmarks/gpu_check.sh) a
    missing GPU is an error."""
    if not emulator and real_gpu():
        yield "gpu"
        return
    if not emulator and os.environ.get("INFINET_CUDA_REQUIRE_GPU") == "1":
        raise RuntimeError("INFINET_CUDA_REQUIRE_GPU=1 but CuPy finds no usable GPU")
    from . import cupy_standin
    names = [k for k in sys.modules if k == "cupy" or k.startswith("cupy.")]
    saved = {k: sys.modules.pop(k) for k in names}
    sys.modules.update(cupy_standin.SUBMODULES)
    _clear_infinet_caches()
    try:
        yield "emulator"
    finally:
        for k in cupy_standin.SUBMODULES:
            sys.modules.pop(k, None)
        sys.modules.update(saved)
        _clear_infinet_caches()


@contextmanager
def configured(**changes):
    """The emulator's configuration (order, workers, seed, drop_barrier_line, ...) changed
    for the duration of a block."""
    old = set_config(**changes)
    try:
        yield config()
    finally:
        restore_config(old)
