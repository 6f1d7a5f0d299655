// cuda-emu runtime: runs one kernel launch of an emulated module over fibers.
//
// Every CUDA thread of a block is a fiber with its own stack; the fibers of a block run
// on one OS thread, one at a time, switching only at __syncthreads / warp collectives,
// in forward, reverse or random order (EMU_ORDER_*).  Blocks are spread over `workers`
// OS threads.  Every rendezvous is checked: a thread that exited while others wait (or
// will wait) at a barrier, threads at different __syncthreads() lines, a warp
// collective whose mask names a lane that exited, waits at a barrier or calls another
// collective, lanes that disagree on the mask, a shuffle reading a lane outside the
// mask.  Errors name the source line and the block/thread; the launch stops.
//
// Built without sanitizer instrumentation.  In the sanitizer builds (EMU_TSAN, EMU_ASAN)
// it tells ThreadSanitizer that every fiber is a thread of its own whose switches do not
// synchronise (so unsynchronised accesses between CUDA threads are reported), that a
// barrier or __syncwarp orders its participants, and tells AddressSanitizer about the
// fiber stacks.
#include "abi.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(EMU_TSAN)
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_set_fiber_name(void* fiber, const char* name);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
static const unsigned kNoSync = 1;   // __tsan_switch_to_fiber_no_sync
#endif
#if defined(EMU_ASAN)
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                     size_t* size_old);
void __asan_poison_memory_region(void const volatile* addr, size_t size);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
}
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace {

// ---- context switching -----------------------------------------------------------------
#if defined(__x86_64__)
extern "C" void emu_switch_ctx(void** save_sp, void* new_sp);
extern "C" void emu_fiber_trampoline(void);
asm(R"(
    .text
    .globl emu_switch_ctx
    .hidden emu_switch_ctx
    .type emu_switch_ctx, @function
emu_switch_ctx:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size emu_switch_ctx, .-emu_switch_ctx

    .globl emu_fiber_trampoline
    .hidden emu_fiber_trampoline
    .type emu_fiber_trampoline, @function
emu_fiber_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq %r12, %rdi
    callq *%rbx
    ud2
    .cfi_endproc
    .size emu_fiber_trampoline, .-emu_fiber_trampoline
)");
#endif

enum State { READY, AT_BARRIER, AT_WARP, DONE };

struct Fiber {
    emu_thread_ctx ctx;
    int index = 0, lane = 0, warp = 0;
    int state = DONE;
    bool started = false;
    // the rendezvous it waits at
    const char* file = nullptr;
    int line = 0, op = 0, param = 0, width = 32, pred = 0;
    unsigned mask = 0, gen = 0;
    unsigned long long value = 0, result = 0;
    // stack
    char* map = nullptr;
    size_t map_size = 0;
    char* stack_lo = nullptr;
    size_t stack_size = 0;
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
    void* tsan = nullptr;
    void* fake_stack = nullptr;
};

struct Launch {
    const emu_kernel_info* kernel;
    void** args;
    emu_dim grid, block;
    const emu_launch_cfg* cfg;
    unsigned long long nblocks, id;
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex mu;
    std::string error;
    std::vector<int> sites;
};

struct Worker {
#if defined(__x86_64__)
    void* sched_sp = nullptr;
#else
    ucontext_t sched_uc;
#endif
    void* tsan_sched = nullptr;
    void* sched_fake = nullptr;
    const void* sched_bottom = nullptr;
    size_t sched_size = 0;
    std::vector<Fiber*> pool;
    Fiber* cur = nullptr;
    // the block being run
    Launch* L = nullptr;
    emu_dim bid{0, 0, 0};
    int n = 0, done = 0, order = EMU_ORDER_FORWARD;
    std::vector<int> ready;
    size_t head = 0;
    int bar_waiting = 0, bar_line = 0, bar_op = 0, bar_acc = 0;
    const char* bar_file = nullptr;
    unsigned bar_gen = 0;
    std::vector<unsigned> warp_exists, warp_done, warp_waiting;
    std::vector<unsigned> warp_gen;      // [warp * 32 + lowest lane of the mask]
    bool failed = false;
    std::string error;
    std::vector<int> sites;
    std::mt19937_64 rng;
    long long clock = 0;
    // addresses that only name ThreadSanitizer sync objects
    char bar_sync[64];
    std::vector<char> warp_sync;
    // a fault (SIGSEGV/SIGBUS) in a fiber returns here (plain builds)
    sigjmp_buf fault_jmp;
    volatile bool fault_armed = false;
    int fault_sig = 0;
    void* fault_addr = nullptr;
    Fiber* fault_fiber = nullptr;
};

thread_local Worker* t_worker = nullptr;
thread_local emu_thread_ctx* t_ctx = nullptr;
std::atomic<unsigned long long> g_launches{0};

Worker* worker() {
    if (!t_worker) {
        t_worker = new Worker();
#if defined(EMU_TSAN)
        t_worker->tsan_sched = __tsan_get_current_fiber();
#endif
#if !defined(EMU_TSAN) && !defined(EMU_ASAN)
        // the fault handler must not run on a fiber stack that just overflowed
        stack_t ss;
        if (sigaltstack(nullptr, &ss) == 0 && (ss.ss_flags & SS_DISABLE)) {
            ss.ss_size = 64 * 1024;
            ss.ss_sp = malloc(ss.ss_size);
            ss.ss_flags = 0;
            sigaltstack(&ss, nullptr);
        }
#endif
    }
    return t_worker;
}

// ---- faults in a fiber: the launch fails instead of the process (plain builds only; the
// sanitizers report faults themselves) ---------------------------------------------------
struct sigaction g_old_segv, g_old_bus;

void on_fault(int sig, siginfo_t* info, void*) {
    Worker* W = t_worker;
    if (W && W->fault_armed && W->cur) {
        W->fault_sig = sig;
        W->fault_addr = info->si_addr;
        W->fault_fiber = W->cur;
        W->cur = nullptr;
        t_ctx = nullptr;
        siglongjmp(W->fault_jmp, 1);
    }
    // not a kernel's: hand it to the previous handler (the faulting instruction reruns)
    sigaction(sig, sig == SIGSEGV ? &g_old_segv : &g_old_bus, nullptr);
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

const char* op_name(int op) {
    static const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__shfl_xor_sync", "__ballot_sync", "__any_sync",
                                  "__all_sync", "__syncwarp", "__match_any_sync",
                                  "__match_all_sync", "__reduce_add_sync", "__reduce_min_sync",
                                  "__reduce_max_sync", "__reduce_min_sync", "__reduce_max_sync",
                                  "__reduce_and_sync", "__reduce_or_sync", "__reduce_xor_sync"};
    return op >= 0 && op < EMU_WARP_OPS ? names[op] : "?";
}
const char* sync_name(int op) {
    static const char* names[] = {"__syncthreads()", "__syncthreads_count()",
                                  "__syncthreads_and()", "__syncthreads_or()"};
    return names[op & 3];
}

std::string lanes(unsigned m) {   // "0-3,7"
    std::string out;
    for (int i = 0; i < 32;) {
        if (!(m >> i & 1)) { ++i; continue; }
        int j = i;
        while (j + 1 < 32 && (m >> (j + 1) & 1)) ++j;
        if (!out.empty()) out += ",";
        out += j > i ? fmt("%d-%d", i, j) : fmt("%d", i);
        i = j + 1;
    }
    return out.empty() ? "none" : out;
}

std::string where(const Fiber* f) {
    return fmt("thread (%u,%u,%u)", f->ctx.tid.x, f->ctx.tid.y, f->ctx.tid.z);
}

// ---- fibers ---------------------------------------------------------------------------------
void fill_poison(void* p, size_t n) {
    // 0x7ff8 repeated: a NaN read as half, float or double at any even offset, a huge
    // value read as an integer
    unsigned char* b = static_cast<unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) b[i] = ((uintptr_t)(b + i) & 1) ? 0x7f : 0xf8;
}

