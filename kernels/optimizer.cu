// optimizer.cu: one pass per parameter for SGD, Adam and AdamW (PyTorch's formulas), and
// each of them over up to GG_MULTI_TENSORS parameters in one launch (the *_multi kernels).
//
// Each kernel reads the parameter, its gradient and its state once and writes the new
// parameter and state in place (grid-stride; nothing to do for n == 0). Scalars that
// depend on the step count (Adam's bias corrections) are computed by the caller in
// double and passed in the arithmetic type A (float for f16 and f32, double for f64).
// The state has the parameter's dtype, as in PyTorch. The plain reference is
// torch.optim's single-tensor loop, written out in the comments below.
#include "common.cuh"

// sgd_step(T* param, const T* grad, T* buf, long long n, A lr, A momentum, A dampening,
//          A weight_decay, int nesterov, int maximize, int first_step)
//
//   d = maximize ? -grad : grad
//   d = d + weight_decay * param
//   if momentum != 0:
//       buf = d                                             on the first step (first_step != 0)
//       buf = momentum * buf + (1 - dampening) * d          afterwards
//       d = nesterov ? d + momentum * buf : buf
//   param = param - lr * d
//
// buf is neither read nor written when momentum == 0 (pass any pointer, e.g. param).
template <class T>
GG_FN void sgd_step(T* __restrict__ param, const T* __restrict__ grad, T* buf, gg::index_t n, gg::acc_t<T> lr,
                    gg::acc_t<T> momentum, gg::acc_t<T> dampening, gg::acc_t<T> weight_decay, int nesterov,
                    int maximize, int first_step) {
  typedef gg::acc_t<T> A;
  GG_GRID_STRIDE(i, n) {
    const A p = gg::load(param, i);
    A d = gg::load(grad, i);
    if (maximize) d = -d;
    if (weight_decay != A(0)) d += weight_decay * p;
    if (momentum != A(0)) {
      A b;
      if (first_step) {
        b = d;
      } else {
        b = momentum * gg::load(buf, i) + (A(1) - dampening) * d;
      }
      gg::store(buf, i, b);
      b = gg::rounded(b, buf);                // continue with the buffer as stored
      d = nesterov ? d + momentum * b : b;
    }
    gg::store(param, i, p - lr * d);
  }
}

// adam_step / adamw_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq,
//                        long long n, A lr, A beta1, A beta2, A eps, A weight_decay,
//                        A step_size, A bias_correction2_sqrt, int amsgrad, int maximize)
//
// With step the 1-based step count, computed by the caller:
//   step_size = lr / (1 - beta1^step),   bias_correction2_sqrt = sqrt(1 - beta2^step)
//
//   d = maximize ? -grad : grad
//   adam:  d = d + weight_decay * param                      (L2 penalty in the gradient)
//   adamw: param = param * (1 - lr * weight_decay)           (decoupled weight decay)
//   m = lerp(m, d, 1 - beta1)                                (torch.lerp's two-sided form)
//   v = beta2 * v + (1 - beta2) * d * d
//   amsgrad: vmax = max(vmax, v); v_hat = vmax, else v_hat = v
//   param = param - step_size * m / (sqrt(v_hat) / bias_correction2_sqrt + eps)
//
// max_exp_avg_sq is neither read nor written without amsgrad (pass any pointer).
template <bool kDecoupled, class T>
GG_FN void adam_step(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                     T* __restrict__ exp_avg_sq, T* max_exp_avg_sq, gg::index_t n, gg::acc_t<T> lr,
                     gg::acc_t<T> beta1, gg::acc_t<T> beta2, gg::acc_t<T> eps, gg::acc_t<T> weight_decay,
                     gg::acc_t<T> step_size, gg::acc_t<T> bias_correction2_sqrt, int amsgrad, int maximize) {
  typedef gg::acc_t<T> A;
  const A w1 = A(1) - beta1;
  const A w2 = A(1) - beta2;
  const A decay = A(1) - lr * weight_decay;
  GG_GRID_STRIDE(i, n) {
    A p = gg::load(param, i);
    A d = gg::load(grad, i);
    if (maximize) d = -d;
    if (kDecoupled) {
      if (weight_decay != A(0)) p = gg::rounded(p * decay, param);
    } else if (weight_decay != A(0)) {
      d += weight_decay * p;
    }
    const A m0 = gg::load(exp_avg, i);
    A m = w1 < A(0.5) ? m0 + w1 * (d - m0) : d - (d - m0) * (A(1) - w1);
    gg::store(exp_avg, i, m);
    m = gg::rounded(m, exp_avg);
    A v = gg::load(exp_avg_sq, i) * beta2 + w2 * d * d;
    gg::store(exp_avg_sq, i, v);
    v = gg::rounded(v, exp_avg_sq);
    if (amsgrad) {
      v = gg::max_(gg::load(max_exp_avg_sq, i), v);
      gg::store(max_exp_avg_sq, i, v);
    }
    const A denom = gg::sqrt_(v) / bias_correction2_sqrt + eps;
    gg::store(param, i, p - step_size * m / denom);
  }
}

