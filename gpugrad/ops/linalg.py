"""Linear algebra: matmul (batched, NumPy's 1-D rules), dot, and vector/matrix norms."""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor
from .registry import defop
from .samples import Sample, samples, uniform
from .util import expand_reduced, normalize_axes, shape_of, sum_to_shape


def _pair(a: tuple, b: tuple):
    return lambda rng: Sample([uniform(rng, -1, 1, a), uniform(rng, -1, 1, b)], name=f"{a}@{b}")


@defop(save=("x", "y"), samples=samples(
    _pair((3, 4), (4, 2)), _pair((4,), (4,)), _pair((4,), (4, 2)), _pair((3, 4), (4,)),
    _pair((2, 3, 4), (4, 5)), _pair((2, 1, 3, 4), (5, 4, 2)), _pair((3,), (2, 3, 4))))
def matmul(xp, x, y):
    if getattr(x, "ndim", 0) == 0 or getattr(y, "ndim", 0) == 0:
        raise ValueError("0-d operands are not matrices; use multiply (*) to scale")
    if x.shape[-1] != y.shape[-2 if y.ndim > 1 else 0]:
        raise ValueError(f"inner dimensions differ: {tuple(x.shape)} @ {tuple(y.shape)}")
    return xp.matmul(x, y)


@matmul.vjp
def _(xp, g, out, x, y, needs):
    if x.ndim == 1 and y.ndim == 1:                       # inner product: g is a scalar
        return (g * y if needs[0] else None, g * x if needs[1] else None)
    # NumPy's 1-D rules: a vector is a (1, k) row on the left, a (k, 1) column on the right
    xm = xp.expand_dims(x, 0) if x.ndim == 1 else x
    ym = xp.expand_dims(y, -1) if y.ndim == 1 else y
    gm = xp.expand_dims(g, -2) if x.ndim == 1 else g
    if y.ndim == 1:
        gm = xp.expand_dims(gm, -1)
    gx = gy = None
    if needs[0]:
        gx = sum_to_shape(xp, xp.matmul(gm, xp.swapaxes(ym, -1, -2)), xm.shape)   # dL/dX = G Y^T
        gx = xp.reshape(gx, x.shape)
    if needs[1]:
        gy = sum_to_shape(xp, xp.matmul(xp.swapaxes(xm, -1, -2), gm), ym.shape)   # dL/dY = X^T G
        gy = xp.reshape(gy, y.shape)
    return (gx, gy)


def _norm_case(shape: tuple, axis: Any, keepdims: bool):
    return lambda rng: Sample([uniform(rng, -2, 2, shape)], {"axis": axis, "keepdims": keepdims},
                              f"{shape}-{axis}")


@defop(save=("x", "out"), samples=samples(_norm_case((5,), (0,), False), _norm_case((2, 3), (0, 1), False),
                                          _norm_case((2, 3), (1,), True)))
def _norm2(xp, x, *, axis, keepdims):
    return xp.sqrt(xp.sum(x * x, axis=axis, keepdims=keepdims))


@_norm2.vjp
def _(xp, g, out, x, *, axis, keepdims):
    # d|x|/dx = x / |x|; at x = 0 we take the subgradient 0 (PyTorch's choice) instead of nan
    out = expand_reduced(xp, out, axis, keepdims)
    g = expand_reduced(xp, g, axis, keepdims)
    return (g * x / xp.where(out == 0, 1, out),)


def dot(x: Any, y: Any) -> Tensor:
    """NumPy's dot for 0-, 1- and 2-d operands (and N-d @ 1-d): inner product, matrix product."""
    from .elementwise import multiply  # noqa: PLC0415

    nx, ny = len(shape_of(x)), len(shape_of(y))
    if nx == 0 or ny == 0:
        return multiply(x, y)
    if ny <= 2 and (nx <= 2 or ny == 1):
        return matmul(x, y)
    raise ValueError(f"dot: for operands of shapes {shape_of(x)} and {shape_of(y)} use matmul "
                     "(batched) instead; dot supports 0-, 1- and 2-d operands")


def norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Tensor:
    """numpy.linalg.norm: vector p-norms, and Frobenius/1/inf norms of matrices."""
    from . import elementwise as ew  # noqa: PLC0415
    from . import reduce as rd  # noqa: PLC0415

    ndim = len(shape_of(x))
    if axis is None:
        axes = tuple(range(ndim))
        matrix = ndim == 2 and ord is not None
    else:
        axes = normalize_axes("linalg.norm", axis, ndim)
        matrix = len(axes) == 2
        if len(axes) > 2:
            raise ValueError(f"linalg.norm: axis must name 1 or 2 axes, got {axis}")
    if ord is None or ord == "fro" or (ord == 2 and not matrix):
        if ord == "fro" and not matrix:
            raise ValueError("linalg.norm: ord='fro' is for matrices (two axes)")
        return _norm2(x, axis=axes, keepdims=keepdims)
    a = ew.absolute(x)
    if matrix:
        rows, cols = axes
        if ord in (1, -1):          # largest (smallest) absolute column sum
            col = rd.sum(a, axis=rows, keepdims=True)
            pick = rd.max if ord == 1 else rd.min
            return pick(col, axis=cols, keepdims=True) if keepdims else \
                _drop(pick(col, axis=cols, keepdims=True), axes)
        if ord in (float("inf"), float("-inf")):   # largest (smallest) absolute row sum
            row = rd.sum(a, axis=cols, keepdims=True)
            pick = rd.max if ord > 0 else rd.min
            out = pick(row, axis=rows, keepdims=True)
            return out if keepdims else _drop(out, axes)
        raise ValueError(f"linalg.norm: matrix ord={ord!r} needs singular values, which gpugrad does "
                         "not compute; use ord='fro', 1, -1, inf or -inf")
    if ord == float("inf"):
        return rd.max(a, axis=axes, keepdims=keepdims)
    if ord == float("-inf"):
        return rd.min(a, axis=axes, keepdims=keepdims)
    if ord == 0:
        return rd.sum(ew.not_equal(x, 0), axis=axes, keepdims=keepdims)
    if ord == 1:
        return rd.sum(a, axis=axes, keepdims=keepdims)
    if isinstance(ord, (int, float)):
        return ew.power(rd.sum(ew.power(a, ord), axis=axes, keepdims=keepdims), 1.0 / ord)
    raise ValueError(f"linalg.norm: unsupported ord {ord!r}")


def _drop(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    from .shape import reshape  # noqa: PLC0415
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))
