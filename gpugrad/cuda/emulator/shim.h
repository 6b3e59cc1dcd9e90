// shim.h: just enough CUDA for kernels/*.cu to compile and run as plain C++ on the CPU.
//
// Include it before a kernel file; compile with g++ -std=c++17 -shared -fPIC -pthread.
// A "launch" of grid x block threads runs the blocks one after another; within a block,
// each thread is a std::thread (one plain call when blockDim.x == 1), so __syncthreads
// is a real barrier and __shared__ (a static local) is shared by the block's threads, as
// on the GPU. threadIdx and blockIdx are thread_local; blockDim and gridDim are global.
//
// gg_shim_launch(kernel, grid, block, argv) calls the kernel with its arguments read
// from argv[i] (a pointer to the i-th argument's value), so one generic extern "C"
// launcher per entry point serves every signature; gg_shim_signature describes the
// parameters so the Python side can check what it passes (as CuPy would not).
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define GG_HOST_SHIM 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

// ----------------------------------------------------------------------------- barrier

struct GgShimBarrier {
  std::mutex mu;
  std::condition_variable cv;
  unsigned count = 1, waiting = 0, generation = 0;
  bool failed = false;

  void wait() {
    std::unique_lock<std::mutex> lock(mu);
    const unsigned gen = generation;
    if (++waiting == count) {
      waiting = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    // A __syncthreads that not every thread reaches hangs on a GPU; here it fails the launch.
    if (!cv.wait_for(lock, std::chrono::seconds(20), [&] { return generation != gen; })) {
      failed = true;
      ++generation;
      waiting = 0;
      cv.notify_all();
    }
  }
};

inline GgShimBarrier gg_shim_barrier;

inline void __syncthreads() { gg_shim_barrier.wait(); }

// ----------------------------------------------------------------------------- intrinsics

inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
}
inline double __longlong_as_double(long long i) {
  double d;
  memcpy(&d, &i, sizeof d);
  return d;
}

inline std::mutex gg_shim_atomic_mutex;
template <class T>
inline T atomicAdd(T* address, T value) {
  std::lock_guard<std::mutex> lock(gg_shim_atomic_mutex);
  const T old = *address;
  *address = old + value;
  return old;
}

template <class T>
inline T atomicCAS(T* address, T compare, T value) {
  std::lock_guard<std::mutex> lock(gg_shim_atomic_mutex);
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}

// float16 <-> float32 in software, round to nearest even (what PTX cvt.rn.f16.f32 and
// NumPy's astype(float16) do). Tested against NumPy over all 65536 half values.
inline float gg_shim_half_to_float(unsigned short h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  uint32_t bits;
  if (e == 0) {                                    // zero or subnormal: m * 2^-24, exact
    const float f = ldexpf((float)m, -24);
    return sign ? -f : f;
  }
  if (e == 31) {
    bits = sign | 0x7f800000u | (m << 13);         // inf, NaN (payload kept)
  } else {
    bits = sign | ((e - 15 + 127) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

inline unsigned short gg_shim_float_to_half(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));   // NaN
  if (ax >= 0x47800000u) return (unsigned short)(sign | 0x7c00u);    // >= 65536 and inf: inf
  if (ax < 0x38800000u) {                          // below 2^-14: a subnormal half or zero
    float a;
    memcpy(&a, &ax, sizeof a);
    return (unsigned short)(sign | (uint32_t)nearbyintf(a * 16777216.0f));   // * 2^24, ties to even
  }
  uint32_t h = ((((ax >> 23) - 127 + 15) << 10) | ((ax & 0x7fffffu) >> 13));
  const uint32_t rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;   // a carry into the exponent is right
  return (unsigned short)(sign | h);
}

// ----------------------------------------------------------------------------- launching

template <class... A, std::size_t... I>
inline void gg_shim_call(void (*kernel)(A...), void** argv, std::index_sequence<I...>) {
  kernel(*static_cast<std::remove_cv_t<A>*>(argv[I])...);
}

// Run kernel<<<grid, block>>>(args...); returns 0, or 1 if a barrier timed out.
template <class... A>
inline int gg_shim_launch(void (*kernel)(A...), unsigned grid, unsigned block, void** argv) {
  gridDim = dim3{grid, 1, 1};
  blockDim = dim3{block, 1, 1};
  gg_shim_barrier.count = block;
  gg_shim_barrier.waiting = 0;
  gg_shim_barrier.failed = false;
  for (unsigned b = 0; b < grid; ++b) {
    if (block == 1) {
      blockIdx = dim3{b, 0, 0};
      threadIdx = dim3{0, 0, 0};
      gg_shim_call(kernel, argv, std::index_sequence_for<A...>{});
      continue;
    }
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
      threads.emplace_back([=] {
        blockIdx = dim3{b, 0, 0};
        threadIdx = dim3{t, 0, 0};
        gg_shim_call(kernel, argv, std::index_sequence_for<A...>{});
      });
    }
    for (auto& th : threads) th.join();
  }
  return gg_shim_barrier.failed ? 1 : 0;
}

// Describe each parameter: kind[i] = 0 an integer scalar, 3 a floating-point scalar,
// 1 a pointer to const, 2 a pointer, 4 a struct passed by value; size[i] = sizeof the
// scalar, the struct or the pointed-to element; floating[i] = 1 for float/double, 0 for an
// integer, 2 for another type (gg::f16_t, a struct). Returns the arity.
template <class T>
inline int gg_shim_floating() {
  return std::is_floating_point_v<T> ? 1 : std::is_integral_v<T> ? 0 : 2;
}

template <class P>
inline void gg_shim_describe(int* kind, int* size, int* floating) {
  if constexpr (std::is_pointer_v<P>) {
    using E = std::remove_pointer_t<P>;
    *kind = std::is_const_v<E> ? 1 : 2;
    *size = (int)sizeof(E);
    *floating = gg_shim_floating<std::remove_cv_t<E>>();
  } else if constexpr (std::is_class_v<P>) {
    *kind = 4;
    *size = (int)sizeof(P);
    *floating = 2;
  } else {
    *kind = std::is_floating_point_v<P> ? 3 : 0;
    *size = (int)sizeof(P);
    *floating = gg_shim_floating<P>();
  }
}

template <class... A>
inline int gg_shim_signature(void (*)(A...), int* kind, int* size, int* floating) {
  int i = 0;
  ((gg_shim_describe<A>(kind + i, size + i, floating + i), ++i), ...);
  return (int)sizeof...(A);
}
