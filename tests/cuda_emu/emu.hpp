// Runs CUDA kernels on the CPU, one block at a time, each CUDA thread a
// cooperative fiber (ucontext) of the calling host thread: enough of the CUDA
// programming model for kernels/llmint8.cu (threadIdx/blockIdx,
// __syncthreads, __shared__, warp shuffles and ballots, atomics) that its
// logic can be checked on machines without a GPU (tests/cuda_emu/
// check_kernels.cpp, and the emulated GPU of tests/cuda_emu/fake_cuda.cpp).
// Not a performance or memory-model emulator: the PTX arithmetic helpers are
// replaced by their host versions in the kernel file itself.
//
// Scheduling: the threads of a block run in rounds, in order; in each round
// every thread runs until its next synchronization point (__syncthreads, or
// the two halves of a warp exchange) or its end. So everything written before
// a barrier is seen after it, and a missing barrier shows deterministically:
// a thread then reads before the later threads of its block have written.
#pragma once

#include <ucontext.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

#define __global__
#define __grid_constant__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block runs at a time, so a function-scope static is that block's shared memory.
#define __shared__ static

namespace emu {

// One CUDA thread: its context and stack (reused across blocks and launches).
struct Fiber {
    ucontext_t context;
    std::unique_ptr<char[]> stack;
    bool done = false;
};

const size_t STACK_BYTES = 256 << 10;

struct Scheduler {
    ucontext_t main;
    std::vector<Fiber> fibers;
    unsigned current = 0;
    std::function<void()> job;
};
inline thread_local Scheduler scheduler;

inline void fiber_entry() {
    scheduler.job();
    scheduler.fibers[scheduler.current].done = true;
    // Returning resumes `main` (uc_link).
}

// Gives the turn back until the next round.
inline void yield() {
    Scheduler &s = scheduler;
    swapcontext(&s.fibers[s.current].context, &s.main);
}

inline thread_local uint32_t warp_exchange[32][32];

// Each emulated thread publishes its value, then reads its partner's.
inline uint32_t exchange(uint32_t v, unsigned partner) {
    const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
    warp_exchange[w][l] = v;
    yield();
    const uint32_t r = warp_exchange[w][partner];
    yield();
    return r;
}

// Launches `kernel<<<grid, block>>>(args...)`: blocks one after another, the
// threads of a block as fibers run in rounds.
template <class... P, class... A>
void launch(void (*kernel)(P...), unsigned grid, unsigned block, A... args) {
    Scheduler &s = scheduler;
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
    s.job = [=] { kernel(static_cast<P>(args)...); };
    if (s.fibers.size() < block) s.fibers.resize(block);
    for (unsigned b = 0; b < grid; b++) {
        blockIdx = dim3{b, 0, 0};
        for (unsigned t = 0; t < block; t++) {
            Fiber &f = s.fibers[t];
            if (!f.stack) f.stack.reset(new char[STACK_BYTES]);
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = f.stack.get();
            f.context.uc_stack.ss_size = STACK_BYTES;
            f.context.uc_link = &s.main;
            makecontext(&f.context, fiber_entry, 0);
            f.done = false;
        }
        for (unsigned running = block; running > 0;) {
            running = 0;
            for (unsigned t = 0; t < block; t++) {
                if (s.fibers[t].done) continue;
                s.current = t;
                threadIdx = dim3{t, 0, 0};
                swapcontext(&s.main, &s.fibers[t].context);
                running += s.fibers[t].done ? 0 : 1;
            }
        }
    }
}
}  // namespace emu

inline void __syncthreads() { emu::yield(); }
inline unsigned __shfl_xor_sync(unsigned, unsigned v, int offset) {
    return emu::exchange(v, (threadIdx.x % 32) ^ (unsigned)offset);
}
inline unsigned __ballot_sync(unsigned, bool predicate) {
    const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
    emu::warp_exchange[w][l] = predicate ? 1u : 0u;
    emu::yield();
    unsigned mask = 0;
    for (unsigned i = 0; i < 32; i++) mask |= emu::warp_exchange[w][i] << i;
    emu::yield();
    return mask;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline unsigned atomicOr(unsigned *address, unsigned v) { return std::atomic_ref<unsigned>(*address).fetch_or(v); }
inline int atomicMin(int *address, int v) {
    std::atomic_ref<int> r(*address);
    int old = r.load();
    while (v < old && !r.compare_exchange_weak(old, v)) {
    }
    return old;
}
