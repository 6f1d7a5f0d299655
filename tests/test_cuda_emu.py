"""The CUDA emulation itself (tests/cuda_emu): what it runs right and what it refuses.

Small hand-written kernels through the CuPy stand-in (whatever machine this is: these
tests are about the emulator), and the generated kernels with a barrier removed: each
bug class a GPU would hide or garble must make the emulator fail loudly, naming the line.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import cuda_emu
import infinet
import infinet.runtime.kernel
from infinet.errors import NumericalError
from codegen_cases import CASES, inputs
from cuda_emu import KernelFault, LaunchError
from cuda_emu.cupy_standin import CompileException, CUDADriverError
from cuda_emu.cupy_standin import cupy as cp
from infinet.runtime.evaluate import evaluate
from infinet.runtime.reference import ReferenceExecutor
from summary import SECTIONS

pytestmark = pytest.mark.cuda


def module(src: str, *options: str):
    return cp.RawModule(code=src, options=("--std=c++17",) + options)


def line_of(src: str, marker: str) -> int:
    return next(i for i, text in enumerate(src.splitlines(), 1) if marker in text)


# ---- what runs ------------------------------------------------------------------------------
GEOMETRY = r"""
extern "C" __global__ void where(int* out) {
    const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int* o = out + 9 * (b * blockDim.x * blockDim.y * blockDim.z + t);
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
    o[6] = blockDim.x * 100 + blockDim.y * 10 + blockDim.z;
    o[7] = gridDim.x * 100 + gridDim.y * 10 + gridDim.z;
    o[8] = warpSize;
}
"""


def test_three_dimensional_geometry():
    grid, block = (3, 2, 2), (4, 3, 2)
    out = cp.empty(9 * 12 * 24, dtype=cp.int32)
    module(GEOMETRY).get_function("where")(grid, block, (out,))
    got = cp.asnumpy(out).reshape(3 * 2 * 2, 4 * 3 * 2, 9)
    for bz in range(2):
        for by in range(2):
            for bx in range(3):
                b = bx + 3 * (by + 2 * bz)
                for tz in range(2):
                    for ty in range(3):
                        for tx in range(4):
                            t = tx + 4 * (ty + 3 * tz)
                            assert list(got[b, t]) == [tx, ty, tz, bx, by, bz, 432, 322, 32]


ORDER = r"""
extern "C" __global__ void ticket(int* counter, int* out) {
    out[threadIdx.x] = atomicAdd(counter, 1);   // the order threads run in
}
"""


@pytest.mark.parametrize("order", ["forward", "reverse", "random"])
def test_schedule_orders(order):
    k = module(ORDER).get_function("ticket")
    counter, out = cp.zeros(1, cp.int32), cp.empty(64, cp.int32)
    with cuda_emu.configured(order=order, seed=7):
        k((1,), (64,), (counter, out))
    got = cp.asnumpy(out)
    assert sorted(got) == list(range(64))
    if order == "forward":
        assert list(got) == list(range(64))
    elif order == "reverse":
        assert list(got) == list(range(63, -1, -1))
    else:
        assert list(got) != list(range(64)) and list(got) != list(range(63, -1, -1))


WARP = r"""
template <typename T>
__device__ void collectives(T v, T* out, unsigned lane) {
    out[0] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) % 32);
    out[1] = __shfl_up_sync(0xffffffffu, v, 3);
    out[2] = __shfl_down_sync(0xffffffffu, v, 5);
    out[3] = __shfl_xor_sync(0xffffffffu, v, 6);
    out[4] = __shfl_sync(0xffffffffu, v, lane + 3, 8);
    out[5] = __shfl_down_sync(0xffffffffu, v, 2, 8);
    out[6] = __shfl_xor_sync(0xffffffffu, v, 9, 8);
}
extern "C" __global__ void warp(const double* xd, const int* xi, double* od, int* oi, unsigned* ou) {
    const unsigned lane = threadIdx.x % 32, t = threadIdx.x;
    collectives<double>(xd[t], od + 7 * t, lane);
    collectives<int>(xi[t], oi + 7 * t, lane);
    unsigned* u = ou + 8 * t;
    u[0] = __ballot_sync(0xffffffffu, lane % 3 == 0);
    u[1] = __any_sync(0xffffffffu, lane == 17);
    u[2] = __all_sync(0xffffffffu, lane < 31);
    u[3] = __reduce_add_sync(0xffffffffu, lane);
    u[4] = __reduce_max_sync(0xffffffffu, (unsigned)xi[t]);
    u[5] = __match_any_sync(0xffffffffu, lane / 4);
    u[6] = __activemask();
    __syncwarp();
    u[7] = lane < 16 ? __reduce_min_sync(0x0000ffffu, (int)xi[t]) : __reduce_min_sync(0xffff0000u, (int)xi[t]);
}
"""


def test_warp_collectives_follow_the_cuda_definitions():
    rng = np.random.default_rng(5)
    n = 64
    xd = rng.standard_normal(n)
    xi = rng.integers(-1000, 1000, n).astype(np.int32)
    od, oi, ou = cp.empty(7 * n), cp.empty(7 * n, cp.int32), cp.empty(8 * n, cp.uint32)
    module(WARP).get_function("warp")((1,), (n,), (cp.asarray(xd), cp.asarray(xi), od, oi, ou))

    def expected(x):
        out = np.empty((n, 7), x.dtype)
        for t in range(n):
            w, lane = t // 32 * 32, t % 32

            def at(src):
                return x[w + src]
            seg = lane & ~7
            out[t] = [at((lane * 7 + 3) % 32),
                      at(lane - 3 if lane >= 3 else lane),
                      at(lane + 5 if lane + 5 < 32 else lane),
                      at(lane ^ 6),
                      at(seg + (lane + 3) % 8),
                      at(lane + 2 if lane + 2 < seg + 8 else lane),
                      at((lane ^ 9) if (lane ^ 9) < seg + 8 else lane)]
        return out
    np.testing.assert_array_equal(cp.asnumpy(od).reshape(n, 7), expected(xd))
    np.testing.assert_array_equal(cp.asnumpy(oi).reshape(n, 7), expected(xi))
    u = cp.asnumpy(ou).reshape(n, 8)
    ballot = sum(1 << lane for lane in range(32) if lane % 3 == 0)
    for t in range(n):
        lane, w = t % 32, t // 32
        warp_i = xi[32 * w:32 * w + 32]
        half = warp_i[:16] if lane < 16 else warp_i[16:]
        assert list(u[t]) == [ballot, 1, 0, sum(range(32)),
                              int(warp_i.astype(np.uint32).max()),
                              0xF << (4 * (lane // 4)), 0xFFFFFFFF, int(half.min()) & 0xFFFFFFFF]


SYNC_REDUCE = r"""
extern "C" __global__ void votes(const int* x, int* out) {
    const int p = x[threadIdx.x];
    out[0] = __syncthreads_count(p);
    out[1] = __syncthreads_and(p);
    out[2] = __syncthreads_or(p);
}
"""


@pytest.mark.parametrize("values", [[0] * 40, [1] * 40, [0, 1] * 20])
def test_syncthreads_reductions(values):
    out = cp.empty(3, cp.int32)
    module(SYNC_REDUCE).get_function("votes")((1,), (40,), (cp.asarray(np.int32(values)), out))
    assert list(cp.asnumpy(out)) == [sum(values), int(all(values)), int(any(values))]


ATOMICS = r"""
extern "C" __global__ void count(int* n, float* f, double* d, unsigned* mx) {
    atomicAdd(n, 1);
    atomicAdd(f, 0.5f);
    atomicAdd(d, 0.25);
    atomicMax(mx, blockIdx.x * blockDim.x + threadIdx.x);
}
"""


def test_atomics_across_blocks_on_two_workers():
    n, f, d, mx = cp.zeros(1, cp.int32), cp.zeros(1, cp.float32), cp.zeros(1), \
        cp.zeros(1, cp.uint32)
    with cuda_emu.configured(workers=2):
        module(ATOMICS).get_function("count")((50,), (96,), (n, f, d, mx))
    assert int(n.item()) == 4800 and f.item() == 2400.0 and d.item() == 1200.0
    assert int(mx.item()) == 4799


MATH = r"""
extern "C" __global__ void math(const float* x, const double* y, float* o, double* p, int* q) {
    const int t = threadIdx.x;
    const float a = x[t];
    const double b = y[t];
    o[8 * t + 0] = rsqrtf(a);
    o[8 * t + 1] = erff(a);
    o[8 * t + 2] = atan2f(a, 0.5f);
    o[8 * t + 3] = __fdividef(a, 3.0f);
    o[8 * t + 4] = fmaf(a, a, 1.0f);
    o[8 * t + 5] = __saturatef(a - 1.0f);
    o[8 * t + 6] = __expf(a);
    o[8 * t + 7] = min(a, 1.5f) + max(2, 3);
    p[4 * t + 0] = rsqrt(b);
    p[4 * t + 1] = normcdf(b);
    p[4 * t + 2] = erfinv(erf(b / 4.0));
    p[4 * t + 3] = sqrt(b) + atan2(b, 2.0) + erfc(b);
    q[4 * t + 0] = __float_as_int(a);
    q[4 * t + 1] = __popc(t * 2654435761u);
    q[4 * t + 2] = __clz(t);
    q[4 * t + 3] = __float2int_rn(a * 10.0f);
}
"""


def test_math_builtins_have_their_cuda_meaning():
    n = 32
    x = np.linspace(0.1, 3.1, n, dtype=np.float32)
    y = np.linspace(0.2, 3.0, n)
    o, p, q = cp.empty(8 * n, cp.float32), cp.empty(4 * n), cp.empty(4 * n, cp.int32)
    module(MATH).get_function("math")((1,), (n,), (cp.asarray(x), cp.asarray(y), o, p, q))
    o = cp.asnumpy(o).reshape(n, 8).astype(np.float64)
    p, q = cp.asnumpy(p).reshape(n, 4), cp.asnumpy(q).reshape(n, 4)
    xd = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    np.testing.assert_allclose(o[:, 0], 1 / np.sqrt(xd), rtol=1e-6)
    np.testing.assert_allclose(o[:, 1], erf(xd), rtol=1e-6)
    np.testing.assert_allclose(o[:, 2], np.arctan2(xd, 0.5), rtol=1e-6)
    np.testing.assert_allclose(o[:, 3], xd / 3, rtol=1e-6)
    np.testing.assert_allclose(o[:, 4], xd * xd + 1, rtol=1e-6)
    np.testing.assert_allclose(o[:, 5], np.clip(xd - 1, 0, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(o[:, 6], np.exp(xd), rtol=1e-6)
    np.testing.assert_allclose(o[:, 7], np.minimum(xd, 1.5) + 3, rtol=1e-6)
    np.testing.assert_allclose(p[:, 0], 1 / np.sqrt(y), rtol=1e-15)
    np.testing.assert_allclose(p[:, 1], 0.5 * np.vectorize(math.erfc)(-y / math.sqrt(2)),
                               rtol=1e-15)
    np.testing.assert_allclose(p[:, 2], y / 4, rtol=1e-13)
    np.testing.assert_allclose(p[:, 3], np.sqrt(y) + np.arctan2(y, 2) +
                               np.vectorize(math.erfc)(y), rtol=1e-15)
    assert list(q[:, 0]) == list(x.view(np.int32))
    t = np.arange(n, dtype=np.uint64)
    assert list(q[:, 1]) == [bin(int(v) * 2654435761 % 2 ** 32).count("1") for v in t]
    assert list(q[:, 2]) == [32 - int(v).bit_length() for v in t]
    assert list(q[:, 3]) == list(np.rint(x * np.float32(10)).astype(int))


# ---- memory: poisoned, sized, limited --------------------------------------------------------
def test_new_device_memory_is_nan():
    for dtype in (cp.float64, cp.float32, cp.float16):
        assert np.isnan(cp.asnumpy(cp.empty(7, dtype))).all()
    assert not cp.asnumpy(cp.zeros(7)).any()


HALF_WRITER = r"""
extern "C" __global__ void evens(double* out, long long n) {
    const long long i = 2 * ((long long)blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) out[i] = 1.0;
}
"""


def test_unwritten_outputs_stay_nan():
    out = cp.empty(100)
    module(HALF_WRITER).get_function("evens")((2,), (32,), (out, np.int64(100)))
    got = cp.asnumpy(out)
    assert (got[0::2] == 1).all() and np.isnan(got[1::2]).all()


NEIGHBOUR = r"""
extern "C" __global__ void neighbour(const float* x, float* y) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = x[blockIdx.x * 64 + t];
#ifndef DROP_BARRIER
    __syncthreads();  // the barrier
