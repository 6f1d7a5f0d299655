"""The CPU target: the generated kernels compiled as C++ (OpenMP over work items).

``CpuExecutor`` has the executor interface (runtime/executor.py); it runs the source the
pipeline generated (``k.cpu_source``) for the kernel program it was given.
"""
from __future__ import annotations

import ctypes
import re
import threading

import numpy as np

from ..codegen import cpujit
from ..codegen.program import KernelProgram
from ..dtypes import DTYPES
from ..errors import InfinetError
from .compiled import VarianceTables, fill_features, pack
from .executor import Executor



class CpuExecutor(Executor):
    name = "cpu"

    def __init__(self, program: KernelProgram, source: str, dtype, ntk: bool = True):
        super().__init__(program.plan, dtype, ntk)
        self.program = program
        self.source = source
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", program.name)[:40] or "net"
        self.lib = cpujit.load(self.source, f"infinet-{stem}")
        suffix = DTYPES[self.dtype.name].suffix
        pair = program.pair if (ntk or not program.pairk.active) else program.pairk
        self._pair = self._entry(f"infinet_{pair.pass_}_{suffix}")
        self._self = self._entry(f"infinet_self_{suffix}") if program.self_.active else None
        threads = self.lib.infinet_threads
        threads.restype = ctypes.c_int
        self._threads = threads
        per_item = self._sized(f"infinet_{pair.pass_}_{suffix}_per_item", [])
        #: bytes of working memory per pair of a call (the batch size is made from this,
        #: runtime/batching.py): the kernels' own per-pair buffers, the two results and
        #: the two row indices; not the NumPy reference's model
        self.pair_bytes = int(per_item()) * self.dtype.itemsize + 32
        #: the working memory of the kernels: one array, grown when a call needs more and
        #: reused by every later call (never allocated or zeroed per call)
        self.workspace = np.zeros(0, self.dtype)
        self._lock = threading.Lock()

    def _entry(self, name):
        fn = getattr(self.lib, name)
        fn.argtypes = [ctypes.c_longlong] + [ctypes.c_void_p] * 10 + [ctypes.c_longlong]
        fn.restype = ctypes.c_int
        fn.workspace = self._sized(name + "_workspace", [ctypes.c_longlong, ctypes.c_int])
        return fn

    def _sized(self, name, argtypes):
        fn = getattr(self.lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_longlong
        return fn

    def _call(self, fn, items, x1, x2, r1, r2, vt1, vt2, vrec, out_k, out_t):
        ptr = lambda a: None if a is None else a.ctypes.data  # noqa: E731
        with self._lock:
            for _ in range(2):
                need = int(fn.workspace(items, self._threads()))
                if len(self.workspace) < need:
                    # grown by a quarter more than asked, so that batches of varying size
                    # settle on one array
                    self.workspace = np.zeros(need + need // 4, self.dtype)
                status = fn(items, ptr(x1), ptr(x2), ptr(r1), ptr(r2), ptr(vt1), ptr(vt2),
                            ptr(vrec), ptr(out_k), ptr(out_t), ptr(self.workspace),
                            len(self.workspace))
                if status != 2:       # 2: the thread count changed since the query
                    break
        if status != 0:
            raise MemoryError("the CPU kernel's workspace is too small")

    def _padded(self, shape, fill=None):
        """A zeroed C array of ``shape`` followed by program.pad_entries of slack: the
        kernels' vector blocks may read (and discard) a few entries past a row's end."""
        size = int(np.prod(shape))
        buf = np.zeros(size + self.program.pad_entries, self.dtype)
        out = buf[:size].reshape(shape)
        if fill is not None:
            out[...] = fill
        return out

    def _x(self, x):
        x = np.asarray(x)
        return self._padded((len(x), int(np.prod(x.shape[1:], dtype=np.int64))),
                            x.reshape(len(x), -1))

    def _self_variances(self, x) -> VarianceTables:
        x = self._x(x)
        n = len(x)
        packed = self._padded((n, max(self.program.vt_size, 1)))
        if self._self is not None:
            rows = np.arange(n, dtype=np.int64)
            self._call(self._self, n, x, x, rows, rows, packed, packed, packed, None, None)
        fill_features(self.program, packed, self.dtype)
        return VarianceTables.from_packed(self.program, packed)

    def _pairs(self, x1, x2, rows1, rows2, v1, v2):
        x1 = self._x(x1)
        x2 = x1 if x2 is x1 else self._x(x2)
        r1 = np.ascontiguousarray(rows1, dtype=np.int64)
        r2 = np.ascontiguousarray(rows2, dtype=np.int64)
        if len(r1) != len(r2):
            raise InfinetError("rows1 and rows2 differ in length")
        vt1 = self._padded((len(x1), max(self.program.vt_size, 1)),
                           pack(self.program, v1, len(x1), self.dtype))
        vt2 = vt1 if v2 is v1 else self._padded(
            (len(x2), max(self.program.vt_size, 1)), pack(self.program, v2, len(x2), self.dtype))
        out_k = np.empty(len(r1), self.dtype)
        out_t = np.empty(len(r1), self.dtype)
        if len(r1):
            self._call(self._pair, len(r1), x1, x2, r1, r2, vt1, vt2, None, out_k, out_t)
        return out_k, out_t