// sgd_step_multi(gg::SgdTensors tensors, A lr, A momentum, A dampening, A weight_decay,
//                int nesterov, int maximize, int first_step)
//
// sgd_step for tensors.count parameters (of one dtype, all on their first momentum step or
// none) in one launch; the struct and the reasons are adam_step_multi's, below.
//
// adam_step_multi / adamw_step_multi(gg::AdamTensors tensors, A lr, A beta1, A beta2, A eps,
//                                    A weight_decay, A step_size, A bias_correction2_sqrt,
//                                    int amsgrad, int maximize)
//
// adam_step for tensors.count parameters (of one dtype, at one step count) in one launch:
// a step of a model's parameters is one kernel instead of one per parameter, which is what
// bounds a small model's step on the GPU (each launch costs microseconds of host time).
// The addresses and sizes come by value in one struct (a kernel's parameters may take
// 4 KB; this one is 1.5 KB), so nothing is copied to the device first. Every thread walks
// the tensors in order, grid-striding over each.
#define GG_MULTI_TENSORS 32
namespace gg {
struct AdamTensors {                              // the host packs the same layout (numpy, align=True)
  unsigned long long param[GG_MULTI_TENSORS];     // device addresses
  unsigned long long grad[GG_MULTI_TENSORS];
  unsigned long long exp_avg[GG_MULTI_TENSORS];
  unsigned long long exp_avg_sq[GG_MULTI_TENSORS];
  unsigned long long max_exp_avg_sq[GG_MULTI_TENSORS];   // any address without amsgrad
  long long size[GG_MULTI_TENSORS];
  long long count;                                // tensors used, <= GG_MULTI_TENSORS
};
}  // namespace gg

namespace gg {
struct SgdTensors {                               // the host packs the same layout (numpy, align=True)
  unsigned long long param[GG_MULTI_TENSORS];
  unsigned long long grad[GG_MULTI_TENSORS];
  unsigned long long buf[GG_MULTI_TENSORS];       // any address without momentum
  long long size[GG_MULTI_TENSORS];
  long long count;
};
}  // namespace gg

template <class T>
GG_FN void sgd_step_multi(const gg::SgdTensors& t, gg::acc_t<T> lr, gg::acc_t<T> momentum,
                          gg::acc_t<T> dampening, gg::acc_t<T> weight_decay, int nesterov, int maximize,
                          int first_step) {
  for (long long k = 0; k < t.count && k < GG_MULTI_TENSORS; ++k) {
    sgd_step(reinterpret_cast<T*>(t.param[k]), reinterpret_cast<const T*>(t.grad[k]),
             reinterpret_cast<T*>(t.buf[k]), t.size[k], lr, momentum, dampening, weight_decay, nesterov,
             maximize, first_step);
  }
}

