"""Reductions over axes: sum, mean, max, min, prod (differentiable), var, std, logsumexp
(composites), argmax, argmin, all, any (no gradient)."""

from __future__ import annotations

import math
from typing import Any

from ..tensor import Tensor
from .registry import defop
from .samples import Sample, samples, uniform
from .util import expand_reduced, ndim_of, reduction_args


def _reduce_samples(lo: float = -2.0, hi: float = 2.0):
    def case(shape, axes, keepdims):
        return lambda rng: Sample([uniform(rng, lo, hi, shape)], {"axis": axes, "keepdims": keepdims},
                                  f"{shape}-{axes}-{keepdims}")
    return samples(case((), (), False), case((5,), (0,), False), case((2, 3), (0, 1), False),
                   case((2, 3), (1,), True), case((2, 3, 4), (0, 2), False), case((2, 3, 4), (1,), True))


# ----------------------------------------------------------------------------- differentiable


@defop(save=("x",), samples=_reduce_samples())
def _sum(xp, x, *, axis, keepdims):
    return xp.sum(x, axis=axis, keepdims=keepdims)


@_sum.vjp
def _(xp, g, out, x, *, axis, keepdims):
    return (xp.broadcast_to(expand_reduced(xp, g, axis, keepdims), x.shape),)


@defop(save=("x",), float_inputs=True, samples=_reduce_samples())
def _mean(xp, x, *, axis, keepdims):
    return xp.mean(x, axis=axis, keepdims=keepdims)


@_mean.vjp
def _(xp, g, out, x, *, axis, keepdims):
    count = math.prod(x.shape[a] for a in axis)
    return (xp.broadcast_to(expand_reduced(xp, g, axis, keepdims) / count, x.shape),)


def _extreme_vjp(xp, g, out, x, *, axis, keepdims):
    # the gradient is shared evenly among tied extremes, as in JAX and PyTorch's full reductions
    out = expand_reduced(xp, out, axis, keepdims)
    g = expand_reduced(xp, g, axis, keepdims)
    hit = x == out
    count = xp.sum(hit, axis=axis, keepdims=True).astype(g.dtype)
    return (xp.where(hit, g / count, 0),)


@defop(save=("x", "out"), samples=_reduce_samples())
def _max(xp, x, *, axis, keepdims):
    return xp.max(x, axis=axis, keepdims=keepdims)


@defop(save=("x", "out"), samples=_reduce_samples())
def _min(xp, x, *, axis, keepdims):
    return xp.min(x, axis=axis, keepdims=keepdims)


_max.vjp(_extreme_vjp)
_min.vjp(_extreme_vjp)


# NOTE: prod's rule builds exclusive products with cumprod/flip on arrays, which gpugrad
# does not differentiate, so prod has no create_graph (higher-order) support.
@defop(save=("x",), samples=_reduce_samples(0.5, 1.5), higher_order=False)
def _prod(xp, x, *, axis, keepdims):
    return xp.prod(x, axis=axis, keepdims=keepdims)


@_prod.vjp
def _(xp, g, out, x, *, axis, keepdims):
    # d prod / d x_i = product of the other elements; built from exclusive cumulative products
    # so that zeros in x are handled exactly (out / x would divide by zero).
    if x.size == 0 or not axis:
        return (xp.broadcast_to(expand_reduced(xp, g, axis, keepdims), x.shape),)
    keep = [i for i in range(x.ndim) if i not in axis]
    perm = keep + list(axis)
    moved = xp.transpose(x, perm)
    flat = xp.reshape(moved, moved.shape[:len(keep)] + (-1,))
    ones = xp.ones_like(flat[..., :1])
    before = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = xp.flip(xp.cumprod(xp.flip(xp.concatenate([flat[..., 1:], ones], axis=-1), axis=-1),
                               axis=-1), axis=-1)
    others = xp.reshape(before * after, moved.shape)
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    others = xp.transpose(others, inverse)
    return (expand_reduced(xp, g, axis, keepdims) * others,)


# ----------------------------------------------------------------------------- public functions


def sum(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None) -> Tensor:
    """Sum over ``axis`` (int, tuple or None for all); ``dim``/``keepdim`` are accepted too."""
    axes, keepdims = reduction_args("sum", x, axis, keepdims, dim, keepdim)
    return _sum(x, axis=axes, keepdims=keepdims)


def mean(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
         keepdim: bool | None = None) -> Tensor:
    """Arithmetic mean over ``axis``."""
    axes, keepdims = reduction_args("mean", x, axis, keepdims, dim, keepdim)
    return _mean(x, axis=axes, keepdims=keepdims)


