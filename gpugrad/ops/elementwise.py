"""Elementwise ops: arithmetic, math functions, activations and comparisons."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import dtypes
from ..tensor import Tensor
from .registry import defop
from .samples import Const, Sample, Sampler, binary, samples, unary, uniform


def _plus(sampler: Sampler, *cases: Any) -> Sampler:
    """A sampler's samples and some hand-written cases (edges: zeros, ties, NaN)."""
    return lambda rng: sampler(rng) + [case(rng) for case in cases]


def _with_params(sampler: Sampler, **params: Any) -> Sampler:
    """A sampler's samples, each given the op's keyword parameters."""
    def make(rng: np.random.Generator) -> list[Sample]:
        out = sampler(rng)
        for sample in out:
            sample.params = {**sample.params, **params}
            sample.name += f"-{params}"
        return out
    return make


# ----------------------------------------------------------------------------- arithmetic


@defop(broadcast=True, dtype_rule="promote", samples=binary())
def add(xp, x, y):
    return xp.add(x, y)


@add.vjp
def _(xp, g, out, x, y):
    return (g, g)


@defop(broadcast=True, dtype_rule="promote", samples=binary())
def subtract(xp, x, y):
    return xp.subtract(x, y)


@subtract.vjp
def _(xp, g, out, x, y):
    return (g, -g)


@defop(save=("x", "y"), broadcast=True, dtype_rule="promote", samples=binary(), fused="multiply_backward")
def multiply(xp, x, y):
    return xp.multiply(x, y)


@multiply.vjp
def _(xp, g, out, x, y, needs):
    return (g * y if needs[0] else None, g * x if needs[1] else None)


@defop(save=("y", "out"), broadcast=True, float_inputs=True, dtype_rule="promote",
       samples=binary(lo2=0.5, hi2=2.0), fused="divide_backward")
def divide(xp, x, y):
    return xp.divide(x, y)


@divide.vjp
def _(xp, g, out, x, y, needs):
    gx = g / y
    return (gx if needs[0] else None, -gx * out if needs[1] else None)   # d(x/y)/dy = -(x/y)/y


def _power_edge_sample(rng):
    # x^0 at x == 0 has gradient 0 (a constant exponent array; a differentiable one at x == 0 is
    # checked against PyTorch in tests/test_parity_core.py: finite differences cannot cross 0^y)
    exponent = Const(np.array([0.0, 0.0, 1.5], np.float32))
    return Sample([np.array([0.0, 0.5, 2.0]), exponent], name="zero-exponent")


@defop(save=("x", "y", "out"), broadcast=True, dtype_rule="promote",
       samples=_plus(binary(0.5, 2.0, -2.0, 2.0), _power_edge_sample))
def power(xp, x, y):
    return xp.power(x, y)


@power.vjp
def _(xp, g, out, x, y, needs):
    gx = gy = None
    if needs[0]:
        # d(x^y)/dx = y x^(y-1), and 0 where y == 0 (x^0 is constant, also at x == 0), as PyTorch
        if _is_number(y):
            gx = g * 0 if y == 0 else g * y * xp.power(x, y - 1)
        else:
            gx = g * y * xp.power(x, xp.where(y == 0, 1, y - 1))
    if needs[1]:
        # d(x^y)/dy = x^y log x; taken as 0 where x == 0 (the limit for y > 0), nan for x < 0
        if _is_number(x):            # a number base as an array on out's device (not the CPU's)
            x = xp.full_like(out, x)
        safe_x = xp.where(x == 0, 1, x)
        gy = g * xp.where(x == 0, 0, out * xp.log(safe_x))
    return (gx, gy)


def _is_number(v: Any) -> bool:
    """A Python or NumPy scalar operand (not an array or a Tensor)."""
    return not hasattr(v, "shape") or isinstance(v, np.generic)


@defop(batch="elementwise", samples=unary())
def negative(xp, x):
    return xp.negative(x)


@negative.vjp
def _(xp, g, out, x):
    return (-g,)


# ----------------------------------------------------------------------------- rounding and integer division


def _rounding(name: str, fn: Any, **params: Any) -> Any:
    """floor, ceil, trunc, round: piecewise constant (gradient 0); integer inputs pass through."""
    def forward(xp, x, **kw):
        if hasattr(x, "dtype") and x.dtype.kind != "f":
            return x.copy()                       # NumPy would turn integers into float64
        return fn(xp)(x, **kw)
    forward.__name__ = name
    op = defop(batch="elementwise", samples=unary(-2.7, 2.7, **params))(forward)

    @op.vjp
    def _(xp, g, out, x, **kw):
        return (xp.zeros_like(g),)
    return op


