"""Kernel tiles as tasks on a Dask cluster (``--scheduler ADDRESS``, ``--workers N``).

The client (the process that runs ``infinet eval``) opens the store, works out the tile
grid and the batch size, and submits one task per tile that the store does not hold yet
to a ``dask.distributed`` cluster — one started elsewhere (``dask scheduler``, ``dask
worker``, on any number of hosts) or a local one of N worker processes
(:func:`start_local_cluster`: one worker per GPU where dask-cuda and GPUs are there).

* What is shipped: the inputs are scattered to every worker once (``broadcast=True``); a
  task carries only its tile, the batch size, a small executor description
  (:class:`ExecutorSpec`: plan, backend, dtype) and the store's writer.  Each worker
  process builds the executor once per (net, backend, dtype, kernels) and computes the
  self-variances once per run, and keeps them for all its tasks (worker-local state,
  :func:`_run_state`).
* Where results go: a task computes its tile and writes its chunks straight into a
  zarr store (:class:`~infinet.runtime.zarrstore.TileWriter`; the store must be
  visible to every worker, which is checked) and returns only the checksum; the client
  records it and reports progress.  For the other outputs (``K.npz``, ``DIR/``, memory) a
  task returns the tile's values and the client writes them.
* Failures: a worker that dies costs only the tasks it held — in flight, or finished a
  moment before and not yet released by the client; at most the window of about two per
  worker thread — and Dask runs them again elsewhere (after
  ``distributed.scheduler.allowed-failures`` deaths of one tile's workers the run stops
  with an error; the finished tiles are kept).  A killed client loses only the tiles not yet recorded: the same command
  resumes.  At most about two tasks per worker thread are submitted at a time, so the
  scheduler's state stays small for any grid.
* Bit-identical: a tile's values depend only on its pairs, the tile grid, the batch size
  and the executor (backend, dtype), all fixed by the client; every worker runs the same
  generated code.  (For ``--backend cpu`` the workers' processors should be of one kind:
  the C++ is compiled with ``-march=native``.)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter, OrderedDict

import numpy as np

from .. import __version__
from ..errors import DataError, InfinetError, UsageError
from .executor import check_dtype
from .result import KernelResult
from .tiles import compute_tile

#: tasks in flight per worker thread
WINDOW_PER_THREAD = 2


def needs_dask(what: str):
    """Import dask.distributed, or a one-line error saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise UsageError(f"{what} needs dask.distributed: pip install 'infinet[cluster]'") \
            from None
    return distributed


# -- what a worker runs ------------------------------------------------------------------------

class ExecutorSpec:
    """How to build an executor on a worker: the plan, a backend (resolved: numpy, cpu or
    cuda; ``auto`` only before :func:`cluster_executor` resolves it), dtype and whether Θ
    is computed.  Small and picklable."""

    def __init__(self, plan, backend: str, dtype, ntk: bool = True):
        self.plan = plan
        self.backend = backend
        self.dtype = check_dtype(dtype).name
        self.ntk = bool(ntk)
        self.version = __version__
        params = json.dumps(sorted((k, float(v)) for k, v in plan.params.items()))
        self.token = hashlib.sha256("\0".join(
            [plan.source, params, backend, self.dtype, str(self.ntk), __version__]).encode()
        ).hexdigest()[:32]

    def build(self):
        from .backends import make_executor
        return make_executor(self.plan, self.backend, self.dtype, ntk=self.ntk)


class RemoteExecutor:
    """The client's view of an executor that runs on the cluster's workers: what tiling
    and the store need (plan, backend name, dtype, kernels, batch and tile hints); it
    computes nothing itself."""

    def __init__(self, spec: ExecutorSpec, batch_memory=None, tile_work=None,
                 pair_bytes=None, device_batches: bool = False):
        self.spec = spec
        self.plan = spec.plan
        self.name = spec.backend
        self.dtype = check_dtype(spec.dtype)
        self.ntk = spec.ntk
        self.batch_memory = batch_memory
        self.tile_work = tile_work
        self.pair_bytes = pair_bytes
        #: a GPU executor: a tile per call (batching.device_call_pairs)
        self.device_batches = device_batches

    def _here(self, *_args):
        raise InfinetError(f"this {self.name} executor runs on the cluster's workers; pass the "
                           f"client (client=...) to evaluate with it")

    self_variances = pairs = _here

    def __repr__(self) -> str:
        return f"<remote {self.name} executor of {self.plan.name} ({self.dtype.name})>"


def executor_spec(executor) -> ExecutorSpec:
    spec = getattr(executor, "spec", None)
    if isinstance(spec, ExecutorSpec):
        return spec
    return ExecutorSpec(executor.plan, executor.name, executor.dtype,
                        getattr(executor, "ntk", True))


