// cuda-emu: CUDA device code compiled as host C++ (a TEST HARNESS, not a backend).
//
// Force-included (g++ -include) before a CUDA source.  It maps the CUDA builtins onto
// the fiber runtime (runtime.cpp): every CUDA thread is a fiber; __syncthreads, warp
// shuffles, votes and __syncwarp are rendezvous points checked for divergence;
// __shared__ variables are thread_local, i.e. one copy per OS thread, and an OS thread
// runs one block at a time, so they are per-block storage (poisoned with NaN before
// every block by the runtime; their sizes come from the module's ELF symbols).  It
// depends only on CUDA semantics, never on the text of a particular source.
// See README.md for the design and the limits.
#ifndef CUDA_EMU_H
#define CUDA_EMU_H

#include <math.h>      // (libstdc++: the float/double overloads in the global namespace)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits>
#include <type_traits>
#include <utility>

#include "abi.h"

#define __CUDACC__ 1
#define __CUDACC_RTC__ 1
#define __CUDA_EMU__ 1
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 900
#endif

// ---- qualifiers -----------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// Per-block storage: an OS thread runs one block at a time (see above).  Valid both for
// `__shared__ T x[N];` (block scope: static thread-local) and `extern __shared__ T x[];`
// (the build defines every such name at the module's dynamic-shared arena).
#define __shared__ thread_local

// ---- the runtime (runtime.cpp) ---------------------------------------------------------
extern "C" {
// const: a fiber always sees its own context, so calls may be merged within a fiber
emu_thread_ctx* emu_cur(void) __attribute__((const));
void emu_syncthreads(const char* file, int line);
int emu_syncthreads_op(int op, int pred, const char* file, int line);
unsigned long long emu_warp(int op, unsigned mask, unsigned long long value, int param,
                            int width, const char* file, int line);
unsigned emu_activemask(void);
long long emu_clock(void);
void emu_trap(const char* what, const char* file, int line) __attribute__((noreturn));
}

// ---- built-in variables ------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
static_assert(sizeof(uint3) == sizeof(emu_dim) && sizeof(dim3) == sizeof(emu_dim), "layout");
#define threadIdx (*reinterpret_cast<const uint3*>(&emu_cur()->tid))
#define blockIdx (*reinterpret_cast<const uint3*>(&emu_cur()->bid))
#define blockDim (*reinterpret_cast<const dim3*>(&emu_cur()->bdim))
#define gridDim (*reinterpret_cast<const dim3*>(&emu_cur()->gdim))
static constexpr int warpSize = 32;

// ---- vector types ---------------------------------------------------------------------------
#define EMU_VEC(T, N, A2, A4)                                                              \
    struct __attribute__((aligned(A2))) N##2 { T x, y; };                                  \
    struct N##3 { T x, y, z; };                                                            \
    struct __attribute__((aligned(A4))) N##4 { T x, y, z, w; };                            \
    static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }                        \
    static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }                \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
EMU_VEC(float, float, 8, 16)
EMU_VEC(double, double, 16, 16)
EMU_VEC(int, int, 8, 16)
EMU_VEC(short, short, 4, 8)
EMU_VEC(unsigned short, ushort, 4, 8)
EMU_VEC(signed char, char, 2, 4)
EMU_VEC(unsigned char, uchar, 2, 4)
EMU_VEC(long long, longlong, 16, 16)
EMU_VEC(unsigned long long, ulonglong, 16, 16)
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
static inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
static inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    return uint4{x, y, z, w};
}
#undef EMU_VEC

