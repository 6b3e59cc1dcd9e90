"""Scans and order: cumsum and cumprod (primitives); logcumsumexp, cummax, cummin, sort, argsort
and topk (composites: indices from an op without gradient, values gathered with getitem, whose
rule scatter-adds the gradient back to where each value came from)."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from .. import backend
from ..tensor import Tensor
from .registry import defop
from .samples import Sample, samples, uniform
from .util import ndim_of, normalize_axis, shape_of


def _values_indices(name: str) -> type:
    """PyTorch's return type for ops that give values and their indices (torch.return_types)."""
    return collections.namedtuple(name, ("values", "indices"))


MaxResult, MinResult = _values_indices("max"), _values_indices("min")
SortResult, TopkResult = _values_indices("sort"), _values_indices("topk")
CummaxResult, CumminResult = _values_indices("cummax"), _values_indices("cummin")


def _scan_case(shape: tuple, axis: int, lo: float = -2.0, hi: float = 2.0):
    return lambda rng: Sample([uniform(rng, lo, hi, shape)], {"axis": axis}, f"{shape}-{axis}")


def _scan_samples(lo: float = -2.0, hi: float = 2.0):
    return samples(_scan_case((5,), 0, lo, hi), _scan_case((2, 3), 1, lo, hi),
                   _scan_case((3, 2, 4), 0, lo, hi), _scan_case((2, 0), 1, lo, hi))


def _along(axis: int, index: Any) -> tuple:
    """An index tuple that applies ``index`` (a slice) to ``axis`` only."""
    return (slice(None),) * axis + (index,)


def _reversed(x: Any, axis: int) -> Any:
    # a negative-step slice: a view for arrays, a recorded getitem for Tensors (create_graph)
    return x[_along(axis, slice(None, None, -1))]


def _reverse_cumsum(xp: Any, g: Any, axis: int) -> Any:
    """sum_{j >= i} g_j along ``axis``: the adjoint of cumsum."""
    return _reversed(xp.cumsum(_reversed(g, axis), axis=axis), axis)


def log_step_scan(xp: Any, combine: Any, x: Any, axis: int) -> Any:
    """Inclusive scan of an associative ``combine`` along ``axis`` in log2(n) whole-array steps.

    Step k combines every element with the partial result 2^k places before it (Hillis and
    Steele), so it runs as a few vectorised calls on NumPy, CuPy or gpugrad's namespace alike.
    """
    n = x.shape[axis]
    k = 1
    while k < n:
        tail = combine(x[_along(axis, slice(k, None))], x[_along(axis, slice(0, n - k))])
        x = xp.concatenate([x[_along(axis, slice(0, k))], tail], axis=axis)
        k *= 2
    return x


# ----------------------------------------------------------------------------- primitives


@defop(samples=_scan_samples(), batch="scan")
def _cumsum(xp, x, *, axis):
    return xp.cumsum(x, axis=axis)


@_cumsum.vjp
def _(xp, g, out, x, *, axis):
    return (_reverse_cumsum(xp, g, axis),)


def _cumprod_zeros(rng):
    x = uniform(rng, 0.5, 1.5, (2, 5))
    x[0, 1] = x[0, 3] = x[1, 4] = 0.0            # a first zero, a later zero, a zero at the end
    return Sample([x], {"axis": 1}, "zeros")


@defop(save=("x", "out"), samples=lambda rng: _scan_samples(0.5, 1.5)(rng) + [_cumprod_zeros(rng)],
       batch="scan")
def _cumprod(xp, x, *, axis):
    return xp.cumprod(x, axis=axis)


@_cumprod.vjp
def _(xp, g, out, x, *, axis):
    # d out_j / d x_i = P_{i-1} prod_{i<k<=j} x_k for j >= i, with P the running product, so
    # grad_i = P_{i-1} S_i where S_i = g_i + x_{i+1} S_{i+1}: a linear recurrence, solved from the
    # end by a log-step scan. No division: zeros in x are exact, and the rule differentiates again.
    n = x.shape[axis]
    head = x[_along(axis, slice(0, 1))]
    before = xp.cumprod(xp.concatenate([xp.ones_like(head), x[_along(axis, slice(0, n - 1))]], axis=axis),
                        axis=axis)
    # reversed: T_t = h_t + a_t T_{t-1}, h the reversed g, a_t = x_{n-t} (a_0 = 0 ends the recurrence)
    h = _reversed(g, axis)
    a = xp.concatenate([xp.zeros_like(head), _reversed(x[_along(axis, slice(1, None))], axis)], axis=axis)
    k = 1
    while k < n:
        early, late = _along(axis, slice(0, n - k)), _along(axis, slice(k, None))
        h_late = h[late] + a[late] * h[early]
        a_late = a[late] * a[early]
        h = xp.concatenate([h[_along(axis, slice(0, k))], h_late], axis=axis)
        a = xp.concatenate([a[_along(axis, slice(0, k))], a_late], axis=axis)
        k *= 2
    return (before * _reversed(h, axis),)