void fiber_main(Fiber* f);

void stack_init(Fiber* f) {
#if defined(__x86_64__)
    uintptr_t top = ((uintptr_t)(f->stack_lo + f->stack_size)) & ~(uintptr_t)15;
    void** sp = reinterpret_cast<void**>(top - 64);
    unsigned csr[2];
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(csr[0]), "=m"(csr[1]));
    memcpy(&sp[0], csr, 8);                       // mxcsr, x87 control word
    sp[1] = sp[2] = sp[3] = nullptr;              // r15 r14 r13
    sp[4] = f;                                    // r12: argument
    sp[5] = reinterpret_cast<void*>(&fiber_main); // rbx: entry
    sp[6] = nullptr;                              // rbp
    sp[7] = reinterpret_cast<void*>(&emu_fiber_trampoline);
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack_lo;
    f->uc.uc_stack.ss_size = f->stack_size;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, reinterpret_cast<void (*)()>(&fiber_main), 1, f);
#endif
}

Fiber* new_fiber(size_t stack_bytes, int index) {
    Fiber* f = new Fiber();
    long page = sysconf(_SC_PAGESIZE);
    size_t size = (stack_bytes + page - 1) / page * page;
    f->map_size = size + page;
    void* m = mmap(nullptr, f->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED) { perror("cuda-emu: mmap"); abort(); }
    f->map = static_cast<char*>(m);
    mprotect(f->map, page, PROT_NONE);          // guard page below the stack
    f->stack_lo = f->map + page;
    f->stack_size = size;
#if defined(EMU_TSAN)
    f->tsan = __tsan_create_fiber(0);
    char name[32];
    snprintf(name, sizeof name, "cuda-thread-%d", index);
    __tsan_set_fiber_name(f->tsan, name);
#else
    (void)index;
#endif
    return f;
}

