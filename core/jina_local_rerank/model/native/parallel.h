// Spreading a kernel's work over the calling thread's OpenMP threads.
//
// Not at::parallel_for: this library keeps its own copy of that header code's per-thread "initialized" flag, so
// its first call on a thread resets the thread's count to the process-wide one, which would give each of the
// engine's single-threaded CPU workers two threads. A parallel region of our own takes the calling thread's count
// as it is.

#pragma once

#include <omp.h>

#include <cstdint>

namespace jina_local_rerank {

// f(i) for every i in [0, n), on the calling thread's threads where there are at least 2 * grain items: handed out
// one at a time with `dynamic` (items of uneven cost), else in equal contiguous blocks.
template <typename F>
inline void parallel_for_each(int64_t n, int64_t grain, bool dynamic, const F& f) {
  if (n < 2 * grain || omp_get_max_threads() < 2 || omp_in_parallel()) {
    for (int64_t i = 0; i < n; ++i) f(i);
  } else if (dynamic) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) f(i);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) f(i);
  }
}

}  // namespace jina_local_rerank
