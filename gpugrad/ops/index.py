"""Indexing: ``x[index]`` with basic slicing and integer/boolean array indexing.

The VJP scatters the incoming gradient back into zeros of the input's shape;
with integer arrays it scatter-*adds*, so repeated indices sum their gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..tensor import Tensor
from .registry import defop
from .samples import Sample, samples, uniform


def _case(shape: tuple, index: Any):
    return lambda rng: Sample([uniform(rng, -2, 2, shape)], {"index": index}, repr(index))


def _basic(index: tuple) -> bool:
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in index)


@defop(save=("x",), samples=samples(
    _case((5,), (slice(1, 4),)),
    _case((3, 4), (1,)),
    _case((3, 4), (Ellipsis, slice(None, None, 2))),
    _case((3, 4), (None, slice(0, 2), 3)),
    _case((5,), (np.array([0, 2, 2, 4, 0]),)),                # repeated indices accumulate
    _case((3, 4), (np.array([2, 0, 2]), slice(1, 3))),
    _case((3, 4), (np.array([0, 1, 1]), np.array([3, 3, 0]))),
    _case((3, 4), np.nonzero(np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]]))),
))
def _getitem(xp, x, *, index):
    return x[index]


@_getitem.vjp
def _(xp, g, out, x, *, index):
    if isinstance(g, Tensor):                 # create_graph: the scatter must itself be recorded
        return (_unindex(g, index=index, shape=x.shape),)
    return (_unindex.forward(xp, g, index=index, shape=x.shape),)


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
    return (g[index],)                        # gather is the adjoint of scatter-add


def plain_index(index: Any) -> tuple:
    """Normalise an index to a tuple of ints, slices, None, Ellipsis and integer arrays.

    Tensors become their arrays; Python lists become integer arrays; boolean masks
    become the integer arrays of their nonzero positions (so scatter-add handles them).
    """
    if not isinstance(index, tuple):
        index = (index,)
    out: list[Any] = []
    for item in index:
        if isinstance(item, Tensor):
            item = item.data
        elif isinstance(item, list):
            item = np.asarray(item)
        if isinstance(item, bool) or (hasattr(item, "dtype") and item.dtype == np.bool_):
            mask = backend.namespace(item).asarray(item)
            out.extend(mask.nonzero())
            continue
        if hasattr(item, "dtype"):
            if item.dtype.kind not in "iu":
                raise IndexError(f"getitem: index arrays must be integer or bool, got {item.dtype}")
            if item.ndim == 0:
                item = int(item)
        elif not (item is None or item is Ellipsis or isinstance(item, (int, slice))):
            if hasattr(item, "__index__"):
                item = item.__index__()
            else:
                raise IndexError(f"getitem: unsupported index {item!r} of type {type(item).__name__}; "
                                 "use ints, slices, None, ..., or integer/bool arrays")
        out.append(item)
    return tuple(out)


def getitem(x: Any, index: Any) -> Tensor:
    """``x[index]``: differentiable basic and advanced indexing."""
    return _getitem(x, index=plain_index(index))
