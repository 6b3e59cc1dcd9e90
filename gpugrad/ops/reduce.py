"""Reductions over axes: sum, mean, max, min, prod (differentiable), var, std, logsumexp
(composites), argmax, argmin, all, any (no gradient)."""

from __future__ import annotations

import math
import warnings
from typing import Any

from ..tensor import Tensor
from . import batching
from .registry import defop
from .samples import Sample, samples, uniform
from .util import expand_reduced, ndim_of, reduction_args, shape_of


def _axes(op: str, x: Any, axis: Any, keepdims: bool, dim: Any, keepdim: Any) -> tuple:
    """reduction_args, plus PyTorch's rule that a 0-d tensor takes dim 0 or -1 (and reduces nothing)."""
    if ndim_of(x) == 0:
        picked = dim if dim is not None else axis
        if picked in (0, -1) or picked in ((0,), (-1,), [0], [-1]):
            axis = dim = None
    return reduction_args(op, x, axis, keepdims, dim, keepdim)


def _cast(x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype`` first (PyTorch's ``dtype=`` of sum, mean, prod), or ``x`` itself."""
    if dtype is None:
        return x
    from .convert import astype  # noqa: PLC0415
    return astype(x, dtype)


def _reduce_samples(lo: float = -2.0, hi: float = 2.0):
    def case(shape, axes, keepdims):
        return lambda rng: Sample([uniform(rng, lo, hi, shape)], {"axis": axes, "keepdims": keepdims},
                                  f"{shape}-{axes}-{keepdims}")
    return samples(case((), (), False), case((5,), (0,), False), case((2, 3), (0, 1), False),
                   case((2, 3), (1,), True), case((2, 3, 4), (0, 2), False), case((2, 3, 4), (1,), True))


# ----------------------------------------------------------------------------- differentiable


@defop(save=("x",), samples=_reduce_samples(), batch="reduction")
def _sum(xp, x, *, axis, keepdims):
    return xp.sum(x, axis=axis, keepdims=keepdims)


@_sum.vjp
def _(xp, g, out, x, *, axis, keepdims):
    return (xp.broadcast_to(expand_reduced(xp, g, axis, keepdims), x.shape),)


@defop(save=("x",), float_inputs=True, samples=_reduce_samples(), batch="reduction")
def _mean(xp, x, *, axis, keepdims):
    return xp.mean(x, axis=axis, keepdims=keepdims)


@_mean.vjp
def _(xp, g, out, x, *, axis, keepdims):
    count = math.prod(x.shape[a] for a in axis)
    return (xp.broadcast_to(expand_reduced(xp, g, axis, keepdims) / count, x.shape),)


def _extreme_vjp(xp, g, out, x, *, axis, keepdims):
    # the gradient is shared evenly among tied extremes, as in JAX and PyTorch's full reductions;
    # where the extreme is NaN it goes to the NaN entries, as PyTorch's max() and min() (ties and
    # NaN: tests/test_parity_core.py; finite differences cannot cross a tie)
    out = expand_reduced(xp, out, axis, keepdims)
    g = expand_reduced(xp, g, axis, keepdims)
    hit = (x == out) | (xp.isnan(x) & xp.isnan(out))
    count = xp.sum(hit, axis=axis, keepdims=True).astype(g.dtype)
    return (xp.where(hit, g / count, 0),)


@defop(save=("x", "out"), samples=_reduce_samples(), batch="reduction")
def _max(xp, x, *, axis, keepdims):
    return xp.max(x, axis=axis, keepdims=keepdims)


@defop(save=("x", "out"), samples=_reduce_samples(), batch="reduction")
def _min(xp, x, *, axis, keepdims):
    return xp.min(x, axis=axis, keepdims=keepdims)


_max.vjp(_extreme_vjp)
_min.vjp(_extreme_vjp)


@defop(save=("x",), samples=_reduce_samples(0.5, 1.5), batch="reduction")
def _prod(xp, x, *, axis, keepdims):
    return xp.prod(x, axis=axis, keepdims=keepdims)


@_prod.vjp
def _(xp, g, out, x, *, axis, keepdims):
    # d prod / d x_i = product of the other elements; built from exclusive cumulative products
    # so that zeros in x are handled exactly (out / x would divide by zero). Reversals are
    # negative-step slices, so the rule also runs on Tensors (create_graph).
    if math.prod(x.shape) == 0 or not axis:
        return (xp.broadcast_to(expand_reduced(xp, g, axis, keepdims), x.shape),)
    keep = [i for i in range(x.ndim) if i not in axis]
    perm = keep + list(axis)
    moved = xp.transpose(x, perm)
    flat = xp.reshape(moved, moved.shape[:len(keep)] + (-1,))
    ones = xp.ones_like(flat[..., :1])
    before = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = xp.cumprod(xp.concatenate([flat[..., 1:], ones], axis=-1)[..., ::-1], axis=-1)[..., ::-1]
    others = xp.reshape(before * after, moved.shape)
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    others = xp.transpose(others, inverse)
    return (expand_reduced(xp, g, axis, keepdims) * others,)


# ----------------------------------------------------------------------------- public functions


def sum(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None, dtype: Any = None) -> Tensor:
    """Sum over ``axis`` (int, tuple or None for all); ``dim``/``keepdim`` are accepted too.

    ``dtype`` casts the input first (PyTorch's and NumPy's accumulation dtype).
    """
    axes, keepdims = _axes("sum", x, axis, keepdims, dim, keepdim)
    return _sum(_cast(x, dtype), axis=axes, keepdims=keepdims)


def mean(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
         keepdim: bool | None = None, dtype: Any = None) -> Tensor:
    """Arithmetic mean over ``axis``."""
    axes, keepdims = _axes("mean", x, axis, keepdims, dim, keepdim)
    return _mean(_cast(x, dtype), axis=axes, keepdims=keepdims)


def max(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None) -> Tensor:
    """Largest value over ``axis`` (values only, as NumPy and JAX; Tensor.max(dim) adds indices)."""
    axes, keepdims = _axes("max", x, axis, keepdims, dim, keepdim)
    return _max(x, axis=axes, keepdims=keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None) -> Tensor:
    """Smallest value over ``axis`` (values only; Tensor.min(dim) adds indices)."""
    axes, keepdims = _axes("min", x, axis, keepdims, dim, keepdim)
    return _min(x, axis=axes, keepdims=keepdims)


amax, amin = max, min


def max_dim(op: str, x: Any, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
            keepdims: bool | None = None) -> Any:
    """PyTorch's Tensor.max/min: the extreme; with ``dim`` (values, indices); with a tensor, maximum/minimum.

    The values are gathered at the indices, so the gradient goes to that entry (PyTorch's rule for
    max(dim)); the full reduction shares it among ties.
    """
    from .elementwise import maximum, minimum  # noqa: PLC0415
    from .scan import MaxResult, MinResult, take_along  # noqa: PLC0415
    from .shape import reshape  # noqa: PLC0415

    if hasattr(dim, "shape"):                                    # x.max(other): elementwise
        return (maximum if op == "max" else minimum)(x, dim)
    dim = axis if dim is None else dim
    keepdim = bool(keepdim if keepdims is None else keepdims)
    extreme = _max if op == "max" else _min
    if dim is None:
        return extreme(x, axis=tuple(range(ndim_of(x))), keepdims=False)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{op}: dim must be a single int, got {dim!r}; use amax/amin to reduce several dims")
    axis = _single_axis(op, x, dim, None)
    result = MaxResult if op == "max" else MinResult
    if axis is None:                                             # 0-d: the value itself, index 0
        return result(_sum(x, axis=(), keepdims=False), _argmax(x, axis=None, keepdims=False))
    shape = shape_of(x)
    if shape[axis] == 0:
        raise IndexError(f"{op}: expected reduction dim {axis} to have non-zero size (tensor shape {shape})")
    indices = (_argmax if op == "max" else _argmin)(x, axis=axis, keepdims=True)
    values = take_along(x, indices, axis)
    if keepdim:
        return result(values, indices)
    kept = shape[:axis] + shape[axis + 1:]
    return result(reshape(values, kept), reshape(indices, kept))


def prod(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
         keepdim: bool | None = None, dtype: Any = None) -> Tensor:
    """Product over ``axis``; the gradient is exact even where x has zeros."""
    axes, keepdims = _axes("prod", x, axis, keepdims, dim, keepdim)
    return _prod(_cast(x, dtype), axis=axes, keepdims=keepdims)


def _divisor(op: str, x: Any, axes: tuple[int, ...], ddof: Any) -> float:
    """1 / (N - ddof) for var and std; inf (with PyTorch's warning) when N - ddof <= 0."""
    shape = shape_of(x)
    count = math.prod(shape[a] for a in axes) - ddof
    if count <= 0:
        warnings.warn(f"{op}: degrees of freedom is <= 0 (correction {ddof} for {count + ddof} elements); "
                      "the result is inf or nan", RuntimeWarning, stacklevel=3)
        return math.inf
    return 1.0 / count


def var(x: Any, axis: Any = None, keepdims: bool = False, *, ddof: int = 0, dim: Any = None,
        keepdim: bool | None = None, correction: int | None = None) -> Tensor:
    """Variance over ``axis`` with NumPy's default ddof=0 (PyTorch's ``correction`` is ddof).

    N - ddof <= 0 gives inf (nan for a constant input), as PyTorch, never a negative variance.
    """
    from .elementwise import multiply, subtract  # noqa: PLC0415

    axes, keepdims = _axes("var", x, axis, keepdims, dim, keepdim)
    ddof = ddof if correction is None else correction
    scale = _divisor("var", x, axes, ddof)
    centred = subtract(x, _mean(x, axis=axes, keepdims=True))
    return multiply(_sum(multiply(centred, centred), axis=axes, keepdims=keepdims), scale)


def torch_variance_args(op: str, dim: Any, unbiased: Any, keepdim: bool, kw: dict) -> dict:
    """Tensor.var/std's arguments (PyTorch's: unbiased by default) as var/std's keywords."""
    kw = dict(kw)
    axis = kw.pop("axis", None)
    keepdims = kw.pop("keepdims", None)
    correction = kw.pop("correction", None)
    ddof = kw.pop("ddof", None)
    if kw:
        raise TypeError(f"{op}: unexpected keyword argument(s) {sorted(kw)}")
    if unbiased is not None and correction is not None:
        raise TypeError(f"{op}: give unbiased or correction, not both")
    if correction is None:
        correction = ddof if ddof is not None else (1 if unbiased is None or unbiased else 0)
    if dim is not None and axis is not None:
        raise TypeError(f"{op}: give dim or axis, not both")
    return {"axis": dim if dim is not None else axis, "correction": correction,
            "keepdims": bool(keepdim if keepdims is None else keepdims)}


def std(x: Any, axis: Any = None, keepdims: bool = False, *, ddof: int = 0, dim: Any = None,
        keepdim: bool | None = None, correction: int | None = None) -> Tensor:
    """Standard deviation, same arguments as var; its gradient is 0 for a constant input (PyTorch's)."""
    from .elementwise import multiply, subtract  # noqa: PLC0415
    from .linalg import _norm2  # noqa: PLC0415 - |x - mean|: its rule takes gradient 0 at 0

    axes, keepdims = _axes("std", x, axis, keepdims, dim, keepdim)
    ddof = ddof if correction is None else correction
    scale = _divisor("std", x, axes, ddof)
    centred = subtract(x, _mean(x, axis=axes, keepdims=True))
    return multiply(_norm2(centred, axis=axes, keepdims=keepdims), math.sqrt(scale))


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
              keepdim: bool | None = None) -> Tensor:
    """log(sum(exp(x))) over ``axis``, computed without overflow; -inf over an empty axis."""
    from .elementwise import add, exp, isfinite, log, subtract, where  # noqa: PLC0415

    axes, keepdims = _axes("logsumexp", x, axis, keepdims, dim, keepdim)
    shape = shape_of(x)
    if 0 in [shape[a] for a in axes]:               # an empty sum: log 0 (NumPy's max would raise)
        return add(_sum(x, axis=axes, keepdims=keepdims), -math.inf)
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
    if ndim_of(x) == 0 and axis in (0, -1):
        return None                                  # PyTorch: a 0-d tensor takes dim 0 or -1
    from .util import normalize_axis  # noqa: PLC0415
    return normalize_axis(op, axis, ndim_of(x))


@defop(differentiable=False)
def _argmax(xp, x, *, axis, keepdims):
    return xp.argmax(x, axis=axis, keepdims=keepdims)


@defop(differentiable=False)
def _argmin(xp, x, *, axis, keepdims):
    return xp.argmin(x, axis=axis, keepdims=keepdims)


def _index_of_extreme_batch(op: Any) -> Any:
    """argmax/argmin under vmap: one axis renumbered, or each entry flattened when axis is None."""
    def rule(batch, x, *, axis, keepdims):
        bdim = batch[0]
        if axis is not None:
            out = op(x, axis=batching.physical_axis(axis, bdim), keepdims=keepdims)
            return out, bdim if keepdims or axis >= bdim else bdim - 1
        from .shape import _reshape  # noqa: PLC0415
        x = batching.to_front(x, bdim)
        out = op(_reshape(x, shape=(x.shape[0], math.prod(x.shape[1:]))), axis=1, keepdims=False)
        return (_reshape(out, shape=(x.shape[0],) + (1,) * (x.ndim - 1)) if keepdims else out), 0
    return rule


_argmax.batch(_index_of_extreme_batch(_argmax))
_argmin.batch(_index_of_extreme_batch(_argmin))


@defop(differentiable=False, batch="reduction")
def _all(xp, x, *, axis, keepdims):
    return xp.all(x, axis=axis, keepdims=keepdims)


@defop(differentiable=False, batch="reduction")
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
    axes, keepdims = _axes("all", x, axis, keepdims, dim, keepdim)
    return _all(x, axis=axes, keepdims=keepdims)


def any(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None,   # noqa: A001
        keepdim: bool | None = None) -> Tensor:
    """True where some element over ``axis`` is nonzero."""
    axes, keepdims = _axes("any", x, axis, keepdims, dim, keepdim)
    return _any(x, axis=axes, keepdims=keepdims)