// ---- synchronisation ------------------------------------------------------------------------
// __builtin_FILE/LINE as default arguments name the call site (after macro expansion: the
// line that invoked the macro), so errors point at the source line.
static inline void __syncthreads(const char* f = __builtin_FILE(), int l = __builtin_LINE()) {
    emu_syncthreads(f, l);
}
static inline int __syncthreads_count(int p, const char* f = __builtin_FILE(),
                                      int l = __builtin_LINE()) {
    return emu_syncthreads_op(EMU_SYNC_COUNT, p, f, l);
}
static inline int __syncthreads_and(int p, const char* f = __builtin_FILE(),
                                    int l = __builtin_LINE()) {
    return emu_syncthreads_op(EMU_SYNC_AND, p, f, l);
}
static inline int __syncthreads_or(int p, const char* f = __builtin_FILE(),
                                   int l = __builtin_LINE()) {
    return emu_syncthreads_op(EMU_SYNC_OR, p, f, l);
}
static inline void __syncwarp(unsigned mask = 0xffffffffu, const char* f = __builtin_FILE(),
                              int l = __builtin_LINE()) {
    emu_warp(EMU_SYNCWARP, mask, 0, 0, 32, f, l);
}
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline unsigned __activemask() { return emu_activemask(); }

// ---- warp shuffles and votes ----------------------------------------------------------------
template <typename T>
static inline T emu_shfl(int op, unsigned mask, T var, int param, int width, const char* f,
                         int l) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "__shfl_*_sync: a type of at most 8 bytes");
    unsigned long long bits = 0;
    memcpy(&bits, &var, sizeof(T));
    bits = emu_warp(op, mask, bits, param, width, f, l);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}
template <typename T>
static inline T __shfl_sync(unsigned mask, T var, int src, int width = warpSize,
                            const char* f = __builtin_FILE(), int l = __builtin_LINE()) {
    return emu_shfl(EMU_SHFL_IDX, mask, var, src, width, f, l);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                               const char* f = __builtin_FILE(), int l = __builtin_LINE()) {
    return emu_shfl(EMU_SHFL_UP, mask, var, (int)delta, width, f, l);
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                                 const char* f = __builtin_FILE(), int l = __builtin_LINE()) {
    return emu_shfl(EMU_SHFL_DOWN, mask, var, (int)delta, width, f, l);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                                const char* f = __builtin_FILE(), int l = __builtin_LINE()) {
    return emu_shfl(EMU_SHFL_XOR, mask, var, lane_mask, width, f, l);
}
static inline unsigned __ballot_sync(unsigned mask, int pred, const char* f = __builtin_FILE(),
                                     int l = __builtin_LINE()) {
    return (unsigned)emu_warp(EMU_BALLOT, mask, pred != 0, 0, 32, f, l);
}
static inline int __any_sync(unsigned mask, int pred, const char* f = __builtin_FILE(),
                             int l = __builtin_LINE()) {
    return (int)emu_warp(EMU_ANY, mask, pred != 0, 0, 32, f, l);
}
static inline int __all_sync(unsigned mask, int pred, const char* f = __builtin_FILE(),
                             int l = __builtin_LINE()) {
    return (int)emu_warp(EMU_ALL, mask, pred != 0, 0, 32, f, l);
}
template <typename T>
static inline unsigned __match_any_sync(unsigned mask, T value, const char* f = __builtin_FILE(),
                                        int l = __builtin_LINE()) {
    unsigned long long bits = 0;
    memcpy(&bits, &value, sizeof(T) < 8 ? sizeof(T) : 8);
    return (unsigned)emu_warp(EMU_MATCH_ANY, mask, bits, 0, 32, f, l);
}
template <typename T>
static inline unsigned __match_all_sync(unsigned mask, T value, int* pred,
                                        const char* f = __builtin_FILE(),
                                        int l = __builtin_LINE()) {
    unsigned long long bits = 0;
    memcpy(&bits, &value, sizeof(T) < 8 ? sizeof(T) : 8);
    unsigned out = (unsigned)emu_warp(EMU_MATCH_ALL, mask, bits, 0, 32, f, l);
    *pred = out != 0;
    return out;
}
#define EMU_REDUCE(name, op_u, op_i)                                                         \
    static inline unsigned name(unsigned mask, unsigned v, const char* f = __builtin_FILE(), \
                                int l = __builtin_LINE()) {                                 \
        return (unsigned)emu_warp(op_u, mask, v, 0, 32, f, l);                              \
    }                                                                                       \
    static inline int name(unsigned mask, int v, const char* f = __builtin_FILE(),          \
                           int l = __builtin_LINE()) {                                      \
        return (int)emu_warp(op_i, mask, (unsigned)v, 0, 32, f, l);                         \
    }
