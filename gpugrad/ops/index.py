"""Indexing: ``x[index]`` read as PyTorch reads it, and the selections built on it.

One primitive, ``getitem`` (a NumPy index applied to the array), and its adjoint
``unindex`` (a scatter-add into zeros: repeated indices sum their gradients). PyTorch's
reading of an index differs from NumPy's in one place: an integer next to index arrays
selects first (``ones(2, 3, 4)[0, :, idx]`` is ``(3, len(idx))``, NumPy says
``(len(idx), 3)``). ``parse_index`` turns an index into one NumPy index, or two applied
one after the other when that difference matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend
from ..batched import BatchedTensor
from ..tensor import Tensor
from . import batching
from .convert import astype
from .elementwise import where
from .registry import defop
from .samples import Sample, samples, uniform
from .shape import broadcast_to
from .util import normalize_axis, shape_of, sum_to_shape

# ----------------------------------------------------------------------------- the primitive pair


def _case(shape: tuple, index: Any):
    return lambda rng: Sample([uniform(rng, -2, 2, shape)], {"index": index}, repr(index))


def _basic(index: tuple) -> bool:
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in index)


@defop(save=("x",), samples=samples(
    _case((5,), (slice(1, 4),)),
    _case((3, 4), (1,)),
    _case((3, 4), (Ellipsis, slice(None, None, 2))),
    _case((3, 4), (None, slice(0, 2), 3)),
    _case((3, 4), (slice(None, None, -1), slice(3, 0, -2))),
    _case((5,), (np.array([0, 2, 2, 4, 0]),)),                # repeated indices accumulate
    _case((3, 4), (np.array([2, 0, 2]), slice(1, 3))),
    _case((3, 4), (np.array([0, 1, 1]), np.array([3, 3, 0]))),
    _case((2, 3, 4), (np.array([[1], [0]]), slice(None), np.array([0, 3, 3]))),   # separated: dims go first
    _case((3, 4), np.nonzero(np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]]))),
))
def _getitem(xp, x, *, index):
    return x[index]


@_getitem.vjp
def _(xp, g, out, x, *, index):
    return (scatter_sum(g, index, x.shape),)


@defop(samples=samples(
    lambda rng: Sample([uniform(rng, -2, 2, (3,))], {"index": (slice(1, 4),), "shape": (5,)}),
    lambda rng: Sample([uniform(rng, -2, 2, (4,))], {"index": (np.array([0, 2, 2, 0]),), "shape": (3,)}),
))
def _unindex(xp, g, *, index, shape):
    """The adjoint of getitem: zeros of ``shape`` with ``g`` added at ``index`` (repeats add up)."""
    gx = xp.zeros(shape, dtype=g.dtype)
    if _basic(index):
        gx[index] = g
    else:
        backend.scatter_add(gx, index, g)
    return gx


@_unindex.vjp
def _(xp, g, out, x, *, index, shape):
    return (take(g, index),)                  # gather is the adjoint of scatter-add


# ----------------------------------------------------------------------------- batching (vmap)
# An index that is the same for every entry is applied with one more slice in front, for the
# batch axis. An index array that is itself batched selects per entry: the batch axis gets an
# index array of its own, arange(B), broadcast against the others. NumPy places the result's
# dimensions by where the index arrays sit (see _facts), and the rules follow it.


class _Facts:
    """Where NumPy puts the result dimensions of an index tuple on an array of ``ndim`` dimensions."""

    def __init__(self, index: tuple, ndim: int) -> None:
        arrays = any(hasattr(i, "shape") for i in index)
        advanced = [k for k, i in enumerate(index) if hasattr(i, "shape") or (arrays and isinstance(i, int))]
        used = sum(1 for i in index if i is not None and i is not Ellipsis)
        self.rank = max((len(index[k].shape) if hasattr(index[k], "shape") else 0 for k in advanced),
                        default=0)
        self.adjacent = not advanced or advanced[-1] - advanced[0] + 1 == len(advanced)
        # result dimensions before the advanced block (when it stays in place)
        self.before = sum(ndim - used if i is Ellipsis else 1
                          for i in index[:advanced[0]]) if advanced and self.adjacent else 0
        kept = sum(1 for i in index if i is None or isinstance(i, slice)) + ndim - used
        self.result_rank = kept + (self.rank if advanced else 0)
        self.first = bool(advanced) and not self.adjacent      # NumPy moves the advanced dims first


def _batched_items(index: tuple, level: int) -> bool:
    return any(type(i) is BatchedTensor and i.level == level for i in index)


def _per_entry_index(batch: Any, index: tuple, like: Any, ndim: int) -> tuple[tuple, int, int]:
    """The index with arange(B) in front for the batch axis and this level's index arrays unwrapped;
    also the advanced rank and how many result dims sit before the advanced block."""
    facts = _Facts(index, ndim)
    rank = facts.rank
    xp = backend.namespace(like.data)
    full: list[Any] = [xp.arange(batch.size).reshape((batch.size,) + (1,) * rank)]
    for i in index:
        if type(i) is BatchedTensor and i.level == batch.level:
            i = batching.padded_front(i.value, i.bdim, rank)
        full.append(i.data if isinstance(i, Tensor) and type(i) is not BatchedTensor else i)
    return tuple(full), rank, facts.before


def _around(x: Tensor, rank: int, before: int, forward: bool) -> Tensor:
    """Reorder (B, R, before...) <-> (B, before..., R) (R: the advanced block's result dims)."""
    if not before:
        return x
    from .shape import _transpose  # noqa: PLC0415
    rest = list(range(1 + rank + before, x.ndim))
    order = [0, *range(1 + rank, 1 + rank + before), *range(1, 1 + rank), *rest] if forward else \
        [0, *range(1 + before, 1 + before + rank), *range(1, 1 + before), *rest]
    return _transpose(x, axes=tuple(order))


@_getitem.batch
def _(batch, x, *, index):
    if not _batched_items(index, batch.level):
        x = batching.to_front(x, batch[0])
        facts = _Facts(index, x.ndim - 1)
        return _getitem(x, index=(slice(None),) + index), facts.rank if facts.first else 0
    x = batching.materialize(x, batch[0], batch.size)
    full, rank, before = _per_entry_index(batch, index, x, x.ndim - 1)
    return _around(_getitem(x, index=full), rank, before, True), 0


@_unindex.batch
def _(batch, g, *, index, shape):
    if not _batched_items(index, batch.level):
        facts = _Facts(index, len(shape))
        g = batching.move(g, batch[0], facts.rank if facts.first else 0)
        return _unindex(g, index=(slice(None),) + index, shape=(batch.size, *shape)), 0
    g = batching.materialize(g, batch[0], batch.size)
    full, rank, before = _per_entry_index(batch, index, g, len(shape))
    return _unindex(_around(g, rank, before, False), index=full, shape=(batch.size, *shape)), 0


def take(x: Any, index: tuple) -> Any:
    """``x[index]`` for a NumPy index tuple: recorded for a Tensor, plain for an array (rules use it)."""
    return _getitem(x, index=index) if isinstance(x, Tensor) else x[index]


def scatter_sum(g: Any, index: tuple, shape: tuple) -> Any:
    """Zeros of ``shape`` with ``g`` added at ``index``: recorded for a Tensor, plain for an array."""
    if isinstance(g, Tensor):                 # create_graph: the scatter must itself be recorded
        return _unindex(g, index=index, shape=tuple(shape))
    return _unindex.forward(backend.namespace(g), g, index=index, shape=tuple(shape))


# ----------------------------------------------------------------------------- reading an index


def _index_item(op: str, item: Any, xp: Any) -> Any:
    """One entry of an index as an int, slice, None, Ellipsis, bool, or an integer/bool array on ``xp``."""
    if type(item) is BatchedTensor:                # under vmap: an index array per batch entry
        if item.dtype.kind not in "iu":
            raise IndexError(f"{op}: under vmap a batched index must be an integer tensor, got {item.dtype}; "
                             "a boolean mask would select a different number of elements in each entry "
                             "(use gg.where)")
        return item
    if isinstance(item, Tensor):
        item = item.data
    elif isinstance(item, (list, tuple)):             # a sequence inside an index is an index array
        arr = np.asarray(item)
        item = xp.asarray(arr.astype(np.int64) if arr.size == 0 else arr)
    if item is None or item is Ellipsis or isinstance(item, (bool, slice)):
        return item
    if hasattr(item, "dtype"):
        if item.dtype == np.bool_:
            return bool(item) if item.ndim == 0 else _on(op, xp, item)
        if item.dtype.kind not in "iu":
            raise IndexError(f"{op}: index arrays must be integer or bool, got {item.dtype}")
        if item.ndim == 0:
            return int(item)                           # a 0-d integer selects, as a Python int does
        return _on(op, xp, item)
    if isinstance(item, int):
        return item
    if hasattr(item, "__index__"):
        return item.__index__()
    raise IndexError(f"{op}: unsupported index {item!r} of type {type(item).__name__}; "
                     "use ints, slices, None, ..., or integer/bool tensors")


def _on(op: str, xp: Any, arr: Any) -> Any:
    """An index array on the indexed tensor's device: a host index is copied over, a GPU one must match."""
    if backend.namespace(arr) is xp:
        return arr
    if xp is np:
        raise IndexError(f"{op}: the index is on {backend.device_of(arr)} but the tensor is on the cpu; "
                         "move the index with .cpu()")
    return xp.asarray(arr)


def _dims_used(item: Any) -> int:
    if item is None or item is Ellipsis or isinstance(item, bool):
        return 0
    return item.ndim if getattr(item, "dtype", None) == np.bool_ else 1       # a mask covers its dims


_BASIC = (int, slice, type(None), type(Ellipsis))


def parse_index(index: Any, shape: tuple[int, ...], xp: Any = np, op: str = "getitem") -> list[tuple]:
    """PyTorch's reading of ``index`` for a tensor of ``shape``: NumPy index tuples to apply in turn.

    Boolean masks become the integer arrays of their true positions (checked against the
    dimensions they cover), so the adjoint can scatter-add. The result is one NumPy index,
    or two (integers and slices first, then the index arrays) where NumPy would place the
    dimensions differently: integers split the index arrays apart only for NumPy.
    """
    if type(index) in _BASIC:
        return [(index,)]
    if type(index) is tuple and all(type(i) in _BASIC for i in index):
        return [index]                                 # basic indexing: NumPy and PyTorch agree
    items = [_index_item(op, i, xp) for i in (index if isinstance(index, tuple) else (index,))]
    ndim = len(shape)
    if sum(i is Ellipsis for i in items) > 1:
        raise IndexError(f"{op}: an index can only have a single ellipsis ('...')")
    used = sum(_dims_used(i) for i in items)
    if used > ndim:
        raise IndexError(f"{op}: too many indices for a tensor of dimension {ndim} (shape {shape}): "
                         f"the index covers {used} dimensions")
    merged: list[Any] = []          # one NumPy index
    kinds: list[str] = []           # per entry: "i" an integer, "a" an index array, "f" False, "o" other
    d = 0
    for item in items:
        if item is Ellipsis:
            merged += (slice(None),) * (ndim - used)
            kinds += "o" * (ndim - used)
            d += ndim - used
        elif item is None or item is True:
            merged.append(None)
            kinds.append("o")
        elif item is False:                               # a new axis of length 0
            merged.append(xp.zeros(0, dtype=np.int64))
            kinds.append("f")
        elif isinstance(item, int):
            n = shape[d]
            if not -n <= item < n:
                raise IndexError(f"{op}: index {item} is out of bounds for axis {d} with size {n} "
                                 f"(tensor shape {shape})")
            merged.append(item)
            kinds.append("i")
            d += 1
        elif isinstance(item, slice):
            merged.append(item)
            kinds.append("o")
            d += 1
        elif item.dtype == np.bool_:
            covered = shape[d:d + item.ndim]
            if tuple(item.shape) != covered:
                raise IndexError(f"{op}: the shape of the mask {tuple(item.shape)} does not match the shape "
                                 f"{covered} of the indexed tensor at dimension {d} (tensor shape {shape})")
            merged += item.nonzero()
            kinds += "a" * item.ndim
            d += item.ndim
        else:
            merged.append(item)
            kinds.append("a")
            d += 1
    if "f" not in kinds and not _placed_apart(kinds):
        return [tuple(merged)]
    basic = [None if k == "f" else slice(None) if k == "a" else m for m, k in zip(merged, kinds)]
    advanced = [m if k in "af" else slice(None) for m, k in zip(merged, kinds) if k != "i"]
    return [tuple(basic), tuple(advanced)]


def _placed_apart(kinds: list[str]) -> bool:
    """Whether NumPy, which counts integers among the index arrays, would move the arrays' dimensions
    to the front where PyTorch (integers select first) keeps them in place."""
    def together(marks: list[str], of: str) -> bool:
        where = [i for i, k in enumerate(marks) if k in of]
        return not where or where[-1] - where[0] + 1 == len(where)
    if "a" not in kinds or "i" not in kinds:
        return False
    return not together(kinds, "ai") and together([k for k in kinds if k != "i"], "a")


def getitem(x: Any, index: Any) -> Tensor:
    """``x[index]``: differentiable basic and advanced indexing, with PyTorch's placement of dimensions."""
    data = x.data if isinstance(x, Tensor) else x
    for step in parse_index(index, shape_of(x), backend.namespace(data)):
        x = _getitem(x, index=step)
    return x


def assign(data: Any, index: Any, value: Any) -> None:
    """``data[index] = value`` in place, reading ``index`` as PyTorch does (``Tensor.__setitem__``)."""
    _write(data, parse_index(index, tuple(data.shape), backend.namespace(data), "__setitem__"), value)


def _write(data: Any, steps: Sequence[tuple], value: Any) -> None:
    target = data
    for step in steps[:-1]:
        target = target[step]                  # basic indexing: a view, so the write goes through
    target[steps[-1]] = value


def _put_case(shape: tuple, steps: tuple, value_shape: tuple):
    return lambda rng: Sample([uniform(rng, -2, 2, shape), uniform(rng, -2, 2, value_shape)],
                              {"steps": steps, "value_shape": value_shape}, repr(steps))


@defop(samples=samples(
    _put_case((3, 4), ((slice(1, 3), 0),), (2,)),
    _put_case((3, 4), ((np.array([2, 0]),),), (1, 4)),                   # the value broadcasts
    _put_case((2, 3, 4), ((0, slice(None), slice(None)), (slice(None), np.array([1, 3]))), (3, 2)),
))
def _put(xp, x, v, *, steps, value_shape, in_place=False):
    """``x`` with ``v`` written at the index ``steps`` (``x[index] = v``); a copy unless ``in_place``."""
    out = x if in_place else x.copy()
    _write(out, steps, v)
    return out


@_put.vjp
def _(xp, g, out, x, v, *, steps, value_shape, in_place=False, needs):
    gx = gv = None
    if needs[0]:                               # the overwritten entries get nothing
        gx = _put(g, 0.0, steps=steps, value_shape=()) if isinstance(g, Tensor) else \
            _put.forward(xp, g, 0, steps=steps, value_shape=())
    if needs[1]:
        picked = g
        for step in steps:
            picked = take(picked, step)
        gv = sum_to_shape(xp, picked, value_shape)    # the value was broadcast over the indexed part
    return (gx, gv)


@_put.batch
def _(batch, x, v, *, steps, value_shape, in_place=False):
    if any(_batched_items(step, batch.level) for step in steps):
        raise NotImplementedError("put (x[index] = value): an index that differs per batch entry is not "
                                  "supported under vmap; use gg.where or scatter")
    if in_place:
        raise RuntimeError("__setitem__: writing a batched value into a tensor in place inside vmap; build a "
                           "new tensor instead (gg.where, or x.scatter)")
    ndim = batching.ndim_of(x, batch[0])
    for step in steps[:-1]:
        ndim = _Facts(step, ndim).result_rank
    last = _Facts(steps[-1], ndim)
    at = last.rank if last.first else 0                  # the batch axis of the selection
    x = batching.materialize(x, batch[0], batch.size)
    if batch[1] is not None or getattr(v, "shape", ()):     # a shared number broadcasts as it is
        v = batching.padded_front(batching.materialize(v, batch[1], batch.size), 0, last.result_rank)
        v = batching.move(v, 0, at)
        value_shape = tuple(v.shape)
    steps = tuple((slice(None),) + step for step in steps)
    return _put(x, v, steps=steps, value_shape=value_shape), 0


def put_(x: Tensor, index: Any, value: Any) -> Tensor:
    """``x[index] = value`` written into ``x``'s memory and recorded: the result to rebind ``x`` to."""
    steps = parse_index(index, x.shape, backend.namespace(x.data), "__setitem__")
    try:
        return _put(x, value, steps=tuple(steps), value_shape=shape_of(value), in_place=True)
    except ValueError as err:                  # say the name the user wrote
        raise ValueError(f"__setitem__{str(err).removeprefix('put')}") from None


# ----------------------------------------------------------------------------- selections


def index_select(x: Any, dim: int, index: Any) -> Tensor:
    """PyTorch's index_select: the entries of ``x`` at the 1-d integer ``index`` along ``dim``."""
    x = _tensor(x)
    idx = index.data if isinstance(index, Tensor) else np.asarray(index)
    if idx.dtype.kind not in "iu" or idx.ndim > 1:
        raise IndexError(f"index_select: index must be a 0-d or 1-d integer tensor, got {idx.dtype} of shape "
                         f"{tuple(idx.shape)}")
    idx = _on("index_select", backend.namespace(x.data), idx.reshape(-1))
    if x.ndim == 0:
        x = _getitem(x, index=(None,))
    dim = normalize_axis("index_select", dim, x.ndim)
    n = x.shape[dim]
    if idx.size and backend.namespace(idx) is np and (int(idx.min()) < -n or int(idx.max()) >= n):
        bad = int(idx.max()) if int(idx.max()) >= n else int(idx.min())
        raise IndexError(f"index_select: index {bad} is out of range for dimension {dim} with size {n}")
    return _getitem(x, index=(slice(None),) * dim + (idx,))


def masked_fill(x: Any, mask: Any, value: Any) -> Tensor:
    """PyTorch's masked_fill: ``value`` where the bool ``mask`` (broadcast) is True, ``x`` elsewhere.

    The result keeps ``x``'s dtype; a 0-d tensor ``value`` receives the gradient of the filled places.
    """
    x = _tensor(x)
    mask = mask if type(mask) is BatchedTensor else _mask("masked_fill", x, mask)
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError(f"masked_fill: value must be a number or a 0-d tensor, got shape "
                               f"{value.shape}")
        value = astype(value, x.dtype)
    else:
        value = backend.namespace(x.data).asarray(value, dtype=x.dtype)
    return where(mask, value, x)


def masked_select(x: Any, mask: Any) -> Tensor:
    """PyTorch's masked_select: the 1-d tensor of the entries where ``mask`` is True (both broadcast)."""
    x = _tensor(x)
    mask = _mask("masked_select", x, mask)
    shape = tuple(np.broadcast_shapes(x.shape, tuple(mask.shape)))
    xp = backend.namespace(mask)
    return _getitem(broadcast_to(x, shape), index=xp.broadcast_to(mask, shape).nonzero())


def nonzero(x: Any) -> tuple[Tensor, ...]:
    """NumPy's nonzero: a tuple of 1-d int64 tensors, one per dimension (``Tensor.nonzero`` is PyTorch's)."""
    data = _tensor(x).data
    if data.ndim == 0:
        raise ValueError("nonzero: a 0-d tensor has no dimensions to index; reshape it with x.reshape(1)")
    return tuple(Tensor._wrap(i.astype(np.int64, copy=False)) for i in data.nonzero())


def argwhere(x: Any) -> Tensor:
    """The (count, ndim) int64 tensor of the indices of the nonzero entries (NumPy's argwhere, PyTorch's
    ``Tensor.nonzero()``)."""
    data = _tensor(x).data
    xp = backend.namespace(data)
    return Tensor._wrap(xp.argwhere(data).astype(np.int64, copy=False))


def _mask(op: str, x: Tensor, mask: Any) -> Any:
    data = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if data.dtype != np.bool_:
        raise RuntimeError(f"{op}: the mask must be a bool tensor, got {data.dtype}; make one with a "
                           "comparison, e.g. x > 0")
    try:
        np.broadcast_shapes(x.shape, tuple(data.shape))
    except ValueError:
        raise RuntimeError(f"{op}: the mask of shape {tuple(data.shape)} does not broadcast with the input "
                           f"of shape {x.shape}") from None
    return _on(op, backend.namespace(x.data), data)


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)