void free_fiber(Fiber* f) {
    munmap(f->map, f->map_size);
#if defined(EMU_TSAN)
    __tsan_destroy_fiber(f->tsan);
#endif
    delete f;
}

// scheduler -> fiber
void resume(Worker* W, Fiber* f) {
    W->cur = f;
    t_ctx = &f->ctx;
#if defined(EMU_TSAN)
    // a block's start orders it after the launch (and the poisoning); resumptions do not
    __tsan_switch_to_fiber(f->tsan, f->started ? kNoSync : 0);
#endif
    f->started = true;
#if defined(EMU_ASAN)
    __sanitizer_start_switch_fiber(&W->sched_fake, f->stack_lo, f->stack_size);
#endif
#if defined(__x86_64__)
    emu_switch_ctx(&W->sched_sp, f->sp);
#else
    swapcontext(&W->sched_uc, &f->uc);
#endif
#if defined(EMU_ASAN)
    __sanitizer_finish_switch_fiber(W->sched_fake, nullptr, nullptr);
#endif
    W->cur = nullptr;
    t_ctx = nullptr;
}

// fiber -> scheduler; `final`: the fiber never resumes (it exited or the block failed)
void yield(Worker* W, Fiber* f, bool final) {
#if defined(EMU_TSAN)
    __tsan_switch_to_fiber(W->tsan_sched, final ? 0 : kNoSync);
#endif
#if defined(EMU_ASAN)
    __sanitizer_start_switch_fiber(final ? nullptr : &f->fake_stack, W->sched_bottom,
                                   W->sched_size);
#endif
#if defined(__x86_64__)
    emu_switch_ctx(&f->sp, W->sched_sp);
#else
    swapcontext(&f->uc, &W->sched_uc);
#endif
#if defined(EMU_ASAN)
    __sanitizer_finish_switch_fiber(f->fake_stack, &W->sched_bottom, &W->sched_size);
#endif
    if (final) abort();   // never resumed
}

[[noreturn]] void fail(Worker* W, Fiber* f, const std::string& what) {
    if (!W->failed) {
        W->failed = true;
        W->error = fmt("kernel %s, block (%u,%u,%u), ", W->L->kernel->name, W->bid.x, W->bid.y,
                       W->bid.z) + where(f) + ": " + what;
    }
    yield(W, f, true);
    abort();
}

void fiber_main(Fiber* f) {
    Worker* W = t_worker;
#if defined(EMU_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &W->sched_bottom, &W->sched_size);
#endif
    W->L->kernel->invoke(W->L->args);
    // the thread exits: nobody may be waiting for it
    f->state = DONE;
    W->done++;
    W->warp_done[f->warp] |= 1u << f->lane;
    if (W->bar_waiting > 0)
        fail(W, f, fmt("exited without reaching %s at %s:%d, where %d thread(s) of the block "
                       "wait", sync_name(W->bar_op), W->bar_file, W->bar_line, W->bar_waiting));
    unsigned waiting = W->warp_waiting[f->warp];
    for (int l = 0; l < 32; ++l) {
        if (!(waiting >> l & 1)) continue;
        Fiber* g = W->pool[f->warp * 32 + l];
        if (g->mask >> f->lane & 1)
            fail(W, f, fmt("lane %d exited without reaching %s at %s:%d, where lanes %s wait "
                           "with mask 0x%08x", f->lane, op_name(g->op), g->file, g->line,
                           lanes(waiting & g->mask).c_str(), g->mask));
    }
    yield(W, f, true);
}

