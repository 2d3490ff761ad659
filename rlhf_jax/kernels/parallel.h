// Splitting a kernel's work between the threads of XLA's CPU intra-op pool.
#ifndef RLHF_JAX_KERNELS_PARALLEL_H_
#define RLHF_JAX_KERNELS_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace rlhf_jax {

inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Runs body(first, last) over [0, items) in chunks of consecutive items.
// Chunks are claimed from a shared counter by the calling thread and by
// helpers scheduled on the pool; the caller waits only for chunks already
// claimed, so a helper that never gets a thread cannot stall the call.
// `parallel` false (small work) runs everything on the calling thread.
template <typename Body>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t items, bool parallel, Body body) {
  if (items <= 0) return;
  struct Shared {
    Body body;
    int64_t items, chunk, chunks;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    explicit Shared(Body b) : body(std::move(b)) {}
    void Work() {
      for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
        body(c * chunk, std::min(items, (c + 1) * chunk));
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  const int64_t threads = parallel ? std::min<int64_t>(pool.num_threads(), items) : 1;
  auto shared = std::make_shared<Shared>(std::move(body));
  shared->items = items;
  shared->chunks = std::max<int64_t>(1, std::min<int64_t>(items, threads * 4));
  shared->chunk = (items + shared->chunks - 1) / shared->chunks;
  shared->chunks = (items + shared->chunk - 1) / shared->chunk;
  for (int64_t i = 1; i < threads; ++i) pool.Schedule([shared] { shared->Work(); });
  shared->Work();
  // Helpers finishing their last chunk: spin briefly, then yield the core (a
  // helper may be waiting for it when the pool has more threads than cores).
  for (int64_t spins = 0; shared->done.load(std::memory_order_acquire) < shared->chunks; ++spins) {
    if (spins < 4096) {
      Pause();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace rlhf_jax

#endif  // RLHF_JAX_KERNELS_PARALLEL_H_
