"""Gather and scatter along a dimension: PyTorch's gather/scatter family and NumPy's take_along_axis.

Each is fancy indexing with a full index tuple: the given indices along ``dim`` and each
position's own coordinate in the other dimensions. Gathers are ``getitem`` (its adjoint
scatter-adds). ``scatter`` (assignment) is a primitive. scatter_reduce is composed: "sum"
and "mean" on the scatter-add, "prod" on a segmented scan over the values sorted by target
position, "amax"/"amin" on a small primitive that shares the gradient evenly among the
values equal to the result, as PyTorch does. Nothing loops in Python over elements.

NOTE: index ranges are checked on the CPU only; on a GPU the check would wait for the
device, so out-of-range indices there are not reported (CuPy wraps them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from ..batched import BatchedTensor, all_entries
from ..tensor import Tensor
from . import batching
from .convert import clone
from .elementwise import where
from .index import _getitem, _per_entry_index, _unindex, scatter_sum, take
from .registry import defop
from .samples import Sample, samples, uniform
from .shape import concatenate, reshape
from .util import normalize_axis

REDUCTIONS = ("sum", "prod", "mean", "amax", "amin")


# ----------------------------------------------------------------------------- index helpers


def _index_data(op: str, x: Tensor, index: Any) -> Any:
    """The index's integer array, on the tensor's device (under vmap, a batched index stays a tensor)."""
    idx = index if type(index) is BatchedTensor else index.data if isinstance(index, Tensor) else \
        np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"{op}: expected an integer index tensor (int64 or int32), got {idx.dtype}")
    if type(idx) is BatchedTensor:
        return idx
    xp = backend.namespace(x.data)
    if backend.namespace(idx) is not xp:
        if xp is np:
            raise RuntimeError(f"{op}: the index is on {backend.device_of(idx)} but the input is on the "
                               "cpu; move the index with .cpu()")
        idx = xp.asarray(idx)
    return idx


def _xp_of(idx: Any) -> Any:
    """The array module of an index array (or of a batched index's batch)."""
    return backend.namespace(idx.data if type(idx) is BatchedTensor else idx)


def _check_range(op: str, idx: Any, n: int, dim: int, negative: bool = False) -> None:
    """Raise if an index is outside [0, n) (or [-n, n) with ``negative``); CPU only (see the NOTE above)."""
    idx = all_entries(idx)
    if not idx.size or backend.namespace(idx) is not np:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < (-n if negative else 0) or hi >= n:
        bad = hi if hi >= n else lo
        raise RuntimeError(f"{op}: index {bad} is out of bounds for dimension {dim} with size {n}")


def coordinates(xp: Any, idx: Any, axis: int, sizes: tuple[int, ...]) -> tuple:
    """The full index tuple: ``idx`` along ``axis``, ``arange(sizes[d])`` (broadcasting) in each other dim."""
    ndim = idx.ndim
    out = []
    for d in range(ndim):
        if d == axis:
            out.append(idx)
        else:
            shape = [1] * ndim
            shape[d] = sizes[d]
            out.append(xp.arange(sizes[d]).reshape(shape))
    return tuple(out)


def _flat_positions(xp: Any, index: tuple, shape: tuple[int, ...]) -> Any:
    """The C-order flat position in ``shape`` of each element that the full index tuple picks (1-D)."""
    flat = 0
    stride = 1
    for d in reversed(range(len(shape))):
        flat = flat + index[d].astype(np.int64, copy=False) * stride
        stride *= shape[d]
    return xp.broadcast_to(flat, np.broadcast_shapes(*(i.shape for i in index))).reshape(-1)


def _hit(xp: Any, positions: Any, shape: tuple[int, ...]) -> Any:
    """A bool array of ``shape``: True where some position points."""
    hit = xp.zeros(math.prod(shape), dtype=bool)
    hit[positions] = True
    return hit.reshape(shape)


def _dim_of(op: str, x: Tensor, idx: Any, dim: int) -> int:
    if idx.ndim != x.ndim:
        raise RuntimeError(f"{op}: the index must have as many dimensions as the input: index shape "
                           f"{tuple(idx.shape)}, input shape {x.shape}")
    return normalize_axis(op, dim, max(x.ndim, 1))


def _check_fits(op: str, idx: Any, shape: tuple[int, ...], dim: int | None, what: str) -> None:
    """The index may not be larger than ``shape`` in any dimension but ``dim``."""
    for d, (i, n) in enumerate(zip(idx.shape, shape)):
        if d != dim and i > n:
            raise RuntimeError(f"{op}: index of shape {tuple(idx.shape)} is larger than the {what} of shape "
                               f"{shape} in dimension {d}" + ("" if dim is None else
                                                               f" (only dim {dim} may be larger)"))


def _as_1d(x: Tensor, idx: Any) -> tuple[Tensor, Any, bool]:
    """0-d input and index as 1-d, as PyTorch treats them; the flag says to reshape back."""
    if x.ndim == 0 and idx.ndim == 0:
        return reshape(x, (1,)), idx.reshape(1), True
    return x, idx, False


# ----------------------------------------------------------------------------- gathers


def gather(x: Any, dim: int, index: Any) -> Tensor:
    """PyTorch's gather: ``out[i][j] = x[index[i][j]][j]`` (dim 0); ``index`` may be smaller than ``x``."""
    x = _tensor(x)
    idx = _index_data("gather", x, index)
    x, idx, scalar = _as_1d(x, idx)
    dim = _dim_of("gather", x, idx, dim)
    _check_fits("gather", idx, x.shape, dim, "input")
    _check_range("gather", idx, x.shape[dim], dim)
    out = _getitem(x, index=coordinates(_xp_of(idx), idx, dim, tuple(idx.shape)))
    return reshape(out, ()) if scalar else out


def take_along_axis(arr: Any, indices: Any, axis: int | None) -> Tensor:
    """NumPy's take_along_axis: index and array broadcast outside ``axis``; negative indices count back."""
    return _take_along("take_along_axis", arr, indices, axis, ValueError)


def take_along_dim(x: Any, indices: Any, dim: int | None = None) -> Tensor:
    """PyTorch's take_along_dim: take_along_axis, with both flattened when ``dim`` is None."""
    return _take_along("take_along_dim", x, indices, dim, RuntimeError)


def _take_along(op: str, x: Any, indices: Any, axis: int | None, error: type) -> Tensor:
    x = _tensor(x)
    idx = _index_data(op, x, indices)
    if axis is None:
        x, idx, axis = reshape(x, (-1,)), idx.reshape(-1), 0
    if idx.ndim != x.ndim:
        raise error(f"{op}: indices and input must have the same number of dimensions, got indices of "
                    f"shape {tuple(idx.shape)} and input of shape {x.shape}")
    axis = normalize_axis(op, axis, x.ndim)
    for d, (i, n) in enumerate(zip(idx.shape, x.shape)):
        if d != axis and i != n and 1 not in (i, n):
            raise error(f"{op}: indices of shape {tuple(idx.shape)} and input of shape {x.shape} do not "
                        f"broadcast in dimension {d}")
    _check_range(op, idx, x.shape[axis], axis, negative=True)
    return _getitem(x, index=coordinates(_xp_of(idx), idx, axis, x.shape))


# ----------------------------------------------------------------------------- scatter (assignment)


def _scatter_sample(rng):
    idx = np.array([[1, 2], [0, 3]])
    return Sample([uniform(rng, -2, 2, (3, 4)), uniform(rng, -2, 2, (2, 2))],
                  {"index": coordinates(np, idx, 1, idx.shape)}, "dim1")


@defop(samples=samples(_scatter_sample))
def _scatter(xp, x, src, *, index):
    out = x.copy()
    out[index] = src
    return out


@_scatter.vjp
def _(xp, g, out, x, src, *, index, needs):
    if any(type(i) is BatchedTensor for i in index):          # under vmap, an index per entry: the
        written = np.broadcast_shapes(*(tuple(i.shape) for i in index))   # written places by the op
        kept = _scatter(xp.zeros_like(g), xp.ones(written, dtype=g.dtype, device=g.device), index=index) == 0
    else:
        on = backend.namespace(g.data if isinstance(g, Tensor) else g)   # the mask lives with the gradient
        kept = ~_hit(on, on.asarray(_flat_positions(backend.namespace(index[0]), index, tuple(g.shape))),
                     tuple(g.shape))
    gx = xp.where(kept, g, 0) if needs[0] else None           # overwritten entries get nothing
    return (gx, take(g, index) if needs[1] else None)         # as PyTorch: src gets g.gather(dim, index)


@_scatter.batch
def _(batch, x, src, *, index):
    # the index is a full coordinate tuple (its rule needs one): arange(B) leads it for the batch axis
    x = batching.materialize(x, batch[0], batch.size)
    src = batching.materialize(src, batch[1], batch.size)
    return _scatter(x, src, index=_per_entry_index(batch, index, x, x.ndim - 1)[0]), 0


def _source(op: str, x: Tensor, idx: Any, dim: int, src: Any) -> Any:
    """``src`` cut to the index's shape (PyTorch uses only that corner of a larger ``src``)."""
    if not isinstance(src, Tensor):
        raise TypeError(f"{op}: src must be a Tensor, got {type(src).__name__}; pass a number as value=")
    if src.dtype != x.dtype:
        raise RuntimeError(f"{op}: expected src to have the input's dtype {x.dtype}, got {src.dtype}; "
                           f"convert it with src.to({str(x.dtype)!r})")
    if src.ndim != idx.ndim:
        raise RuntimeError(f"{op}: src must have as many dimensions as the index: src shape {src.shape}, "
                           f"index shape {tuple(idx.shape)}")
    _check_fits(op, idx, src.shape, None, "src")
    if src.shape == tuple(idx.shape):
        return src
    return _getitem(src, index=tuple(slice(0, n) for n in idx.shape))


def _prepare(op: str, x: Any, dim: int, index: Any) -> tuple[Tensor, Any, int, tuple]:
    x = _tensor(x)
    idx = _index_data(op, x, index)
    if x.ndim == 0:
        raise RuntimeError(f"{op}: the input must have at least one dimension; reshape it with x.reshape(1)")
    dim = _dim_of(op, x, idx, dim)
    _check_fits(op, idx, x.shape, dim, "input")
    _check_range(op, idx, x.shape[dim], dim)
    return x, idx, dim, coordinates(_xp_of(idx), idx, dim, tuple(idx.shape))


def scatter(x: Any, dim: int, index: Any, src: Any = None, *, value: Any = None,
            reduce: str | None = None) -> Tensor:
    """PyTorch's scatter: a copy of ``x`` with ``out[index[i][j]][j] = src[i][j]`` (dim 0), or ``value``.

    ``reduce="add"`` or ``"multiply"`` combine instead of assigning (PyTorch's older spelling
    of scatter_add and scatter_reduce(..., "prod")). With repeated indices, which source
    value lands is unspecified, as in PyTorch.
    """
    if src is not None and not isinstance(src, Tensor) and value is None:
        src, value = None, src                                   # x.scatter(dim, index, 2.0)
    if (src is None) == (value is None):
        raise TypeError("scatter: give either src (a Tensor) or value (a number), not both")
    x, idx, dim, full_index = _prepare("scatter", x, dim, index)
    if src is None:
        src = Tensor._wrap(backend.namespace(idx).full(idx.shape, value, dtype=x.dtype))
    else:
        src = _source("scatter", x, idx, dim, src)
    if reduce is None:
        return _scatter(x, src, index=full_index)
    kinds = {"add": "sum", "multiply": "prod"}
    if reduce not in kinds:
        raise ValueError(f"scatter: reduce must be 'add' or 'multiply', got {reduce!r}")
    return scatter_reduce(x, dim, index, src, kinds[reduce])


# ----------------------------------------------------------------------------- scatter_add, scatter_reduce


def scatter_add(x: Any, dim: int, index: Any, src: Any) -> Tensor:
    """PyTorch's scatter_add: ``x`` plus ``src`` added at the indexed positions (repeats add up)."""
    x, idx, dim, full_index = _prepare("scatter_add", x, dim, index)
    return x + _unindex(_source("scatter_add", x, idx, dim, src), index=full_index, shape=x.shape)


def scatter_reduce(x: Any, dim: int, index: Any, src: Any, reduce: str, *,
                   include_self: bool = True) -> Tensor:
    """PyTorch's scatter_reduce: combine the ``src`` values sent to each position with "sum", "prod",
    "mean", "amax" or "amin"; ``include_self`` counts ``x``'s own value among them. Positions
    that receive nothing keep ``x``. Integer "mean" rounds down, as PyTorch does.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"scatter_reduce: reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    x, idx, dim, full_index = _prepare("scatter_reduce", x, dim, index)
    src = _source("scatter_reduce", x, idx, dim, src)
    if not idx.size:
        return clone(x)
    xp = backend.namespace(idx)
    positions = _flat_positions(xp, full_index, x.shape)
    hit = _hit(xp, positions, x.shape)
    if reduce in ("sum", "mean"):
        total = (x if include_self else where(hit, 0, x)) + _unindex(src, index=full_index, shape=x.shape)
        if reduce == "sum":
            return total
        count = xp.zeros(x.shape, dtype=np.int32)        # int32: CUDA's atomicAdd has no int64
        backend.scatter_add(count, full_index, xp.ones(idx.shape, dtype=np.int32))
        count = xp.maximum(count + int(include_self), 1)
        if x.dtype.kind != "f":                                   # integers: floor division, no gradient
            return Tensor._wrap(xp.where(hit, total.data // count, x.data).astype(x.dtype))
        return where(hit, total / count.astype(x.dtype), x)
    size = math.prod(x.shape)
    if reduce == "prod":
        order = xp.argsort(positions, kind="stable")
        ordered = positions[order]
        from .. import ops  # noqa: PLC0415 - the op namespace (complete by now) scans Tensors
        products = segment_scan(ops, take(reshape(src, (-1,)), (order,)), ordered, "multiply")
        last = xp.searchsorted(ordered, xp.arange(size), side="right") - 1
        product = reshape(take(products, (xp.maximum(last, 0),)), x.shape)
        return where(hit, x * product if include_self else product, x)
    values, targets = reshape(src, (-1,)), positions
    if include_self:
        values = concatenate([reshape(x, (-1,)), values])
        targets = xp.concatenate([xp.arange(size), positions])
    extreme = _segment_extreme(values, positions=targets, size=size, kind=reduce)
    return where(hit, reshape(extreme, x.shape), x)


def segment_scan(xp: Any, v: Any, segments: Any, combine: str) -> Any:
    """Inclusive scan of 1-d ``v`` with ``xp.<combine>`` within runs of equal ``segments`` (sorted).

    Hillis-Steele doubling: log2(n) whole-array steps. Written against ``xp`` so that it runs
    on arrays (in a forward) and on Tensors (recorded, so its gradient comes for free).
    """
    op = getattr(xp, combine)
    n = v.shape[0]
    step = 1
    while step < n:
        same = segments[step:] == segments[:-step]           # a constant mask: same segment, step back
        v = xp.concatenate([v[:step], xp.where(same, op(v[step:], v[:-step]), v[step:])])
        step *= 2
    return v


def _extreme_sample(kind: str):
    def make(rng):
        return Sample([uniform(rng, -2, 2, (6,))],
                      {"positions": np.array([0, 2, 0, 1, 2, 2]), "size": 4, "kind": kind}, kind)
    return make


@defop(save=("values", "out"), samples=samples(_extreme_sample("amax"), _extreme_sample("amin")))
def _segment_extreme(xp, values, *, positions, size, kind):
    """The largest ("amax") or smallest ("amin") of the ``values`` sent to each position (0 where none)."""
    if not values.shape[0]:
        return xp.zeros(size, dtype=values.dtype)
    positions = xp.asarray(positions)
    order = xp.argsort(positions, kind="stable")
    ordered = positions[order]
    scanned = segment_scan(xp, values[order], ordered, "maximum" if kind == "amax" else "minimum")
    slots = xp.arange(size)
    last = xp.searchsorted(ordered, slots, side="right") - 1
    first = xp.searchsorted(ordered, slots, side="left")
    return xp.where(last >= first, scanned[xp.maximum(last, 0)], 0).astype(values.dtype)


@_segment_extreme.batch
def _(batch, values, *, positions, size, kind):
    # each entry's positions offset by entry * size: one segmented reduction over all entries
    values = batching.to_front(values, batch[0])
    b, n = values.shape
    xp = backend.namespace(positions)
    shifted = (xp.asarray(positions)[None, :] + xp.arange(b)[:, None] * size).reshape(-1)
    out = _segment_extreme(reshape(values, (b * n,)), positions=shifted, size=b * size, kind=kind)
    return reshape(out, (b, size)), 0


@_segment_extreme.vjp
def _(xp, g, out, values, *, positions, size, kind):
    # PyTorch's rule: the gradient at a position is shared evenly among the values equal to the result
    index = (positions,)
    hit = values == take(out, index)
    count = take(scatter_sum(hit.astype(g.dtype), index, (size,)), index)
    return (xp.where(hit, take(g, index) / xp.maximum(count, 1), 0),)


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)