void push_ready(Worker* W, std::vector<int>& ids) {
    if (W->order == EMU_ORDER_REVERSE) std::reverse(ids.begin(), ids.end());
    else if (W->order == EMU_ORDER_RANDOM) std::shuffle(ids.begin(), ids.end(), W->rng);
    for (int i : ids) {
        W->pool[i]->state = READY;
        W->ready.push_back(i);
    }
}

void record_site(Worker* W, int line) {
    if (W->sites.size() < 256 && std::find(W->sites.begin(), W->sites.end(), line) == W->sites.end())
        W->sites.push_back(line);
}

// ---- one block ------------------------------------------------------------------------------
void diagnose_deadlock(Worker* W) {
    std::string what = "deadlock: ";
    if (W->bar_waiting)
        what += fmt("%d thread(s) wait at %s at %s:%d; ", W->bar_waiting, sync_name(W->bar_op),
                    W->bar_file, W->bar_line);
    for (size_t w = 0; w < W->warp_waiting.size(); ++w) {
        unsigned m = W->warp_waiting[w];
        if (!m) continue;
        Fiber* g = W->pool[w * 32 + __builtin_ctz(m)];
        what += fmt("warp %zu: lanes %s wait at %s at %s:%d with mask 0x%08x; ", w,
                    lanes(m).c_str(), op_name(g->op), g->file, g->line, g->mask);
    }
    what += fmt("%d thread(s) exited", W->done);
    W->failed = true;
    W->error = fmt("kernel %s, block (%u,%u,%u): ", W->L->kernel->name, W->bid.x, W->bid.y,
                   W->bid.z) + what;
}

void schedule(Worker* W) {
    while (!W->failed) {
        if (W->head == W->ready.size()) {
            if (W->done == W->n) break;
            diagnose_deadlock(W);
            break;
        }
        Fiber* f = W->pool[W->ready[W->head++]];
        if (W->head == W->ready.size()) { W->ready.clear(); W->head = 0; }
        if (f->state != READY) continue;
        resume(W, f);
    }
}