# ----------------------------------------------------------------------------- indices (no gradient)


@defop(differentiable=False, batch="scan")
def _cum_extreme_indices(xp, x, *, axis, largest):
    """Where each running max (min) came from: the latest index on ties, a NaN once one appears."""
    running = log_step_scan(xp, xp.maximum if largest else xp.minimum, x, axis)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    position = xp.reshape(xp.arange(x.shape[axis]), shape)
    latest = (x == running) | xp.isnan(x) if x.dtype.kind == "f" else x == running
    marks = xp.where(latest, position, 0)
    return log_step_scan(xp, xp.maximum, marks, axis)


@defop(differentiable=False, batch="scan")
def _argsort(xp, x, *, axis, descending):
    """Stable ascending order (NaN last); descending keeps ties in order and puts NaN first."""
    stable = {"kind": "stable"} if xp is np else {}        # CuPy's sort is always stable
    if not descending:
        return xp.argsort(x, axis=axis, **stable)
    # sorting the reversed array and reversing the order gives a stable descending sort
    order = xp.argsort(_reversed(x, axis), axis=axis, **stable)
    return _reversed(x.shape[axis] - 1 - order, axis)


def take_along(x: Any, indices: Any, axis: int) -> Tensor:
    """x's values at ``indices`` along ``axis`` (an integer array shaped like x, except along axis)."""
    from ..batched import BatchedTensor  # noqa: PLC0415
    from .index import getitem  # noqa: PLC0415

    if type(indices) is not BatchedTensor:           # under vmap, indices per entry stay a tensor
        indices = indices.data if isinstance(indices, Tensor) else indices
    xp = backend.namespace(indices.data if isinstance(indices, Tensor) else indices)
    index = []
    for d in range(indices.ndim):
        if d == axis:
            index.append(indices)
        else:
            shape = [1] * indices.ndim
            shape[d] = indices.shape[d]
            index.append(xp.reshape(xp.arange(indices.shape[d]), shape))
    return getitem(x, tuple(index))


# ----------------------------------------------------------------------------- public functions


def _scan_axis(op: str, x: Any, axis: Any, dim: Any) -> int | None:
    """The scanned axis; None for a 0-d tensor (PyTorch: dim 0 or -1 of a 0-d tensor is itself)."""
    axis = dim if dim is not None else axis
    if ndim_of(x) == 0:
        if axis not in (None, 0, -1):
            raise ValueError(f"{op}: dim {axis} is out of range for a 0-d tensor (use 0 or -1)")
        return None
    if axis is None:
        raise TypeError(f"{op}: give the dimension to scan, e.g. {op}(x, dim=-1)")
    return normalize_axis(op, axis, ndim_of(x))


def scan_dim(op: str, x: Any, dim: Any) -> Any:
    """Tensor.cumsum(dim) and friends: PyTorch requires the dim (gg.cumsum flattens without one)."""
    if dim is None:
        raise TypeError(f"{op}: give the dimension to scan, e.g. x.{op}(dim=-1)")
    return dim


def _flat_or(op: str, x: Any, axis: Any, dim: Any) -> tuple[Any, int | None]:
    """NumPy's axis=None scans the flattened tensor; otherwise the axis as _scan_axis gives it."""
    from .shape import reshape  # noqa: PLC0415

    if axis is None and dim is None and ndim_of(x) > 0:
        return reshape(x, (-1,)), 0
    return x, _scan_axis(op, x, axis, dim)


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def cumsum(x: Any, axis: Any = None, *, dim: Any = None, dtype: Any = None) -> Tensor:
    """Running sums along ``axis`` (the flattened tensor when axis is None, as NumPy)."""
    from .reduce import _cast  # noqa: PLC0415

    x, axis = _flat_or("cumsum", _cast(_as_tensor(x), dtype), axis, dim)
    return x.clone() if axis is None else _cumsum(x, axis=axis)