class _RunState:
    def __init__(self, executor, lock, a, b, v1, v2):
        self.executor, self.lock = executor, lock
        self.a, self.b, self.v1, self.v2 = a, b, v1, v2


_LOCK = threading.RLock()
_EXECUTORS: dict[str, tuple] = {}                 # spec token -> (executor, lock)
_RUNS: OrderedDict[str, _RunState] = OrderedDict()  # run id -> inputs and self-variances
#: what this process built and computed (for tests and diagnostics: worker_stats())
STATS: Counter = Counter()
KEEP_RUNS = 2


def _executor(spec: ExecutorSpec):
    with _LOCK:
        entry = _EXECUTORS.get(spec.token)
        if entry is None:
            if spec.version != __version__:
                raise UsageError(f"worker {_worker_name()} runs infinet {__version__}, the client "
                                 f"{spec.version}: install the same infinet everywhere")
            entry = (spec.build(), threading.Lock())
            _EXECUTORS[spec.token] = entry
            STATS["executors built"] += 1
        return entry


def _run_state(spec: ExecutorSpec, run: str, x1, x2) -> _RunState:
    """The executor, inputs and self-variances of a run: made once per worker process."""
    with _LOCK:
        state = _RUNS.get(run)
        if state is None:
            executor, lock = _executor(spec)
            dt = executor.dtype
            a = np.ascontiguousarray(x1, dtype=np.float64).astype(dt, copy=False)
            b = a if x2 is None else np.ascontiguousarray(x2, dtype=np.float64).astype(
                dt, copy=False)
            with lock:
                v1 = executor.self_variances(a)
                v2 = v1 if x2 is None else executor.self_variances(b)
            STATS["self-variances computed"] += 1
            state = _RunState(executor, lock, a, b, v1, v2)
            _RUNS[run] = state
            while len(_RUNS) > KEEP_RUNS:
                _RUNS.popitem(last=False)
        return state


def tile_task(spec: ExecutorSpec, run: str, x1, x2, batch: int, tile, writer):
    """One tile on a worker: computed, then written to the store (``writer``) — the
    checksum is returned — or returned as values (no writer)."""
    state = _run_state(spec, run, x1, x2)
    with state.lock:
        K, T = compute_tile(state.executor, state.a, state.b, state.v1, state.v2, tile, batch)
    STATS["tiles computed"] += 1
    if writer is None:
        return {"index": tile.index, "blocks": (K, T), "pid": os.getpid()}
    return {"index": tile.index, "digest": writer.write(tile, K, T), "pid": os.getpid()}


def describe_executor(spec: ExecutorSpec, pairs):
    """On a worker: resolve ``auto``, build the executor (kept), say what tiling needs."""
    from .backends import resolve_backend
    name = resolve_backend(spec.backend, spec.plan, pairs)
    resolved = ExecutorSpec(spec.plan, name, spec.dtype, spec.ntk)
    executor, _ = _executor(resolved)
    return {"backend": name, "batch_memory": getattr(executor, "batch_memory", None),
            "tile_work": getattr(executor, "tile_work", None),
            "pair_bytes": getattr(executor, "pair_bytes", None),
            "device_batches": bool(getattr(executor, "device_batches", False))}


def forget_run(run: str) -> None:
    with _LOCK:
        _RUNS.pop(run, None)


def worker_stats() -> dict:
    return dict(STATS)


def worker_info() -> dict:
    return {"infinet": __version__, "pid": os.getpid(), "python": sys.version.split()[0]}


def sees_path(path: str) -> bool:
    return os.path.exists(path)


def _worker_name() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"process {os.getpid()}"


# -- the client side -------------------------------------------------------------------------

def cluster_executor(kernel, backend: str, dtype, client, pairs: int | None = None,
                     ntk: bool = True) -> RemoteExecutor:
    """The executor for a kernel (a CompiledKernel or a Plan) on the cluster's workers:
    ``auto`` is resolved on a worker (where the GPUs are), and the executor is built there."""
    from .backends import check_backend
    plan = getattr(kernel, "plan", kernel)
    spec = ExecutorSpec(plan, check_backend(backend), dtype, ntk)
    info = client.submit(describe_executor, spec, pairs, pure=False).result()
    return RemoteExecutor(ExecutorSpec(plan, info["backend"], dtype, ntk),
                          info["batch_memory"], info["tile_work"], info.get("pair_bytes"),
                          info.get("device_batches", False))