void run_block(Worker* W, Launch* L, unsigned long long b) {
    const emu_launch_cfg* cfg = L->cfg;
    const emu_dim bd = L->block, gd = L->grid;
    const int n = (int)(bd.x * bd.y * bd.z);
    // fibers (and their stacks) are kept between blocks and launches
    if (!W->pool.empty() && W->pool[0]->stack_size < cfg->stack_bytes) {
        for (Fiber* f : W->pool) free_fiber(f);
        W->pool.clear();
    }
    while ((int)W->pool.size() < n) W->pool.push_back(new_fiber(cfg->stack_bytes, (int)W->pool.size()));

    W->L = L;
    W->bid = emu_dim{(unsigned)(b % gd.x), (unsigned)(b / gd.x % gd.y),
                     (unsigned)(b / ((unsigned long long)gd.x * gd.y))};
    W->n = n;
    W->done = 0;
    W->order = cfg->order != EMU_ORDER_MIXED ? cfg->order
                                              : EMU_ORDER_FORWARD + (int)((L->id + b) % 3);
    W->rng.seed(cfg->seed * 0x9E3779B97F4A7C15ull ^ (L->id << 32) ^ b);
    W->bar_waiting = W->bar_acc = 0;
    W->bar_file = nullptr;
    W->failed = false;
    W->error.clear();
    const int nwarps = (n + 31) / 32;
    W->warp_exists.assign(nwarps, 0xffffffffu);
    if (n % 32) W->warp_exists[nwarps - 1] = (1u << (n % 32)) - 1;
    W->warp_done.assign(nwarps, 0);
    W->warp_waiting.assign(nwarps, 0);
    if (W->warp_gen.size() < (size_t)nwarps * 32) W->warp_gen.resize(nwarps * 32);
    if (W->warp_sync.size() < (size_t)nwarps * 32 * 64) W->warp_sync.resize(nwarps * 32 * 64);

    // per-block storage of this OS thread: poisoned before every block
    char* tls = static_cast<char*>(cfg->tls_anchor()) - cfg->anchor_offset;
    for (int i = 0; i < cfg->nshared; ++i) fill_poison(tls + cfg->shared[i].offset, cfg->shared[i].size);
    if (cfg->dyn_offset >= 0) {
#if defined(EMU_ASAN)
        __asan_unpoison_memory_region(tls + cfg->dyn_offset, cfg->dyn_capacity);
#endif
        fill_poison(tls + cfg->dyn_offset, cfg->dyn_bytes);
#if defined(EMU_ASAN)
        // past the launch's dynamic shared memory
        __asan_poison_memory_region(tls + cfg->dyn_offset + cfg->dyn_bytes,
                                    cfg->dyn_capacity - cfg->dyn_bytes);
#endif
    }

    std::vector<int> ids(n);
    for (int i = 0; i < n; ++i) {
        Fiber* f = W->pool[i];
        f->index = i;
        f->lane = i % 32;
        f->warp = i / 32;
        f->ctx.tid = emu_dim{(unsigned)(i % bd.x), (unsigned)(i / bd.x % bd.y),
                             (unsigned)(i / (bd.x * bd.y))};
        f->ctx.bid = W->bid;
        f->ctx.bdim = bd;
        f->ctx.gdim = gd;
        f->started = false;
        f->mask = 0;
#if defined(EMU_ASAN)
        __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
#endif
        stack_init(f);
        ids[i] = i;
    }
    W->ready.clear();
    W->head = 0;
    push_ready(W, ids);

    W->fault_armed = true;
    if (sigsetjmp(W->fault_jmp, 1) == 0) {
        schedule(W);
    } else {
        Fiber* f = W->fault_fiber;
        const uintptr_t a = (uintptr_t)W->fault_addr;
        const bool overflow = a >= (uintptr_t)f->map && a < (uintptr_t)f->stack_lo;
        W->failed = true;
        W->error = fmt("kernel %s, block (%u,%u,%u), ", L->kernel->name, W->bid.x, W->bid.y,
                       W->bid.z) + where(f) + ": " +
                   (overflow ? fmt("stack overflow (%zu KiB per thread; raise stack_kib)",
                                   f->stack_size / 1024)
                             : fmt("illegal memory access (%s) at address %p "
                                   "(CUDA_ERROR_ILLEGAL_ADDRESS)",
                                   W->fault_sig == SIGSEGV ? "SIGSEGV" : "SIGBUS",
                                   W->fault_addr));
    }
    W->fault_armed = false;
    if (W->failed) {
#if defined(EMU_TSAN)
        // abandoned fibers: start the next block with fresh ones
        for (int i = 0; i < n; ++i) {
            __tsan_destroy_fiber(W->pool[i]->tsan);
            W->pool[i]->tsan = __tsan_create_fiber(0);
        }
#endif
        std::lock_guard<std::mutex> lock(L->mu);
        if (!L->failed.exchange(true)) L->error = W->error;
    }
    if (!W->sites.empty()) {
        std::lock_guard<std::mutex> lock(L->mu);
        for (int s : W->sites)
            if (std::find(L->sites.begin(), L->sites.end(), s) == L->sites.end()) L->sites.push_back(s);
        W->sites.clear();
    }
    W->L = nullptr;
}

void run_blocks(Launch* L) {
    Worker* W = worker();
    for (;;) {
        if (L->failed.load()) return;
        unsigned long long b = L->next.fetch_add(1);
        if (b >= L->nblocks) return;
        run_block(W, L, b);
    }
}

// helper OS threads (the calling thread is worker 0)
struct Pool {
    std::mutex mu;
    std::condition_variable start, finished;
    std::vector<std::thread> threads;
    Launch* job = nullptr;
    unsigned long long job_id = 0;
    int busy = 0;
};
// never destroyed: helpers wait on its condition variable until the process ends
Pool& g_pool = *new Pool();

void helper_loop() {
    unsigned long long seen = 0;
    for (;;) {
        Launch* L;
        {
            std::unique_lock<std::mutex> lock(g_pool.mu);
            g_pool.start.wait(lock, [&] { return g_pool.job_id != seen; });
            seen = g_pool.job_id;
            L = g_pool.job;
        }
        if (L) run_blocks(L);
        std::lock_guard<std::mutex> lock(g_pool.mu);
        if (--g_pool.busy == 0) g_pool.finished.notify_all();
    }
}

