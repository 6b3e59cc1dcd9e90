// activations.cuh: the derivative of each activation, for one element (and the forward of
// the activations that bias_activation_forward.cu fuses with a bias).
//
// Shared by activation_backward.cu (dx = g * act'(.)) and bias_activation_backward.cu
// (the same, on x + b, plus the bias gradient). Each rule is
//
//     A grad(A g, A s, A alpha)   ->   dL/dx for one element, in the arithmetic type A
//
// where s is the saved value the rule reads: the forward output when kFromInput is false,
// the forward input x otherwise. alpha is leaky_relu's negative slope; the others ignore it.
// Relu, Sigmoid and Tanh also have ``A forward(A x)``, the same formula as gpugrad's op.
#pragma once

#include "common.cuh"

namespace gg {
namespace act {

// relu: out = max(x, 0).  dx = g where out > 0, else 0 (subgradient 0 at x == 0, as
// PyTorch and JAX).  Plain rule: xp.where(out > 0, g, 0).
struct Relu {
  static constexpr bool kFromInput = false;
  template <class A> static GG_FN A grad(A g, A out, A) { return out > A(0) ? g : A(0); }
  // max(x, 0), NaN staying NaN (numpy.maximum)
  template <class A> static GG_FN A forward(A x) { return max_(x, A(0)); }
};

// leaky_relu: out = x if x > 0 else alpha * x.  dx = g if x > 0 else alpha * g (PyTorch's
// leaky_relu_backward). Reads x; for alpha > 0 the output has the same sign and works too.
struct LeakyRelu {
  static constexpr bool kFromInput = true;
  template <class A> static GG_FN A grad(A g, A x, A alpha) { return x > A(0) ? g : alpha * g; }
};

// sigmoid: out = 1 / (1 + exp(-x)).  dx = g * out * (1 - out).  Plain rule: g * out * (1 - out).
struct Sigmoid {
  static constexpr bool kFromInput = false;
  template <class A> static GG_FN A grad(A g, A out, A) { return g * out * (A(1) - out); }
  // with e = exp(-|x|) <= 1: 1 / (1 + e) for x >= 0, e / (1 + e) below: never overflows, and
  // keeps full relative precision for very negative x (gpugrad's sigmoid op, the same formula)
  template <class A> static GG_FN A forward(A x) {
    const A e = exp_(x >= A(0) ? -x : x);
    const A r = A(1) / (A(1) + e);
    return x >= A(0) ? r : e * r;
  }
};

// tanh: out = tanh(x).  dx = g * (1 - out^2).  Plain rule: g * (1 - out * out).
struct Tanh {
  static constexpr bool kFromInput = false;
  template <class A> static GG_FN A grad(A g, A out, A) { return g * (A(1) - out * out); }
  template <class A> static GG_FN A forward(A x) { return tanh_(x); }
};

// gelu, tanh form: out = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// dx = g * (0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)),
// PyTorch's GeluBackward with approximate='tanh', term by term.
struct GeluTanh {
  static constexpr bool kFromInput = true;
  template <class A> static GG_FN A grad(A g, A x, A) {
    const A beta = A(0.7978845608028654);    // sqrt(2 / pi)
    const A kappa = A(0.044715);
    const A x_sq = x * x;
    const A t = tanh_(beta * (x + kappa * x_sq * x));
    const A left_derivative = A(0.5) * (A(1) + t);
    const A right_derivative = A(0.5) * x * (A(1) - t * t) * beta * (A(1) + A(3) * kappa * x_sq);
    return g * (left_derivative + right_derivative);
  }
};

// gelu, exact (erf) form: out = x Phi(x), Phi(x) = 0.5 (1 + erf(x / sqrt(2))).
// dx = g * (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
struct GeluErf {
  static constexpr bool kFromInput = true;
  template <class A> static GG_FN A grad(A g, A x, A) {
    const A cdf = A(0.5) * (A(1) + erf_(x * A(0.7071067811865476)));    // 1 / sqrt(2)
    const A pdf = A(0.3989422804014327) * exp_(A(-0.5) * x * x);       // 1 / sqrt(2 pi)
    return g * (cdf + x * pdf);
  }
};

}  // namespace act
}  // namespace gg
