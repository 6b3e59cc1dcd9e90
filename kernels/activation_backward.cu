// activation_backward.cu: the VJP of an elementwise activation in one pass.
//
// Every entry has the signature
//
//     NAME_{f32,f64,f16}(const T* g, const T* saved, T* dx, long long n, A alpha)
//
// and computes dx[i] = g[i] * act'(.) from saved[i], for i < n, with a grid-stride loop
// (any launch configuration; nothing to do for n == 0). A is the arithmetic type
// (float for f16 and f32, double for f64); float16 loads and stores round to nearest even.
// The per-activation formulas live in activations.cuh.
//
//   relu_backward        saved = out     dx = where(out > 0, g, 0)        relu's plain VJP rule
//   leaky_relu_backward  saved = x       dx = where(x > 0, g, alpha * g)   alpha = negative slope
//   sigmoid_backward     saved = out     dx = g * out * (1 - out)          sigmoid's plain VJP rule
//   tanh_backward        saved = out     dx = g * (1 - out * out)          tanh's plain VJP rule
//   gelu_tanh_backward   saved = x       gelu(x, approximate='tanh')'s derivative times g
//   gelu_erf_backward    saved = x       gelu(x) = x Phi(x): dx = g * (Phi(x) + x phi(x))
//
// alpha is read by leaky_relu_backward only (pass 0 to the others).
#include "activations.cuh"

template <class Act, class T>
GG_FN void activation_backward(const T* __restrict__ g, const T* __restrict__ saved, T* __restrict__ dx,
                               gg::index_t n, gg::acc_t<T> alpha) {
  GG_GRID_STRIDE(i, n) {
    gg::store(dx, i, Act::grad(gg::load(g, i), gg::load(saved, i), alpha));
  }
}

#define GG_ACTIVATION_ENTRY(SFX, T, NAME, ACT)                                                   \
  extern "C" __global__ void NAME##_##SFX(const T* __restrict__ g, const T* __restrict__ saved,  \
                                          T* __restrict__ dx, long long n, gg::acc_t<T> alpha) { \
    activation_backward<ACT>(g, saved, dx, n, alpha);                                            \
  }

GG_FOR_EACH_DTYPE(GG_ACTIVATION_ENTRY, relu_backward, gg::act::Relu)
GG_FOR_EACH_DTYPE(GG_ACTIVATION_ENTRY, leaky_relu_backward, gg::act::LeakyRelu)
GG_FOR_EACH_DTYPE(GG_ACTIVATION_ENTRY, sigmoid_backward, gg::act::Sigmoid)
GG_FOR_EACH_DTYPE(GG_ACTIVATION_ENTRY, tanh_backward, gg::act::Tanh)
GG_FOR_EACH_DTYPE(GG_ACTIVATION_ENTRY, gelu_tanh_backward, gg::act::GeluTanh)
GG_FOR_EACH_DTYPE(GG_ACTIVATION_ENTRY, gelu_erf_backward, gg::act::GeluErf)