Worker* current_fiber_worker(const char* what) {
    Worker* W = t_worker;
    if (!W || !W->cur) {
        fprintf(stderr, "cuda-emu: %s called outside a kernel\n", what);
        abort();
    }
    return W;
}

}  // namespace

// ---- called by emulated kernels -------------------------------------------------------------
extern "C" emu_thread_ctx* emu_cur(void) { return t_ctx; }

extern "C" long long emu_clock(void) {
    Worker* W = current_fiber_worker("clock64()");
    return W->clock += 7;
}

extern "C" void emu_trap(const char* what, const char* file, int line) {
    Worker* W = current_fiber_worker("__trap()");
    fail(W, W->cur, fmt("%s at %s:%d", what, file, line));
}

extern "C" int emu_syncthreads_op(int op, int pred, const char* file, int line) {
    Worker* W = current_fiber_worker("__syncthreads()");
    Fiber* f = W->cur;
    const emu_launch_cfg* cfg = W->L->cfg;
    if (line == cfg->drop_barrier_line) { record_site(W, line); return pred; }
    record_site(W, line);
    if (W->done > 0)
        fail(W, f, fmt("%s at %s:%d: %d thread(s) of the block have exited and never arrive",
                       sync_name(op), file, line, W->done));
    unsigned waiting = W->warp_waiting[f->warp];
    for (int l = 0; l < 32; ++l) {
        if (!(waiting >> l & 1)) continue;
        Fiber* g = W->pool[f->warp * 32 + l];
        if (g->mask >> f->lane & 1)
            fail(W, f, fmt("waits at %s at %s:%d, so lane %d never arrives at %s at %s:%d "
                           "(mask 0x%08x) where lanes %s wait", sync_name(op), file, line,
                           f->lane, op_name(g->op), g->file, g->line, g->mask,
                           lanes(waiting & g->mask).c_str()));
    }
    if (W->bar_waiting > 0 && (W->bar_line != line || strcmp(W->bar_file, file) != 0 ||
                               W->bar_op != op))
        fail(W, f, fmt("divergent barriers: arrives at %s at %s:%d while %d thread(s) wait at "
                       "%s at %s:%d", sync_name(op), file, line, W->bar_waiting,
                       sync_name(W->bar_op), W->bar_file, W->bar_line));
    f->state = AT_BARRIER;
    f->gen = W->bar_gen;
    W->bar_file = file;
    W->bar_line = line;
    W->bar_op = op;
    W->bar_acc += pred != 0;
#if defined(EMU_TSAN)
    __tsan_release(&W->bar_sync[f->gen & 63]);
#endif
    if (++W->bar_waiting == W->n) {
        int result = op == EMU_SYNC_COUNT ? W->bar_acc
                   : op == EMU_SYNC_AND ? W->bar_acc == W->n
                   : op == EMU_SYNC_OR ? W->bar_acc > 0 : 0;
        std::vector<int> ids(W->n);
        for (int i = 0; i < W->n; ++i) {
            ids[i] = i;
            W->pool[i]->result = (unsigned long long)result;
        }
        W->bar_waiting = 0;
        W->bar_acc = 0;
        W->bar_gen++;
        push_ready(W, ids);
    }
    yield(W, f, false);
#if defined(EMU_TSAN)
    __tsan_acquire(&W->bar_sync[f->gen & 63]);
#endif
    return (int)f->result;
}

extern "C" void emu_syncthreads(const char* file, int line) {
    emu_syncthreads_op(EMU_SYNC_PLAIN, 0, file, line);
}

extern "C" unsigned emu_activemask(void) {
    Worker* W = current_fiber_worker("__activemask()");
    return W->warp_exists[W->cur->warp] & ~W->warp_done[W->cur->warp];
}

