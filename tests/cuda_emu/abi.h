// cuda-emu: the interface between an emulated kernel module, the runtime and Python.
//
// A module (the generated .cu compiled as C++ with cuda_emu.h) exports a table of its
// extern "C" __global__ functions; the runtime (runtime.cpp, one shared library per
// build mode) runs a launch of one of them over fibers; Python (build.py, kernels.py)
// reads the table with ctypes and calls emu_launch.  Plain C layout on purpose: ctypes
// mirrors every struct here (kernels.py), so change both together and bump
// EMU_ABI_VERSION.
#ifndef CUDA_EMU_ABI_H
#define CUDA_EMU_ABI_H

#include <stddef.h>

#define EMU_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

typedef struct emu_dim { unsigned x, y, z; } emu_dim;

// What the CUDA builtins of one emulated thread read (threadIdx, blockIdx, ...).
typedef struct emu_thread_ctx {
    emu_dim tid, bid, bdim, gdim;
} emu_thread_ctx;

// One parameter of a kernel, as the C++ compiler declared it.
//   kind: 'p' pointer, 'f' floating, 'i' signed integer, 'u' unsigned integer,
//         'b' bool, 's' anything else passed by value (struct, enum class, ...)
//   pkind/psize: the pointee of a pointer ('v' void, or one of the kinds above)
typedef struct emu_param {
    char kind, pkind, is_const, pad_;
    unsigned size, psize;
} emu_param;

typedef struct emu_kernel_info {
    const char* name;
    void (*invoke)(void** args);   // calls the kernel with *(T*)args[i]
    int nparams;
    const emu_param* params;
    int max_threads;               // __launch_bounds__ maxThreadsPerBlock, 0 if none
} emu_kernel_info;

// A byte range of the module's thread-local (= per-block shared) storage, as an offset
// from the start of the module's TLS block.
typedef struct emu_range { long long offset, size; } emu_range;

// Warp-level collectives (emu_warp's op).
enum {
    EMU_SHFL_IDX = 0, EMU_SHFL_UP, EMU_SHFL_DOWN, EMU_SHFL_XOR,
    EMU_BALLOT, EMU_ANY, EMU_ALL, EMU_SYNCWARP, EMU_MATCH_ANY, EMU_MATCH_ALL,
    EMU_REDUCE_ADD, EMU_REDUCE_MIN_U, EMU_REDUCE_MAX_U, EMU_REDUCE_MIN_I, EMU_REDUCE_MAX_I,
    EMU_REDUCE_AND, EMU_REDUCE_OR, EMU_REDUCE_XOR, EMU_WARP_OPS
};

// __syncthreads variants (emu_syncthreads' op).
enum { EMU_SYNC_PLAIN = 0, EMU_SYNC_COUNT, EMU_SYNC_AND, EMU_SYNC_OR };

enum { EMU_ORDER_MIXED = 0, EMU_ORDER_FORWARD = 1, EMU_ORDER_REVERSE = 2,
       EMU_ORDER_RANDOM = 3 };

typedef struct emu_launch_cfg {
    int order;                      // EMU_ORDER_*: which ready thread runs next
    int workers;                    // OS threads running blocks (>= 1)
    unsigned long long seed;        // random orders
    size_t stack_bytes;             // per emulated thread
    void* (*tls_anchor)(void);      // the module's anchor variable, in this OS thread
    long long anchor_offset;        // ... and its offset in the module's TLS block
    const emu_range* shared;        // static __shared__ storage to poison per block
    int nshared;
    long long dyn_offset;           // dynamic (extern __shared__) arena, -1 if none
    long long dyn_bytes;            // launch's shared_mem
    long long dyn_capacity;         // arena size
    int drop_barrier_line;          // __syncthreads() on this line does nothing (-1: none)
    int* sites_out;                 // out: source lines of the __syncthreads() executed
    int max_sites;
    int nsites;                     // out
} emu_launch_cfg;

#ifdef __cplusplus
}
#endif
#endif
