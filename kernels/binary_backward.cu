// binary_backward.cu: both input gradients of a binary elementwise op in one pass.
//
// The inputs have equal shapes (gpugrad records an explicit broadcast_to node before a
// broadcasting op, so rules and kernels never un-broadcast). One read of each saved
// array and of g, one write of each gradient, where composing the two products of the
// plain rule would read g twice. Grid-stride; nothing to do for n == 0.
// Use them when both gradients are needed; for one, the plain rule is already one pass.
#include "common.cuh"

// multiply_backward: out = x * y.
//   gx = g * y,  gy = g * x          (multiply's plain VJP rule: (g * y, g * x))
template <class T>
GG_FN void multiply_backward(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ y,
                             T* __restrict__ gx, T* __restrict__ gy, gg::index_t n) {
  GG_GRID_STRIDE(i, n) {
    const gg::acc_t<T> gi = gg::load(g, i);
    gg::store(gx, i, gi * gg::load(y, i));
    gg::store(gy, i, gi * gg::load(x, i));
  }
}

// divide_backward: out = x / y, from the saved y and out (divide saves ("y", "out")).
//   gx = g / y,  gy = -gx * out       (= -g x / y^2; divide's plain VJP rule, term by term)
template <class T>
GG_FN void divide_backward(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ out,
                           T* __restrict__ gx, T* __restrict__ gy, gg::index_t n) {
  GG_GRID_STRIDE(i, n) {
    const gg::acc_t<T> gxi = gg::load(g, i) / gg::load(y, i);
    gg::store(gx, i, gxi);
    gg::store(gy, i, -gxi * gg::load(out, i));
  }
}

// NAME_{f32,f64,f16}(const T* g, const T* a, const T* b, T* ga, T* gb, long long n)
//   multiply_backward: (a, b) = (x, y);  divide_backward: (a, b) = (y, out)
#define GG_BINARY_ENTRY(SFX, T, NAME)                                                            \
  extern "C" __global__ void NAME##_##SFX(const T* __restrict__ g, const T* __restrict__ a,      \
                                          const T* __restrict__ b, T* __restrict__ ga,           \
                                          T* __restrict__ gb, long long n) {                     \
    NAME(g, a, b, ga, gb, n);                                                                    \
  }

GG_FOR_EACH_DTYPE(GG_BINARY_ENTRY, multiply_backward)
GG_FOR_EACH_DTYPE(GG_BINARY_ENTRY, divide_backward)
