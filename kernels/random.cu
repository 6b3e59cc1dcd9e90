// random.cu: counter-based random numbers (Threefry-2x32, 20 rounds), drawn where the tensor lives.
//
// A key is two 32-bit words. Element i of a draw is the Threefry block of (key, counter i),
// the counter being i as 64 bits (high word, low word), as JAX's "partitionable" scheme:
// each element depends on its key and its index only, so any launch configuration gives
// the same numbers, and gpugrad/ops/random.py computes exactly these numbers on the host
// with NumPy. The float transforms use only +, -, *, / and sqrt, each rounded once
// (the _rn intrinsics: no fused multiply-add contracts them), so they are bit-identical
// to the host's. Keys come as (n_keys, 2) words; output k*n + i is key k's element i.
//
//   threefry_split    (_u32)      out[k][i] = block(key k, counter i)        (n_keys, n, 2) words
//   threefry_fold_in  (_u32)      out[k]    = block(key k, counter data[k])  (n_keys, 2) words
//   random_bits       (_u32)      out[k][i] = x0 ^ x1 of block(key k, i);  (_u64) x0 << 32 | x1
//   random_uniform    (_f32/_f64) [0, 1) from the top 23 (52) bits of random_bits, scaled to [low, high)
//   random_normal     (_f32/_f64) Box-Muller: sqrt(-2 log u) cos(2 pi v), u in (0, 1) and v in [0, 1)
//                                 from random_bits at counters i and n + i (computed in double)
#include "common.cuh"