def prepare_store(client, store) -> None:
    """Before a cluster run: a zarr store on a local path must be visible to every worker
    (checked with a probe file), and its verification runs on the workers."""
    if not hasattr(store, "tile_writer"):
        return
    loc = store.location
    if loc.local:
        from .stores import io_errors
        from .zarrstore import PROBE
        probe = os.path.join(loc.path, f"{PROBE}{uuid.uuid4().hex}")
        with io_errors(store.what, store.text, "writing a probe file"), open(probe, "w") as fh:
            fh.write("probe\n")
        try:
            seen = client.run(sees_path, probe)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        blind = sorted(w for w, ok in seen.items() if not ok)
        if blind:
            raise UsageError(
                f"{store.what} {store.text}: worker {blind[0]}"
                f"{f' (and {len(blind) - 1} more)' if len(blind) > 1 else ''} does not see "
                f"{loc.path}; the store must be on a file system every worker mounts at the "
                f"same path, or an object store URL (s3://..., gs://...)")

    def cluster_map(fn, items):
        if not items:
            return []
        return client.gather(client.map(fn, items, pure=False))
    store.parallel_map = cluster_map


def run_tiles(client, executor, x1, x2, todo, batch: int, store, on_tile) -> None:
    """Compute the tiles ``todo`` on the cluster; ``on_tile(tile)`` after each has been
    recorded in ``store`` (as they finish, in any order)."""
    distributed = needs_dask("--scheduler")
    spec = executor_spec(executor)
    writer = store.tile_writer() if hasattr(store, "tile_writer") else None
    run = uuid.uuid4().hex
    threads = sum(client.nthreads().values())
    if len(todo) < threads:
        _notice(f"{len(todo)} tile{'s' if len(todo) != 1 else ''} to compute for {threads} "
                f"worker threads: some stay idle (--tile N makes more, smaller tiles)")
    x1f = client.scatter(x1, broadcast=True, hash=False)
    x2f = None if x2 is None else client.scatter(x2, broadcast=True, hash=False)
    tiles = iter(todo)
    running: dict[str, object] = {}
    pending = distributed.as_completed()
    window = [_window(client), time.monotonic()]

    def submit() -> bool:
        t = next(tiles, None)
        if t is None:
            return False
        f = client.submit(tile_task, spec, run, x1f, x2f, batch, t, writer,
                          key=f"infinet-tile-{t.index}-{run}", pure=False)
        running[f.key] = (f, t)
        pending.add(f)
        return True

    try:
        for _ in range(window[0]):
            if not submit():
                break
        for f in pending:
            _, t = running.pop(f.key)
            try:
                result = f.result()
                f.release()              # its result leaves the worker's memory now
            except distributed.KilledWorker:
                raise DataError(
                    f"tile {t.index} (rows {t.r0}:{t.r1}, columns {t.c0}:{t.c1}): the workers "
                    f"running it died too often (out of memory?); the finished tiles are "
                    f"kept: run the same command again to resume") from None
            if writer is None:
                store.put(t, *result["blocks"])
            else:
                store.record(t, result["digest"])
            on_tile(t)
            del f, result
            if time.monotonic() - window[1] > 2:
                window[:] = [_window(client), time.monotonic()]
            while len(running) < window[0] and submit():
                pass
    finally:
        if running:
            client.cancel([f for f, _ in running.values()])
        with contextlib.suppress(Exception):
            client.cancel([x for x in (x1f, x2f) if x is not None])
        with contextlib.suppress(Exception):
            client.run(forget_run, run)


def _window(client) -> int:
    try:
        threads = sum(client.nthreads().values())
    except Exception:  # noqa: BLE001 - the scheduler is busy or gone: keep going
        threads = 1
    return max(2, WINDOW_PER_THREAD * max(threads, 1))


# -- clusters ----------------------------------------------------------------------------------

def _import_dask_cuda():
    try:
        import dask_cuda
    except Exception:  # noqa: BLE001 - not installed, or no CUDA stack under it
        return None
    return dask_cuda


def gpu_count(dask_cuda) -> int:
    try:
        return int(dask_cuda.utils.get_n_gpus())
    except Exception:  # noqa: BLE001 - no driver, no NVML
        return 0