template <bool kDecoupled, class T>
GG_FN void adam_step_multi(const gg::AdamTensors& t, gg::acc_t<T> lr, gg::acc_t<T> beta1, gg::acc_t<T> beta2,
                           gg::acc_t<T> eps, gg::acc_t<T> weight_decay, gg::acc_t<T> step_size,
                           gg::acc_t<T> bias_correction2_sqrt, int amsgrad, int maximize) {
  for (long long k = 0; k < t.count && k < GG_MULTI_TENSORS; ++k) {
    adam_step<kDecoupled>(reinterpret_cast<T*>(t.param[k]), reinterpret_cast<const T*>(t.grad[k]),
                          reinterpret_cast<T*>(t.exp_avg[k]), reinterpret_cast<T*>(t.exp_avg_sq[k]),
                          reinterpret_cast<T*>(t.max_exp_avg_sq[k]), t.size[k], lr, beta1, beta2, eps,
                          weight_decay, step_size, bias_correction2_sqrt, amsgrad, maximize);
  }
}

#define GG_SGD_ENTRIES(SFX, T, UNUSED)                                                             \
  extern "C" __global__ void sgd_step_##SFX(T* __restrict__ param, const T* __restrict__ grad,   \
                                            T* buf, long long n, gg::acc_t<T> lr,                 \
                                            gg::acc_t<T> momentum, gg::acc_t<T> dampening,        \
                                            gg::acc_t<T> weight_decay, int nesterov,              \
                                            int maximize, int first_step) {                       \
    sgd_step(param, grad, buf, n, lr, momentum, dampening, weight_decay, nesterov, maximize,       \
             first_step);                                                                         \
  }                                                                                               \
  extern "C" __global__ void sgd_step_multi_##SFX(                                                \
      gg::SgdTensors tensors, gg::acc_t<T> lr, gg::acc_t<T> momentum, gg::acc_t<T> dampening,     \
      gg::acc_t<T> weight_decay, int nesterov, int maximize, int first_step) {                    \
    sgd_step_multi<T>(tensors, lr, momentum, dampening, weight_decay, nesterov, maximize,         \
                      first_step);                                                                \
  }

// NAME_SFX and NAME_multi_SFX for adam_step (DECOUPLED false) and adamw_step (true)
#define GG_ADAM_ENTRIES(SFX, T, NAME, DECOUPLED)                                                   \
  extern "C" __global__ void NAME##_##SFX(                                                        \
      T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,                 \
      T* __restrict__ exp_avg_sq, T* max_exp_avg_sq, long long n, gg::acc_t<T> lr,                \
      gg::acc_t<T> beta1, gg::acc_t<T> beta2, gg::acc_t<T> eps, gg::acc_t<T> weight_decay,        \
      gg::acc_t<T> step_size, gg::acc_t<T> bias_correction2_sqrt, int amsgrad, int maximize) {    \
    adam_step<DECOUPLED>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, lr, beta1, beta2,   \
                         eps, weight_decay, step_size, bias_correction2_sqrt, amsgrad, maximize); \
  }                                                                                               \
  extern "C" __global__ void NAME##_multi_##SFX(                                                  \
      gg::AdamTensors tensors, gg::acc_t<T> lr, gg::acc_t<T> beta1, gg::acc_t<T> beta2,           \
      gg::acc_t<T> eps, gg::acc_t<T> weight_decay, gg::acc_t<T> step_size,                        \
      gg::acc_t<T> bias_correction2_sqrt, int amsgrad, int maximize) {                            \
    adam_step_multi<DECOUPLED, T>(tensors, lr, beta1, beta2, eps, weight_decay, step_size,        \
                                  bias_correction2_sqrt, amsgrad, maximize);                      \
  }

GG_FOR_EACH_DTYPE(GG_SGD_ENTRIES, 0)
GG_FOR_EACH_DTYPE(GG_ADAM_ENTRIES, adam_step, false)
GG_FOR_EACH_DTYPE(GG_ADAM_ENTRIES, adamw_step, true)
