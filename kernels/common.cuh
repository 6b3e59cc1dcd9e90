// common.cuh: what every gpugrad kernel family shares.
//
// - gg::index_t and GG_GRID_STRIDE: 64-bit grid-stride loops, correct for any launch
//   configuration, for n not a multiple of the block size and for n == 0.
// - gg::f16_t (float16 storage), gg::acc_t<T> (the type arithmetic runs in: float for
//   float16 and float32, double for float64), gg::load / gg::store between the two.
// - Math helpers overloaded for float and double (exp_, tanh_, erf_, log_, sqrt_).
// - gg::block_reduce: a shared-memory tree reduction over one block, for any blockDim.x
//   up to GG_MAX_BLOCK (no warp shuffles, so the CPU emulation runs it unchanged).
//
// The same text compiles three ways: NVRTC (CuPy's RawModule, at run time), nvcc (the
// compile check in the tests) and g++ as plain C++ after gpugrad/cuda/emulator/shim.h, which
// defines __global__, threadIdx, __syncthreads and friends for a CPU emulation. Nothing
// here includes a system header: NVRTC has none.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GG_ON_DEVICE 1
#elif !defined(GG_HOST_SHIM)
#error "kernels/*.cu compile with NVRTC or nvcc; as C++ they need gpugrad/cuda/emulator/shim.h included first"
#endif

#define GG_FN __device__ __forceinline__

// The largest blockDim.x a kernel that uses gg::block_reduce may be launched with.
#define GG_MAX_BLOCK 256

// for (gg::index_t i = global thread index; i < n; i += total threads in the grid)
#define GG_GRID_STRIDE(i, n)                                                           \
  for (gg::index_t i = (gg::index_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);   \
       i += (gg::index_t)blockDim.x * gridDim.x)

namespace gg {

typedef long long index_t;

// float16 as raw bits: no cuda_fp16.h needed (NVRTC may not find it); arithmetic runs in float.
struct f16_t {
  unsigned short bits;
};

#ifdef GG_ON_DEVICE
GG_FN float half_to_float(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
GG_FN unsigned short float_to_half(float f) {   // round to nearest even, as NumPy's astype
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
#else
GG_FN float half_to_float(unsigned short h) { return gg_shim_half_to_float(h); }
GG_FN unsigned short float_to_half(float f) { return gg_shim_float_to_half(f); }
#endif

// ----------------------------------------------------------------------------- storage vs arithmetic

template <class T> struct acc_type { typedef T type; };
template <> struct acc_type<f16_t> { typedef float type; };
template <class T> using acc_t = typename acc_type<T>::type;

GG_FN float load(const float* p, index_t i) { return p[i]; }
GG_FN double load(const double* p, index_t i) { return p[i]; }
GG_FN float load(const f16_t* p, index_t i) { return half_to_float(p[i].bits); }

GG_FN void store(float* p, index_t i, float v) { p[i] = v; }
GG_FN void store(double* p, index_t i, double v) { p[i] = v; }
GG_FN void store(f16_t* p, index_t i, float v) { p[i].bits = float_to_half(v); }

// The value as stored (rounded to T), back in the arithmetic type: sums of written
// gradients (bias gradients) add what was written, as the plain rule would.
GG_FN float rounded(float v, const float*) { return v; }
GG_FN double rounded(double v, const double*) { return v; }
GG_FN float rounded(float v, const f16_t*) { return half_to_float(float_to_half(v)); }

// ----------------------------------------------------------------------------- math

GG_FN float exp_(float x) { return expf(x); }
GG_FN double exp_(double x) { return exp(x); }
GG_FN float log_(float x) { return logf(x); }
GG_FN double log_(double x) { return log(x); }
GG_FN float tanh_(float x) { return tanhf(x); }
GG_FN double tanh_(double x) { return tanh(x); }
GG_FN float erf_(float x) { return erff(x); }
GG_FN double erf_(double x) { return erf(x); }
GG_FN float sqrt_(float x) { return sqrtf(x); }
GG_FN double sqrt_(double x) { return sqrt(x); }
// NOTE: NaN in either argument wins, as torch.maximum and np.maximum (fmaxf drops NaN)
GG_FN float max_(float a, float b) { return (a > b || a != a) ? a : b; }
GG_FN double max_(double a, double b) { return (a > b || a != a) ? a : b; }

// From bit patterns: NVRTC knows neither INFINITY nor __builtin_huge_valf.
template <class A> GG_FN A inf();
template <> GG_FN float inf<float>() { return __int_as_float(0x7f800000); }
template <> GG_FN double inf<double>() { return __longlong_as_double(0x7ff0000000000000LL); }
template <class A> GG_FN A nan();
template <> GG_FN float nan<float>() { return __int_as_float(0x7fc00000); }
template <> GG_FN double nan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }

// ----------------------------------------------------------------------------- errors found on the device

// A check that must not make the host wait: the kernel records the first bad value in
// flags[0..3] = {1, value, a, b} (a, b: what the error message needs, e.g. the class count),
// and the host raises at its next read from the device (gpugrad/cuda/checks.py). flags may
// be null (no check). The first error wins (atomicCAS on flags[0]); later ones change nothing.
GG_FN void flag_bad_value(long long* flags, long long value, long long a, long long b) {
  if (flags != nullptr && atomicCAS(reinterpret_cast<unsigned long long*>(flags), 0ull, 1ull) == 0ull) {
    flags[1] = value;
    flags[2] = a;
    flags[3] = b;
  }
}

// ----------------------------------------------------------------------------- block reduction

// Combine v over the threads of the block with op (associative); every thread gets the
// result. buf is a __shared__ array of at least blockDim.x elements. Any blockDim.x works
// (not only powers of two): each step folds the upper half onto the lower one.
template <class V, class Op>
GG_FN V block_reduce(V v, V* buf, Op op) {
  const unsigned t = threadIdx.x;
  buf[t] = v;
  __syncthreads();
  for (unsigned active = blockDim.x; active > 1;) {
    const unsigned half = (active + 1) / 2;
    if (t + half < active) buf[t] = op(buf[t], buf[t + half]);
    __syncthreads();
    active = half;
  }
  const V result = buf[0];
  __syncthreads();   // buf may be reused right after
  return result;
}

}  // namespace gg

// Entry points come in one flavour per storage dtype: NAME_f32, NAME_f64, NAME_f16.
// GG_FOR_EACH_DTYPE(X, ...) expands X(suffix, T, ...) for each of them.
#define GG_FOR_EACH_DTYPE(X, ...) \
  X(f32, float, __VA_ARGS__)      \
  X(f64, double, __VA_ARGS__)     \
  X(f16, gg::f16_t, __VA_ARGS__)
