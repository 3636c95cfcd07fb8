// Runs CUDA kernels on the CPU, one block at a time, each CUDA thread a host
// thread: enough of the CUDA programming model for kernels/llmint8.cu
// (threadIdx/blockIdx, __syncthreads, __shared__, warp shuffles and ballots,
// atomics) that its logic can be checked on machines without a GPU
// (tests/cuda_emulation.rs). Not a performance or memory-model emulator: the
// PTX arithmetic helpers are replaced by their host versions in the kernel
// file itself.
#pragma once

#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block runs at a time, so a function-scope static is that block's shared memory.
#define __shared__ static

namespace emu {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline uint32_t warp_exchange[32][32];

inline void warp_sync() { warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }

// Each emulated thread publishes its value, then reads its partner's.
inline uint32_t exchange(uint32_t v, unsigned partner) {
    const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
    warp_exchange[w][l] = v;
    warp_sync();
    const uint32_t r = warp_exchange[w][partner];
    warp_sync();
    return r;
}

// The host threads standing in for one block's CUDA threads, created once
// per block size and reused for every block of every launch.
struct Team {
    unsigned size;
    std::barrier<> start, done;
    std::function<void()> job;
    unsigned block = 0;
    bool quit = false;
    std::vector<std::thread> threads;

    explicit Team(unsigned size) : size(size), start(size + 1), done(size + 1) {
        for (unsigned t = 0; t < size; t++) {
            threads.emplace_back([this, t] {
                for (;;) {
                    start.arrive_and_wait();
                    if (quit) return;
                    threadIdx = dim3{t, 0, 0};
                    blockIdx = dim3{block, 0, 0};
                    job();
                    done.arrive_and_wait();
                }
            });
        }
    }
    ~Team() {
        quit = true;
        start.arrive_and_wait();
        for (auto &t : threads) t.join();
    }
};

inline Team &team(unsigned size) {
    static std::map<unsigned, std::unique_ptr<Team>> teams;
    auto &t = teams[size];
    if (!t) t = std::make_unique<Team>(size);
    return *t;
}

// Launches `kernel<<<grid, block>>>(args...)`: blocks one after another, the
// threads of a block as host threads.
template <class... P, class... A>
void launch(void (*kernel)(P...), unsigned grid, unsigned block, A... args) {
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
    Team &t = team(block);
    t.job = [=] { kernel(static_cast<P>(args)...); };
    for (unsigned b = 0; b < grid; b++) {
        block_barrier = std::make_unique<std::barrier<>>(block);
        warp_barriers.clear();
        for (unsigned w = 0; w < (block + 31) / 32; w++) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
        t.block = b;
        t.start.arrive_and_wait();
        t.done.arrive_and_wait();
    }
}
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
inline unsigned __shfl_xor_sync(unsigned, unsigned v, int offset) {
    return emu::exchange(v, (threadIdx.x % 32) ^ (unsigned)offset);
}
inline unsigned __ballot_sync(unsigned, bool predicate) {
    const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
    emu::warp_exchange[w][l] = predicate ? 1u : 0u;
    emu::warp_sync();
    unsigned mask = 0;
    for (unsigned i = 0; i < 32; i++) mask |= emu::warp_exchange[w][i] << i;
    emu::warp_sync();
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
