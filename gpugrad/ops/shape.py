"""Shape ops: reshape, transpose, broadcast_to and concatenate are primitives; expand_dims,
squeeze, flatten, stack, permute and swapaxes are built from them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..tensor import Tensor
from . import batching
from .registry import defop
from .samples import Sample, samples, uniform
from .util import normalize_axes, normalize_axis, shape_of, sum_to_shape


def _case(shapes: Sequence[tuple], **params: Any):
    return lambda rng: Sample([uniform(rng, -2, 2, s) for s in shapes], dict(params),
                              f"{list(shapes)}-{params}")


# ----------------------------------------------------------------------------- primitives


@defop(save=("x",), samples=samples(_case([(2, 3)], shape=(3, 2)), _case([(2, 3, 4)], shape=(6, 4)),
                                     _case([()], shape=(1, 1))))
def _reshape(xp, x, *, shape):
    return xp.reshape(x, shape)


@_reshape.vjp
def _(xp, g, out, x, *, shape):
    return (xp.reshape(g, x.shape),)


@_reshape.batch
def _(batch, x, *, shape):
    return _reshape(batching.to_front(x, batch[0]), shape=(batch.size, *shape)), 0


@defop(samples=samples(_case([(2, 3)], axes=(1, 0)), _case([(2, 3, 4)], axes=(2, 0, 1))))
def _transpose(xp, x, *, axes):
    return xp.transpose(x, axes)


@_transpose.vjp
def _(xp, g, out, x, *, axes):
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a] = i
    return (xp.transpose(g, tuple(inverse)),)


@_transpose.batch
def _(batch, x, *, axes):
    bdim = batch[0]                          # the batch axis stays where it is
    order = [batching.physical_axis(a, bdim) for a in axes]
    order.insert(bdim, bdim)
    return _transpose(x, axes=tuple(order)), bdim


@defop(save=("x",), samples=samples(_case([(3,)], shape=(2, 3)), _case([(2, 1)], shape=(2, 4)),
                                     _case([()], shape=(2, 2)), _case([(1, 3)], shape=(2, 2, 3))))
def _broadcast_to(xp, x, *, shape):
    return xp.broadcast_to(x, shape)


@_broadcast_to.vjp
def _(xp, g, out, x, *, shape):
    return (sum_to_shape(xp, g, x.shape),)


@_broadcast_to.batch
def _(batch, x, *, shape):
    return _broadcast_to(batching.padded_front(x, batch[0], len(shape)), shape=(batch.size, *shape)), 0


@defop(samples=samples(_case([(2, 3), (1, 3)], axis=0, sizes=(2, 1)),
                       _case([(2, 1), (2, 2), (2, 3)], axis=1, sizes=(1, 2, 3))))
def _concatenate(xp, *xs, axis, sizes):
    return xp.concatenate(xs, axis=axis)


@_concatenate.vjp
def _(xp, g, out, *xs, axis, sizes):
    grads = []
    start = 0
    lead = (slice(None),) * axis
    for n in sizes:
        grads.append(g[lead + (slice(start, start + n),)])
        start += n
    return tuple(grads)


@_concatenate.batch
def _(batch, *xs, axis, sizes):
    xs = [batching.materialize(x, a, batch.size) for x, a in zip(xs, batch)]
    return _concatenate(*xs, axis=axis + 1, sizes=sizes), 0


# ----------------------------------------------------------------------------- public functions


def _as_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int) or hasattr(shape, "__index__"):
        return (int(shape),)
    return tuple(int(s) for s in shape)


def reshape(x: Any, shape: Any) -> Tensor:
    """The same elements in a new shape; one dimension may be -1 (inferred)."""
    shape = _as_shape(shape)
    old = shape_of(x)
    size = math.prod(old)
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {shape}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {old} ({size} elements) "
                             f"into shape {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    elif known != size or any(s < 0 for s in shape):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {old} ({size} elements) "
                         f"into shape {shape} ({known} elements)")
    return _reshape(x, shape=shape)


def transpose(x: Any, axes: Sequence[int] | None = None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None), as numpy.transpose."""
    ndim = len(shape_of(x))
    if axes is None:
        axes = tuple(reversed(range(ndim)))
    else:
        axes = tuple(normalize_axis("transpose", a, ndim) for a in axes)
        if sorted(axes) != list(range(ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the {ndim} axes "
                             f"of a tensor of shape {shape_of(x)}")
    return _transpose(x, axes=axes)


def permute(x: Any, dims: Sequence[int]) -> Tensor:
    """PyTorch's name for transpose with an explicit permutation."""
    return transpose(x, dims)


def swapaxes(x: Any, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes."""
    ndim = len(shape_of(x))
    a, b = normalize_axis("swapaxes", axis1, ndim), normalize_axis("swapaxes", axis2, ndim)
    perm = list(range(ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return _transpose(x, axes=tuple(perm))


def broadcast_to(x: Any, shape: Any) -> Tensor:
    """View ``x`` with NumPy broadcasting to ``shape``; the gradient sums back."""
    shape = _as_shape(shape)
    old = shape_of(x)
    lead = len(shape) - len(old)
    if lead < 0 or any(o not in (1, n) for o, n in zip(old, shape[lead:])):
        raise ValueError(f"broadcast_to: cannot broadcast a tensor of shape {old} to {shape}")
    return _broadcast_to(x, shape=shape)


def expand_dims(x: Any, axis: int | Sequence[int]) -> Tensor:
    """Insert size-1 axes at ``axis`` (positions in the result)."""
    old = shape_of(x)
    added = len(axis) if isinstance(axis, (tuple, list)) else 1
    axes = normalize_axes("expand_dims", axis, len(old) + added)
    rest = iter(old)
    return _reshape(x, shape=tuple(1 if i in axes else next(rest) for i in range(len(old) + len(axes))))


def unsqueeze(x: Any, dim: int) -> Tensor:
    """PyTorch's name for expand_dims with one axis."""
    return expand_dims(x, dim)


def squeeze(x: Any, axis: int | Sequence[int] | None = None, *, dim: Any = None) -> Tensor:
    """Remove size-1 axes (all of them when no axis is given).

    ``axis`` follows NumPy: naming an axis whose size is not 1 is a ValueError. ``dim``
    follows PyTorch (``Tensor.squeeze``): such a dimension is left as it is, and a 0-d
    tensor accepts dim 0 or -1.
    """
    old = shape_of(x)
    if dim is not None:
        if axis is not None:
            raise TypeError("squeeze: give axis (NumPy) or dim (PyTorch), not both")
        dims = normalize_axes("squeeze", dim, max(len(old), 1))
        axes = tuple(a for a in dims if a < len(old) and old[a] == 1)
    elif axis is None:
        axes = tuple(i for i, n in enumerate(old) if n == 1)
    else:
        axes = normalize_axes("squeeze", axis, len(old))
        for a in axes:
            if old[a] != 1:
                raise ValueError(f"squeeze: cannot squeeze axis {a} of size {old[a]} (tensor shape {old}); "
                                 "only size-1 axes can be removed (Tensor.squeeze(dim) leaves them)")
    return _reshape(x, shape=tuple(n for i, n in enumerate(old) if i not in axes))


def flatten(x: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge axes start_dim..end_dim into one (all of them by default)."""
    old = shape_of(x)
    if not old:
        return _reshape(x, shape=(1,))
    start = normalize_axis("flatten", start_dim, len(old))
    end = normalize_axis("flatten", end_dim, len(old))
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return _reshape(x, shape=old[:start] + (math.prod(old[start:end + 1]),) + old[end + 1:])


def concatenate(tensors: Sequence[Any], axis: int = 0, *, dim: Any = None) -> Tensor:
    """Join tensors along an existing axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    axis = dim if dim is not None else axis
    shapes = [shape_of(t) for t in tensors]
    ndim = len(shapes[0])
    if ndim == 0:
        raise ValueError("concatenate: 0-d tensors cannot be concatenated; use stack")
    axis = normalize_axis("concatenate", axis, ndim)
    for s in shapes:
        if len(s) != ndim or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]:
            raise ValueError(f"concatenate: shapes {shapes} differ outside axis {axis}")
    return _concatenate(*tensors, axis=axis, sizes=tuple(s[axis] for s in shapes))


cat = concatenate


def stack(tensors: Sequence[Any], axis: int = 0, *, dim: Any = None) -> Tensor:
    """Join tensors of one shape along a new axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    shapes = {shape_of(t) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    axis = dim if dim is not None else axis
    axis = normalize_axis("stack", axis, len(shapes.pop()) + 1)
    return concatenate([expand_dims(t, axis) for t in tensors], axis=axis)