EMU_REDUCE(__reduce_add_sync, EMU_REDUCE_ADD, EMU_REDUCE_ADD)
EMU_REDUCE(__reduce_min_sync, EMU_REDUCE_MIN_U, EMU_REDUCE_MIN_I)
EMU_REDUCE(__reduce_max_sync, EMU_REDUCE_MAX_U, EMU_REDUCE_MAX_I)
EMU_REDUCE(__reduce_and_sync, EMU_REDUCE_AND, EMU_REDUCE_AND)
EMU_REDUCE(__reduce_or_sync, EMU_REDUCE_OR, EMU_REDUCE_OR)
EMU_REDUCE(__reduce_xor_sync, EMU_REDUCE_XOR, EMU_REDUCE_XOR)
#undef EMU_REDUCE

// ---- atomics (GCC builtins: seen by ThreadSanitizer) ----------------------------------------
template <typename T>
static inline T emu_atomic_update(T* p, T v, int op) {
    T old, want;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    do {
        switch (op) {
            case 0: want = old + v; break;
            case 1: want = old < v ? old : v; break;
            default: want = old > v ? old : v; break;
        }
    } while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST));
    return old;
}
static inline float atomicAdd(float* p, float v) { return emu_atomic_update(p, v, 0); }
static inline double atomicAdd(double* p, double v) { return emu_atomic_update(p, v, 0); }
#define EMU_ATOMIC_INT(T)                                                                   \
    static inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }   \
    static inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicMin(T* p, T v) { return emu_atomic_update(p, v, 1); }             \
    static inline T atomicMax(T* p, T v) { return emu_atomic_update(p, v, 2); }             \
    static inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicCAS(T* p, T cmp, T v) {                                          \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
        return cmp;                                                                         \
    }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned)