#endif
    y[blockIdx.x * 64 + t] = s[(t + 1) % 64] + s[(t + 63) % 64];
}
"""


@pytest.mark.parametrize("order", ["forward", "reverse", "random", "mixed"])
def test_missing_barrier_reads_poisoned_shared_memory(order):
    x = np.arange(3 * 64, dtype=np.float32)
    want = (np.roll(x.reshape(3, 64), -1, 1) + np.roll(x.reshape(3, 64), 1, 1)).ravel()
    with cuda_emu.configured(order=order):
        y = cp.empty(3 * 64, cp.float32)
        module(NEIGHBOUR).get_function("neighbour")((3,), (64,), (cp.asarray(x), y))
        np.testing.assert_array_equal(cp.asnumpy(y), want)
        for mutated in ({"src": ("-DDROP_BARRIER",)},
                        {"drop": line_of(NEIGHBOUR, "the barrier")}):
            y = cp.empty(3 * 64, cp.float32)
            k = module(NEIGHBOUR, *mutated.get("src", ())).get_function("neighbour")
            with cuda_emu.configured(drop_barrier_line=mutated.get("drop", -1)):
                k((3,), (64,), (cp.asarray(x), y))
            # every block's first thread reads a neighbour nobody has written yet
            assert np.isnan(cp.asnumpy(y).reshape(3, 64)).any(axis=1).all()


def test_static_shared_memory_is_held_to_48_kib():
    ok = 'extern "C" __global__ void k(double* o) { __shared__ double s[6144]; ' \
         's[threadIdx.x] = 1; __syncthreads(); o[threadIdx.x] = s[0]; }'
    helper = '__device__ double* scratch() { __shared__ double t[8]; return t; }\n'
    assert module(ok).get_function("k").shared_size_bytes == 48 * 1024
    mod = module(helper + ok.replace("6144]", "6136]") + '\nextern "C" __global__ void j(double* o) '
                 '{ o[0] = scratch()[0]; }')
    # a device function's shared array counts for every kernel
    assert mod.get_function("k").shared_size_bytes == 48 * 1024
    assert mod.get_function("j").shared_size_bytes == 64
    with pytest.raises(CompileException, match=r"'k' uses too much shared data \(0xc008 bytes"):
        module(ok.replace("6144]", "6145]")).compile()


DYNAMIC = r"""
extern "C" __global__ void dyn(float* out, int* same) {
    extern __shared__ float buf[];
    extern __shared__ int alias[];
    const int t = threadIdx.x;
    out[2 * t] = buf[t];                 // read before any write: poisoned
    __syncthreads();
    buf[t] = (float)t;
    __syncthreads();
    out[2 * t + 1] = buf[(t + 1) % blockDim.x];
    same[0] = (void*)buf == (void*)alias;
}
"""


def test_dynamic_shared_memory_is_sized_by_the_launch_and_opt_in():
    mod = module(DYNAMIC)
    k = mod.get_function("dyn")
    out, same = cp.empty(128, cp.float32), cp.zeros(1, cp.int32)
    k((2,), (64,), (out, same), shared_mem=64 * 4)
    got = cp.asnumpy(out)
    assert np.isnan(got[0::2]).all()
    assert list(got[1::2]) == [float((t + 1) % 64) for t in range(64)]
    assert int(same.item()) == 1                 # every extern __shared__ array aliases
    assert k.max_dynamic_shared_size_bytes == 48 * 1024
    with pytest.raises(LaunchError, match="opt in"):
        k((1,), (64,), (out, same), shared_mem=64 * 1024)
    k.max_dynamic_shared_size_bytes = 64 * 1024
    k((1,), (64,), (out, same), shared_mem=64 * 1024)
    # an attribute of the function: another handle on it sees the opt-in
    assert mod.get_function("dyn").max_dynamic_shared_size_bytes == 64 * 1024
    with pytest.raises(CUDADriverError, match="max_dynamic_shared_size_bytes"):
        k.max_dynamic_shared_size_bytes = 228 * 1024


# ---- bug classes that must fail loudly -------------------------------------------------------
def test_barrier_some_threads_never_reach_names_the_line():
    src = r"""
