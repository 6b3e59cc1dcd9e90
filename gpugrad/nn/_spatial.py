"""Convolution, pooling, unfold/fold and interpolation (``torch.nn.functional``'s spatial ops).

Every function checks its arguments as PyTorch does (and raises the same exception
types), then composes primitives: a convolution is ``im2col`` and one matmul, a
transposed convolution one matmul and ``col2im``, average pooling ``im2col`` and a sum,
adaptive average pooling two matmuls with averaging matrices, interpolation gathers.
Only max pooling has its own primitive (``ops.conv.max_pool2d``). 1-d versions run
the 2-d code on a height-1 image. No helper here reads a value back from the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend, ops
from ..ops.conv import Windows, max_pool2d_indices
from ..ops.conv import col2im as _col2im
from ..ops.conv import im2col as _im2col
from ..ops.conv import max_pool2d as _max_pool2d
from ..tensor import Tensor
from . import functional as F

__all__ = [
    "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "unfold", "fold",
    "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
]

Pair = tuple[int, int]


# ----------------------------------------------------------------------------- argument checks


def _tuple(op: str, name: str, value: Any, n: int) -> tuple[int, ...]:
    """An int, or a sequence of ``n`` ints, as a tuple of ``n`` ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * n
    if isinstance(value, Sequence) and not isinstance(value, str) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        if len(value) == n:
            return tuple(int(v) for v in value)
        if len(value) == 1:
            return (int(value[0]),) * n
    raise RuntimeError(f"{op}: expected {name} to be a single integer value or a list of {n} values to match "
                       f"the {n}-d window, but got {name}={value!r}")


def _positive(op: str, name: str, values: tuple[int, ...]) -> tuple[int, ...]:
    if any(v <= 0 for v in values):
        raise RuntimeError(f"{op}: non-positive {name} is not supported, got {name}={values}")
    return values


def _batched(op: str, x: Tensor, spatial: int) -> tuple[Tensor, bool]:
    """(N, C, *spatial) as is, (C, *spatial) with a batch dimension added; and whether one was added."""
    if x.ndim == spatial + 2:
        return x, False
    if x.ndim == spatial + 1:
        return ops.expand_dims(x, 0), True
    raise RuntimeError(f"{op}: expected {spatial + 1}D (unbatched) or {spatial + 2}D (batched) input, but "
                       f"got input of shape {x.shape}")


def _as_2d(x: Tensor, spatial: int) -> Tensor:
    """A 1-d signal (N, C, L) as a height-1 image (N, C, 1, L)."""
    return ops.expand_dims(x, 2) if spatial == 1 else x


def _finish(out: Tensor, spatial: int, unbatched: bool) -> Tensor:
    if spatial == 1:
        out = ops.squeeze(out, 2)
    return ops.squeeze(out, 0) if unbatched else out


def _lift(values: tuple[int, ...], fill: int) -> Pair:
    """A 1-d window parameter as the 2-d one of a height-1 image."""
    return (fill, values[0]) if len(values) == 1 else values


def _same_dtype(op: str, x: Tensor, weight: Any, bias: Any) -> None:
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and getattr(t, "dtype", None) != x.dtype:
            raise RuntimeError(f"{op}: input is {x.dtype} but {name} is {getattr(t, 'dtype', type(t))}; give "
                               f"them one dtype (e.g. input.to({name}.dtype))")


# ----------------------------------------------------------------------------- convolution


