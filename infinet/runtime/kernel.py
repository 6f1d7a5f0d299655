"""The compiled kernel object that ``infinet.compile`` returns: every stage of the pipeline."""
from __future__ import annotations

from functools import cached_property

from ..ir.plan import Plan
from .backends import make_executor, resolve_backend
from .data import check_inputs
from .evaluate import KernelResult, evaluate
from ..errors import UsageError
from .executor import check_dtype
from .tiles import pair_count
from .kernel_cache import KERNELS, cache_key
from .memory import parse_size


class CompiledKernel:
    """A network compiled to its NNGP/NTK kernel function.

    ``k(x1, x2=None)`` → :class:`KernelResult` with ``.nngp`` and ``.ntk`` of shape
    [N1, N2] (float64 arrays, CuPy arrays when x1 is one; computed in ``dtype``).
    ``x2=None`` means x2 = x1, and then the result is exactly symmetric.  Every stage of
    the compilation is kept: ``k.syntax`` (the parsed .net file), ``k.plan`` (the analysed graph),
    ``k.kernel_program`` (the code generator's stages over offset planes),
    ``k.cpu_source`` and ``k.cuda_source`` (the generated C++ and CUDA);
    ``k.summary()`` and ``k.explain()`` describe the plan as ``infinet check`` and
    ``infinet explain`` do.  A kernel pickles (its compiled executors are left out and
    built again when first needed).
    """

    def __init__(self, syntax: "NetFile | None", plan: Plan):
        self.syntax = syntax
        self.plan = plan
        self._executors: dict = {}

    @classmethod
    def from_plan(cls, plan: Plan, syntax: "NetFile | None" = None) -> "CompiledKernel":
        """The kernel of an analysed plan (the later pipeline stages are made on use)."""
        return cls(syntax, plan)

    @property
    def name(self) -> str:
        return self.plan.name

    @cached_property
    def kernel_program(self):
        """The plan lowered to stages over offset planes (infinet/codegen/program.py)."""
        from ..codegen.program import lower_program
        return lower_program(self.plan)

    @cached_property
    def cuda_source(self) -> str:
        """The generated CUDA source (self-contained; compiles with plain NVRTC or nvcc)."""
        from ..codegen.render import render
        return render(self.kernel_program, "cuda")

    @cached_property
    def cpu_source(self) -> str:
        """The same kernels as C++ for the CPU target."""
        from ..codegen.render import render
        return render(self.kernel_program, "cpu")

    def summary(self) -> str:
        """The plan summary that ``infinet check`` prints."""
        from ..report import summary
        return summary(self.plan)

    def explain(self) -> str:
        """The per-layer table that ``infinet explain`` prints: output shape, offsets
        needed, work and memory per pair."""
        from ..report import explain
        return explain(self.plan)

    def executor(self, backend: str = "auto", dtype="float64", pairs: int | None = None,
                 ntk: bool = True):
        """The executor for a backend and dtype (``auto`` resolved with ``pairs``)."""
        backend = resolve_backend(backend, self.plan, pairs)
        key = (backend, check_dtype(dtype).name, bool(ntk))
        if key not in self._executors:
            self._executors[key] = make_executor(self, backend, dtype, ntk=ntk)
        return self._executors[key]

    def __call__(self, x1, x2=None, *, get=("nngp", "ntk"), dtype="float64",
                 backend: str = "auto", max_memory: int | str | None = None, progress=None,
                 cache: bool = False, client=None) -> KernelResult:
        """K(x1, x2).  ``get``: "nngp", "ntk" or both (as neural-tangents' ``get``; the
        one not asked for is None — the NNGP alone skips the whole Θ recursion).
        ``max_memory``: working memory for pair batches, bytes or a size such as "512M".
        ``cache=True``: reuse a result this process computed before for the same net,
        params, inputs, dtype and backend, and keep this one
        (:mod:`infinet.runtime.kernel_cache`; its arrays are then read-only).
        ``client``: a ``dask.distributed.Client`` whose workers compute the tiles (the same
        values, bit for bit; see README "Across GPUs and hosts")."""
        wanted = _kernels_wanted(get)
        if max_memory is not None:
            max_memory = parse_size(max_memory, f"max_memory={max_memory!r}")
        a = check_inputs(self.plan, _host(x1), "x1")
        b = None if x2 is None else check_inputs(self.plan, _host(x2), "x2")
        pairs = pair_count(len(a), len(a) if b is None else len(b), b is None)
        executor = self.executor(backend, dtype, pairs, ntk="ntk" in wanted)
        if cache:
            key = cache_key(self.plan, executor, a, b)
            result = KERNELS.get(key)
            if result is None:
                result = KERNELS.put(key, evaluate(executor, a, b, max_memory=max_memory,
                                                   progress=progress, client=client))
        else:
            result = evaluate(executor, a, b, max_memory=max_memory, progress=progress,
                              client=client)
        if _is_cupy(x1):          # CuPy in, CuPy out
            import cupy
            result = KernelResult(cupy.asarray(result.nngp), cupy.asarray(result.ntk),
                                  result.pairs_computed)
        return KernelResult(result.nngp if "nngp" in wanted else None,
                            result.ntk if "ntk" in wanted else None, result.pairs_computed)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_executors"] = {}          # ctypes handles and GPU modules do not pickle
        for stage in ("kernel_program", "cpu_source", "cuda_source"):
            state.pop(stage, None)        # generated again on demand
        return state

    def __repr__(self) -> str:
        return "<infinet kernel " + repr(self.plan).removeprefix("<Plan ")


def _kernels_wanted(get) -> tuple[str, ...]:
    names = (get,) if isinstance(get, str) else tuple(get)
    if not names or any(n not in ("nngp", "ntk") for n in names):
        raise UsageError(f"get={get!r}: expected 'nngp', 'ntk' or ('nngp', 'ntk')")
    return names


def _is_cupy(x) -> bool:
    return type(x).__module__.startswith("cupy")


def _host(x):
    """NumPy view of an input: CuPy arrays are copied to the host (``.get()``)."""
    return x.get() if _is_cupy(x) else x
