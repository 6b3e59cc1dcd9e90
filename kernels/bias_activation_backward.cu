// bias_activation_backward.cu: the VJP of out = act(x + b), b broadcast over the last dim.
//
// x, out and g are (rows, cols), C-contiguous; b is (cols,). The gradient with respect to
// x is the activation's (activations.cuh) at z = x + b, and b's gradient is its column sum:
//
//   dx[r, c] = g[r, c] * act'(.)          from out[r, c] (relu, sigmoid, tanh)
//                                         or from z = x[r, c] + b[c] (leaky_relu, gelu)
//   db[c]    = sum_r dx[r, c]             (the sum of the dx values as written)
//
// the plain composite being add (+ broadcast_to, whose VJP is a sum over rows) then the
// activation. Two kernels, deterministic (no atomics; the CPU emulation runs them as is):
//
// 1. bias_ACT_backward: work item k = (chunk, c), grid-stride over chunks * cols; it walks
//    rows [chunk * rows_per_chunk, ...) of column c, writes dx, and stores the column's
//    partial sum in partial[chunk, c] (consecutive threads take consecutive columns, so
//    every row is read coalesced). rows_per_chunk >= 1 picks the parallelism.
// 2. bias_grad_reduce: db[c] = sum over chunks of partial[chunk, c], in chunk order.
//
// partial is (ceil(rows / rows_per_chunk), cols) in the arithmetic type A (float32 for
// float16). bias is read by the from-input activations only; pass b in any case.
#include "activations.cuh"

template <class Act, class T>
GG_FN void bias_activation_backward(const T* __restrict__ g, const T* __restrict__ saved,
                                    const T* __restrict__ bias, T* __restrict__ dx,
                                    gg::acc_t<T>* __restrict__ partial, gg::index_t rows, gg::index_t cols,
                                    gg::index_t rows_per_chunk, gg::acc_t<T> alpha) {
  typedef gg::acc_t<T> A;
  if (cols <= 0 || rows_per_chunk <= 0) return;
  const gg::index_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  GG_GRID_STRIDE(k, chunks * cols) {
    const gg::index_t chunk = k / cols;
    const gg::index_t c = k - chunk * cols;
    const gg::index_t r0 = chunk * rows_per_chunk;
    const gg::index_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    const A b = Act::kFromInput ? gg::load(bias, c) : A(0);
    A sum = A(0);
    for (gg::index_t r = r0; r < r1; ++r) {
      const gg::index_t i = r * cols + c;
      const A s = Act::kFromInput ? gg::load(saved, i) + b : gg::load(saved, i);
      const A d = Act::grad(gg::load(g, i), s, alpha);
      gg::store(dx, i, d);
      sum += gg::rounded(d, dx);
    }
    partial[k] = sum;     // k == chunk * cols + c
  }
}

// bias_ACT_backward_{f32,f64,f16}(const T* g, const T* saved, const T* bias, T* dx, A* partial,
//                                 long long rows, long long cols, long long rows_per_chunk, A alpha)
//   bias_relu_backward        saved = out    dx = where(out > 0, g, 0)
//   bias_leaky_relu_backward  saved = x      dx = where(z > 0, g, alpha * g)
//   bias_sigmoid_backward     saved = out    dx = g * out * (1 - out)
//   bias_tanh_backward        saved = out    dx = g * (1 - out * out)
//   bias_gelu_tanh_backward   saved = x      dx = g * gelu_tanh'(z)
//   bias_gelu_erf_backward    saved = x      dx = g * (Phi(z) + z phi(z))
#define GG_BIAS_ACTIVATION_ENTRY(SFX, T, NAME, ACT)                                               \
  extern "C" __global__ void NAME##_##SFX(const T* __restrict__ g, const T* __restrict__ saved,   \
                                          const T* __restrict__ bias, T* __restrict__ dx,         \
                                          gg::acc_t<T>* __restrict__ partial, long long rows,     \
                                          long long cols, long long rows_per_chunk,               \
                                          gg::acc_t<T> alpha) {                                   \
    bias_activation_backward<ACT>(g, saved, bias, dx, partial, rows, cols, rows_per_chunk, alpha); \
  }

GG_FOR_EACH_DTYPE(GG_BIAS_ACTIVATION_ENTRY, bias_relu_backward, gg::act::Relu)
GG_FOR_EACH_DTYPE(GG_BIAS_ACTIVATION_ENTRY, bias_leaky_relu_backward, gg::act::LeakyRelu)
GG_FOR_EACH_DTYPE(GG_BIAS_ACTIVATION_ENTRY, bias_sigmoid_backward, gg::act::Sigmoid)
GG_FOR_EACH_DTYPE(GG_BIAS_ACTIVATION_ENTRY, bias_tanh_backward, gg::act::Tanh)
GG_FOR_EACH_DTYPE(GG_BIAS_ACTIVATION_ENTRY, bias_gelu_tanh_backward, gg::act::GeluTanh)
GG_FOR_EACH_DTYPE(GG_BIAS_ACTIVATION_ENTRY, bias_gelu_erf_backward, gg::act::GeluErf)

// bias_grad_reduce_{f32,f64,f16}(const A* partial, T* db, long long chunks, long long cols)
//   db[c] = sum_{k < chunks} partial[k, c]      (0 when chunks == 0, i.e. rows == 0)
template <class T>
GG_FN void bias_grad_reduce(const gg::acc_t<T>* __restrict__ partial, T* __restrict__ db, gg::index_t chunks,
                            gg::index_t cols) {
  GG_GRID_STRIDE(c, cols) {
    gg::acc_t<T> sum = 0;
    for (gg::index_t k = 0; k < chunks; ++k) sum += partial[k * cols + c];
    gg::store(db, c, sum);
  }
}

#define GG_BIAS_REDUCE_ENTRY(SFX, T, UNUSED)                                                      \
  extern "C" __global__ void bias_grad_reduce_##SFX(const gg::acc_t<T>* __restrict__ partial,     \
                                                    T* __restrict__ db, long long chunks,         \
                                                    long long cols) {                             \
    bias_grad_reduce(partial, db, chunks, cols);                                                  \
  }

GG_FOR_EACH_DTYPE(GG_BIAS_REDUCE_ENTRY, 0)
