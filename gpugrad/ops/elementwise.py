"""Elementwise ops: arithmetic, math functions, activations and comparisons."""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor
from .registry import defop
from .samples import Const, Sample, binary, samples, unary, uniform

# ----------------------------------------------------------------------------- arithmetic


@defop(broadcast=True, samples=binary())
def add(xp, x, y):
    return xp.add(x, y)


@add.vjp
def _(xp, g, out, x, y):
    return (g, g)


@defop(broadcast=True, samples=binary())
def subtract(xp, x, y):
    return xp.subtract(x, y)


@subtract.vjp
def _(xp, g, out, x, y):
    return (g, -g)


@defop(save=("x", "y"), broadcast=True, samples=binary(), fused="multiply_backward")
def multiply(xp, x, y):
    return xp.multiply(x, y)


@multiply.vjp
def _(xp, g, out, x, y, needs):
    return (g * y if needs[0] else None, g * x if needs[1] else None)


@defop(save=("y", "out"), broadcast=True, float_inputs=True, samples=binary(lo2=0.5, hi2=2.0),
       fused="divide_backward")
def divide(xp, x, y):
    return xp.divide(x, y)


@divide.vjp
def _(xp, g, out, x, y, needs):
    gx = g / y
    return (gx if needs[0] else None, -gx * out if needs[1] else None)   # d(x/y)/dy = -(x/y)/y


@defop(save=("x", "y", "out"), broadcast=True, samples=binary(0.5, 2.0, -2.0, 2.0))
def power(xp, x, y):
    return xp.power(x, y)


@power.vjp
def _(xp, g, out, x, y, needs):
    gx = gy = None
    if needs[0]:
        gx = g * y * xp.power(x, y - 1)
    if needs[1]:
        # d(x^y)/dy = x^y log x; taken as 0 where x == 0 (the limit for y > 0), nan for x < 0
        safe_x = xp.where(x == 0, 1, x)
        gy = g * xp.where(x == 0, 0, out * xp.log(safe_x))
    return (gx, gy)


@defop(samples=unary())
def negative(xp, x):
    return xp.negative(x)


@negative.vjp
def _(xp, g, out, x):
    return (-g,)


# ----------------------------------------------------------------------------- math functions


@defop(save=("out",), float_inputs=True, samples=unary())
def exp(xp, x):
    return xp.exp(x)


@exp.vjp
def _(xp, g, out, x):
    return (g * out,)


@defop(save=("x",), float_inputs=True, samples=unary(0.3, 3.0))
def log(xp, x):
    return xp.log(x)


@log.vjp
def _(xp, g, out, x):
    return (g / x,)


@defop(save=("x",), float_inputs=True, samples=unary(-0.5, 2.0))
def log1p(xp, x):
    return xp.log1p(x)


@log1p.vjp
def _(xp, g, out, x):
    return (g / (1 + x),)


@defop(save=("out",), float_inputs=True, samples=unary())
def expm1(xp, x):
    return xp.expm1(x)


@expm1.vjp
def _(xp, g, out, x):
    return (g * (out + 1),)


@defop(save=("out",), float_inputs=True, samples=unary(0.3, 3.0))
def sqrt(xp, x):
    return xp.sqrt(x)


@sqrt.vjp
def _(xp, g, out, x):
    return (g / (2 * out),)


@defop(save=("x",), float_inputs=True, samples=unary(-3.0, 3.0))
def sin(xp, x):
    return xp.sin(x)


@sin.vjp
def _(xp, g, out, x):
    return (g * xp.cos(x),)


@defop(save=("x",), float_inputs=True, samples=unary(-3.0, 3.0))
def cos(xp, x):
    return xp.cos(x)


@cos.vjp
def _(xp, g, out, x):
    return (-g * xp.sin(x),)


@defop(save=("out",), float_inputs=True, samples=unary(-3.0, 3.0), fused="tanh_backward")
def tanh(xp, x):
    return xp.tanh(x)


@tanh.vjp
def _(xp, g, out, x):
    # g (1 - out^2), written without the constant 1: NumPy takes ~0.3 us longer for an op
    # with a Python scalar than for one between arrays, which shows on small tensors
    return (g - g * out * out,)


@defop(save=("out",), float_inputs=True, samples=unary(-5.0, 5.0), fused="sigmoid_backward")
def sigmoid(xp, x):
    # NOTE: the tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x
    return 0.5 * xp.tanh(0.5 * x) + 0.5


@sigmoid.vjp
def _(xp, g, out, x):
    return (g * (out - out * out),)      # g out (1 - out), without a scalar operand (see tanh)


@defop(save=("out",), samples=unary(), fused="relu_backward")
def relu(xp, x):
    return xp.maximum(x, 0)


@relu.vjp
def _(xp, g, out, x):
    # subgradient 0 at x == 0, as PyTorch and JAX. NOTE: a product with the mask is 5x faster
    # than numpy.where here; it differs only where g is NaN/Inf (NaN then, where gives 0).
    return (g * (out > 0),)


@defop(save=("x",), samples=unary())
def absolute(xp, x):
    return xp.abs(x)


