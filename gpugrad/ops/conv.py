"""Sliding windows for convolution and pooling: im2col, its adjoint col2im, and max_pool2d.

im2col turns an image batch (N, C, H, W) into its patches (N, C, kh, kw, oh, ow): entry
[n, c, i, j, y, x] is the (zero-padded) input at row y*sh - pt + i*dh, column
x*sw - pl + j*dw. A convolution is then one matmul of the weight with the patches
(nn.functional composes it), and average pooling a sum over the (kh, kw) axes.

Both directions loop in Python over the kh*kw kernel offsets, never over positions:
for one offset the output positions read distinct input elements, so each step is a
single strided slice copy (im2col) or a strided in-place add (col2im), the same on
NumPy and CuPy and without a scatter-add. A 3x3 kernel is 9 array operations per call.

The geometry (``Windows``) names the output grid (oh, ow) explicitly, so ceil-mode
pooling, "same" padding and a transposed convolution's output_padding need no special
cases: the padding below and right of the input is whatever the grid's last window
reads (``pad_lead`` is the padding above and left). max_pool2d is a primitive because
its gradient goes to the first maximum of each window only (PyTorch's rule; a max
reduction would split ties, which are common after a ReLU).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import backend
from ..tensor import Tensor
from . import batching
from .registry import defop
from .samples import Sample, samples, uniform

Pair = tuple[int, int]


class Windows(NamedTuple):
    """Where the kernel sits: input size (H, W), kernel, stride, leading padding, dilation, output grid."""
    size: Pair
    kernel: Pair
    stride: Pair
    pad_lead: Pair
    dilation: Pair
    grid: Pair

    def canvas(self) -> Pair:
        """The padded input's size: leading padding, the input, and the trailing rows the grid reads."""
        return tuple(max(self.pad_lead[a] + self.size[a], self.reach(a)) for a in (0, 1))

    def reach(self, a: int) -> int:
        """How many padded rows (a=0) or columns (a=1) the grid's windows span."""
        n = self.grid[a]
        return (n - 1) * self.stride[a] + self.dilation[a] * (self.kernel[a] - 1) + 1 if n > 0 else 0

    def offsets(self):
        """(i, j, row slice, column slice) of the padded input under each kernel offset."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = self.kernel, self.stride, self.dilation, self.grid
        for i in range(kh):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            for j in range(kw):
                yield i, j, rows, slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)

    def inner(self) -> tuple:
        """The index of the input inside the padded canvas."""
        (h, w), (pt, pl) = self.size, self.pad_lead
        return (slice(None), slice(None), slice(pt, pt + h), slice(pl, pl + w))


def patches(xp: Any, x: Any, windows: Windows, fill: float = 0.0) -> Any:
    """im2col on arrays: (N, C, H, W) -> (N, C, kh, kw, oh, ow), padding with ``fill``."""
    canvas = windows.canvas()
    if canvas != tuple(x.shape[2:]):
        padded = xp.full(tuple(x.shape[:2]) + canvas, fill, dtype=x.dtype)
        padded[windows.inner()] = x
        x = padded
    cols = xp.empty(tuple(x.shape[:2]) + windows.kernel + windows.grid, dtype=x.dtype)
    if 0 not in windows.grid:
        for i, j, rows, columns in windows.offsets():
            cols[:, :, i, j] = x[:, :, rows, columns]
    return cols


def unpatch(xp: Any, cols: Any, windows: Windows) -> Any:
    """col2im on arrays: add every patch back where im2col took it from (overlaps add up)."""
    canvas = windows.canvas()
    image = xp.zeros(tuple(cols.shape[:2]) + canvas, dtype=cols.dtype)
    if 0 not in windows.grid:
        for i, j, rows, columns in windows.offsets():
            image[:, :, rows, columns] += cols[:, :, i, j]
    if canvas == windows.size:
        return image
    return xp.ascontiguousarray(image[windows.inner()])


# ----------------------------------------------------------------------------- im2col / col2im


def _windows(size=(4, 5), kernel=(2, 2), stride=(1, 1), pad_lead=(0, 0), dilation=(1, 1),
             grid=None) -> Windows:
    """A geometry for the samples; the grid defaults to the convolution's (symmetric padding)."""
    if grid is None:
        grid = tuple((size[a] + 2 * pad_lead[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
                     for a in (0, 1))
    return Windows(size, kernel, stride, pad_lead, dilation, grid)


_GEOMETRIES = [
    (2, _windows()),
    (1, _windows((5, 5), (3, 3), (2, 2), (1, 1))),                # stride and padding
    (2, _windows((6, 5), (2, 3), (1, 2), (0, 1), (2, 1))),        # dilation, non-square
    (1, _windows((4, 4), (3, 3), (1, 1), (1, 1), grid=(4, 4))),   # "same" with stride 1
    (1, _windows((5, 5), (2, 2), (2, 2), (0, 0), grid=(3, 3))),   # ceil mode: the last window overhangs
    (1, _windows((3, 3), (2, 2), (2, 2), (1, 1), (2, 2), (3, 3))),  # overlapping dilated windows
]


def _image_case(channels: int, windows: Windows, **params: Any):
    def make(rng):
        return Sample([uniform(rng, -2, 2, (2, channels) + windows.size)],
                      {"windows": windows, **params}, f"{windows}")
    return make


def _cols_case(channels: int, windows: Windows):
    def make(rng):
        shape = (2, channels) + windows.kernel + windows.grid
        return Sample([uniform(rng, -2, 2, shape)], {"windows": windows}, f"{windows}")
    return make


@defop(samples=samples(*(_image_case(c, w) for c, w in _GEOMETRIES)))
def im2col(xp, x, *, windows):
    """The zero-padded patches of (N, C, H, W) under each kernel offset: (N, C, kh, kw, oh, ow)."""
    return patches(xp, x, windows)


@im2col.vjp
def _(xp, g, out, x, *, windows):
    if isinstance(g, Tensor):                 # create_graph: the adjoint must itself be recorded
        return (col2im(g, windows=windows),)
    return (unpatch(xp, g, windows),)


@defop(samples=samples(*(_cols_case(c, w) for c, w in _GEOMETRIES)))
def col2im(xp, cols, *, windows):
    """The adjoint of im2col: patches (N, C, kh, kw, oh, ow) summed back into (N, C, H, W)."""
    return unpatch(xp, cols, windows)


@col2im.vjp
def _(xp, g, out, cols, *, windows):
    if isinstance(g, Tensor):
        return (im2col(g, windows=windows),)
    return (patches(xp, g, windows),)


# ----------------------------------------------------------------------------- max pooling


def _lowest(dtype: Any) -> Any:
    """The padding of max pooling: a value no element beats (-inf, or an integer type's minimum)."""
    return -np.inf if dtype.kind == "f" else (np.iinfo(dtype).min if dtype.kind in "iu" else False)


def _first_max(xp: Any, x: Any, windows: Windows) -> Any:
    """For each window, the flat kernel offset (0..kh*kw-1) of its first maximum (NaN counts as max)."""
    cols = patches(xp, x, windows, fill=_lowest(x.dtype))
    n, c = cols.shape[:2]
    return xp.argmax(xp.reshape(cols, (n, c, -1) + windows.grid), axis=2)


_POOL_GEOMETRIES = [
    (2, _windows()),
    (1, _windows((5, 5), (3, 3), (2, 2), (1, 1))),
    (1, _windows((6, 5), (2, 3), (1, 2), (0, 1), (2, 1))),
    (1, _windows((5, 5), (2, 2), (2, 2), (0, 0), grid=(3, 3))),   # ceil mode
]


@defop(save=("x",), samples=samples(*(_image_case(c, w) for c, w in _POOL_GEOMETRIES)))
def max_pool2d(xp, x, *, windows):
    """The largest element of each window (padding never wins: it is -inf)."""
    cols = patches(xp, x, windows, fill=_lowest(x.dtype))
    n, c = cols.shape[:2]
    return xp.max(xp.reshape(cols, (n, c, -1) + windows.grid), axis=2)


@max_pool2d.vjp
def _(xp, g, out, x, *, windows):
    # each window's gradient goes to its first maximum; windows that overlap add up (col2im)
    if isinstance(g, Tensor):      # create_graph, or vmap (x may be batched): the mask from an op
        hit = _first_max_hit(x, windows=windows)
        return (col2im(xp.expand_dims(xp.expand_dims(g, 2), 2) * hit, windows=windows),)
    return (unpatch(xp, g[:, :, None, None] * _first_max_hit.forward(xp, x, windows=windows), windows),)


@defop(differentiable=False)
def _first_max_hit(xp, x, *, windows):
    """1 at each window's first maximum, 0 elsewhere, in x's dtype: (N, C, kh, kw, oh, ow)."""
    first = _first_max(xp, x, windows)
    kh, kw = windows.kernel
    hit = xp.arange(kh * kw).reshape(1, 1, kh * kw, 1, 1) == first[:, :, None]
    n, c = x.shape[:2]
    return hit.reshape((n, c, kh, kw) + windows.grid).astype(x.dtype)


def _image_batch(op: Any) -> Any:
    """Under vmap, the batch of images (N, C, ...) per entry is one batch of B*N images."""
    def rule(batch, x, *, windows):
        from .shape import _reshape  # noqa: PLC0415
        x = batching.to_front(x, batch[0])
        b, n = x.shape[:2]
        out = op(_reshape(x, shape=(b * n, *x.shape[2:])), windows=windows)
        return _reshape(out, shape=(b, n, *out.shape[1:])), 0
    return rule


im2col.batch(_image_batch(im2col))
col2im.batch(_image_batch(col2im))
max_pool2d.batch(_image_batch(max_pool2d))
_first_max_hit.batch(_image_batch(_first_max_hit))


def max_pool2d_indices(x: Any, windows: Windows) -> Any:
    """PyTorch's return_indices: each maximum's flat position h * W + w in its (H, W) plane (int64)."""
    xp = backend.namespace(x)
    first = _first_max(xp, x, windows)
    kw = windows.kernel[1]
    (sh, sw), (pt, pl), (dh, dw) = windows.stride, windows.pad_lead, windows.dilation
    oh, ow = windows.grid
    rows = xp.arange(oh).reshape(oh, 1) * sh - pt + (first // kw) * dh
    cols = xp.arange(ow).reshape(1, ow) * sw - pl + (first % kw) * dw
    return (rows * windows.size[1] + cols).astype(np.int64)
