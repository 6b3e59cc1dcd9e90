"""Ops that move or copy elements without arithmetic: flip, roll, tile, repeat, split, triangles,
diagonals, meshgrid, sliding windows. All are composites of getitem, reshape, broadcast_to,
concatenate and where, so their gradients (of any order) come from those rules.

Names in the ``gg.*`` namespace follow NumPy (``split(x, sections)``, ``repeat`` as
``np.repeat``, ``tril(x, k)``, ``meshgrid`` with ``indexing="xy"``); the PyTorch meanings
(``Tensor.split(size)``, ``Tensor.repeat`` as tiling, ``chunk``, ``repeat_interleave``,
``unflatten``, ``unfold``) are their own functions, used by the Tensor methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend
from ..tensor import Tensor
from .elementwise import where
from .index import _getitem
from .shape import _reshape, broadcast_to, concatenate, reshape, transpose
from .util import normalize_axes, normalize_axis


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _along(ndim: int, axis: int, item: Any) -> tuple:
    """A NumPy index that applies ``item`` to ``axis`` and keeps every other axis whole."""
    return (slice(None),) * axis + (item,) + (slice(None),) * (ndim - axis - 1)


def _ints(op: str, value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, (tuple, list)) else (value,)
    try:
        return tuple(int(v.__index__()) for v in values)
    except AttributeError:
        raise TypeError(f"{op}: expected integers, got {value!r}") from None


# ----------------------------------------------------------------------------- reversing and rotating


def flip(x: Any, axis: int | Sequence[int] | None = None) -> Tensor:
    """Reverse the order of elements along ``axis`` (every axis when None, as numpy.flip)."""
    x = _tensor(x)
    axes = normalize_axes("flip", axis, x.ndim)
    if not axes:
        return _getitem(x, index=())
    return _getitem(x, index=tuple(slice(None, None, -1) if d in axes else slice(None)
                                   for d in range(x.ndim)))


def roll(x: Any, shift: int | Sequence[int], axis: int | Sequence[int] | None = None) -> Tensor:
    """Shift elements cyclically along ``axis`` (over the flattened tensor when None), as numpy.roll."""
    x = _tensor(x)
    shifts = _ints("roll", shift)
    if axis is None:
        if len(shifts) != 1:
            raise ValueError(f"roll: without an axis, shift must be one integer, got {shift}")
        return reshape(roll(reshape(x, (-1,)), shifts[0], 0), x.shape)
    axes = _ints("roll", axis)
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    elif len(axes) == 1:
        axes = axes * len(shifts)
    if len(shifts) != len(axes):
        raise ValueError(f"roll: shift {shift} and axis {axis} have different lengths")
    for s, a in zip(shifts, axes):
        a = normalize_axis("roll", a, x.ndim)
        n = x.shape[a]
        s = s % n if n else 0
        if s:
            x = concatenate([_getitem(x, index=_along(x.ndim, a, slice(n - s, None))),
                             _getitem(x, index=_along(x.ndim, a, slice(0, n - s)))], axis=a)
    return x


# ----------------------------------------------------------------------------- repeating


def tile(x: Any, reps: int | Sequence[int]) -> Tensor:
    """Repeat the whole tensor ``reps[d]`` times along each axis, as numpy.tile (PyTorch's Tensor.repeat)."""
    x = _tensor(x)
    reps = _ints("tile", reps)
    if any(r < 0 for r in reps):
        raise ValueError(f"tile: repetitions must be >= 0, got {reps}")
    ndim = max(len(reps), x.ndim)
    reps = (1,) * (ndim - len(reps)) + reps
    shape = (1,) * (ndim - x.ndim) + x.shape
    spread = _reshape(x, shape=tuple(v for n in shape for v in (1, n)))       # (1, a, 1, b, ...)
    wide = broadcast_to(spread, tuple(v for r, n in zip(reps, shape) for v in (r, n)))
    return _reshape(wide, shape=tuple(r * n for r, n in zip(reps, shape)))


def repeat_interleave(x: Any, repeats: Any, dim: int | None = None, *,
                      output_size: int | None = None) -> Tensor:
    """PyTorch's repeat_interleave: each element ``repeats`` times (an int, or one count per element).

    With a tensor of counts on a GPU, the output length is read back from the device unless
    ``output_size`` gives it (as in PyTorch).
    """
    x = _tensor(x)
    if dim is None:
        x, dim = reshape(x, (-1,)), 0
    dim = normalize_axis("repeat_interleave", dim, max(x.ndim, 1))
    if x.ndim == 0:
        x = reshape(x, (1,))
    n = x.shape[dim]
    counts = repeats.data if isinstance(repeats, Tensor) else repeats
    if hasattr(counts, "dtype") or isinstance(counts, (list, tuple)):
        counts = _on(x, counts)
        if counts.dtype.kind not in "iu" or counts.ndim > 1:
            raise TypeError(f"repeat_interleave: repeats must be an int or a 1-d integer tensor, got "
                            f"{counts.dtype} of shape {tuple(counts.shape)}")
        if counts.size != 1:
            return _repeat_counts(x, counts.reshape(-1), dim, output_size)
        counts = int(counts.reshape(-1)[0])
    counts = _ints("repeat_interleave", counts)[0]
    if counts < 0:
        raise ValueError(f"repeat_interleave: repeats can not be negative, got {counts}")
    spread = _reshape(x, shape=x.shape[:dim + 1] + (1,) + x.shape[dim + 1:])
    wide = broadcast_to(spread, x.shape[:dim + 1] + (counts,) + x.shape[dim + 1:])
    return _reshape(wide, shape=x.shape[:dim] + (n * counts,) + x.shape[dim + 1:])


def _repeat_counts(x: Tensor, counts: Any, dim: int, output_size: int | None) -> Tensor:
    n = x.shape[dim]
    if counts.shape[0] != n:
        raise ValueError(f"repeat_interleave: repeats must have one count per element of dimension {dim} "
                         f"({n}), got {counts.shape[0]}")
    xp = backend.namespace(counts)
    ends = xp.cumsum(counts)
    if xp is np:
        if n and int(counts.min()) < 0:
            raise ValueError("repeat_interleave: repeats can not be negative")
        if output_size is not None and n and output_size != int(ends[-1]):
            raise ValueError(f"repeat_interleave: output_size {output_size} differs from the sum of the "
                             f"repeats, {int(ends[-1])}")
    total = output_size if output_size is not None else (int(ends[-1]) if n else 0)
    source = xp.searchsorted(ends, xp.arange(total), side="right")    # output slot -> input element
    return _getitem(x, index=_along(x.ndim, dim, source))


def repeat(x: Any, repeats: Any, axis: int | None = None) -> Tensor:
    """numpy.repeat: each element ``repeats`` times along ``axis`` (flattened when None).

    This is PyTorch's ``repeat_interleave``; PyTorch's ``Tensor.repeat`` is ``tile``.
    """
    return repeat_interleave(x, repeats, axis)


def _on(x: Tensor, values: Any) -> Any:
    """Counts on the tensor's device (a list or a host array is copied over)."""
    xp = backend.namespace(x.data)
    if backend.namespace(values) is not xp and xp is np:
        raise RuntimeError(f"repeat_interleave: repeats are on {backend.device_of(values)} but the input is "
                           "on the cpu; move them with .cpu()")
    try:
        return xp.asarray(values)
    except ValueError as err:
        raise ValueError(f"repeat_interleave: repeats must be an int or a 1-d integer tensor ({err})") \
            from None


# ----------------------------------------------------------------------------- splitting


def _pieces(x: Tensor, axis: int, bounds: Sequence[tuple[int, int]]) -> list[Tensor]:
    return [_getitem(x, index=_along(x.ndim, axis, slice(a, b))) for a, b in bounds]


def split(x: Any, indices_or_sections: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """numpy.split: ``N`` equal sections (N must divide the axis), or pieces cut at the given indices.

    ``Tensor.split`` is PyTorch's (pieces of a given size): see ``split_sizes``.
    """
    x = _tensor(x)
    axis = normalize_axis("split", axis, x.ndim)
    n = x.shape[axis]
    if isinstance(indices_or_sections, (list, tuple)):
        cuts = [0, *(min(max(int(i) + n if int(i) < 0 else int(i), 0), n) for i in indices_or_sections), n]
        return _pieces(x, axis, [(a, max(a, b)) for a, b in zip(cuts[:-1], cuts[1:])])
    sections = _ints("split", indices_or_sections)[0]
    if sections <= 0 or n % sections:
        raise ValueError(f"split: {sections} sections do not divide axis {axis} of size {n} equally "
                         "(Tensor.split takes piece sizes, as PyTorch)")
    size = n // sections
    return _pieces(x, axis, [(i * size, (i + 1) * size) for i in range(sections)])


def split_sizes(x: Any, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """PyTorch's split: pieces of ``split_size`` (the last may be smaller), or of the listed sizes."""
    x = _tensor(x)
    dim = normalize_axis("split", dim, x.ndim)
    n = x.shape[dim]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = _ints("split", split_size_or_sections)
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise ValueError(f"split: sizes {list(sizes)} must be >= 0 and sum to {n}, the size of dimension "
                             f"{dim} (shape {x.shape})")
    else:
        size = _ints("split", split_size_or_sections)[0]
        if size < 0 or (size == 0 and n):
            raise ValueError(f"split: split_size must be > 0 for a dimension of size {n}, got {size}")
        sizes = tuple(min(size, n - start) for start in range(0, n, size)) if n else (0,)
    starts = np.cumsum((0, *sizes))
    return tuple(_pieces(x, dim, list(zip(starts[:-1].tolist(), starts[1:].tolist()))))


def chunk(x: Any, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """PyTorch's chunk: at most ``chunks`` pieces of ceil(n / chunks) elements along ``dim``."""
    x = _tensor(x)
    chunks = _ints("chunk", chunks)[0]
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be greater than 0, got {chunks}")
    dim = normalize_axis("chunk", dim, x.ndim)
    n = x.shape[dim]
    if not n:
        return tuple(_pieces(x, dim, [(0, 0)] * chunks))
    return split_sizes(x, -(-n // chunks), dim)


def unflatten(x: Any, dim: int, sizes: Sequence[int]) -> Tensor:
    """PyTorch's unflatten: split dimension ``dim`` into ``sizes`` (one of them may be -1)."""
    x = _tensor(x)
    dim = normalize_axis("unflatten", dim, x.ndim)
    sizes = _ints("unflatten", sizes)
    if not sizes:
        raise ValueError("unflatten: sizes must be non-empty")
    n = x.shape[dim]
    known = math.prod(s for s in sizes if s != -1)
    if sizes.count(-1) > 1 or (-1 not in sizes and known != n) or (-1 in sizes and (known == 0 or n % known)):
        raise ValueError(f"unflatten: sizes {list(sizes)} do not multiply up to the size {n} of dimension "
                         f"{dim} (shape {x.shape})")
    sizes = tuple(n // known if s == -1 else s for s in sizes)
    return _reshape(x, shape=x.shape[:dim] + sizes + x.shape[dim + 1:])


# ----------------------------------------------------------------------------- triangles and diagonals


def _triangle(op: str, x: Any, k: int, lower: bool) -> Tensor:
    x = _tensor(x)
    if x.ndim < 2:
        raise ValueError(f"{op}: the input must have at least 2 dimensions, got shape {x.shape}")
    xp = backend.namespace(x.data)
    rows, cols = x.shape[-2:]
    keep = xp.tri(rows, cols, k, dtype=bool) if lower else ~xp.tri(rows, cols, k - 1, dtype=bool)
    return where(keep, x, xp.zeros((), dtype=x.dtype))


def tril(x: Any, k: int = 0) -> Tensor:
    """The lower triangle of the last two axes (on and below diagonal ``k``); zeros above."""
    return _triangle("tril", x, int(k), lower=True)


def triu(x: Any, k: int = 0) -> Tensor:
    """The upper triangle of the last two axes (on and above diagonal ``k``); zeros below."""
    return _triangle("triu", x, int(k), lower=False)


def diagonal(x: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Tensor:
    """The diagonal ``offset`` of the (axis1, axis2) planes, as a new last axis (numpy.diagonal)."""
    x = _tensor(x)
    if x.ndim < 2:
        raise ValueError(f"diagonal: the input must have at least 2 dimensions, got shape {x.shape}")
    a, b = normalize_axis("diagonal", axis1, x.ndim), normalize_axis("diagonal", axis2, x.ndim)
    if a == b:
        raise ValueError(f"diagonal: axis1 and axis2 cannot be the same axis ({a})")
    offset = int(offset)
    rest = [d for d in range(x.ndim) if d not in (a, b)]
    planes = transpose(x, (*rest, a, b))
    rows, cols = x.shape[a], x.shape[b]
    length = max(0, min(rows + min(offset, 0), cols - max(offset, 0)))
    flat = _reshape(planes, shape=planes.shape[:-2] + (rows * cols,))
    start = offset if offset >= 0 else -offset * cols
    # the diagonal of a row-major (rows, cols) plane is every (cols + 1)-th element from its start
    picked = slice(start, start + (length - 1) * (cols + 1) + 1, cols + 1) if length else slice(0, 0)
    return _getitem(flat, index=(Ellipsis, picked))


def diag(v: Any, k: int = 0) -> Tensor:
    """A 1-d input on diagonal ``k`` of a square zero matrix, or the diagonal of a 2-d input (numpy.diag)."""
    v = _tensor(v)
    k = int(k)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ValueError(f"diag: the input must be 1-d or 2-d, got shape {v.shape}")
    xp = backend.namespace(v.data)
    n = v.shape[0] + abs(k)
    padded = concatenate([v, Tensor._wrap(xp.zeros(abs(k), dtype=v.dtype))]) if k else v
    # row i of the matrix holds v[i] at column i + k (k >= 0); column j holds v[j] at row j - k (k < 0)
    lines = broadcast_to(reshape(padded, (n, 1) if k >= 0 else (1, n)), (n, n))
    return where(xp.eye(n, k=k, dtype=bool), lines, xp.zeros((), dtype=v.dtype))


# ----------------------------------------------------------------------------- grids and windows


def meshgrid(*xi: Any, indexing: str = "xy") -> tuple[Tensor, ...]:
    """Coordinate grids from 1-d inputs (numpy.meshgrid: ``indexing="xy"`` by default; PyTorch's is "ij")."""
    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', got {indexing!r}")
    if len(xi) == 1 and isinstance(xi[0], (list, tuple)):
        xi = tuple(xi[0])
    lines = [reshape(_tensor(x), (-1,)) for x in xi]
    shape = [t.shape[0] for t in lines]
    if indexing == "xy" and len(lines) > 1:
        shape[0], shape[1] = shape[1], shape[0]
    grids = []
    for i, t in enumerate(lines):
        axis = 1 - i if indexing == "xy" and i < 2 and len(lines) > 1 else i
        view = [1] * len(lines)
        view[axis] = t.shape[0]
        grids.append(broadcast_to(_reshape(t, shape=tuple(view)), tuple(shape)))
    return tuple(grids)


def unfold(x: Any, dimension: int, size: int, step: int) -> Tensor:
    """PyTorch's Tensor.unfold: windows of ``size`` every ``step`` along ``dimension``, as a new last axis."""
    x = _tensor(x)
    scalar = x.ndim == 0
    if scalar:
        x = reshape(x, (1,))
    d = normalize_axis("unfold", dimension, x.ndim)
    size, step = _ints("unfold", size)[0], _ints("unfold", step)[0]
    n = x.shape[d]
    if step <= 0:
        raise ValueError(f"unfold: step is {step} but must be > 0")
    if not 0 <= size <= n:
        raise ValueError(f"unfold: size {size} must be between 0 and {n}, the size of dimension {d}")
    xp = backend.namespace(x.data)
    windows = (n - size) // step + 1
    starts = xp.arange(windows) * step
    windows_index = starts[:, None] + xp.arange(size)
    picked = _getitem(x, index=_along(x.ndim, d, windows_index))           # (..., windows, size, ...)
    perm = (*range(d + 1), *range(d + 2, picked.ndim), d + 1)         # the window axis goes last
    out = transpose(picked, perm) if d + 2 < picked.ndim else picked
    return reshape(out, (size,)) if scalar else out