namespace gg_random {

typedef unsigned int u32;
typedef unsigned long long u64;

// ----------------------------------------------------------------------------- Threefry-2x32-20

GG_FN u32 rotl(u32 x, int r) { return (x << r) | (x >> (32 - r)); }

// Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011): 20 rounds, the key
// injected every 4 with the parity word 0x1BD11BDA, rotations 13 15 26 6 / 17 29 16 24.
GG_FN void block(u32 k0, u32 k1, u32 c0, u32 c1, u32& out0, u32& out1) {
  const u32 ks[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDAu};
  const int rot[8] = {13, 15, 26, 6, 17, 29, 16, 24};
  u32 x0 = c0 + ks[0];
  u32 x1 = c1 + ks[1];
  for (int s = 0; s < 5; ++s) {
    for (int r = 0; r < 4; ++r) {
      x0 += x1;
      x1 = rotl(x1, rot[(s % 2) * 4 + r]);
      x1 ^= x0;
    }
    x0 += ks[(s + 1) % 3];
    x1 += ks[(s + 2) % 3] + (u32)(s + 1);
  }
  out0 = x0;
  out1 = x1;
}

GG_FN void element(const u32* keys, gg::index_t k, gg::index_t i, u32& x0, u32& x1) {
  block(keys[2 * k], keys[2 * k + 1], (u32)((u64)i >> 32), (u32)((u64)i & 0xFFFFFFFFull), x0, x1);
}

// ----------------------------------------------------------------------------- exactly rounded arithmetic

#ifdef GG_ON_DEVICE
GG_FN double add(double a, double b) { return __dadd_rn(a, b); }
GG_FN double mul(double a, double b) { return __dmul_rn(a, b); }
GG_FN double div(double a, double b) { return __ddiv_rn(a, b); }
GG_FN double root(double a) { return __dsqrt_rn(a); }
GG_FN float add(float a, float b) { return __fadd_rn(a, b); }
GG_FN float mul(float a, float b) { return __fmul_rn(a, b); }
GG_FN long long bits_of(double d) { return __double_as_longlong(d); }
#else
// on the CPU, out of line: the compiler may not contract a product and a sum into an FMA
__attribute__((noinline)) inline double add(double a, double b) { return a + b; }
__attribute__((noinline)) inline double mul(double a, double b) { return a * b; }
__attribute__((noinline)) inline double div(double a, double b) { return a / b; }
__attribute__((noinline)) inline double root(double a) { return sqrt(a); }
__attribute__((noinline)) inline float add(float a, float b) { return a + b; }
__attribute__((noinline)) inline float mul(float a, float b) { return a * b; }
inline long long bits_of(double d) {
  long long i;
  memcpy(&i, &d, sizeof i);
  return i;
}
#endif

// log(u) for u in (0, 1]: u = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m-1)/(m+1)
GG_FN double log_unit(double u) {
  const long long b = bits_of(u);
  long long e = ((b >> 52) & 0x7ff) - 1022;                              // u = m 2^e, m in [1/2, 1)
  double m = __longlong_as_double((b & 0x000FFFFFFFFFFFFFll) | 0x3FE0000000000000ll);
  if (m < 0.70710678118654752) {
    m = mul(m, 2.0);
    e -= 1;
  }
  const double f = add(m, -1.0);
  const double s = div(f, add(2.0, f));
  const double z = mul(s, s);
  const double c[10] = {0.33333333333333331, 0.20000000000000001, 0.14285714285714285, 0.1111111111111111,
                        0.090909090909090912, 0.076923076923076927, 0.066666666666666666,
                        0.058823529411764705, 0.052631578947368418, 0.047619047619047616};
  double p = c[9];
  for (int k = 8; k >= 0; --k) p = add(mul(p, z), c[k]);
  const double log_m = add(mul(2.0, s), mul(mul(2.0, s), mul(z, p)));   // 2s + 2s z P(z)
  const double ed = (double)e;
  return add(mul(ed, 0.69314718036912382), add(mul(ed, 1.9082149292705877e-10), log_m));
}

// sin(pi t / 2) and cos(pi t / 2) for t in [0, 1/2], from their Taylor series
GG_FN double sin_quarter(double t) {
  const double x = mul(t, 1.5707963267948966);
  const double y = mul(x, x);
  const double c[9] = {-0.16666666666666666, 0.0083333333333333332, -0.00019841269841269841,
                       2.7557319223985893e-06, -2.505210838544172e-08, 1.6059043836821613e-10,
                       -7.6471637318198164e-13, 2.8114572543455206e-15, -8.2206352466243295e-18};
  double p = c[8];
  for (int k = 7; k >= 0; --k) p = add(mul(p, y), c[k]);
  return add(x, mul(mul(x, y), p));
}

GG_FN double cos_quarter(double t) {
  const double x = mul(t, 1.5707963267948966);
  const double y = mul(x, x);
  const double c[9] = {-0.5, 0.041666666666666664, -0.0013888888888888889, 2.4801587301587302e-05,
                       -2.7557319223985888e-07, 2.08767569878681e-09, -1.1470745597729725e-11,
                       4.7794773323873853e-14, -1.5619206968586225e-16};
  double p = c[8];
  for (int k = 7; k >= 0; --k) p = add(mul(p, y), c[k]);
  return add(1.0, mul(y, p));
}

// cos(2 pi v) for v in [0, 1): the quadrant from 4v (exact), the rest on [0, 1/2] by symmetry
GG_FN double cos_turn(double v) {
  const double w4 = mul(v, 4.0);
  const int q = (int)w4;
  double w = add(w4, -(double)q);
  bool want_cos = (q % 2) == 0;
  if (w > 0.5) {
    w = add(1.0, -w);
    want_cos = !want_cos;
  }
  const double r = want_cos ? cos_quarter(w) : sin_quarter(w);
  return (q == 1 || q == 2) ? -r : r;
}

GG_FN double normal(u64 a, u64 b, int bits) {
  // u in (0, 1) and v in [0, 1), each from the top ``bits`` bits (32, or 53 for float64)
  const double scale = bits == 32 ? 2.3283064365386963e-10 : 1.1102230246251565e-16;   // 2^-bits
  const u64 ta = bits == 32 ? a : a >> 11;
  const u64 tb = bits == 32 ? b : b >> 11;
  const double u = mul(add((double)ta, 0.5), scale);
  const double v = mul((double)tb, scale);
  return mul(root(mul(-2.0, log_unit(u))), cos_turn(v));
}

// a uniform in [0, 1) from the top mantissa bits of a block: 23 of x0 ^ x1, or 52 of x0 << 32 | x1
GG_FN float unit(u32 x0, u32 x1, float) { return __int_as_float((int)(((x0 ^ x1) >> 9) | 0x3F800000u)) - 1.0f; }
GG_FN double unit(u32 x0, u32 x1, double) {
  const u64 word = (((u64)x0 << 32) | (u64)x1) >> 12;
  return __longlong_as_double((long long)(word | 0x3FF0000000000000ull)) - 1.0;
}

template <class T>
GG_FN void uniform(const u32* keys, gg::index_t n_keys, gg::index_t n, T low, T high, T* out) {
  const T span = add(high, -low);
  GG_GRID_STRIDE(j, n_keys * n) {
    u32 x0, x1;
    element(keys, j / n, j % n, x0, x1);
    const T value = add(mul(unit(x0, x1, T()), span), low);
    out[j] = value < low ? low : value;
  }
}

// Box-Muller on the blocks at counters i and n + i: 32-bit words (x0 ^ x1) for float, 64-bit for double
template <class T>
GG_FN void normals(const u32* keys, gg::index_t n_keys, gg::index_t n, T* out) {
  const bool wide = sizeof(T) == 8;
  GG_GRID_STRIDE(j, n_keys * n) {
    const gg::index_t k = j / n, i = j % n;
    u32 a0, a1, b0, b1;
    element(keys, k, i, a0, a1);
    element(keys, k, n + i, b0, b1);
    const u64 a = wide ? ((u64)a0 << 32) | a1 : (u64)(a0 ^ a1);
    const u64 b = wide ? ((u64)b0 << 32) | b1 : (u64)(b0 ^ b1);
    out[j] = (T)normal(a, b, wide ? 53 : 32);
  }
}

}  // namespace gg_random

