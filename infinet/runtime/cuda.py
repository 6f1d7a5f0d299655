"""The CUDA target: the generated kernels compiled at run time with NVRTC through CuPy.

One ``cupy.RawModule`` per network source (held per process, keyed by sha256 of the
source; CuPy's own on-disk cache, keyed by source, options and architecture, keeps the
binary across processes).  Every stage is one kernel launch over (item, plane) work
items, one thread block each; a tail kernel finishes each pair.  ``--fmad=false`` keeps
the arithmetic identical to the CPU target and the NumPy reference (see math.j2).

NOTE: this module needs CuPy and a CUDA device (or the test suite's host emulation of
one, tests/cuda_emu); it is exercised by the ``cuda`` tests and benchmarks/gpu_check.sh.
"""
from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np

from ..codegen.program import KernelProgram
from ..codegen.render import SHARED_LIMIT
from ..dtypes import DTYPES
from ..errors import InfinetError
from .compiled import VarianceTables, fill_features, pack
from .executor import Executor

NVRTC_OPTIONS = ("--std=c++17", "--fmad=false")
#: dynamic shared memory a stage kernel opts in to (None: the device's limit); a stage
#: needing more runs from a global scratch buffer
DYNAMIC_SHARED_LIMIT: int | None = None
#: device memory for the materialised states of one launch sequence
DEVICE_BUDGET = 2 * 2 ** 30
_MODULES: dict[str, object] = {}


@lru_cache(maxsize=1)
def cuda_usable() -> bool:
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        cupy.zeros(1).sum().item()   # a context and a kernel launch work
        return True
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device
        return False


def module_for(source: str):
    import cupy
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in _MODULES:
        mod = cupy.RawModule(code=source, options=NVRTC_OPTIONS)
        mod.compile()
        _MODULES[key] = mod
    return _MODULES[key]