def _conv_padding(op: str, padding: Any, kernel: tuple, stride: tuple, dilation: tuple,
                  n: int) -> tuple[tuple[int, ...], bool]:
    """(leading padding per dimension, whether the trailing side mirrors it) from an int, tuple or string."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * n, True
        if padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError(f"{op}: padding='same' is not supported for strided convolutions")
            # PyTorch pads d (k - 1) in all, the odd one on the trailing side
            return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)), False
        raise RuntimeError(f"{op}: invalid padding string {padding!r}, should be one of 'valid', 'same'")
    pads = _tuple(op, "padding", padding, n)
    if any(p < 0 for p in pads):
        raise RuntimeError(f"{op}: negative padding is not supported, got padding={pads}")
    return pads, True


def _operands(op: str, spatial: int, input: Any, weight: Any, bias: Any, groups: Any,
              layout: str) -> tuple[Tensor, bool, Tensor]:
    """(batched input, whether a batch dimension was added, weight), checked as every convolution is."""
    x, unbatched = _batched(op, F._tensor(input), spatial)
    weight = F._tensor(weight)
    if weight.ndim != spatial + 2:
        raise RuntimeError(f"{op}: weight must be {spatial + 2}-D ({layout}, *kernel), got shape "
                           f"{weight.shape}")
    _same_dtype(op, x, weight, bias)
    if not isinstance(groups, int) or groups <= 0:
        raise RuntimeError(f"{op}: non-positive groups is not supported, got groups={groups!r}")
    return x, unbatched, weight


def _check_bias(op: str, bias: Any, out_ch: int, weight: Tensor) -> None:
    shape = tuple(getattr(bias, "shape", ()))
    if bias is not None and shape != (out_ch,):
        raise RuntimeError(f"{op}: given weight of shape {weight.shape}, expected bias to be 1-dimensional "
                           f"with {out_ch} elements, but got bias of shape {shape}")


def _strides(op: str, spatial: int, stride: Any, dilation: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (_positive(op, "stride", _tuple(op, "stride", stride, spatial)),
            _positive(op, "dilation", _tuple(op, "dilation", dilation, spatial)))


def _conv(op: str, spatial: int, input: Any, weight: Any, bias: Any, stride: Any, padding: Any,
          dilation: Any, groups: int) -> Tensor:
    x, unbatched, weight = _operands(op, spatial, input, weight, bias, groups,
                                     "out_channels, in_channels / groups")
    out_ch, in_per_group = weight.shape[:2]
    n, channels = x.shape[:2]
    if in_per_group * groups != channels:
        raise RuntimeError(f"{op}: given groups={groups}, weight of shape {weight.shape} expects input "
                           f"{x.shape} to have {in_per_group * groups} channels, but got {channels} channels "
                           "instead")
    if out_ch % groups:
        raise RuntimeError(f"{op}: given groups={groups}, expected weight {weight.shape} to be divisible by "
                           f"{groups} at dimension 0 (out_channels)")
    _check_bias(op, bias, out_ch, weight)
    kernel = tuple(weight.shape[2:])
    stride, dilation = _strides(op, spatial, stride, dilation)
    lead, symmetric = _conv_padding(op, padding, kernel, stride, dilation, spatial)
    size = tuple(x.shape[2:])
    padded = [s + (2 * p if symmetric else d * (k - 1)) for s, p, k, d in zip(size, lead, kernel, dilation)]
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if any(p < r for p, r in zip(padded, reach)):
        raise RuntimeError(f"{op}: calculated padded input size per channel {tuple(padded)} is smaller than "
                           f"the (dilated) kernel size {tuple(reach)}; the kernel can't be greater than the "
                           "actual input size")
    grid = tuple((p - r) // s + 1 for p, r, s in zip(padded, reach, stride))
    windows = Windows(_lift(size, 1), _lift(kernel, 1), _lift(stride, 1), _lift(lead, 0), _lift(dilation, 1),
                      _lift(grid, 1))
    x2 = _as_2d(x, spatial)
    if windows.kernel == (1, 1) and windows.stride == (1, 1) and windows.grid == windows.size:
        cols = ops.reshape(x2, (n, channels, 1, 1) + windows.size)   # a 1x1 convolution needs no copy
    else:
        cols = _im2col(x2, windows=windows)                          # (N, C, kh, kw, oh, ow)
    k = in_per_group * math.prod(kernel)
    positions = math.prod(grid)
    if groups == 1:
        out = ops.matmul(ops.reshape(weight, (out_ch, k)), ops.reshape(cols, (n, k, positions)))
    else:
        out = ops.matmul(ops.reshape(weight, (groups, out_ch // groups, k)),
                         ops.reshape(cols, (n, groups, k, positions)))
    out = ops.reshape(out, (n, out_ch) + windows.grid)
    if bias is not None:
        out = out + ops.reshape(bias, (out_ch, 1, 1))
    return _finish(out, spatial, unbatched)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-d cross-correlation of (N, C, L) with weight (out, C / groups, k); padding may be 'same'/'valid'."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-d cross-correlation of (N, C, H, W) with weight (out, C / groups, kh, kw): im2col and one matmul."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(op: str, spatial: int, input: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                    output_padding: Any, groups: int, dilation: Any) -> Tensor:
    x, unbatched, weight = _operands(op, spatial, input, weight, bias, groups,
                                     "in_channels, out_channels / groups")
    n, in_ch = x.shape[:2]
    if weight.shape[0] != in_ch or in_ch % groups:
        raise RuntimeError(f"{op}: given transposed weight of shape {weight.shape} and groups={groups}, "
                           f"expected input {x.shape} to have {weight.shape[0]} channels (divisible by "
                           f"groups), but got {in_ch} channels instead")
    out_ch = weight.shape[1] * groups
    _check_bias(op, bias, out_ch, weight)
    kernel = tuple(weight.shape[2:])
    stride, dilation = _strides(op, spatial, stride, dilation)
    pads = _tuple(op, "padding", padding, spatial)
    extra = _tuple(op, "output_padding", output_padding, spatial)
    if any(p < 0 for p in pads + extra):
        raise RuntimeError(f"{op}: negative padding is not supported, got padding={pads}, "
                           f"output_padding={extra}")
    if any(e >= s and e >= d for e, s, d in zip(extra, stride, dilation)):
        raise RuntimeError(f"{op}: output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={extra}, stride={stride}, dilation={dilation}")
    size = tuple(x.shape[2:])
    out_size = tuple((s - 1) * st - 2 * p + d * (k - 1) + e + 1
                     for s, st, p, d, k, e in zip(size, stride, pads, dilation, kernel, extra))
    if any(o <= 0 for o in out_size):
        raise RuntimeError(f"{op}: given input of shape {x.shape}, the calculated output size {out_size} is "
                           "too small")
    # the adjoint of conv2d's input: each input pixel spreads weight-scaled copies of the kernel (col2im)
    windows = Windows(_lift(out_size, 1), _lift(kernel, 1), _lift(stride, 1), _lift(pads, 0),
                      _lift(dilation, 1), _lift(size, 1))
    k = weight.shape[1] * math.prod(kernel)
    pixels = math.prod(size)
    if groups == 1:
        cols = ops.matmul(ops.swapaxes(ops.reshape(weight, (in_ch, k)), 0, 1),
                          ops.reshape(x, (n, in_ch, pixels)))
    else:
        cols = ops.matmul(ops.swapaxes(ops.reshape(weight, (groups, in_ch // groups, k)), 1, 2),
                          ops.reshape(x, (n, groups, in_ch // groups, pixels)))
    out = _col2im(ops.reshape(cols, (n, out_ch) + windows.kernel + windows.grid), windows=windows)
    if bias is not None:
        out = out + ops.reshape(bias, (out_ch, 1, 1))
    return _finish(out, spatial, unbatched)


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """The transposed (fractionally strided) 1-d convolution; weight (in, out / groups, k)."""
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding, output_padding,
                           groups, dilation)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """The transposed 2-d convolution (conv2d's input gradient); weight (in, out / groups, kh, kw)."""
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding, output_padding,
                           groups, dilation)


