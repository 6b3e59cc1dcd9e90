"""Linear algebra: matmul (batched, NumPy's 1-D rules), dot, einsum, and vector/matrix norms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import dtypes
from ..tensor import Tensor
from . import batching
from .registry import defop
from .samples import Sample, samples, uniform
from .util import expand_reduced, normalize_axes, shape_of, sum_to_shape


def _pair(a: tuple, b: tuple):
    return lambda rng: Sample([uniform(rng, -1, 1, a), uniform(rng, -1, 1, b)], name=f"{a}@{b}")


@defop(save=("x", "y"), dtype_rule="same", samples=samples(
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


@matmul.batch
def _(batch, x, y):
    from .shape import _reshape  # noqa: PLC0415

    bx, by = batch
    nx, ny = batching.ndim_of(x, bx), batching.ndim_of(y, by)
    if nx == 0 or ny == 0:
        raise ValueError("matmul: 0-d operands are not matrices; use multiply (*) to scale")
    if by is None and ny <= 2 and nx == 1:        # vectors times a shared matrix: one matrix product
        return matmul(batching.to_front(x, bx), y), 0
    # NumPy's 1-D rules made explicit (a row on the left, a column on the right), batch dims padded
    x = _as_matrix(x, bx, nx == 1, -2)
    y = _as_matrix(y, by, ny == 1, -1)
    rank = max(batching.ndim_of(x, None if bx is None else 0), batching.ndim_of(y, None if by is None else 0))
    x = x if bx is None else batching.padded_front(x, 0, rank)
    y = y if by is None else batching.padded_front(y, 0, rank)
    if x.shape[-1] == 1:           # outer products (per-example weight gradients): a broadcast multiply
        from .elementwise import multiply  # noqa: PLC0415    is several times faster than a stacked matmul
        out = multiply(x, y)
    else:
        out = matmul(x, y)
    drop = [out.ndim - 2] if nx == 1 else []
    drop += [out.ndim - 1] if ny == 1 else []
    if drop:
        out = _reshape(out, shape=tuple(n for d, n in enumerate(out.shape) if d not in drop))
    return out, 0


def _as_matrix(v: Any, axis: int | None, vector: bool, new: int) -> Any:
    """An operand batched first (or unbatched), a vector given a size-1 axis at ``new`` (-2 or -1)."""
    from .shape import _reshape  # noqa: PLC0415

    v = batching.to_front(v, axis)
    if not vector:
        return v
    shape = tuple(v.shape)
    return _reshape(v, shape=shape[:-1] + (1,) + shape[-1:] if new == -2 else shape + (1,))


def _norm_case(shape: tuple, axis: Any, keepdims: bool, zero: bool = False, **params: Any):
    def make(rng):
        x = uniform(rng, -2, 2, shape)
        if zero:
            x[..., 0] = 0.0                      # zero entries (an all-zero input: tests/test_parity_core.py)
        return Sample([x], {"axis": axis, "keepdims": keepdims, **params}, f"{shape}-{axis}-{params}-{zero}")
    return make


@defop(save=("x", "out"), samples=samples(
    _norm_case((5,), (0,), False), _norm_case((2, 3), (0, 1), False), _norm_case((2, 3), (1,), True),
    _norm_case((2, 3), (1,), False, True)), batch="reduction")
def _norm2(xp, x, *, axis, keepdims):
    return xp.sqrt(xp.sum(x * x, axis=axis, keepdims=keepdims))


@_norm2.vjp
def _(xp, g, out, x, *, axis, keepdims):
    # d|x|/dx = x / |x|; at x = 0 we take the subgradient 0 (PyTorch's choice) instead of nan
    out = expand_reduced(xp, out, axis, keepdims)
    g = expand_reduced(xp, g, axis, keepdims)
    return (g * x / xp.where(out == 0, 1, out),)


@defop(save=("x", "out"), samples=samples(
    _norm_case((5,), (0,), False, ord=3.0), _norm_case((2, 3), (1,), True, ord=1.5),
    _norm_case((2, 3), (0, 1), False, ord=-2.0), _norm_case((2, 3), (1,), False, True, ord=3.0)),
       batch="reduction")
def _pnorm(xp, x, *, ord, axis, keepdims):
    return xp.sum(xp.abs(x) ** ord, axis=axis, keepdims=keepdims) ** (1.0 / ord)


@_pnorm.vjp
def _(xp, g, out, x, *, ord, axis, keepdims):
    # d|x|_p / dx = sign(x) (|x| / |x|_p)^(p-1); taken as 0 where x == 0 or |x|_p == 0, as PyTorch
    out = expand_reduced(xp, out, axis, keepdims)
    g = expand_reduced(xp, g, axis, keepdims)
    a = xp.abs(x)
    edge = (a == 0) | (out == 0)
    ratio = xp.where(edge, 1, a) / xp.where(out == 0, 1, out)
    return (xp.where(edge, 0, g * xp.sign(x) * ratio ** (ord - 1)),)


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


# ----------------------------------------------------------------------------- einsum


def _einsum_terms(subscripts: str, ndims: list[int]) -> tuple[list[str], str]:
    """Each operand's letters and the output's, with '...' spelled out as extra letters."""
    spec = subscripts.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ndims):
        raise ValueError(f"einsum: {subscripts!r} names {len(terms)} operand(s) but {len(ndims)} were given")
    free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in spec]
    widest = 0
    for term, ndim in zip(terms, ndims):
        letters = term.replace("...", "")
        if not letters.isalpha() or term.count("...") > 1:
            raise ValueError(f"einsum: subscripts must be letters and at most one '...' per operand, "
                             f"got {term!r}")
        if "..." in term:
            widest = max(widest, ndim - len(letters))
        elif len(letters) != ndim:
            raise ValueError(f"einsum: operand {term!r} has {len(letters)} subscript(s) but {ndim} "
                             "dimension(s)")
    ellipsis = "".join(free[:widest])
    spelled = []
    for term, ndim in zip(terms, ndims):
        extra = ndim - len(term.replace("...", ""))
        if extra < 0:
            raise ValueError(f"einsum: operand {term!r} has more subscripts than its {ndim} dimension(s)")
        spelled.append(term.replace("...", ellipsis[widest - extra:]))
    if arrow:
        if not output.replace("...", "").isalpha() and output.replace("...", ""):
            raise ValueError(f"einsum: output subscripts must be letters, got {output!r}")
        output = output.replace("...", ellipsis)
        for c in output:
            if output.count(c) > 1 or not any(c in t for t in spelled):
                raise ValueError(f"einsum: output subscript {c!r} is repeated or names no input dimension")
    else:                                      # NumPy's implicit output: the letters used once, sorted
        joined = "".join(spelled)
        once = sorted(c for c in set(joined) if joined.count(c) == 1 and c not in ellipsis)
        output = ellipsis + "".join(once)
    return spelled, output


def _einsum_diagonal(x: Any, letters: str) -> tuple[Any, str]:
    """Take the diagonal of every repeated letter in one operand ('ii->i')."""
    from .. import backend  # noqa: PLC0415
    from . import elementwise as ew  # noqa: PLC0415
    from . import reduce as rd  # noqa: PLC0415

    while any(letters.count(c) > 1 for c in letters):
        c = next(c for c in letters if letters.count(c) > 1)
        a, b = letters.index(c), letters.index(c, letters.index(c) + 1)
        n = shape_of(x)[a]
        if shape_of(x)[b] != n:
            raise ValueError(f"einsum: subscript {c!r} is repeated with sizes {n} and {shape_of(x)[b]}")
        eye = backend.namespace(x.data if isinstance(x, Tensor) else x).eye(n, dtype=x.dtype)
        shape = [1] * len(letters)
        shape[a] = shape[b] = n
        x = rd.sum(ew.multiply(x, Tensor._wrap(eye.reshape(shape))), axis=b)
        letters = letters[:b] + letters[b + 1:]
    return x, letters


def _einsum_pair(x: Any, xl: str, y: Any, yl: str, keep: str) -> tuple[Any, str]:
    """Contract two operands through one batched matmul: (batch, x only, summed) @ (batch, summed, y only)."""
    from .shape import broadcast_to, reshape, transpose  # noqa: PLC0415

    batch = [c for c in xl if c in yl and c in keep]
    summed = [c for c in xl if c in yl and c not in keep]
    x_only = [c for c in xl if c not in yl]
    y_only = [c for c in yl if c not in xl]
    sx, sy = dict(zip(xl, shape_of(x))), dict(zip(yl, shape_of(y)))
    size = {c: max(sx.get(c, 1), sy.get(c, 1)) for c in batch + summed}
    for c in batch + summed:
        if sx[c] != sy[c] and 1 not in (sx[c], sy[c]):
            raise ValueError(f"einsum: subscript {c!r} has size {sx[c]} in one operand and {sy[c]} in "
                             "another")
    x = transpose(x, [xl.index(c) for c in batch + x_only + summed])
    y = transpose(y, [yl.index(c) for c in batch + summed + y_only])
    x = broadcast_to(x, [size.get(c, sx[c]) for c in batch + x_only + summed])
    y = broadcast_to(y, [size.get(c, sy[c]) for c in batch + summed + y_only])
    nb = math.prod(size[c] for c in batch)
    m, k, n = (math.prod(sx[c] for c in x_only), math.prod(size[c] for c in summed),
               math.prod(sy[c] for c in y_only))
    out = matmul(reshape(x, (nb, m, k)), reshape(y, (nb, k, n)))
    shape = [size[c] for c in batch] + [sx[c] for c in x_only] + [sy[c] for c in y_only]
    return reshape(out, shape), "".join(batch + x_only + y_only)


def einsum(subscripts: str, *operands: Any) -> Tensor:
    """Einstein summation (``"ij,jk->ik"``, ``"bij,bjk"``, ``"ii"``, ``"...ij,...jk"``).

    Operands are contracted left to right, each pair through one batched matmul, so the
    gradient is matmul's; repeated letters in one operand take its diagonal.
    """
    from . import reduce as rd  # noqa: PLC0415
    from .shape import transpose  # noqa: PLC0415

    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])                  # torch.einsum("ij,jk", [a, b])
    if not isinstance(subscripts, str) or not operands:
        raise TypeError("einsum: give the subscripts as a string and at least one operand, "
                        "e.g. einsum('ij,jk->ik', a, b)")
    operands = [o if isinstance(o, Tensor) else Tensor(o) for o in operands]
    terms, output = _einsum_terms(subscripts, [o.ndim for o in operands])
    current: list[tuple[Any, str]] = [_einsum_diagonal(o, t) for o, t in zip(operands, terms)]
    x, xl = current[0]
    for i in range(1, len(current) + 1):
        later = "".join(t for _, t in current[i:]) + output
        unused = tuple(j for j, c in enumerate(xl) if c not in later)
        if unused:                                     # letters no one else needs: sum them now
            x = rd.sum(x, axis=unused)
            xl = "".join(c for c in xl if c not in later)
        if i == len(current):
            break
        y, yl = current[i]
        rest = "".join(t for _, t in current[i + 1:]) + output
        y_unused = tuple(j for j, c in enumerate(yl) if c not in xl and c not in rest)
        if y_unused:
            y = rd.sum(y, axis=y_unused)
            yl = "".join(c for c in yl if c in xl or c in rest)
        x, xl = _einsum_pair(x, xl, y, yl, rest)
    return transpose(x, [xl.index(c) for c in output])


def norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Tensor:
    """numpy.linalg.norm: vector p-norms, and Frobenius/1/inf norms of matrices."""
    from . import elementwise as ew  # noqa: PLC0415
    from . import reduce as rd  # noqa: PLC0415

    if isinstance(x, (list, tuple)):           # a sequence reads as NumPy reads it (ord=0 needs its dtype)
        x = Tensor(np.asarray(x))
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
    if ord == 0:                                # a count, in the input's float dtype (NumPy, PyTorch)
        count = rd.sum(ew.not_equal(x, 0), axis=axes, keepdims=keepdims)
        return count.astype(x.dtype if x.dtype.kind == "f" else dtypes.default_float)
    if ord == 1:
        return rd.sum(a, axis=axes, keepdims=keepdims)
    if isinstance(ord, (int, float)) and not isinstance(ord, bool):
        return _pnorm(x, ord=float(ord), axis=axes, keepdims=keepdims)
    raise ValueError(f"linalg.norm: unsupported ord {ord!r}")


def vector_norm(x: Any, ord: Any = 2, dim: Any = None, keepdim: bool = False) -> Tensor:
    """torch.linalg.vector_norm: the p-norm of the entries over ``dim`` (all of them when None)."""
    from . import elementwise as ew  # noqa: PLC0415
    from . import reduce as rd  # noqa: PLC0415

    x = x if isinstance(x, Tensor) else Tensor(x)
    axes = normalize_axes("vector_norm", dim, x.ndim)
    if isinstance(ord, bool) or not isinstance(ord, (int, float)):
        raise ValueError(f"vector_norm: ord must be a number (2, 1, inf, 0, 3.5...), got {ord!r}")
    if ord == 2:
        return _norm2(x, axis=axes, keepdims=keepdim)
    if ord == 0:
        count = rd.sum(ew.not_equal(x, 0), axis=axes, keepdims=keepdim)   # no gradient, as PyTorch
        return count.astype(x.dtype if x.dtype.kind == "f" else dtypes.default_float)
    if ord in (math.inf, -math.inf):
        return (rd.amax if ord > 0 else rd.amin)(ew.absolute(x), axis=axes, keepdims=keepdim)
    if ord == 1:
        return rd.sum(ew.absolute(x), axis=axes, keepdims=keepdim)
    return _pnorm(x, ord=float(ord), axis=axes, keepdims=keepdim)


def _drop(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    from .shape import reshape  # noqa: PLC0415
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))