floor = _rounding("floor", lambda xp: xp.floor)
ceil = _rounding("ceil", lambda xp: xp.ceil)
trunc = _rounding("trunc", lambda xp: xp.trunc)
_round = _rounding("round", lambda xp: xp.round, decimals=0)


# samples away from the jumps of floor(x / y): x / y stays within (-2.9, -2.3) and (0.6, 4)
_DIVISION_SAMPLES = binary(5.2, 5.8, -2.2, -2.05)


@defop(save=("x", "y"), broadcast=True, dtype_rule="promote", samples=_DIVISION_SAMPLES)
def remainder(xp, x, y):
    """x - floor(x / y) y: the sign of the divisor, as Python's % and torch.remainder."""
    return xp.remainder(x, y)


@remainder.vjp
def _(xp, g, out, x, y, needs):
    return (g if needs[0] else None, -g * xp.floor_divide(x, y) if needs[1] else None)


@defop(save=("x", "y"), broadcast=True, dtype_rule="promote", samples=_DIVISION_SAMPLES)
def fmod(xp, x, y):
    """x - trunc(x / y) y: the sign of the dividend, as C's fmod and torch.fmod."""
    return xp.fmod(x, y)


@fmod.vjp
def _(xp, g, out, x, y, needs):
    return (g if needs[0] else None, -g * xp.trunc(x / y) if needs[1] else None)


def _trunc_sample(rng):
    return Sample([uniform(rng, -5.8, -5.2, (2, 3)), uniform(rng, 2.05, 2.2, (3,))], {"mode": "trunc"},
                  "trunc")


@defop(broadcast=True, dtype_rule="promote",
       samples=_plus(_with_params(_DIVISION_SAMPLES, mode="floor"), _trunc_sample))
def _divide_rounded(xp, x, y, *, mode):
    """x / y rounded down ("floor", Python's //) or toward zero ("trunc"); integers stay integers."""
    if mode == "floor":
        return xp.floor_divide(x, y)
    if (x if hasattr(x, "dtype") else y).dtype.kind == "f":
        return xp.trunc(xp.true_divide(x, y))
    q = xp.floor_divide(x, y)                      # integers: floor, moved up where signs differ
    return q + ((q * y != x) & ((x < 0) != (y < 0)))


@_divide_rounded.vjp
def _(xp, g, out, x, y, *, mode):
    return (xp.zeros_like(g), xp.zeros_like(g))   # piecewise constant


# ----------------------------------------------------------------------------- math functions


@defop(batch="elementwise", save=("out",), float_inputs=True, samples=unary())
def exp(xp, x):
    return xp.exp(x)


@exp.vjp
def _(xp, g, out, x):
    return (g * out,)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(0.3, 3.0))
def log(xp, x):
    return xp.log(x)


@log.vjp
def _(xp, g, out, x):
    return (g / x,)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-0.5, 2.0))
def log1p(xp, x):
    return xp.log1p(x)


@log1p.vjp
def _(xp, g, out, x):
    return (g / (1 + x),)


@defop(batch="elementwise", save=("out",), float_inputs=True, samples=unary())
def expm1(xp, x):
    return xp.expm1(x)


@expm1.vjp
def _(xp, g, out, x):
    return (g * (out + 1),)


@defop(batch="elementwise", save=("out",), float_inputs=True, samples=unary(0.3, 3.0))
def sqrt(xp, x):
    return xp.sqrt(x)


@sqrt.vjp
def _(xp, g, out, x):
    return (g / (2 * out),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-3.0, 3.0))
def sin(xp, x):
    return xp.sin(x)


@sin.vjp
def _(xp, g, out, x):
    return (g * xp.cos(x),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-3.0, 3.0))
def cos(xp, x):
    return xp.cos(x)


@cos.vjp
def _(xp, g, out, x):
    return (-g * xp.sin(x),)


@defop(batch="elementwise", save=("out",), float_inputs=True, samples=unary(-1.2, 1.2))
def tan(xp, x):
    return xp.tan(x)


@tan.vjp
def _(xp, g, out, x):
    return (g + g * out * out,)              # 1 + tan^2


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-0.9, 0.9))
def arcsin(xp, x):
    return xp.arcsin(x)


@arcsin.vjp
def _(xp, g, out, x):
    return (g / xp.sqrt(1 - x * x),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-0.9, 0.9))
