"""Helpers shared by op rules and wrappers: axis normalisation and un-broadcasting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def ndim_of(x: Any) -> int:
    """Tensors and arrays by their attribute (a CuPy array's .data is a pointer); lists as NumPy does."""
    ndim = getattr(x, "ndim", None)
    if ndim is not None:
        return ndim
    return np.ndim(x) if isinstance(x, (list, tuple)) else 0


def shape_of(x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if shape is not None:
        return tuple(shape)
    return np.shape(x) if isinstance(x, (list, tuple)) else ()


def normalize_axis(op: str, axis: int, ndim: int) -> int:
    """A single axis in [0, ndim); negative axes count from the end."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        try:
            axis = axis.__index__()
        except AttributeError:
            raise TypeError(f"{op}: axis must be an int, got {type(axis).__name__}") from None
    if not -ndim <= axis < ndim:     # NumPy's AxisError is a ValueError and an IndexError (PyTorch's type)
        raise np.exceptions.AxisError(f"{op}: axis {axis} is out of range for a tensor with {ndim} "
                                      f"dimension(s) (valid: {-ndim}..{ndim - 1})" if ndim else
                                      f"{op}: axis {axis} is out of range for a 0-d tensor")
    return axis % ndim


def normalize_axes(op: str, axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """None means every axis; an int or a sequence of ints becomes a sorted tuple without repeats."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (list, tuple)):
        axes = tuple(normalize_axis(op, a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{op}: repeated axis in {tuple(axis)}")
        return tuple(sorted(axes))
    return (normalize_axis(op, axis, ndim),)


def reduction_args(op: str, x: Any, axis: Any, keepdims: bool, dim: Any, keepdim: Any) -> tuple:
    """Accept NumPy's axis/keepdims and PyTorch's dim/keepdim; return (axes tuple, keepdims)."""
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{op}: give axis or dim, not both")
        axis = dim
    if keepdim is not None:
        keepdims = keepdim
    return normalize_axes(op, axis, ndim_of(x)), bool(keepdims)


def sum_to_shape(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, giving ``shape`` back."""
    gshape = tuple(g.shape)
    if gshape == tuple(shape):
        return g
    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and gshape[lead + i] != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    if lead:
        g = xp.reshape(g, shape)
    return g


def expand_reduced(xp: Any, g: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
    """Put back the reduced axes (as size 1) so ``g`` broadcasts against the reduction's input."""
    return g if keepdims or not axes else xp.expand_dims(g, axes)