namespace {

bool is_shfl(int op) { return op <= EMU_SHFL_XOR; }

void complete_warp_op(Worker* W, int warp, unsigned mask, Fiber* caller) {
    Fiber* lane[32] = {nullptr};
    for (int l = 0; l < 32; ++l)
        if (mask >> l & 1) lane[l] = W->pool[warp * 32 + l];
    const Fiber* first = lane[__builtin_ctz(mask)];
    const int op = first->op;
    unsigned long long all = 0;   // reductions over the mask
    unsigned ballot = 0, and_ = 0xffffffffu, or_ = 0, xor_ = 0, umin = 0xffffffffu, umax = 0;
    int imin = 0x7fffffff, imax = -0x7fffffff - 1;
    bool all_equal = true;
    for (int l = 0; l < 32; ++l) {
        if (!lane[l]) continue;
        unsigned long long v = lane[l]->value;
        unsigned u = (unsigned)v;
        int s = (int)u;
        ballot |= (v != 0) << l;
        all += u;
        and_ &= u; or_ |= u; xor_ ^= u;
        umin = std::min(umin, u); umax = std::max(umax, u);
        imin = std::min(imin, s); imax = std::max(imax, s);
        if (v != first->value) all_equal = false;
    }
    for (int l = 0; l < 32; ++l) {
        Fiber* f = lane[l];
        if (!f) continue;
        unsigned long long r = 0;
        if (is_shfl(op)) {
            const int w = f->width, base = l & ~(w - 1);
            int src = l;
            switch (op) {
                case EMU_SHFL_IDX: src = base + (f->param & (w - 1)); break;
                case EMU_SHFL_UP: src = l - f->param >= base ? l - f->param : l; break;
                case EMU_SHFL_DOWN: src = l + f->param < base + w ? l + f->param : l; break;
                case EMU_SHFL_XOR: src = (l ^ f->param) & 31;
                                   src = src < base + w ? src : l; break;
            }
            if (!(mask >> src & 1))
                fail(W, caller, fmt("%s at %s:%d: lane %d reads lane %d, which is not in the "
                                    "mask 0x%08x (undefined)", op_name(op), f->file, f->line, l,
                                    src, mask));
            r = lane[src]->value;
        } else {
            switch (op) {
                case EMU_BALLOT: r = ballot; break;
                case EMU_ANY: r = ballot != 0; break;
                case EMU_ALL: r = ballot == mask; break;
                case EMU_SYNCWARP: r = 0; break;
                case EMU_MATCH_ANY: {
                    unsigned m = 0;
                    for (int k = 0; k < 32; ++k)
                        if (lane[k] && lane[k]->value == f->value) m |= 1u << k;
                    r = m;
                    break;
                }
                case EMU_MATCH_ALL: r = all_equal ? mask : 0; break;
                case EMU_REDUCE_ADD: r = (unsigned)all; break;
                case EMU_REDUCE_MIN_U: r = umin; break;
                case EMU_REDUCE_MAX_U: r = umax; break;
                case EMU_REDUCE_MIN_I: r = (unsigned)imin; break;
                case EMU_REDUCE_MAX_I: r = (unsigned)imax; break;
                case EMU_REDUCE_AND: r = and_; break;
                case EMU_REDUCE_OR: r = or_; break;
                case EMU_REDUCE_XOR: r = xor_; break;
            }
        }
        f->result = r;
    }
    std::vector<int> ids;
    for (int l = 0; l < 32; ++l)
        if (lane[l]) ids.push_back(warp * 32 + l);
    W->warp_waiting[warp] &= ~mask;
    W->warp_gen[warp * 32 + __builtin_ctz(mask)]++;
    push_ready(W, ids);
}

}  // namespace