def arccos(xp, x):
    return xp.arccos(x)


@arccos.vjp
def _(xp, g, out, x):
    return (-g / xp.sqrt(1 - x * x),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-3.0, 3.0))
def arctan(xp, x):
    return xp.arctan(x)


@arctan.vjp
def _(xp, g, out, x):
    return (g / (1 + x * x),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-3.0, 3.0))
def sinh(xp, x):
    return xp.sinh(x)


@sinh.vjp
def _(xp, g, out, x):
    return (g * xp.cosh(x),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-3.0, 3.0))
def cosh(xp, x):
    return xp.cosh(x)


@cosh.vjp
def _(xp, g, out, x):
    return (g * xp.sinh(x),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-3.0, 3.0))
def arcsinh(xp, x):
    return xp.arcsinh(x)


@arcsinh.vjp
def _(xp, g, out, x):
    return (g / xp.sqrt(x * x + 1),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(1.2, 3.0))
def arccosh(xp, x):
    return xp.arccosh(x)


@arccosh.vjp
def _(xp, g, out, x):
    return (g / xp.sqrt((x - 1) * (x + 1)),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(-0.9, 0.9))
def arctanh(xp, x):
    return xp.arctanh(x)


@arctanh.vjp
def _(xp, g, out, x):
    return (g / (1 - x * x),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(0.3, 3.0))
def log2(xp, x):
    return xp.log2(x)


@log2.vjp
def _(xp, g, out, x):
    return (g / (x * _LN2),)


@defop(batch="elementwise", save=("x",), float_inputs=True, samples=unary(0.3, 3.0))
def log10(xp, x):
    return xp.log10(x)


@log10.vjp
def _(xp, g, out, x):
    return (g / (x * _LN10),)


@defop(batch="elementwise", save=("out",), float_inputs=True, samples=unary())
def exp2(xp, x):
    return xp.exp2(x)


@exp2.vjp
def _(xp, g, out, x):
    return (g * out * _LN2,)


@defop(batch="elementwise", save=("out",), float_inputs=True, samples=unary(0.3, 3.0))
def rsqrt(xp, x):
    return 1 / xp.sqrt(x)


@rsqrt.vjp
def _(xp, g, out, x):
    return (-0.5 * g * out * out * out,)      # d x^(-1/2) = -x^(-3/2) / 2


_LN2 = math.log(2.0)
_LN10 = math.log(10.0)


@defop(batch="elementwise", save=("out",), float_inputs=True, samples=unary(-3.0, 3.0), fused="tanh_backward")
def tanh(xp, x):
    return xp.tanh(x)


@tanh.vjp
def _(xp, g, out, x):
    # g (1 - out^2), written without the constant 1: NumPy takes ~0.3 us longer for an op
    # with a Python scalar than for one between arrays, which shows on small tensors
    return (g - g * out * out,)


def stable_sigmoid(xp: Any, x: Any) -> Any:
    """1 / (1 + exp(-x)) on arrays, as 1 / (1 + e) or e / (1 + e) with e = exp(-|x|) <= 1."""
    # NOTE: never overflows, and keeps full relative precision for very negative x (the form
    # 0.5 tanh(x / 2) + 0.5 rounds sigmoid(-20) to 0 in float32, so log(sigmoid(-20)) was -inf)
    e = xp.exp(-xp.abs(x))
    r = 1 / (1 + e)
    return xp.where(x >= 0, r, e * r)


@defop(batch="elementwise", save=("out",), float_inputs=True, samples=unary(-5.0, 5.0),
       fused="sigmoid_backward")
def sigmoid(xp, x):
    return stable_sigmoid(xp, x)


@sigmoid.vjp
def _(xp, g, out, x):
    return (g * (out - out * out),)      # g out (1 - out), without a scalar operand (see tanh)


@defop(batch="elementwise", save=("out",), samples=unary(), fused="relu_backward")
def relu(xp, x):
    return xp.maximum(x, 0)


@relu.vjp
def _(xp, g, out, x):
    # subgradient 0 at x == 0, as PyTorch and JAX. NOTE: a product with the mask is 5x faster
    # than numpy.where here; it differs only where g is NaN/Inf (NaN then, where gives 0).
    return (g * (out > 0),)


@defop(batch="elementwise", save=("x",), samples=unary())
def absolute(xp, x):
    return xp.abs(x)


@absolute.vjp
def _(xp, g, out, x):
    return (g * xp.sign(x),)


@defop(batch="elementwise", samples=unary())
def sign(xp, x):
    return xp.sign(x)