extern "C" __global__ void k(float* o) {
    if (threadIdx.x < 16) {
        __syncthreads();  // only half the block
    }
    o[threadIdx.x] = 1.0f;
}
"""
    with pytest.raises(KernelFault, match=rf"module\.cu:{line_of(src, 'only half')}") as info:
        module(src).get_function("k")((1,), (32,), (cp.empty(32, cp.float32),))
    assert "never arrive" in str(info.value) or "exited" in str(info.value)


def test_divergent_barriers_are_reported():
    src = r"""
extern "C" __global__ void k(float* o) {
    if (threadIdx.x % 2) {
        __syncthreads();  // odd
    } else {
        __syncthreads();  // even
    }
    o[threadIdx.x] = 1.0f;
}
"""
    with pytest.raises(KernelFault, match="divergent barriers") as info:
        module(src).get_function("k")((1,), (32,), (cp.empty(32, cp.float32),))
    assert f":{line_of(src, 'odd')}" in str(info.value)
    assert f":{line_of(src, 'even')}" in str(info.value)


SHUFFLES = r"""
extern "C" __global__ void k(float* o, int variant) {
    const int lane = threadIdx.x % 32;
    float v = (float)lane;
    if (variant == 0) {
        if (lane < 16) v = __shfl_down_sync(0xffffffffu, v, 8);  // divergent
    } else if (variant == 1) {
        v = (float)__ballot_sync(0x0000fffeu, 1);  // callers outside the mask
    } else if (variant == 2) {
        if (lane < 16) v = __shfl_down_sync(0x0000ffffu, v, 8);  // reads lane 16
    } else if (variant == 3) {
        if (lane < 16) v = __shfl_down_sync(0xffffffffu, v, 1);  // mask waits at a barrier
        __syncthreads();
    } else if (variant == 4) {
        v = __shfl_xor_sync(0xffffffffu, v, 1);  // 48 threads: lanes 16-31 of warp 1 missing
    } else {
        if (lane % 2) v = __shfl_xor_sync(0xffffffffu, v, 1);  // odd lanes here
        else v = __shfl_down_sync(0xffffffffu, v, 1);
    }
    o[threadIdx.x] = v;
}
"""


@pytest.mark.parametrize("order", ["forward", "reverse", "random"])
@pytest.mark.parametrize("variant,threads,message", [
    (0, 32, r"lane (1[6-9]|2\d|3[01]) exited without reaching __shfl_down_sync|"
            r"lanes (1[6-9]|2\d|3[01])[-,\d]* have exited"),
    (1, 32, r"the calling lane \d+ is not in the mask 0x0000fffe"),
    (2, 32, r"lane 8 reads lane 16, which is not in the mask"),
    (3, 32, r"waits at __syncthreads\(\) .*never arrive"),
    (4, 48, r"names lanes 16-31, which do not exist"),
    (5, 32, r"divergent warp collective"),
])
def test_broken_warp_collectives_are_errors(variant, threads, message, order):
    k = module(SHUFFLES).get_function("k")
    with pytest.raises(KernelFault, match=message) as info, cuda_emu.configured(order=order):
        k((1,), (threads,), (cp.empty(threads, cp.float32), np.int32(variant)))
    assert "module.cu:" in str(info.value)


ARGS = r"""
extern "C" __global__ void k(float* y, const double* x, int n, float s, long long m,
                             const long long* rows) {
    if (threadIdx.x == 0 && y) y[0] = (float)(x[0] * s) + (float)(n + m + rows[0]);
}
"""


def test_arguments_are_checked_against_the_parameter_types():
    k = module(ARGS).get_function("k")
    y, x = cp.empty(1, cp.float32), cp.asarray(np.array([2.0]))
    rows = cp.asarray(np.array([5], dtype=np.int64))
    good = [y, x, np.int32(3), np.float32(0.5), np.int64(4), rows]
    k((1,), (1,), tuple(good))
    assert y.item() == 1.0 + 3 + 4 + 5
    k((1,), (1,), tuple([None] + good[1:]))          # None: a null pointer
    k((1,), (1,), tuple([np.uint64(0)] + good[1:]))  # an integer 0: a null pointer

    def bad(index, value, exc=LaunchError, match=None):
        args = list(good)
        args[index] = value
        with pytest.raises(exc, match=match):
            k((1,), (1,), tuple(args))
    bad(2, 3, match=r"argument 2 \(int32\): given int64 \(a Python int is passed as int64\)")
    bad(3, 0.5, match=r"a Python float is passed as float64")
    bad(4, np.float64(4), match="given float64")
    bad(1, cp.asarray(np.array([2.0], np.float32)), match=r"array of float32.*as const float64")
    bad(5, cp.asarray(np.array([5], np.int32)), match="array of int32")
    bad(0, cp.empty((4, 2), cp.float32)[:, 0], match="non-contiguous")
    bad(1, np.array([2.0, 3.0]), exc=TypeError, match="numpy.ndarray of shape")
    bad(0, 12345, match="not a device address")
    bad(2, x, match="given a pointer")
    with pytest.raises(LaunchError, match="5 arguments for 6 parameters"):
        k((1,), (1,), tuple(good[:5]))
    with pytest.raises(TypeError, match="tuples"):
        k(1, (1,), tuple(good))


def test_launch_geometry_is_checked():
    src = 'extern "C" __global__ void __launch_bounds__(64) k(float* o) { o[threadIdx.x] = 0; }'
    k = module(src).get_function("k")
    assert k.max_threads_per_block == 64
    o = cp.empty(2048, cp.float32)
    k((1,), (64,), (o,))
    with pytest.raises(LaunchError, match=r"__launch_bounds__\(64\)"):
        k((1,), (128,), (o,))
    src2 = src.replace("__launch_bounds__(64) ", "")
    with pytest.raises(LaunchError, match="exceeds the device limits"):
        module(src2).get_function("k")((1,), (1025,), (o,))
    with pytest.raises(LaunchError, match="exceeds the device limits"):
        module(src2).get_function("k")((1,), (1, 1, 65), (o,))


def test_compile_errors_and_unknown_kernels():
    with pytest.raises(CompileException, match="undefined_thing"):
        module('extern "C" __global__ void k() { undefined_thing(); }').compile()
    with pytest.raises(CompileException, match="unrecognized option"):
        cp.RawModule(code='extern "C" __global__ void k() {}', options=("--bogus",))
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_NOT_FOUND"):
        module('extern "C" __global__ void k() {}').get_function("nope")
    # a C++ (mangled) kernel is not found by its plain name, as on a GPU
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_NOT_FOUND"):
        module('__global__ void k() {}').get_function("k")


def test_the_stand_in_never_converts_host_arrays_implicitly():
    d = cp.arange(3.0)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(d)
    with pytest.raises(TypeError, match="Unsupported type"):
        d + np.arange(3.0)
    assert list(cp.asnumpy(d * 2 + 1)) == [1.0, 3.0, 5.0]
    assert type(d).__module__ == "cupy" and isinstance(d[1:], cp.ndarray)
    assert float(cp.asnumpy(cp.sqrt(d)[2])) == math.sqrt(2.0)


# ---- the generated kernels with a barrier removed --------------------------------------------
def _run_net(gpu, plan, x1, x2, want):
    """'ok', 'wrong' (numbers off, or NaN refused by the executor's checks) or 'fault'
    (the emulator refused)."""
    try:
        got = evaluate(gpu, x1, x2)
    except KernelFault:
        return "fault"
    except NumericalError:          # a poisoned (NaN) read reached the results
        return "wrong"
    err = np.abs(np.asarray(got.ntk) - want.ntk) / np.abs(want.ntk).max()
    return "ok" if np.isfinite(err).all() and err.max() <= 1e-12 else "wrong"


@pytest.mark.parametrize("name", ["example_cntk_gap", "more_pool_same"])
def test_removing_a_barrier_from_generated_code_is_detected(name):
    """Every __syncthreads() the generated kernels execute, removed in turn (the statement
    on that source line does nothing): the run must report wrong numbers or a fault for
    the barriers that order a write before another thread's read.  Redundant barriers
    (their removal changes nothing) are listed in the summary, not failed."""
    with cuda_emu.activated(emulator=True):
        k = infinet.compile(CASES[name])
        x1, x2 = inputs(k.plan, seed=2)
        want = evaluate(ReferenceExecutor(k.plan, "float64"), x1, x2)
        gpu = infinet.runtime.kernel.CompiledKernel.from_plan(k.plan).executor("cuda", "float64")
        cuda_emu.barrier_sites.clear()
        with cuda_emu.configured(order="mixed"):
            assert _run_net(gpu, k.plan, x1, x2, want) == "ok"
            sites = sorted(cuda_emu.barrier_sites)
            outcome = {}
            for line in sites:
                with cuda_emu.configured(drop_barrier_line=line):
                    outcome[line] = _run_net(gpu, k.plan, x1, x2, want)
    detected = [s for s, o in outcome.items() if o != "ok"]
    SECTIONS.setdefault("cuda-emu: generated barriers removed one at a time", []).append(
        f"{name}: {len(sites)} executed, removal detected at lines {detected}, "
        f"redundant at {[s for s in sites if s not in detected]}")
    assert len(sites) >= 3
    assert detected, f"{name}: removing any one of the barriers at {sites} went unnoticed"


FAULTS = r"""
__device__ int deep(int n) {
    volatile char frame[1024];
    frame[0] = (char)n;
    return n ? deep(n - 1) + frame[0] : 0;
}
extern "C" __global__ void k(float* out, int variant) {
    if (variant == 0 && threadIdx.x == 5) ((float*)16)[threadIdx.x] = 1.0f;  // wild pointer
    if (variant == 1 && threadIdx.x == 3) out[0] = (float)deep(1 << 20);
    out[threadIdx.x] = 1.0f;
}
"""


@pytest.mark.parametrize("variant,message", [
    (0, r"thread \(5,0,0\): illegal memory access \(SIGSEGV\) at address 0x24"),
    (1, r"thread \(3,0,0\): stack overflow"),
])
def test_a_crashing_kernel_fails_the_launch_not_the_process(variant, message):
    k = module(FAULTS).get_function("k")
    out = cp.empty(32, cp.float32)
    with pytest.raises(KernelFault, match=message):
        k((2,), (32,), (out, np.int32(variant)))
    k((2,), (32,), (out, np.int32(2)))        # and the emulator still runs
    assert (cp.asnumpy(out) == 1).all()


CONSTANT = r"""
__constant__ float table[4];
extern "C" __global__ void lookup(const int* index, float* out) {
    out[threadIdx.x] = table[index[threadIdx.x] % 4];
}
"""


def test_constant_memory_through_get_global():
    mod = module(CONSTANT)
    table = cp.ndarray((4,), cp.float32, mod.get_global("table"))
    table[...] = np.array([0.5, 1.5, 2.5, 3.5], np.float32)
    out = cp.empty(8, cp.float32)
    mod.get_function("lookup")((1,), (8,), (cp.asarray(np.arange(8, dtype=np.int32)), out))
    assert list(cp.asnumpy(out)) == [0.5, 1.5, 2.5, 3.5] * 2