def _fold_windows(op: str, size: Pair, kernel_size: Any, dilation: Any, padding: Any, stride: Any) -> Windows:
    kernel = _positive(op, "kernel_size", _tuple(op, "kernel_size", kernel_size, 2))
    stride, dilation = _strides(op, 2, stride, dilation)
    pads = _tuple(op, "padding", padding, 2)
    if any(p < 0 for p in pads):
        raise RuntimeError(f"{op}: negative padding is not supported, got padding={pads}")
    grid = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, p, d, k, st in zip(size, pads, dilation, kernel, stride))
    if any(g <= 0 for g in grid):
        raise RuntimeError(f"{op}: given input size {size}, kernel {kernel}, padding {pads} and dilation "
                           f"{dilation}, the calculated number of sliding blocks {grid} is too small")
    return Windows(tuple(size), kernel, stride, pads, dilation, grid)


def unfold(input: Tensor, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> Tensor:
    """im2col: (N, C, H, W) -> (N, C * kh * kw, L), every sliding block as a column."""
    x, unbatched = _batched("unfold", F._tensor(input), 2)
    windows = _fold_windows("unfold", tuple(x.shape[2:]), kernel_size, dilation, padding, stride)
    n, c = x.shape[:2]
    cols = ops.reshape(_im2col(x, windows=windows),
                       (n, c * math.prod(windows.kernel), math.prod(windows.grid)))
    return ops.squeeze(cols, 0) if unbatched else cols


def fold(input: Tensor, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0,
         stride: Any = 1) -> Tensor:
    """col2im, unfold's adjoint: (N, C * kh * kw, L) -> (N, C, H, W), overlapping values summed."""
    x = F._tensor(input)
    if x.ndim not in (2, 3):
        raise RuntimeError(f"fold: expected 2D or 3D (batched) input, but got input of shape {x.shape}")
    unbatched = x.ndim == 2
    if unbatched:
        x = ops.expand_dims(x, 0)
    size = _tuple("fold", "output_size", output_size, 2)
    windows = _fold_windows("fold", size, kernel_size, dilation, padding, stride)
    n, ck, positions = x.shape
    per_block = math.prod(windows.kernel)
    if ck % per_block or positions != math.prod(windows.grid):
        raise RuntimeError(f"fold: input of shape {x.shape} does not fit kernel_size {windows.kernel} and "
                           f"output_size {size}: expected dimension 1 divisible by {per_block} and "
                           f"{math.prod(windows.grid)} blocks (a grid of {windows.grid}) in dimension 2")
    image = _col2im(ops.reshape(x, (n, ck // per_block) + windows.kernel + windows.grid), windows=windows)
    return ops.squeeze(image, 0) if unbatched else image


# ----------------------------------------------------------------------------- pooling


def _pool_windows(op: str, x: Tensor, spatial: int, kernel_size: Any, stride: Any, padding: Any,
                  dilation: Any, ceil_mode: bool) -> Windows:
    kernel = _positive(op, "kernel_size", _tuple(op, "kernel_size", kernel_size, spatial))
    no_stride = stride is None or (isinstance(stride, Sequence) and len(stride) == 0)
    stride = kernel if no_stride else _positive(op, "stride", _tuple(op, "stride", stride, spatial))
    dilation = _positive(op, "dilation", _tuple(op, "dilation", dilation, spatial))
    pads = _tuple(op, "padding", padding, spatial)
    if any(p < 0 or p > k // 2 for p, k in zip(pads, kernel)):
        raise RuntimeError(f"{op}: pad should be at most half of effective kernel size, but got pad={pads}, "
                           f"kernel_size={kernel} and dilation={dilation}")
    size = tuple(x.shape[-spatial:])
    grid = []
    for s, k, st, p, d in zip(size, kernel, stride, pads, dilation):
        span = s + 2 * p - d * (k - 1) - 1 + (st - 1 if ceil_mode else 0)
        n = span // st + 1
        if ceil_mode and (n - 1) * st >= s + p:        # the last window must start inside the input
            n -= 1
        grid.append(n)
    if any(g < 1 for g in grid):
        raise RuntimeError(f"{op}: given input of shape {x.shape}, the calculated output size "
                           f"{tuple(grid)} is too small")
    return Windows(_lift(size, 1), _lift(kernel, 1), _lift(stride, 1), _lift(pads, 0), _lift(dilation, 1),
                   _lift(tuple(grid), 1))


def _max_pool(op: str, spatial: int, input: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool, return_indices: bool) -> Any:
    x, unbatched = _batched(op, F._tensor(input), spatial)
    windows = _pool_windows(op, x, spatial, kernel_size, stride, padding, dilation, ceil_mode)
    x2 = _as_2d(x, spatial)
    out = _finish(_max_pool2d(x2, windows=windows), spatial, unbatched)
    if not return_indices:
        return out
    indices = Tensor._wrap(max_pool2d_indices(x2.data, windows))
    return out, _finish(indices, spatial, unbatched)


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """The maximum of each window of (N, C, L); its gradient goes to the window's first maximum."""
    return _max_pool("max_pool1d", 1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """The maximum of each window of (N, C, H, W) (and its flat h * W + w index with return_indices)."""
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _pool_sizes(xp: Any, n: int, size: int, kernel: int, stride: int, pad: int, count_pad: bool) -> Any:
    """How many elements each of ``n`` windows along one axis averages (PyTorch's divisor)."""
    start = xp.arange(n) * stride - pad
    end = xp.minimum(start + kernel, size + pad)          # windows overhanging in ceil mode are cut
    if count_pad:
        return end - start
    return xp.minimum(end, size) - xp.maximum(start, 0)


def _avg_pool(op: str, spatial: int, input: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              count_include_pad: bool, divisor_override: Any) -> Tensor:
    x, unbatched = _batched(op, F._tensor(input), spatial)
    windows = _pool_windows(op, x, spatial, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and (isinstance(divisor_override, bool) or divisor_override == 0):
        raise RuntimeError(f"{op}: divisor must be not zero, got divisor_override={divisor_override!r}")
    total = ops.sum(_im2col(_as_2d(x, spatial), windows=windows), axis=(2, 3))
    if divisor_override is not None:
        divisor: Any = divisor_override
    else:
        xp = backend.namespace(x.data)
        rows, cols = (_pool_sizes(xp, windows.grid[a], windows.size[a], windows.kernel[a], windows.stride[a],
                                  windows.pad_lead[a], count_include_pad) for a in (0, 1))
        divisor = rows[:, None] * cols[None, :]
    if x.dtype.kind in "iub":             # integers: PyTorch's truncating division (no gradient to keep)
        out = Tensor._wrap((total.data / divisor).astype(x.dtype))
    else:
        divisor = divisor if isinstance(divisor, (int, float)) else divisor.astype(x.dtype)
        out = total / divisor
    return _finish(out, spatial, unbatched)


def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """The mean of each window of (N, C, L)."""
    return _avg_pool("avg_pool1d", 1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """The mean of each window of (N, C, H, W); zero padding counts unless count_include_pad=False."""
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def _averaging_matrix(xp: Any, n_out: int, n_in: int, dtype: Any) -> Any:
    """(n_out, n_in): row i averages inputs floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1."""
    i = xp.arange(n_out)[:, None]
    start = (i * n_in) // n_out
    end = ((i + 1) * n_in + n_out - 1) // n_out
    j = xp.arange(n_in)[None, :]
    return (((j >= start) & (j < end)) / (end - start)).astype(dtype)


def _adaptive_avg_pool(op: str, spatial: int, input: Any, output_size: Any) -> Tensor:
    x, unbatched = _batched(op, F._tensor(input), spatial)
    if x.dtype.kind != "f":
        raise NotImplementedError(f"{op}: not implemented for {x.dtype} input; cast it to a float dtype")
    size = tuple(x.shape[2:])
    if output_size is None or isinstance(output_size, int):
        output_size = (output_size,) * spatial
    if len(output_size) != spatial:
        raise ValueError(f"{op}: output_size must have {spatial} element(s), got {output_size!r}")
    target = tuple(s if o is None else int(o) for s, o in zip(size, output_size))
    if any(o < 0 for o in target) or any(s == 0 for s in size):
        raise RuntimeError(f"{op}: input of shape {x.shape} and output_size {target} are not valid: sizes "
                           "must be non-negative and the input must not be empty")
    x2 = _as_2d(x, spatial)
    target2 = _lift(target, 1)
    if target2 == (1, 1):                                         # global average pooling
        out = ops.mean(x2, axis=(2, 3), keepdims=True)
    else:
        xp = backend.namespace(x.data)
        h, w = x2.shape[2:]
        out = x2
        if target2[0] != h:
            out = ops.matmul(Tensor._wrap(_averaging_matrix(xp, target2[0], h, x.dtype)), out)
        if target2[1] != w:
            out = ops.matmul(out, Tensor._wrap(_averaging_matrix(xp, target2[1], w, x.dtype).T))
    return _finish(out, spatial, unbatched)


def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:
    """Average pooling of (N, C, L) to ``output_size`` positions, with PyTorch's window bounds."""
    return _adaptive_avg_pool("adaptive_avg_pool1d", 1, input, output_size)


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """Average pooling of (N, C, H, W) to ``output_size`` (an int, or (h, w) where None keeps a size)."""
    return _adaptive_avg_pool("adaptive_avg_pool2d", 2, input, output_size)


# ----------------------------------------------------------------------------- interpolation

_MODES = {"nearest": None, "nearest-exact": None, "linear": 1, "bilinear": 2}


def _source_scale(ct: Any, n_in: int, n_out: int, scale: float | None, align_corners: bool) -> Any:
    """Output sample spacing in input pixels, in the compute type ``ct`` as PyTorch computes it."""
    if align_corners:
        return ct(n_in - 1) / ct(n_out - 1) if n_out > 1 else ct(0)
    return ct(1.0 / scale) if scale is not None and scale > 0 else ct(n_in) / ct(n_out)


def _nearest_index(xp: Any, n_in: int, n_out: int, scale: float | None, exact: bool) -> Any:
    # NOTE: PyTorch takes floor(i * scale) in float32; so do we, so that the floor lands on the same side
    ratio = _source_scale(np.float32, n_in, n_out, scale, False)
    pos = xp.arange(n_out, dtype=np.float32)
    if exact:
        pos = pos + np.float32(0.5)
    return xp.minimum(xp.floor(pos * ratio).astype(np.int64), n_in - 1)


def _linear_weights(xp: Any, n_in: int, n_out: int, scale: float | None, align_corners: bool, dtype: Any):
    """(left index, right index, left weight, right weight) of each output sample along one axis."""
    ct = dtype.type
    ratio = _source_scale(ct, n_in, n_out, scale, align_corners)
    dst = xp.arange(n_out, dtype=dtype)
    src = dst * ratio if align_corners else xp.maximum((dst + ct(0.5)) * ratio - ct(0.5), ct(0))
    left = xp.minimum(xp.floor(src).astype(np.int64), n_in - 1)
    right = xp.minimum(left + 1, n_in - 1)
    weight = xp.clip(src - left.astype(dtype), 0, 1).astype(dtype)
    return left, right, (1 - weight).astype(dtype), weight


def _gather(x: Tensor, axis: int, index: Any) -> Tensor:
    return ops.getitem(x, (slice(None),) * axis + (Tensor._wrap(index),))


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resize (N, C, L) or (N, C, H, W) by ``size`` or ``scale_factor``: nearest(-exact), (bi)linear."""
    x = F._tensor(input)
    if mode not in _MODES:
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported; use one of "
                                  f"{', '.join(_MODES)} (bicubic, trilinear and area are not implemented)")
    spatial = x.ndim - 2
    if spatial not in (1, 2):
        raise NotImplementedError(f"interpolate: input must be 3-D (N, C, L) or 4-D (N, C, H, W), got shape "
                                  f"{x.shape}")
    if _MODES[mode] is not None and _MODES[mode] != spatial:
        raise NotImplementedError(f"interpolate: mode {mode!r} needs {_MODES[mode] + 2}-D input, got shape "
                                  f"{x.shape}")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    if align_corners is not None and _MODES[mode] is None:
        raise ValueError("interpolate: align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear")
    align = bool(align_corners)
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    in_size = tuple(x.shape[2:])
    if size is not None:
        out_size = _tuple("interpolate", "size", size, spatial)
        scales: tuple = (None,) * spatial
    else:
        factors = tuple(float(s) for s in scale_factor) if isinstance(scale_factor, Sequence) \
            else (float(scale_factor),) * spatial
        if len(factors) != spatial:
            raise ValueError(f"interpolate: scale_factor must have {spatial} element(s), got "
                             f"{scale_factor!r}")
        out_size = tuple(math.floor(n * f) for n, f in zip(in_size, factors))
        scales = (None,) * spatial if recompute_scale_factor else factors
    if any(o <= 0 for o in out_size):
        raise ValueError(f"interpolate: the output size {out_size} must be positive (input shape {x.shape})")
    xp = backend.namespace(x.data)
    out = x
    for a, (n_in, n_out, scale) in enumerate(zip(in_size, out_size, scales)):
        axis = 2 + a
        if mode.startswith("nearest"):
            if n_in != n_out or scale is not None:
                out = _gather(out, axis, _nearest_index(xp, n_in, n_out, scale, mode == "nearest-exact"))
            continue
        if x.dtype.kind != "f":
            raise NotImplementedError(f"interpolate: mode {mode!r} is not implemented for {x.dtype} input")
        if n_in == n_out:                 # PyTorch copies an axis whose size does not change
            continue
        left, right, w_left, w_right = _linear_weights(xp, n_in, n_out, scale, align, x.dtype)
        shape = (n_out,) + (1,) * (spatial - 1 - a)
        out = (_gather(out, axis, left) * Tensor._wrap(w_left.reshape(shape))
               + _gather(out, axis, right) * Tensor._wrap(w_right.reshape(shape)))
    return out


def upsample(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
             align_corners: bool | None = None) -> Tensor:
    """The old name of interpolate."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:
    """Bilinear upsampling with align_corners=True (what the old function did)."""
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)