@absolute.vjp
def _(xp, g, out, x):
    return (g * xp.sign(x),)


@defop(samples=unary())
def sign(xp, x):
    return xp.sign(x)


@sign.vjp
def _(xp, g, out, x):
    return (xp.zeros_like(g),)            # piecewise constant


@defop(save=("x",), samples=unary())
def square(xp, x):
    return xp.square(x)


@square.vjp
def _(xp, g, out, x):
    return (2 * g * x,)


@defop(save=("x",), samples=unary(-3.0, 3.0, lo=-1.0, hi=1.5))
def _clip(xp, x, *, lo, hi):
    return xp.clip(x, lo, hi)


@_clip.vjp
def _(xp, g, out, x, *, lo, hi):
    inside = True if lo is None else (x >= lo)
    if hi is not None:
        inside = inside & (x <= hi)
    return (xp.where(inside, g, 0),)


# ----------------------------------------------------------------------------- two-input selections


@defop(save=("x", "y"), broadcast=True, samples=binary())
def maximum(xp, x, y):
    return xp.maximum(x, y)


@maximum.vjp
def _(xp, g, out, x, y, needs):
    # ties split the gradient evenly, as in PyTorch and JAX
    half = xp.where(x == y, 0.5 * g, 0)
    return (xp.where(x > y, g, half) if needs[0] else None,
            xp.where(y > x, g, half) if needs[1] else None)


@defop(save=("x", "y"), broadcast=True, samples=binary())
def minimum(xp, x, y):
    return xp.minimum(x, y)


@minimum.vjp
def _(xp, g, out, x, y, needs):
    half = xp.where(x == y, 0.5 * g, 0)
    return (xp.where(x < y, g, half) if needs[0] else None,
            xp.where(y < x, g, half) if needs[1] else None)


def _where_sample(rng):
    return Sample([Const(rng.uniform(size=(2, 3)) > 0.5), uniform(rng, -1, 1, (2, 3)),
                   uniform(rng, -1, 1, (3,))], name="mask-broadcast")


def _where_scalar_sample(rng):
    return Sample([Const(rng.uniform(size=(4,)) > 0.5), uniform(rng, -1, 1, (4,)), Const(0.0)],
                  name="mask-scalar")


@defop(save=("condition",), broadcast=True, samples=samples(_where_sample, _where_scalar_sample))
def _where(xp, condition, x, y):
    return xp.where(condition, x, y)


@_where.vjp
def _(xp, g, out, condition, x, y):
    return (None, xp.where(condition, g, 0), xp.where(condition, 0, g))


# ----------------------------------------------------------------------------- no gradient


def _nondiff(name: str, fn: Any) -> Any:
    def forward(xp, *args):
        return fn(xp)(*args)
    forward.__name__ = name
    return defop(differentiable=False)(forward)


equal = _nondiff("equal", lambda xp: xp.equal)
not_equal = _nondiff("not_equal", lambda xp: xp.not_equal)
less = _nondiff("less", lambda xp: xp.less)
less_equal = _nondiff("less_equal", lambda xp: xp.less_equal)
greater = _nondiff("greater", lambda xp: xp.greater)
greater_equal = _nondiff("greater_equal", lambda xp: xp.greater_equal)
logical_and = _nondiff("logical_and", lambda xp: xp.logical_and)
logical_or = _nondiff("logical_or", lambda xp: xp.logical_or)
logical_not = _nondiff("logical_not", lambda xp: xp.logical_not)
isnan = _nondiff("isnan", lambda xp: xp.isnan)
isinf = _nondiff("isinf", lambda xp: xp.isinf)
isfinite = _nondiff("isfinite", lambda xp: xp.isfinite)


@defop(differentiable=False)
def _isclose(xp, x, y, *, rtol, atol, equal_nan):
    return xp.isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan)


# ----------------------------------------------------------------------------- public wrappers

abs = absolute   # noqa: A001 - NumPy's name
sub = subtract
mul = multiply
div = divide
pow = power      # noqa: A001


def clip(x: Any, min: Any = None, max: Any = None, *, a_min: Any = None, a_max: Any = None) -> Tensor:
    """Limit values to [min, max] (either may be None); gradient 1 inside, 0 outside."""
    lo = a_min if min is None else min
    hi = a_max if max is None else max
    if lo is None and hi is None:
        raise ValueError("clip: give at least one of min and max")
    lo = lo.item() if isinstance(lo, Tensor) else lo
    hi = hi.item() if isinstance(hi, Tensor) else hi
    return _clip(x, lo=lo, hi=hi)


clamp = clip


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """Elementwise ``x if condition else y``; the gradient flows to the branch that was taken."""
    return _where(condition, x, y)


def isclose(x: Any, y: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> Tensor:
    """Elementwise |x - y| <= atol + rtol * |y| (a bool tensor), as numpy.isclose."""
    return _isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan)


def allclose(x: Any, y: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    """True when every element is close (a Python bool), as numpy.allclose and torch.allclose."""
    return bool(isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan).data.all())