@sign.vjp
def _(xp, g, out, x):
    return (xp.zeros_like(g),)            # piecewise constant


@defop(batch="elementwise", save=("x",), samples=unary())
def square(xp, x):
    return xp.square(x)


@square.vjp
def _(xp, g, out, x):
    return (2 * g * x,)


@defop(batch="elementwise", save=("x",), samples=unary(-3.0, 3.0, lo=-1.0, hi=1.5))
def _clip(xp, x, *, lo, hi):
    return xp.clip(x, lo, hi)


@_clip.vjp
def _(xp, g, out, x, *, lo, hi):
    inside = True if lo is None else (x >= lo)
    if hi is not None:
        inside = inside & (x <= hi)
    return (xp.where(inside, g, 0),)


# ----------------------------------------------------------------------------- two-input selections


def _selection_vjp(xp, g, x, y, needs, x_loses, y_loses):
    # ties split the gradient evenly (PyTorch and JAX); where a NaN is involved neither side
    # loses, so both get the full gradient, as in PyTorch (ties and NaN: tests/test_parity_core.py)
    split = xp.where(x == y, 0.5 * g, g)
    return (xp.where(x_loses, 0, split) if needs[0] else None,
            xp.where(y_loses, 0, split) if needs[1] else None)


@defop(save=("x", "y"), broadcast=True, dtype_rule="promote", samples=binary())
def maximum(xp, x, y):
    return xp.maximum(x, y)


@maximum.vjp
def _(xp, g, out, x, y, needs):
    return _selection_vjp(xp, g, x, y, needs, x < y, y < x)


@defop(save=("x", "y"), broadcast=True, dtype_rule="promote", samples=binary())
def minimum(xp, x, y):
    return xp.minimum(x, y)


@minimum.vjp
def _(xp, g, out, x, y, needs):
    return _selection_vjp(xp, g, x, y, needs, x > y, y > x)


def _where_sample(rng):
    return Sample([Const(rng.uniform(size=(2, 3)) > 0.5), uniform(rng, -1, 1, (2, 3)),
                   uniform(rng, -1, 1, (3,))], name="mask-broadcast")


def _where_scalar_sample(rng):
    return Sample([Const(rng.uniform(size=(4,)) > 0.5), uniform(rng, -1, 1, (4,)), Const(0.0)],
                  name="mask-scalar")


@defop(save=("condition",), broadcast=True, dtype_rule="promote",
       samples=samples(_where_sample, _where_scalar_sample))
def _where(xp, condition, x, y):
    return xp.where(condition, x, y)


@_where.vjp
def _(xp, g, out, condition, x, y):
    return (None, xp.where(condition, g, 0), xp.where(condition, 0, g))


@defop(save=("x", "y"), broadcast=True, float_inputs=True, dtype_rule="promote", samples=binary(0.5, 2.0))
def arctan2(xp, x, y):
    """The angle of the point (y, x) in the plane: atan(x / y) in the right quadrant."""
    return xp.arctan2(x, y)


@arctan2.vjp
def _(xp, g, out, x, y, needs):
    r2 = x * x + y * y
    return (g * y / r2 if needs[0] else None, -g * x / r2 if needs[1] else None)


@defop(save=("x", "y", "out"), broadcast=True, float_inputs=True, dtype_rule="promote", samples=binary())
def logaddexp(xp, x, y):
    return xp.logaddexp(x, y)


@logaddexp.vjp
def _(xp, g, out, x, y, needs):
    return (g * xp.exp(x - out) if needs[0] else None, g * xp.exp(y - out) if needs[1] else None)


@defop(save=("x", "out"), broadcast=True, float_inputs=True, dtype_rule="promote", samples=binary())
def copysign(xp, x, y):
    """|x| with the sign of y."""
    return xp.copysign(x, y)


@copysign.vjp
def _(xp, g, out, x, y, needs):
    # +-1 where the sign flipped or not; 0 at x == 0, as PyTorch. No gradient reaches y.
    return (g * xp.sign(x) * xp.sign(out) if needs[0] else None, xp.zeros_like(g) if needs[1] else None)


# ----------------------------------------------------------------------------- no gradient