def max(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None) -> Tensor:
    """Largest value over ``axis`` (values only, as NumPy and JAX; use argmax for indices)."""
    axes, keepdims = reduction_args("max", x, axis, keepdims, dim, keepdim)
    return _max(x, axis=axes, keepdims=keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None) -> Tensor:
    """Smallest value over ``axis`` (values only; use argmin for indices)."""
    axes, keepdims = reduction_args("min", x, axis, keepdims, dim, keepdim)
    return _min(x, axis=axes, keepdims=keepdims)


amax, amin = max, min


def prod(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
         keepdim: bool | None = None) -> Tensor:
    """Product over ``axis``; the gradient is exact even where x has zeros."""
    axes, keepdims = reduction_args("prod", x, axis, keepdims, dim, keepdim)
    return _prod(x, axis=axes, keepdims=keepdims)


def var(x: Any, axis: Any = None, keepdims: bool = False, *, ddof: int = 0, dim: Any = None,
        keepdim: bool | None = None, correction: int | None = None) -> Tensor:
    """Variance over ``axis`` with NumPy's default ddof=0 (PyTorch's ``correction`` is ddof)."""
    from .elementwise import multiply, subtract  # noqa: PLC0415

    axes, keepdims = reduction_args("var", x, axis, keepdims, dim, keepdim)
    ddof = ddof if correction is None else correction
    shape = getattr(getattr(x, "data", x), "shape", ())
    count = math.prod(shape[a] for a in axes) - ddof
    centred = subtract(x, _mean(x, axis=axes, keepdims=True))
    return _sum(multiply(centred, centred), axis=axes, keepdims=keepdims) / count


def std(x: Any, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
    """Standard deviation: sqrt(var(x, ...)), same arguments as var."""
    from .elementwise import sqrt  # noqa: PLC0415
    return sqrt(var(x, axis, keepdims, **kw))


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
              keepdim: bool | None = None) -> Tensor:
    """log(sum(exp(x))) over ``axis``, computed without overflow."""
    from .elementwise import add, exp, isfinite, log, subtract, where  # noqa: PLC0415

    axes, keepdims = reduction_args("logsumexp", x, axis, keepdims, dim, keepdim)
    # NOTE: shifting by the (constant) max keeps exp() <= 1; the shift cancels in the gradient.
    shift = _max(x, axis=axes, keepdims=True).detach()
    shift = where(isfinite(shift), shift, 0.0)
    total = _sum(exp(subtract(x, shift)), axis=axes, keepdims=True)
    out = add(log(total), shift)
    return out if keepdims else _squeeze_axes(out, axes)


def _squeeze_axes(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    from .shape import reshape  # noqa: PLC0415
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


# ----------------------------------------------------------------------------- no gradient


def _single_axis(op: str, x: Any, axis: Any, dim: Any) -> int | None:
    axis = dim if dim is not None else axis
    if axis is None:
        return None
    if isinstance(axis, (tuple, list)):
        raise TypeError(f"{op}: axis must be a single int or None, got {axis!r}")
    from .util import normalize_axis  # noqa: PLC0415
    return normalize_axis(op, axis, ndim_of(x))


@defop(differentiable=False)
def _argmax(xp, x, *, axis, keepdims):
    return xp.argmax(x, axis=axis, keepdims=keepdims)


@defop(differentiable=False)
def _argmin(xp, x, *, axis, keepdims):
    return xp.argmin(x, axis=axis, keepdims=keepdims)


@defop(differentiable=False)
def _all(xp, x, *, axis, keepdims):
    return xp.all(x, axis=axis, keepdims=keepdims)


@defop(differentiable=False)
def _any(xp, x, *, axis, keepdims):
    return xp.any(x, axis=axis, keepdims=keepdims)


def argmax(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
           keepdim: bool | None = None) -> Tensor:
    """Index of the largest value (over the flattened tensor when axis is None); int64."""
    keepdims = keepdims if keepdim is None else keepdim
    return _argmax(x, axis=_single_axis("argmax", x, axis, dim), keepdims=bool(keepdims))


def argmin(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
           keepdim: bool | None = None) -> Tensor:
    """Index of the smallest value; int64."""
    keepdims = keepdims if keepdim is None else keepdim
    return _argmin(x, axis=_single_axis("argmin", x, axis, dim), keepdims=bool(keepdims))


def all(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None) -> Tensor:
    """True where every element over ``axis`` is nonzero."""
    axes, keepdims = reduction_args("all", x, axis, keepdims, dim, keepdim)
    return _all(x, axis=axes, keepdims=keepdims)


def any(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None) -> Tensor:
    """True where some element over ``axis`` is nonzero."""
    axes, keepdims = reduction_args("any", x, axis, keepdims, dim, keepdim)
    return _any(x, axis=axes, keepdims=keepdims)