EMU_ATOMIC_INT(long long)
EMU_ATOMIC_INT(unsigned long long)
#undef EMU_ATOMIC_INT
static inline float atomicExch(float* p, float v) {
    float old;
    __atomic_exchange(p, &v, &old, __ATOMIC_SEQ_CST);
    return old;
}
static inline unsigned atomicInc(unsigned* p, unsigned limit) {
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED), want;
    do { want = old >= limit ? 0 : old + 1; } while (!__atomic_compare_exchange_n(
        p, &old, want, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
}
static inline unsigned atomicDec(unsigned* p, unsigned limit) {
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED), want;
    do { want = (old == 0 || old > limit) ? limit : old - 1; } while (
        !__atomic_compare_exchange_n(p, &old, want, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
}
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd

// ---- math: what CUDA has beyond libm (libm's own functions come from <math.h>) -------------
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
static inline double rcbrt(double x) { return 1.0 / cbrt(x); }
static inline float rhypotf(float x, float y) { return 1.0f / hypotf(x, y); }
static inline double rhypot(double x, double y) { return 1.0 / hypot(x, y); }
static inline float norm3df(float a, float b, float c) { return sqrtf(a * a + b * b + c * c); }
static inline double norm3d(double a, double b, double c) { return sqrt(a * a + b * b + c * c); }
static inline float rnorm3df(float a, float b, float c) { return 1.0f / norm3df(a, b, c); }
static inline double rnorm3d(double a, double b, double c) { return 1.0 / norm3d(a, b, c); }
static inline float norm4df(float a, float b, float c, float d) {
    return sqrtf(a * a + b * b + c * c + d * d);
}
static inline double norm4d(double a, double b, double c, double d) {
    return sqrt(a * a + b * b + c * c + d * d);
}
static inline float sinpif(float x) { return sinf((float)M_PI * x); }
static inline double sinpi(double x) { return sin(M_PI * x); }
static inline float cospif(float x) { return cosf((float)M_PI * x); }
static inline double cospi(double x) { return cos(M_PI * x); }
static inline void sincospif(float x, float* s, float* c) { *s = sinpif(x); *c = cospif(x); }
static inline void sincospi(double x, double* s, double* c) { *s = sinpi(x); *c = cospi(x); }
static inline float normcdff(float x) { return 0.5f * erfcf(-x * (float)M_SQRT1_2); }
static inline double normcdf(double x) { return 0.5 * erfc(-x * M_SQRT1_2); }
static inline double erfinv(double y) {
    // Newton on erf (host only needs accuracy, not speed)
    if (y <= -1.0) return y == -1.0 ? -HUGE_VAL : NAN;
    if (y >= 1.0) return y == 1.0 ? HUGE_VAL : NAN;
    double x = 0.0;
    for (int i = 0; i < 100; ++i) {
        double step = (erf(x) - y) / (2.0 / sqrt(M_PI) * exp(-x * x));
        x -= step;
        if (fabs(step) <= 1e-17 * (1.0 + fabs(x))) break;
    }
    return x;
}
static inline float erfinvf(float y) { return (float)erfinv((double)y); }
static inline double erfcinv(double y) { return erfinv(1.0 - y); }
static inline float erfcinvf(float y) { return (float)erfcinv((double)y); }
static inline double normcdfinv(double p) { return -M_SQRT2 * erfcinv(2.0 * p); }
static inline float normcdfinvf(float p) { return (float)normcdfinv((double)p); }
static inline double erfcx(double x) { return exp(x * x) * erfc(x); }
static inline float erfcxf(float x) { return (float)erfcx((double)x); }
static inline float fdividef(float x, float y) { return x / y; }
static inline float __fdividef(float x, float y) { return x / y; }
// (glibc declares these names itself: macros, so that the CUDA meaning wins)
#define __expf(x) expf(x)
#define __exp10f(x) exp10f(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __log10f(x) log10f(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf(x, s, c)
#define __powf(x, y) powf(x, y)
static inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }
// round-to-nearest arithmetic (what the host does by default; never contracted: -ffp-contract=off)
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __frsqrt_rn(float a) { return 1.0f / sqrtf(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __drcp_rn(double a) { return 1.0 / a; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }

// ---- bit casts, conversions, integer intrinsics ---------------------------------------------
template <typename To, typename From>
static inline To emu_bits(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit cast");
    To out;
    memcpy(&out, &v, sizeof(To));
    return out;
}
static inline float __int_as_float(int v) { return emu_bits<float>(v); }
static inline int __float_as_int(float v) { return emu_bits<int>(v); }
static inline float __uint_as_float(unsigned v) { return emu_bits<float>(v); }
static inline unsigned __float_as_uint(float v) { return emu_bits<unsigned>(v); }
static inline double __longlong_as_double(long long v) { return emu_bits<double>(v); }
static inline long long __double_as_longlong(double v) { return emu_bits<long long>(v); }
static inline int __double2hiint(double v) { return (int)(emu_bits<unsigned long long>(v) >> 32); }
static inline int __double2loint(double v) { return (int)emu_bits<unsigned long long>(v); }
static inline double __hiloint2double(int hi, int lo) {
    return emu_bits<double>(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo);
}
template <typename I, typename F>
static inline I emu_f2i(F v) {   // CUDA saturates out-of-range conversions; NaN gives 0
    if (v != v) return 0;
    if (v <= (F)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
    if (v >= (F)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
    return (I)v;
}
#define EMU_F2I(suffix, I, F, fn)                                                          \
    static inline I __##F##2##suffix##_rn(F v) { return emu_f2i<I>(fn(rint)(v)); }        \
    static inline I __##F##2##suffix##_rz(F v) { return emu_f2i<I>(fn(trunc)(v)); }       \
    static inline I __##F##2##suffix##_ru(F v) { return emu_f2i<I>(fn(ceil)(v)); }        \
    static inline I __##F##2##suffix##_rd(F v) { return emu_f2i<I>(fn(floor)(v)); }
#define EMU_FLT(name) name##f
#define EMU_DBL(name) name
EMU_F2I(int, int, float, EMU_FLT)
EMU_F2I(uint, unsigned, float, EMU_FLT)
EMU_F2I(ll, long long, float, EMU_FLT)
EMU_F2I(ull, unsigned long long, float, EMU_FLT)
EMU_F2I(int, int, double, EMU_DBL)
EMU_F2I(uint, unsigned, double, EMU_DBL)
EMU_F2I(ll, long long, double, EMU_DBL)
EMU_F2I(ull, unsigned long long, double, EMU_DBL)
#undef EMU_F2I
#undef EMU_FLT
#undef EMU_DBL
static inline float __int2float_rn(int v) { return (float)v; }
static inline float __uint2float_rn(unsigned v) { return (float)v; }
static inline float __ll2float_rn(long long v) { return (float)v; }
static inline double __int2double_rn(int v) { return (double)v; }
static inline double __ll2double_rn(long long v) { return (double)v; }
static inline float __double2float_rn(double v) { return (float)v; }
static inline int __popc(unsigned v) { return __builtin_popcount(v); }
static inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
static inline int __clz(int v) { return v ? __builtin_clz((unsigned)v) : 32; }
static inline int __clzll(long long v) { return v ? __builtin_clzll((unsigned long long)v) : 64; }
static inline int __ffs(int v) { return __builtin_ffs(v); }
static inline int __ffsll(long long v) { return __builtin_ffsll(v); }
static inline unsigned __brev(unsigned v) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
    return r;
}
static inline unsigned long long __brevll(unsigned long long v) {
    return ((unsigned long long)__brev((unsigned)v) << 32) | __brev((unsigned)(v >> 32));
}
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long both = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((both >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
static inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned sh) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)((v << (sh & 31)) >> 32);
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned sh) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)(v >> (sh & 31));
}
static inline int __mul24(int a, int b) { return (int)((long long)((a << 8) >> 8) * ((b << 8) >> 8)); }
static inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
static inline long long __mul64hi(long long a, long long b) {
    return (long long)(((__int128)a * b) >> 64);
}
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline unsigned __sad(int x, int y, unsigned z) { return z + (unsigned)(x > y ? x - y : y - x); }
static inline unsigned __usad(unsigned x, unsigned y, unsigned z) { return z + (x > y ? x - y : y - x); }
static inline int __hadd(int a, int b) { return (int)(((long long)a + b) >> 1); }
static inline int __rhadd(int a, int b) { return (int)(((long long)a + b + 1) >> 1); }
static inline unsigned __uhadd(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a + b) >> 1); }
static inline unsigned __urhadd(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a + b + 1) >> 1);
}

