"""The CUDA target: the generated kernels compiled at run time with NVRTC through CuPy.

One ``cupy.RawModule`` per network source (held per process, keyed by sha256 of the
source; CuPy's own on-disk cache, keyed by source, options and architecture, keeps the
binary across processes).  Every stage is a kernel over (item, plane) work items, one
thread block each; a tail kernel finishes each pair.  ``--fmad=false`` keeps the
arithmetic identical to the CPU target and the NumPy reference (see math.j2).

How a call runs (sizes and constants: batching.py).  One ``pairs`` call is a whole tile
(``device_batches``) and ends in exactly one host synchronisation.  Its pairs run as
*launch sequences* of as many pairs as the device footprint allows (the pass's
materialised states and readout partials, two slots of row indices and outputs; the
free device memory read when the call starts, less a margin, within a fixed cap): the
rows of sequence c+1 upload from pinned host memory on a copy stream while sequence c
computes on the compute stream (events order them), and each sequence's results are
copied back asynchronously into pinned memory.  Every stage (and tail) launch covers at
most ``launch_pairs`` items, so that no launch is predicted to exceed LAUNCH_SECONDS at
a conservative throughput (a desktop GPU's display watchdog).  Values do not depend on
any of these sizes: every pair is computed on its own.

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
from . import batching
from .compiled import VarianceTables, fill_features, pack
from .executor import Executor

NVRTC_OPTIONS = ("--std=c++17", "--fmad=false")
#: dynamic shared memory a stage kernel opts in to (None: the device's limit); a stage
#: needing more runs from a global scratch buffer
DYNAMIC_SHARED_LIMIT: int | None = None
_MODULES: dict[str, object] = {}
#: bytes of each of the two pinned staging buffers that inputs and tables upload through
UPLOAD_STAGE = 32 * 2 ** 20


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
    #: batches and tiles sized here, from the device footprint (batching.py)
    device_batches = True
    tile_work = batching.DEVICE_TILE_WORK

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
        self.sms = int(dev.attributes["MultiProcessorCount"])
        self.max_blocks = self.sms * 32
        self._uploads: dict = {}
        self._functions: dict = {}
        self._optin: int | None = None
        self._pinned: dict = {}
        self._staged: list = [None, None]   # the last copy out of each staging buffer
        #: device work runs on ``compute``; host-to-device and device-to-host copies of
        #: row indices and results on ``copy`` (both non-blocking: no implicit ordering
        #: with the legacy null stream — every dependency is an event)
        self.compute = cupy.cuda.Stream(non_blocking=True)
        self.copy = cupy.cuda.Stream(non_blocking=True)

    # -- sizes (pure functions of the program and the device) ------------------------------
    def pass_work(self, pas, ops) -> float:
        """Work (flops + 20 per transcendental + 1 per entry) per item of ``ops``: the
        plan's per-pair (per-input: self pass) cost of the nodes they compute — an upper
        bound (a node that a stage reloads from a materialised state is counted again)."""
        from .tiles import TRANSCENDENTAL_FLOPS
        nodes = self.plan.nodes
        total = 0.0
        for index in {op.index for op in ops}:
            c = nodes[index].self_cost if pas.pass_ == "self" else nodes[index].pair_cost
            total += c.flops + TRANSCENDENTAL_FLOPS * c.transcendentals + c.entries
        return max(total, 1.0)

    def tail_work(self, pas) -> float:
        """Work per item of a pass's tail: its flat ops and the readout partials it sums."""
        partials = sum(st.nplanes * (2 if st.sink_t else 1) for st in pas.stages
                       if st.partials)
        return self.pass_work(pas, pas.tail) + partials if pas.tail else float(partials + 1)

    def footprint(self, pas) -> tuple[int, int]:
        """(device bytes per item of a launch sequence, bytes a sequence holds whatever
        its size: the global scratch of stages whose planes exceed shared memory)."""
        itemsize = self.dtype.itemsize
        per_item = batching.device_pair_bytes(pas.buffer_entries(), itemsize)
        fixed = max((self.max_blocks * st.scratch * itemsize for st in pas.stages
                     if self._global_scratch(st)), default=0)
        return per_item, fixed

    def free_memory(self) -> int:
        """Device memory free for a launch sequence now (the driver's, plus what CuPy's
        memory pool holds unused)."""
        cp = self.cp
        free = int(cp.cuda.Device().mem_info[0])
        return free + int(cp.get_default_memory_pool().free_bytes())

    def sequence_size(self, pas, items: int) -> int:
        per_item, fixed = self.footprint(pas)
        return min(items, batching.sequence_pairs(per_item, self.free_memory(), fixed))

    def launch_size(self, work_per_item: float) -> int:
        return batching.launch_pairs(work_per_item, self.sms, self.dtype.name)

    # -- helpers ---------------------------------------------------------------------------
    def _fn(self, name: str):
        """The kernel ``name`` of this dtype (NAME_f32 / NAME_f64), looked up once."""
        return self._kernel(f"{name}_{self.suffix}")

    def _kernel(self, full: str):
        f = self._functions.get(full)
        if f is None:
            f = self._functions[full] = self.module.get_function(full)
        return f

    def _pinned_buffer(self, key: str, n: int, dtype) -> np.ndarray:
        """A reusable pinned host array of at least ``n`` elements (grown as needed)."""
        dtype = np.dtype(dtype)
        buf = self._pinned.get(key)
        if buf is None or buf.size < n or buf.dtype != dtype:
            size = max(n, 2 * (buf.size if buf is not None and buf.dtype == dtype else 0), 1)
            mem = self.cp.cuda.alloc_pinned_memory(size * dtype.itemsize)
            buf = self._pinned[key] = np.frombuffer(mem, dtype, size)
        return buf[:n]

    def _after_current(self) -> None:
        """The compute stream waits for what the caller issued on its current stream
        (device inputs, tables made there)."""
        cp = self.cp
        ev = cp.cuda.Event(disable_timing=True)
        ev.record(cp.cuda.get_current_stream())
        self.compute.wait_event(ev)

    def _upload(self, host: np.ndarray):
        """``host`` on the device through a ring of two pinned staging buffers
        (``UPLOAD_STAGE`` bytes each) and the copy stream: the host fills one while the
        other is copied; the compute stream waits for the last copy (an event, no host
        synchronisation; the host waits only for a staging buffer to come free)."""
        cp = self.cp
        flat = np.ascontiguousarray(host).reshape(-1)
        with self.copy:
            dev = cp.empty(host.shape, host.dtype)
        target = dev.reshape(-1)
        step = max(1, UPLOAD_STAGE // max(flat.itemsize, 1))
        for k, a in enumerate(range(0, flat.size, step)):
            n = min(step, flat.size - a)
            slot = k % 2
            if self._staged[slot] is not None:
                self._staged[slot].synchronize()     # its previous copy has run
            staged = self._pinned_buffer(f"upload{slot}", n, flat.dtype)
            np.copyto(staged, flat[a:a + n])
            target[a:a + n].set(staged, stream=self.copy)
            ev = cp.cuda.Event(disable_timing=True)
            ev.record(self.copy)
            self._staged[slot] = ev
        done = cp.cuda.Event(disable_timing=True)
        done.record(self.copy)
        self.compute.wait_event(done)
        return dev

    def _tables(self, v, n: int):
        """The packed variance table of ``v`` on the device: this executor's own (kept on
        the device by the self pass), or packed on the host and uploaded (cached)."""
        cp = self.cp
        packed = getattr(v, "packed", None)
        if isinstance(packed, cp.ndarray):
            if packed.dtype == self.dtype:
                return packed
            with self.compute:
                return packed.astype(self.dtype)
        if any(isinstance(t, cp.ndarray) for t in v.values()):
            with self.compute:
                return pack(self.program, v, n, self.dtype, xp=cp)
        key = ("vt", id(v), n)
        hit = self._uploads.get(key)
        if hit is not None and hit[0] is v:
            return hit[1]
        arr = self._upload(pack(self.program, v, n, self.dtype))
        self._remember(key, v, arr)
        return arr

    def _remember(self, key, obj, arr) -> None:
        if len(self._uploads) > 4:
            self._uploads.clear()
        self._uploads[key] = (obj, arr)

    def _dev(self, x):
        """x on the device as a contiguous [N, features] array of the executor's dtype."""
        cp = self.cp
        if isinstance(x, cp.ndarray):
            return cp.ascontiguousarray(x, dtype=self.dtype).reshape(len(x), -1)
        key = (id(x), x.__array_interface__["data"][0], x.shape, str(x.dtype))
        hit = self._uploads.get(key)
        if hit is not None and hit[0] is x:
            return hit[1]
        arr = self._upload(np.ascontiguousarray(x, dtype=self.dtype).reshape(len(x), -1))
        self._remember(key, x, arr)
        return arr

    # -- launches: geometry of one stage launch ---------------------------------------------
    def _launch_stage(self, st, head, items: int) -> None:
        """One launch of a stage kernel over ``items`` items, on the compute stream."""
        work = items * st.nplanes
        grid = int(min(work, self.max_blocks))
        with self.compute:       # a global scratch: allocated in the compute stream's order
            kern, shared, gscratch = self._stage_launch(st, grid)
        kern((grid,), (st.threads,), head + (gscratch, np.int64(items)), shared_mem=shared,
             stream=self.compute)

    def _launch_flat(self, name: str, head, items: int) -> None:
        self._fn(name)((math.ceil(items / 128),), (128,), head + (np.uint64(0),
                                                                   np.int64(items)),
                       stream=self.compute)

    def _global_scratch(self, st) -> bool:
        """Whether a stage runs from a global scratch buffer (its planes exceed static
        shared memory and the dynamic shared memory it may opt in to)."""
        need = st.scratch * self.dtype.itemsize
        return need > SHARED_LIMIT and need > self.dynamic_shared_limit()

    # -- a launch sequence: every stage over n items, chunked in time --------------------------
    def _sequence(self, pas, n: int, x1, x2, rows1, rows2, vt1, vt2, vrec, ok, ot,
                  buffers) -> None:
        null = np.uint64(0)

        def head(a: int):
            named = tuple(buffers[name][a * entries:] if name in buffers else null
                          for name, entries in self._buffer_entries(pas))
            return (x1, x2, rows1[a:], rows2[a:], vt1, vt2, vrec,
                    null if ok is None else ok[a:], null if ot is None else ot[a:]) + named

        for k, st in enumerate(pas.stages):
            for a, m in batching.launch_chunks(n, self.launch_size(self.pass_work(pas,
                                                                                st.nodes))):
                self._launch_stage(st, head(a), m)
            for after, state, *_ in pas.reductions:
                if after == k:
                    self._launch_flat(f"{pas.pass_}_mean{state}", head(0), n)
        for a, m in batching.launch_chunks(n, self.launch_size(self.tail_work(pas))):
            self._launch_flat(f"{pas.pass_}_tail", head(a), m)

    def _buffer_entries(self, pas):
        sizes = {name: entries for name, entries, _ in pas.buffers}
        return [(name, sizes.get(name, 0)) for name in self.program.buffer_names]

    def _buffers(self, pas, seq: int) -> dict:
        with self.compute:
            return {name: self.cp.empty(seq * entries, self.dtype)
                    for name, entries, _ in pas.buffers}

    # -- a pass over device rows (self pass; CuPy callers) ------------------------------------
    def _run_device(self, pas, items: int, x1, x2, r1, r2, vt1, vt2, vrec, out_k, out_t):
        """Enqueue ``pas`` over ``items`` items whose rows and outputs are on the device."""
        seq = self.sequence_size(pas, items)
        buffers = self._buffers(pas, seq)
        for c0 in range(0, items, seq):
            n = min(seq, items - c0)
            self._sequence(pas, n, x1, x2, r1[c0:c0 + n], r2[c0:c0 + n], vt1, vt2, vrec,
                           None if out_k is None else out_k[c0:c0 + n],
                           None if out_t is None else out_t[c0:c0 + n], buffers)

    # -- the pair pass over host rows: pinned uploads overlapped, one synchronisation ------------
    def _run_host(self, pas, x1, x2, rows1, rows2, vt1, vt2):
        """K and Θ (host arrays) of the pairs (rows1[i], rows2[i]): launch sequences
        double-buffered between the copy and the compute stream; the host waits once."""
        cp = self.cp
        b = len(rows1)
        seq = self.sequence_size(pas, b)
        nseq = math.ceil(b / seq)
        rows = self._pinned_buffer("rows", 2 * b, np.int64).reshape(2, b)
        rows[0] = rows1
        rows[1] = rows2
        res = self._pinned_buffer("results", 2 * b, self.dtype).reshape(2, b)
        slots = min(batching.SEQUENCE_SLOTS, nseq)
        with self.copy:
            drows = [cp.empty((2, seq), cp.int64) for _ in range(slots)]
        with self.compute:
            douts = [cp.empty((2, seq), self.dtype) for _ in range(slots)]
        buffers = self._buffers(pas, seq)

        def upload(c: int):
            c0, n = c * seq, min(seq, b - c * seq)
            for i in (0, 1):         # contiguous pinned source, contiguous device target
                drows[c % slots][i, :n].set(rows[i, c0:c0 + n], stream=self.copy)
            up = cp.cuda.Event(disable_timing=True)
            up.record(self.copy)
            return up

        uploaded = upload(0)
        for c in range(nseq):
            c0, n = c * seq, min(seq, b - c * seq)
            self.compute.wait_event(uploaded)
            if c + 1 < nseq:
                # the next rows go up while this sequence computes (their slot's previous
                # user, sequence c - 1, was read back before on the copy stream)
                uploaded = upload(c + 1)
            r, o = drows[c % slots], douts[c % slots]
            self._sequence(pas, n, x1, x2, r[0], r[1], vt1, vt2, np.uint64(0), o[0], o[1],
                           buffers)
            computed = cp.cuda.Event(disable_timing=True)
            computed.record(self.compute)
            self.copy.wait_event(computed)
            for i in (0, 1):
                o[i, :n].get(stream=self.copy, out=res[i, c0:c0 + n], blocking=False)
        self.copy.synchronize()          # the one host synchronisation of the call
        return res[0].copy(), res[1].copy()

    def _stage_launch(self, st, grid: int):
        """A stage kernel, its dynamic shared memory and its global scratch (or null).

        A stage whose buffers fit SHARED_LIMIT has them in static shared memory.  A larger
        one is printed with ``extern __shared__`` buffers: opted in here up to the device's
        limit (``MaxSharedMemoryPerBlockOptin``: 227 KiB on sm_90, 163 KiB on sm_80, or
        DYNAMIC_SHARED_LIMIT where set), and beyond it runs as the stage's ``_global``
        entry point from a global scratch buffer."""
        need = st.scratch * self.dtype.itemsize
        if need <= SHARED_LIMIT:
            return self._fn(st.name), 0, np.uint64(0)
        if need <= self.dynamic_shared_limit():
            kern = self._fn(st.name)
            if kern.max_dynamic_shared_size_bytes < need:
                kern.max_dynamic_shared_size_bytes = need
            return kern, need, np.uint64(0)
        # the stage's twin entry point on a global scratch buffer
        kern = self._kernel(f"{st.name}_{self.suffix}_global")
        return kern, 0, self.cp.empty(grid * st.scratch, self.dtype)

    def dynamic_shared_limit(self) -> int:
        """Dynamic shared memory a stage kernel may opt in to on this device."""
        if DYNAMIC_SHARED_LIMIT is not None:
            return DYNAMIC_SHARED_LIMIT
        if self._optin is None:          # read once: every launch asks
            attrs = self.cp.cuda.Device().attributes
            self._optin = int(attrs.get("MaxSharedMemoryPerBlockOptin", SHARED_LIMIT))
        return self._optin

    # -- the executor interface --------------------------------------------------------------
    def _self_variances(self, x) -> VarianceTables:
        cp = self.cp
        # a device too small for one pair is said before anything is computed or written
        self.sequence_size(self.pair_pass, 1)
        self._after_current()
        xd = self._dev(x)
        n = len(xd)
        with self.compute:
            packed = cp.zeros((n, max(self.program.vt_size, 1)), self.dtype)
            rows = cp.arange(n, dtype=cp.int64)
        if self.program.self_.active and n:
            self._run_device(self.program.self_, n, xd, xd, rows, rows, packed, packed,
                             packed, None, None)
        self.compute.synchronize()       # the tables are read by the caller
        # the layers' per-input features of v, from the finished v (on the current
        # stream: the pair pass's compute stream waits for it, _after_current)
        fill_features(self.program, packed, self.dtype, xp=cp)
        return VarianceTables.from_packed(self.program, packed)

    def _pairs(self, x1, x2, rows1, rows2, v1, v2):
        cp = self.cp
        on_device = isinstance(x1, cp.ndarray)
        self._after_current()
        d1 = self._dev(x1)
        d2 = d1 if x2 is x1 else self._dev(x2)
        vt1 = self._tables(v1, len(d1))
        vt2 = vt1 if v2 is v1 else self._tables(v2, len(d2))
        b = len(rows1)
        if not on_device and not isinstance(rows1, cp.ndarray):
            if not b:
                return np.empty(0, self.dtype), np.empty(0, self.dtype)
            return self._run_host(self.pair_pass, d1, d2, np.asarray(rows1),
                                  np.asarray(rows2), vt1, vt2)
        with self.compute:
            r1 = cp.asarray(rows1, dtype=cp.int64)
            r2 = cp.asarray(rows2, dtype=cp.int64)
            out_k = cp.empty(b, self.dtype)
            out_t = cp.empty(b, self.dtype)
        if b:
            self._run_device(self.pair_pass, b, d1, d2, r1, r2, vt1, vt2, np.uint64(0),
                             out_k, out_t)
        self.compute.synchronize()
        if on_device:
            return out_k, out_t
        return cp.asnumpy(out_k), cp.asnumpy(out_t)