using gg_random::u32;
using gg_random::u64;

// threefry_split_u32: out (n_keys, n, 2): block(key k, counter i) for i < n (gg.random.split)
extern "C" __global__ void threefry_split_u32(const u32* __restrict__ keys, long long n_keys, long long n,
                                              u32* __restrict__ out) {
  GG_GRID_STRIDE(j, n_keys * n) {
    u32 x0, x1;
    gg_random::element(keys, j / n, j % n, x0, x1);
    out[2 * j] = x0;
    out[2 * j + 1] = x1;
  }
}

// threefry_fold_in_u32: out (n_keys, 2): block(key k, counter data[k]) (gg.random.fold_in)
extern "C" __global__ void threefry_fold_in_u32(const u32* __restrict__ keys, const u32* __restrict__ data,
                                                long long n_keys, u32* __restrict__ out) {
  GG_GRID_STRIDE(k, n_keys) {
    u32 x0, x1;
    gg_random::block(keys[2 * k], keys[2 * k + 1], 0u, data[k], x0, x1);
    out[2 * k] = x0;
    out[2 * k + 1] = x1;
  }
}

// random_bits_u32 / random_bits_u64: out (n_keys, n)
extern "C" __global__ void random_bits_u32(const u32* __restrict__ keys, long long n_keys, long long n,
                                           u32* __restrict__ out) {
  GG_GRID_STRIDE(j, n_keys * n) {
    u32 x0, x1;
    gg_random::element(keys, j / n, j % n, x0, x1);
    out[j] = x0 ^ x1;
  }
}

extern "C" __global__ void random_bits_u64(const u32* __restrict__ keys, long long n_keys, long long n,
                                           u64* __restrict__ out) {
  GG_GRID_STRIDE(j, n_keys * n) {
    u32 x0, x1;
    gg_random::element(keys, j / n, j % n, x0, x1);
    out[j] = ((u64)x0 << 32) | (u64)x1;
  }
}

// random_uniform_f32 / _f64: max(low, u (high - low) + low) with u = gg_random::unit (float or double)
extern "C" __global__ void random_uniform_f32(const u32* __restrict__ keys, long long n_keys, long long n,
                                              float low, float high, float* __restrict__ out) {
  gg_random::uniform(keys, n_keys, n, low, high, out);
}

extern "C" __global__ void random_uniform_f64(const u32* __restrict__ keys, long long n_keys, long long n,
                                              double low, double high, double* __restrict__ out) {
  gg_random::uniform(keys, n_keys, n, low, high, out);
}

// random_normal_f32 / _f64: Box-Muller in double (gg_random::normal), rounded to the output's type
extern "C" __global__ void random_normal_f32(const u32* __restrict__ keys, long long n_keys, long long n,
                                             float* __restrict__ out) {
  gg_random::normals(keys, n_keys, n, out);
}

extern "C" __global__ void random_normal_f64(const u32* __restrict__ keys, long long n_keys, long long n,
                                             double* __restrict__ out) {
  gg_random::normals(keys, n_keys, n, out);
}