// min/max as CUDA overloads them: integers compare, floating point follows fmin/fmax
template <typename A, typename B>
static inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    if constexpr (std::is_floating_point<C>::value) return fmin((C)a, (C)b);
    else return (C)a < (C)b ? (C)a : (C)b;
}
template <typename A, typename B>
static inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    if constexpr (std::is_floating_point<C>::value) return fmax((C)a, (C)b);
    else return (C)a > (C)b ? (C)a : (C)b;
}
static inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long llmin(long long a, long long b) { return a < b ? a : b; }
static inline long long llmax(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// ---- loads/stores with cache hints, misc ----------------------------------------------------
template <typename T> static inline T __ldg(const T* p) { return *p; }
template <typename T> static inline T __ldcg(const T* p) { return *p; }
template <typename T> static inline T __ldca(const T* p) { return *p; }
template <typename T> static inline T __ldcs(const T* p) { return *p; }
template <typename T> static inline T __ldlu(const T* p) { return *p; }
template <typename T> static inline T __ldcv(const T* p) { return *p; }
template <typename T> static inline void __stcg(T* p, T v) { *p = v; }
template <typename T> static inline void __stcs(T* p, T v) { *p = v; }
template <typename T> static inline void __stwb(T* p, T v) { *p = v; }
template <typename T> static inline void __stwt(T* p, T v) { *p = v; }
static inline long long clock64() { return emu_clock(); }
static inline void __nanosleep(unsigned) {}
#define __builtin_assume(x) ((void)0)
#define __trap() emu_trap("__trap()", __FILE__, __LINE__)
#define __brkpt() emu_trap("__brkpt()", __FILE__, __LINE__)
#ifndef assert
#define assert(e) ((e) ? (void)0 : emu_trap("assertion failed: " #e, __FILE__, __LINE__))
#endif

// ---- what the build needs from every module -------------------------------------------------
// The runtime finds a module's per-block storage in the calling OS thread from this anchor.
thread_local unsigned char emu_tls_anchor_ __attribute__((used, visibility("hidden")));
extern "C" __attribute__((visibility("default"))) void* emu_module_tls_anchor(void) {
    return &emu_tls_anchor_;
}
extern "C" __attribute__((visibility("default"))) const int emu_module_abi = EMU_ABI_VERSION;

// (internal linkage: template statics of two modules must never be unified by the loader)
namespace {
template <typename T>
constexpr void emu_kind_of(char& kind, unsigned& size) {
    typedef typename std::remove_cv<T>::type U;
    if constexpr (std::is_void<U>::value) { kind = 'v'; size = 0; }
    else {
        size = sizeof(U);
        if constexpr (std::is_same<U, bool>::value) kind = 'b';
        else if constexpr (std::is_floating_point<U>::value) kind = 'f';
        else if constexpr (std::is_pointer<U>::value) kind = 'p';
        else if constexpr (std::is_integral<U>::value) kind = std::is_signed<U>::value ? 'i' : 'u';
        else kind = 's';
    }
}
template <typename T>
constexpr emu_param emu_describe() {
    static_assert(!std::is_reference<T>::value, "kernel parameters are passed by value");
    emu_param p{0, 0, 0, 0, 0, 0};
    emu_kind_of<T>(p.kind, p.size);
    if constexpr (std::is_pointer<typename std::remove_cv<T>::type>::value) {
        typedef typename std::remove_pointer<typename std::remove_cv<T>::type>::type P;
        emu_kind_of<P>(p.pkind, p.psize);
        p.is_const = std::is_const<P>::value;
    }
    return p;
}
template <auto F> struct emu_entry;
template <typename... A, void (*F)(A...)>
struct emu_entry<F> {
    static constexpr int count = (int)sizeof...(A);
    static constexpr emu_param params[sizeof...(A) + 1] = {emu_describe<A>()...,
                                                           emu_param{0, 0, 0, 0, 0, 0}};
    template <size_t... I>
    static void call(void** args, std::index_sequence<I...>) {
        (void)args;
        F(*static_cast<typename std::remove_cv<A>::type*>(args[I])...);
    }
    static void invoke(void** args) { call(args, std::index_sequence_for<A...>{}); }
};
}  // namespace
// The build appends the kernel table: one EMU_KERNEL per extern "C" __global__ function.
#define EMU_KERNEL_TABLE_BEGIN extern "C" __attribute__((visibility("default"))) \
    const emu_kernel_info emu_kernels[] = {
#define EMU_KERNEL(name, bound) \
    {#name, &emu_entry<&name>::invoke, emu_entry<&name>::count, emu_entry<&name>::params, \
     (int)(bound)},
#define EMU_KERNEL_TABLE_END {nullptr, nullptr, 0, nullptr, 0}}; \
    extern "C" __attribute__((visibility("default"))) const int emu_kernel_count = \
        (int)(sizeof(emu_kernels) / sizeof(emu_kernels[0])) - 1;

#endif  // CUDA_EMU_H