def _nondiff(name: str, fn: Any, dtype_rule: str | None = None) -> Any:
    def forward(xp, *args):
        return fn(xp)(*args)
    forward.__name__ = name
    return defop(differentiable=False, dtype_rule=dtype_rule, batch="elementwise")(forward)


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
isposinf = _nondiff("isposinf", lambda xp: lambda x: xp.isinf(x) & (x > 0) if x.dtype.kind == "f" else x != x)
isneginf = _nondiff("isneginf", lambda xp: lambda x: xp.isinf(x) & (x < 0) if x.dtype.kind == "f" else x != x)
# bitwise on integers, logical on bools (NumPy's ufuncs do both); floats are a TypeError
bitwise_and = _nondiff("bitwise_and", lambda xp: xp.bitwise_and, "promote")
bitwise_or = _nondiff("bitwise_or", lambda xp: xp.bitwise_or, "promote")
bitwise_xor = _nondiff("bitwise_xor", lambda xp: xp.bitwise_xor, "promote")
bitwise_not = _nondiff("bitwise_not", lambda xp: xp.invert)
left_shift = _nondiff("left_shift", lambda xp: xp.left_shift, "promote")
right_shift = _nondiff("right_shift", lambda xp: xp.right_shift, "promote")


@defop(batch="elementwise", differentiable=False)
def _isclose(xp, x, y, *, rtol, atol, equal_nan):
    return xp.isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan)


# ----------------------------------------------------------------------------- public wrappers

abs = absolute   # noqa: A001 - NumPy's name
sub = subtract
mul = multiply
pow = power      # noqa: A001


true_divide = divide
asin, acos, atan, atan2 = arcsin, arccos, arctan, arctan2
asinh, acosh, atanh = arcsinh, arccosh, arctanh
invert = bitwise_not


def clip(x: Any, min: Any = None, max: Any = None, *, a_min: Any = None, a_max: Any = None) -> Tensor:
    """Limit values to [min, max] (either may be None, either may be a tensor).

    The gradient reaches x where it lies inside [min, max] and each tensor bound where it won.
    """
    lo = a_min if min is None else min
    hi = a_max if max is None else max
    if lo is None and hi is None:
        raise ValueError("clip: give at least one of min and max")
    if hasattr(lo, "shape") or hasattr(hi, "shape"):       # tensor bounds: elementwise, broadcast
        out = x                                             # a nan bound wins, as in NumPy and PyTorch
        if lo is not None:
            out = _where(logical_or(less(out, lo), isnan(lo)), lo, out)
        if hi is not None:
            out = _where(logical_or(greater(out, hi), isnan(hi)), hi, out)
        return out
    data = x.data if isinstance(x, Tensor) else x
    if getattr(data, "dtype", None) is not None and data.dtype.kind in "biu" and \
            (isinstance(lo, float) or isinstance(hi, float)):
        x = Tensor._wrap(data.astype(dtypes.default_float))   # integers clipped to floats: default float
    return _clip(x, lo=lo, hi=hi)


clamp = clip


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """Elementwise ``x if condition else y``; the gradient flows to the branch that was taken."""
    return _where(condition, x, y)


def floor_divide(x: Any, y: Any) -> Tensor:
    """x / y rounded down (Python's ``//``); gradient 0."""
    return _divide_rounded(x, y, mode="floor")


def div(x: Any, y: Any, *, rounding_mode: str | None = None) -> Tensor:
    """x / y (true division), or rounded with ``rounding_mode`` "trunc" or "floor" (torch.div)."""
    if rounding_mode is None:
        return divide(x, y)
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")
    return _divide_rounded(x, y, mode=rounding_mode)


def round(x: Any, decimals: int = 0) -> Tensor:   # noqa: A001 - NumPy's and PyTorch's name
    """Round half to even (to ``decimals`` places), as NumPy and PyTorch; gradient 0."""
    return _round(x, decimals=int(decimals))


def lerp(start: Any, end: Any, weight: Any) -> Tensor:
    """start + weight (end - start), exactly ``end`` at weight 1 (PyTorch's two-sided formula)."""
    diff = subtract(end, start)
    if not hasattr(weight, "shape"):
        if -0.5 < weight < 0.5:
            return add(start, multiply(weight, diff))
        return subtract(end, multiply(diff, 1 - weight))
    near_start = less(absolute(weight), 0.5)
    low = add(start, multiply(weight, diff))
    return _where(near_start, low, subtract(end, multiply(diff, subtract(1, weight))))


def isclose(x: Any, y: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> Tensor:
    """Elementwise |x - y| <= atol + rtol * |y| (a bool tensor), as numpy.isclose."""
    return _isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan)


def allclose(x: Any, y: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    """True when every element is close (a Python bool), as numpy.allclose and torch.allclose."""
    return bool(isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan).data.all())
