// bias_activation_forward.cu: out = act(z + b) in place, b broadcast over the last dim.
//
// z is (rows, cols), C-contiguous: the product x W^T of a Linear layer, which this kernel
// turns into the layer's activated output. One pass instead of the two of `z += b` then
// `act(z)` (ops.linear_activation's forward on CUDA):
//
//     z[i] = act(z[i] + b[i % cols])      for i < n = rows * cols
//
// with the add and the activation in the arithmetic type A (float for f16 and f32, double
// for f64) and one rounding at the store. The formulas are activations.cuh's forward:
//
//   bias_relu_forward      max(z + b, 0)                 (NaN stays NaN, as numpy.maximum)
//   bias_sigmoid_forward   sigmoid(z + b), exact for very negative z + b   (gpugrad's sigmoid op)
//   bias_tanh_forward      tanh(z + b)
//
// Entry points: bias_ACT_forward_{f32,f64,f16}(T* z, const T* bias, long long n, long long cols);
// grid-stride over n, nothing to do for n == 0 or cols == 0.
#include "activations.cuh"

template <class Act, class T>
GG_FN void bias_activation_forward(T* __restrict__ z, const T* __restrict__ bias, gg::index_t n,
                                   gg::index_t cols) {
  typedef gg::acc_t<T> A;
  if (cols <= 0) return;
  GG_GRID_STRIDE(i, n) {
    const A v = gg::load(z, i) + gg::load(bias, i % cols);
    gg::store(z, i, Act::forward(v));
  }
}

#define GG_BIAS_FORWARD_ENTRY(SFX, T, NAME, ACT)                                                   \
  extern "C" __global__ void NAME##_##SFX(T* __restrict__ z, const T* __restrict__ bias, long long n, \
                                          long long cols) {                                         \
    bias_activation_forward<ACT>(z, bias, n, cols);                                                 \
  }

GG_FOR_EACH_DTYPE(GG_BIAS_FORWARD_ENTRY, bias_relu_forward, gg::act::Relu)
GG_FOR_EACH_DTYPE(GG_BIAS_FORWARD_ENTRY, bias_sigmoid_forward, gg::act::Sigmoid)
GG_FOR_EACH_DTYPE(GG_BIAS_FORWARD_ENTRY, bias_tanh_forward, gg::act::Tanh)