extern "C" unsigned long long emu_warp(int op, unsigned mask, unsigned long long value, int param,
                                       int width, const char* file, int line) {
    Worker* W = current_fiber_worker(op_name(op));
    Fiber* f = W->cur;
    const int w = f->warp;
    const unsigned bit = 1u << f->lane;
    const char* name = op_name(op);
    if (!(mask & bit))
        fail(W, f, fmt("%s at %s:%d: the calling lane %d is not in the mask 0x%08x", name, file,
                       line, f->lane, mask));
    if (mask & ~W->warp_exists[w])
        fail(W, f, fmt("%s at %s:%d: the mask 0x%08x names lanes %s, which do not exist (the "
                       "block has %d threads)", name, file, line, mask,
                       lanes(mask & ~W->warp_exists[w]).c_str(), W->n));
    if (is_shfl(op) && (width < 1 || width > 32 || (width & (width - 1))))
        fail(W, f, fmt("%s at %s:%d: width %d is not a power of 2 in 1..32", name, file, line,
                       width));
    if (mask & W->warp_done[w])
        fail(W, f, fmt("%s at %s:%d (mask 0x%08x): lanes %s have exited and never arrive", name,
                       file, line, mask, lanes(mask & W->warp_done[w]).c_str()));
    for (int l = 0; l < 32; ++l) {
        if (!(mask >> l & 1) || l == f->lane) continue;
        Fiber* g = W->pool[w * 32 + l];
        if (g->state == AT_BARRIER)
            fail(W, f, fmt("%s at %s:%d (mask 0x%08x): lane %d waits at %s at %s:%d and never "
                           "arrives", name, file, line, mask, l, sync_name(W->bar_op),
                           W->bar_file, W->bar_line));
    }
    unsigned waiting = W->warp_waiting[w];
    for (int l = 0; l < 32; ++l) {
        if (!(waiting >> l & 1)) continue;
        Fiber* g = W->pool[w * 32 + l];
        if (((g->mask & bit) || (mask >> l & 1)) && (g->op != op || g->mask != mask))
            fail(W, f, fmt("divergent warp collective: lane %d calls %s at %s:%d with mask "
                           "0x%08x while lane %d waits at %s at %s:%d with mask 0x%08x",
                           f->lane, name, file, line, mask, l, op_name(g->op), g->file, g->line,
                           g->mask));
    }
    f->state = AT_WARP;
    f->op = op;
    f->mask = mask;
    f->value = value;
    f->param = param;
    f->width = width;
    f->file = file;
    f->line = line;
    W->warp_waiting[w] |= bit;
    const int leader = w * 32 + __builtin_ctz(mask);
    const unsigned gen = W->warp_gen[leader];
#if defined(EMU_TSAN)
    if (op == EMU_SYNCWARP) __tsan_release(&W->warp_sync[leader * 64 + (gen & 63)]);
#endif
    if ((W->warp_waiting[w] & mask) == mask) complete_warp_op(W, w, mask, f);
    yield(W, f, false);
#if defined(EMU_TSAN)
    if (op == EMU_SYNCWARP) __tsan_acquire(&W->warp_sync[leader * 64 + (gen & 63)]);
#else
    (void)gen;
#endif
    f->mask = 0;
    return f->result;
}

// ---- called by Python -----------------------------------------------------------------------
extern "C" int emu_runtime_abi(void) { return EMU_ABI_VERSION; }

extern "C" const char* emu_runtime_mode(void) {
#if defined(EMU_TSAN)
    return "tsan";
#elif defined(EMU_ASAN)
    return "asan";
#else
    return "plain";
#endif
}

// 0: ran (err empty), 1: a kernel fault (err says what)
extern "C" int emu_launch(const emu_kernel_info* kernel, void** args, const unsigned* grid,
                          const unsigned* block, emu_launch_cfg* cfg, char* err, size_t errlen) {
    Launch L;
    L.kernel = kernel;
    L.args = args;
    L.grid = emu_dim{grid[0], grid[1], grid[2]};
    L.block = emu_dim{block[0], block[1], block[2]};
    L.cfg = cfg;
    L.nblocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    L.id = g_launches.fetch_add(1);
    const int helpers = std::max(0, std::min<int>(cfg->workers - 1, (int)L.nblocks - 1));
#if !defined(EMU_TSAN) && !defined(EMU_ASAN)
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_fault;
    act.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&act.sa_mask);
    sigaction(SIGSEGV, &act, &g_old_segv);
    sigaction(SIGBUS, &act, &g_old_bus);
#endif
    if (helpers > 0) {
        std::lock_guard<std::mutex> lock(g_pool.mu);
        while ((int)g_pool.threads.size() < helpers) {
            g_pool.threads.emplace_back(helper_loop);
            g_pool.threads.back().detach();
        }
        g_pool.job = &L;
        g_pool.job_id++;
        g_pool.busy = (int)g_pool.threads.size();
        g_pool.start.notify_all();
    }
    run_blocks(&L);
    if (helpers > 0) {
        std::unique_lock<std::mutex> lock(g_pool.mu);
        g_pool.finished.wait(lock, [] { return g_pool.busy == 0; });
        g_pool.job = nullptr;
    }
#if !defined(EMU_TSAN) && !defined(EMU_ASAN)
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
#endif
    fflush(stdout);   // device printf
    cfg->nsites = 0;
    for (int s : L.sites)
        if (cfg->nsites < cfg->max_sites) cfg->sites_out[cfg->nsites++] = s;
    if (L.failed.load()) {
        snprintf(err, errlen, "%s", L.error.c_str());
        return 1;
    }
    if (errlen) err[0] = 0;
    return 0;
}