class CudaExecutor(Executor):
    name = "cuda"

    def __init__(self, program: KernelProgram, source: str, dtype, ntk: bool = True):
        if not cuda_usable():
            raise InfinetError("the cuda backend needs a usable CUDA GPU (CuPy: pip install "
                               "'infinet[cuda]', a driver and a device); none is usable here")
        super().__init__(program.plan, dtype, ntk)
        import cupy
        self.cp = cupy
        self.program = program
        self.source = source
        self.pair_pass = program.pair if (ntk or not program.pairk.active) else program.pairk
        self.module = module_for(self.source)
        self.suffix = DTYPES[self.dtype.name].suffix
        dev = cupy.cuda.Device()
        self.max_blocks = dev.attributes["MultiProcessorCount"] * 32
        self._uploads: dict = {}

    # -- helpers ---------------------------------------------------------------------------
    def _dev(self, x):
        """x on the device as a contiguous [N, features] array of the executor's dtype."""
        cp = self.cp
        if isinstance(x, cp.ndarray):
            return cp.ascontiguousarray(x, dtype=self.dtype).reshape(len(x), -1)
        key = (id(x), x.__array_interface__["data"][0], x.shape, str(x.dtype))
        hit = self._uploads.get(key)
        if hit is not None and hit[0] is x:
            return hit[1]
        arr = cp.asarray(np.ascontiguousarray(x, dtype=self.dtype).reshape(len(x), -1))
        if len(self._uploads) > 4:
            self._uploads.clear()
        self._uploads[key] = (x, arr)
        return arr

    def _run_pass(self, pas, items: int, x1, x2, r1, r2, vt1, vt2, vrec, out_k, out_t):
        cp = self.cp
        null = np.uint64(0)
        itemsize = self.dtype.itemsize
        per_item = max(1, pas.buffer_entries())
        chunk = max(1, min(items, DEVICE_BUDGET // (per_item * itemsize)))
        for c0 in range(0, items, chunk):
            n = min(chunk, items - c0)
            rows1, rows2 = r1[c0:c0 + n], r2[c0:c0 + n]
            ok = null if out_k is None else out_k[c0:c0 + n]
            ot = null if out_t is None else out_t[c0:c0 + n]
            buffers = {name: cp.empty(n * entries, self.dtype)
                       for name, entries, _ in pas.buffers}
            named = tuple(buffers.get(name, null) for name in self.program.buffer_names)
            head = (x1, x2, rows1, rows2, vt1, vt2, vrec, ok, ot) + named
            for k, st in enumerate(pas.stages):
                work = n * st.nplanes
                grid = int(min(work, self.max_blocks))
                kern, shared, gscratch = self._stage_launch(st, grid)
                kern((grid,), (st.threads,), head + (gscratch, np.int64(n)), shared_mem=shared)
                for after, state, *_ in pas.reductions:
                    if after == k:
                        mean = self.module.get_function(f"{pas.pass_}_mean{state}_{self.suffix}")
                        mean((math.ceil(n / 128),), (128,), head + (null, np.int64(n)))
            tail = self.module.get_function(f"{pas.pass_}_tail_{self.suffix}")
            tail((math.ceil(n / 128),), (128,), head + (null, np.int64(n)))

    def _stage_launch(self, st, grid: int):
        """A stage kernel, its dynamic shared memory and its global scratch (or null).

        A stage whose buffers fit SHARED_LIMIT has them in static shared memory.  A larger
        one is printed with ``extern __shared__`` buffers: opted in here up to the device's
        limit (``MaxSharedMemoryPerBlockOptin``: 227 KiB on sm_90, 163 KiB on sm_80, or
        DYNAMIC_SHARED_LIMIT where set), and beyond it runs as the stage's ``_global``
        entry point from a global scratch buffer."""
        name = f"{st.name}_{self.suffix}"
        need = st.scratch * self.dtype.itemsize
        if need <= SHARED_LIMIT:
            return self.module.get_function(name), 0, np.uint64(0)
        if need <= self.dynamic_shared_limit():
            kern = self.module.get_function(name)
            if kern.max_dynamic_shared_size_bytes < need:
                kern.max_dynamic_shared_size_bytes = need
            return kern, need, np.uint64(0)
        # the stage's twin entry point on a global scratch buffer
        kern = self.module.get_function(name + "_global")
        return kern, 0, self.cp.empty(grid * st.scratch, self.dtype)

    def dynamic_shared_limit(self) -> int:
        """Dynamic shared memory a stage kernel may opt in to on this device."""
        if DYNAMIC_SHARED_LIMIT is not None:
            return DYNAMIC_SHARED_LIMIT
        attrs = self.cp.cuda.Device().attributes
        return int(attrs.get("MaxSharedMemoryPerBlockOptin", SHARED_LIMIT))

    # -- the executor interface --------------------------------------------------------------
    def _self_variances(self, x) -> VarianceTables:
        cp = self.cp
        xd = self._dev(x)
        n = len(xd)
        packed = cp.zeros((n, max(self.program.vt_size, 1)), self.dtype)
        if self.program.self_.active:
            rows = cp.arange(n, dtype=cp.int64)
            self._run_pass(self.program.self_, n, xd, xd, rows, rows, packed, packed, packed,
                           None, None)
        fill_features(self.program, packed, self.dtype, xp=cp)
        return VarianceTables.from_packed(self.program, packed)

    def _pairs(self, x1, x2, rows1, rows2, v1, v2):
        cp = self.cp
        on_device = isinstance(x1, cp.ndarray)
        d1 = self._dev(x1)
        d2 = d1 if x2 is x1 else self._dev(x2)
        r1 = cp.asarray(rows1, dtype=cp.int64)
        r2 = cp.asarray(rows2, dtype=cp.int64)
        vt1 = pack(self.program, v1, len(d1), self.dtype, xp=cp)
        vt2 = vt1 if v2 is v1 else pack(self.program, v2, len(d2), self.dtype, xp=cp)
        b = len(r1)
        out_k = cp.full(b, cp.nan, self.dtype)
        out_t = cp.full(b, cp.nan, self.dtype)
        if b:
            self._run_pass(self.pair_pass, b, d1, d2, r1, r2, vt1, vt2, np.uint64(0),
                           out_k, out_t)
        if on_device:
            return out_k, out_t
        return cp.asnumpy(out_k), cp.asnumpy(out_t)