def local_cluster_options(n_workers: int, backend: str = "auto", cpus: int | None = None):
    """(cluster class, keyword arguments) for ``--workers N``: with dask-cuda and GPUs
    (and a backend that may use them) a ``LocalCUDACluster`` of one worker per GPU, each
    worker seeing its own GPU first (CUDA_VISIBLE_DEVICES rotated by dask-cuda, so the
    CUDA executor's default device is the worker's own); else a ``LocalCluster`` of N
    processes of one thread each, the cores shared out among them for the CPU backend's
    OpenMP."""
    if n_workers < 1:
        raise UsageError(f"--workers {n_workers}: must be at least 1")
    if backend in ("auto", "cuda"):
        dask_cuda = _import_dask_cuda()
        gpus = gpu_count(dask_cuda) if dask_cuda is not None else 0
        if gpus:
            if n_workers > gpus:
                raise UsageError(f"--workers {n_workers}: this machine has {gpus} GPU"
                                 f"{'s' if gpus > 1 else ''} (one worker per GPU); use "
                                 f"--workers {gpus} or fewer, or --backend cpu")
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            devices = ([d.strip() for d in visible.split(",") if d.strip()] if visible
                       else [str(i) for i in range(gpus)])
            return dask_cuda.LocalCUDACluster, {
                "n_workers": n_workers, "CUDA_VISIBLE_DEVICES": devices[:n_workers],
                "threads_per_worker": 1, "dashboard_address": ":0"}
        if backend == "cuda" and n_workers > 1:
            _notice(f"--workers {n_workers}: dask-cuda is not installed (or sees no GPU): the "
                    f"workers share the default GPU; pip install 'infinet[cluster-cuda]' for "
                    f"one worker per GPU")
    from distributed import LocalCluster
    cores = cpus or os.cpu_count() or 1
    return LocalCluster, {
        "n_workers": n_workers, "threads_per_worker": 1, "processes": True,
        "dashboard_address": ":0",
        "env": {"OMP_NUM_THREADS": str(max(1, cores // n_workers))}}


def start_local_cluster(n_workers: int, backend: str = "auto"):
    needs_dask("--workers")
    cls, options = local_cluster_options(n_workers, backend)
    return cls(**options)


def _notice(text: str) -> None:
    print(f"infinet: {text}", file=sys.stderr)


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, backend: str = "auto"):
    """A Dask client for ``--scheduler ADDRESS`` or ``--workers N`` (None for neither),
    closed (and a local cluster stopped) afterwards; every worker is checked to run this
    infinet."""
    if scheduler is not None and workers is not None:
        raise UsageError("--scheduler and --workers: give one (--scheduler uses a running "
                         "cluster, --workers N starts one on this machine)")
    if scheduler is None and workers is None:
        yield None
        return
    what = f"--scheduler {scheduler}" if scheduler is not None else f"--workers {workers}"
    distributed = needs_dask(what)
    cluster = None
    if scheduler is not None:
        import dask
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as err:
            raise UsageError(f"{what}: cannot connect to a Dask scheduler there "
                             f"({_first_line(err)})") from None
    else:
        cluster = start_local_cluster(workers, backend)
        client = distributed.Client(cluster)
    try:
        check_workers(client, what)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


def check_workers(client, what: str) -> None:
    """Every worker present runs this infinet; with none yet, wait for the first."""
    if not client.nthreads():
        _notice(f"{what}: waiting for workers (start them with: dask worker "
                f"{client.scheduler.address})")
        client.wait_for_workers(1)
    try:
        infos = client.run(worker_info)
    except Exception as err:  # noqa: BLE001 - a worker without infinet cannot run it
        raise UsageError(f"{what}: a worker cannot run infinet ({_first_line(err)}); install "
                         f"the same infinet (pip install 'infinet[cluster]') on every "
                         f"worker") from None
    other = sorted(f"{w} (infinet {i['infinet']})" for w, i in infos.items()
                   if i.get("infinet") != __version__)
    if other:
        raise UsageError(f"{what}: worker {other[0]} runs another infinet than this one "
                         f"({__version__}); install the same version everywhere")


def evaluate(kernel, x1, x2=None, *, client, out=None, backend: str = "auto",
             dtype="float64", get=("nngp", "ntk"), max_memory=None, tile=None, progress=None,
             overwrite: bool = False, describe: dict | None = None):
    """K(x1, x2) of a compiled kernel on a Dask cluster (``client``: a
    ``dask.distributed.Client``), tile by tile, into ``out`` (``K.zarr``: written by the
    workers; ``K.npz``, ``DIR/`` or None: written here) — the same values, bit for bit,
    as ``kernel(x1, x2)`` with the same backend and dtype.  Returns a KernelResult."""
    from .data import check_inputs
    from .evaluate import evaluate_tiled
    from .memory import parse_size
    from .tiles import pair_count
    names = (get,) if isinstance(get, str) else tuple(get)
    if not names or any(n not in ("nngp", "ntk") for n in names):
        raise UsageError(f"get={get!r}: expected 'nngp', 'ntk' or ('nngp', 'ntk')")
    if max_memory is not None:
        max_memory = parse_size(max_memory, f"max_memory={max_memory!r}")
    plan = getattr(kernel, "plan", kernel)
    a = check_inputs(plan, x1, "x1")
    b = None if x2 is None else check_inputs(plan, x2, "x2")
    pairs = pair_count(len(a), len(a) if b is None else len(b), b is None)
    executor = cluster_executor(kernel, backend, dtype, client, pairs, ntk="ntk" in names)
    result = evaluate_tiled(executor, a, b, out=out, overwrite=overwrite,
                            max_memory=max_memory, tile=tile, progress=progress,
                            describe=describe, client=client)
    return KernelResult(result.nngp if "nngp" in names else None,
                        result.ntk if "ntk" in names else None, result.pairs_computed)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
