// softmax_cross_entropy.cu: cross-entropy of softmax(logits) against class indices.
//
// logits is (rows, cols), C-contiguous; target is (rows,) int64. A row whose target equals
// ignore_index has loss 0 and gradient 0 and is not counted. eps is the label smoothing:
// the target distribution is q_c = (1 - eps) [c == t] + eps / cols (PyTorch's
// cross_entropy(..., label_smoothing=eps)). With lse = logsumexp(x_row):
//
//   loss_row = (1 - eps) (lse - x_t) + eps (lse - mean_c x_c)    = -sum_c q_c log_softmax(x)_c
//   dloss_row / dx_c = softmax(x)_c - q_c = exp(x_c - lse) - q_c
//
// The plain reference is the composite: log_softmax (x - max - log(sum exp(x - max))),
// then the NLL gather; its VJP g * (softmax - q), zero on ignored rows.
#include "common.cuh"

namespace {

// Running (max, sum of exp(x - max), sum of x) over part of a row: an online softmax, so
// the forward reads each logit once.
template <class A>
struct RowStats {
  A m, s, sx;
};

template <class A>
GG_FN void row_add(RowStats<A>& st, A x) {
  st.sx += x;
  if (x > st.m) {
    st.s = st.s * gg::exp_(st.m - x) + A(1);      // exp(-inf) == 0 on the first element
    st.m = x;
  } else if (x != -gg::inf<A>()) {                // NOTE: skip exp(-inf - -inf) = NaN; NaN x propagates
    st.s += gg::exp_(x - st.m);
  }
}

struct RowCombine {
  template <class A>
  GG_FN RowStats<A> operator()(RowStats<A> a, RowStats<A> b) const {
    if (b.m > a.m) {
      const RowStats<A> t = a;
      a = b;
      b = t;
    }
    if (b.m != -gg::inf<A>()) a.s += b.s * gg::exp_(b.m - a.m);   // an empty part adds nothing
    a.sx += b.sx;
    return a;
  }
};

// softmax_cross_entropy_forward: one block per row (grid-stride over rows), the block's
// threads stride over the row's columns, then one shared-memory reduction.
//   lse[r]  = logsumexp(logits[r, :])                       (saved for the backward)
//   loss[r] = 0 if target[r] == ignore_index,
//             NaN if target[r] is outside [0, cols) (recorded in flags: gg::flag_bad_value),
//             (1 - eps) (lse - x_t) + eps (lse - mean(x)) otherwise.
// loss and lse are in the arithmetic type A (float32 for float16 logits). Reduction over
// rows (sum, or mean over the counted rows) is left to the caller. blockDim.x <= GG_MAX_BLOCK.
template <class T>
GG_FN void sce_forward(const T* __restrict__ logits, const long long* __restrict__ target,
                       gg::acc_t<T>* __restrict__ loss, gg::acc_t<T>* __restrict__ lse, gg::index_t rows,
                       gg::index_t cols, long long ignore_index, gg::acc_t<T> eps, long long* flags) {
  typedef gg::acc_t<T> A;
  __shared__ RowStats<A> buf[GG_MAX_BLOCK];
  for (gg::index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * cols;
    RowStats<A> st = {-gg::inf<A>(), A(0), A(0)};
    for (gg::index_t c = threadIdx.x; c < cols; c += blockDim.x) row_add(st, gg::load(row, c));
    st = gg::block_reduce(st, buf, RowCombine());
    if (threadIdx.x == 0) {
      const A l = st.m + gg::log_(st.s);
      lse[r] = l;
      const long long t = target[r];
      A value;
      if (t == ignore_index) {
        value = A(0);
      } else if (t < 0 || t >= cols) {
        value = gg::nan<A>();
        gg::flag_bad_value(flags, t, cols, ignore_index);
      } else {
        value = (A(1) - eps) * (l - gg::load(row, t));
        if (eps != A(0)) value += eps * (l - st.sx / A(cols));   // NOTE: only then: -inf logits
      }
      loss[r] = value;
    }
  }
}

// softmax_cross_entropy_backward: one pass over the logits (grid-stride over rows * cols).
//   dlogits[r, c] = 0                                             if target[r] == ignore_index
//                 = g_rows[r * g_stride] * (exp(x - lse[r]) - q_c)  otherwise
// g_rows holds the incoming gradient per row, already scaled by the reduction: g / count
// for 'mean' and g for 'sum' (one element, g_stride = 0), or g per row for 'none'
// (g_stride = 1). lse comes from the forward.
template <class T>
GG_FN void sce_backward(const T* __restrict__ logits, const long long* __restrict__ target,
                        const gg::acc_t<T>* __restrict__ lse, const gg::acc_t<T>* __restrict__ g_rows,
                        T* __restrict__ dlogits, gg::index_t rows, gg::index_t cols, gg::index_t g_stride,
                        long long ignore_index, gg::acc_t<T> eps) {
  typedef gg::acc_t<T> A;
  if (cols <= 0) return;
  const A off = eps / A(cols);
  const A on = A(1) - eps + off;
  // The grid-stride loop over i = r * cols + c, with (r, c) stepped without a division
  // per element (64-bit division is dozens of instructions on a GPU).
  const gg::index_t n = rows * cols;
  const gg::index_t stride = (gg::index_t)blockDim.x * gridDim.x;
  const gg::index_t dr = stride / cols, dc = stride - dr * cols;
  gg::index_t i = (gg::index_t)blockIdx.x * blockDim.x + threadIdx.x;
  gg::index_t r = i / cols, c = i - r * cols;
  for (; i < n; i += stride) {
    const long long t = target[r];
    A d = A(0);
    if (t != ignore_index) {
      const A p = gg::exp_(gg::load(logits, i) - lse[r]);
      d = g_rows[r * g_stride] * (p - (c == t ? on : off));
    }
    gg::store(dlogits, i, d);
    r += dr;
    c += dc;
    if (c >= cols) {
      c -= cols;
      ++r;
    }
  }
}

}  // namespace

#define GG_SCE_ENTRIES(SFX, T, UNUSED)                                                            \
  extern "C" __global__ void softmax_cross_entropy_forward_##SFX(                               \
      const T* __restrict__ logits, const long long* __restrict__ target,                       \
      gg::acc_t<T>* __restrict__ loss, gg::acc_t<T>* __restrict__ lse, long long rows,           \
      long long cols, long long ignore_index, gg::acc_t<T> eps, long long* flags) {             \
    sce_forward(logits, target, loss, lse, rows, cols, ignore_index, eps, flags);               \
  }                                                                                             \
  extern "C" __global__ void softmax_cross_entropy_backward_##SFX(                              \
      const T* __restrict__ logits, const long long* __restrict__ target,                       \
      const gg::acc_t<T>* __restrict__ lse, const gg::acc_t<T>* __restrict__ g_rows,             \
      T* __restrict__ dlogits, long long rows, long long cols, long long g_stride,               \
      long long ignore_index, gg::acc_t<T> eps) {                                               \
    sce_backward(logits, target, lse, g_rows, dlogits, rows, cols, g_stride, ignore_index, eps); \
  }

GG_FOR_EACH_DTYPE(GG_SCE_ENTRIES, 0)