def cumprod(x: Any, axis: Any = None, *, dim: Any = None, dtype: Any = None) -> Tensor:
    """Running products along ``axis``; the gradient is exact where x has zeros."""
    from .reduce import _cast  # noqa: PLC0415

    x, axis = _flat_or("cumprod", _cast(_as_tensor(x), dtype), axis, dim)
    return x.clone() if axis is None else _cumprod(x, axis=axis)


def logcumsumexp(x: Any, axis: Any = None, *, dim: Any = None) -> Tensor:
    """log(cumsum(exp(x))) along ``axis``, exact for any spread of values (a scan of logaddexp)."""
    import gpugrad  # noqa: PLC0415 - the scan runs on Tensors, through the package namespace

    from .elementwise import logaddexp  # noqa: PLC0415

    x, axis = _flat_or("logcumsumexp", _as_tensor(x), axis, dim)
    if x.dtype.kind != "f":
        from .convert import astype  # noqa: PLC0415
        x = astype(x, gpugrad.dtypes.default_float)
    return x.clone() if axis is None else log_step_scan(gpugrad, logaddexp, x, axis)


def _cum_extreme(op: str, result: type, x: Any, axis: Any, dim: Any, largest: bool) -> Any:
    x = _as_tensor(x)
    axis = _scan_axis(op, x, axis, dim)
    if axis is None:
        return result(x.clone(), Tensor._wrap(backend.namespace(x.data).zeros((), dtype=np.int64)))
    indices = _cum_extreme_indices(x, axis=axis, largest=largest)
    return result(take_along(x, indices, axis), indices)


def cummax(x: Any, axis: Any = None, *, dim: Any = None) -> Any:
    """(values, indices) of the running maximum along ``dim``; the gradient goes to each index."""
    return _cum_extreme("cummax", CummaxResult, x, axis, dim, True)


def cummin(x: Any, axis: Any = None, *, dim: Any = None) -> Any:
    """(values, indices) of the running minimum along ``dim``."""
    return _cum_extreme("cummin", CumminResult, x, axis, dim, False)


def _order_axis(op: str, x: Any, axis: Any, dim: Any) -> int | None:
    axis = dim if dim is not None else axis
    if ndim_of(x) == 0:
        return _scan_axis(op, x, axis, None)
    return normalize_axis(op, -1 if axis is None else axis, ndim_of(x))


def argsort(x: Any, axis: Any = -1, *, dim: Any = None, descending: bool = False,
            stable: bool = True) -> Tensor:
    """Indices that sort ``x`` along ``axis`` (stable; NaN sorts as the largest value); int64."""
    x = _as_tensor(x)
    axis = _order_axis("argsort", x, axis, dim)
    if axis is None:
        return Tensor._wrap(backend.namespace(x.data).zeros((), dtype=np.int64))
    return _argsort(x, axis=axis, descending=bool(descending))


def sort_with_indices(x: Any, axis: Any = -1, *, dim: Any = None, descending: bool = False,
                      stable: bool = True) -> Any:
    """PyTorch's sort: (values, indices) along ``dim``; the gradient goes back through the indices."""
    x = _as_tensor(x)
    indices = argsort(x, axis, dim=dim, descending=descending)
    axis = _order_axis("sort", x, axis, dim)
    return SortResult(x.clone() if axis is None else take_along(x, indices, axis), indices)


def sort(x: Any, axis: Any = -1, *, dim: Any = None, descending: bool = False, stable: bool = True) -> Tensor:
    """The sorted values along ``axis`` (NumPy's and JAX's sort; Tensor.sort also gives indices)."""
    return sort_with_indices(x, axis, dim=dim, descending=descending).values


def topk(x: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:   # noqa: A002
    """(values, indices) of the k largest (``largest=False``: smallest) entries along ``dim``."""
    x = _as_tensor(x)
    axis = _order_axis("topk", x, None, dim)
    size = 1 if axis is None else shape_of(x)[axis]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"topk: k must be an int, got {type(k).__name__}")
    if not 0 <= k <= size:
        raise RuntimeError(f"topk: selected index k={k} is out of range for dim {dim} of size {size} "
                           f"(tensor shape {shape_of(x)})")
    if axis is None:                               # PyTorch: a 0-d tensor is its own top-k
        return TopkResult(x.clone(), argsort(x))
    order = _argsort(x, axis=axis, descending=bool(largest))
    indices = order[_along(axis, slice(0, int(k)))]
    return TopkResult(take_along(x, indices, axis), indices)
