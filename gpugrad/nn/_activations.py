"""Activations beyond the basic ones: the ELU family, the hard (piecewise linear) ones, mish, softsign,
softmin. Composites with PyTorch's values and PyTorch's gradients, down to the kinks.

Two things the compositions take care of:

* a ``where`` whose branch overflows (exp of a large x) would send 0 * inf = NaN back
  through it, so the exponential branch only ever sees x <= 0;
* PyTorch's hard activations have gradient 0 *at* their corners (hardtanh's mask is
  min < x < max), while gpugrad's ``clip`` passes the gradient at the bounds; hardtanh
  therefore selects x strictly inside and a constant outside.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..tensor import Tensor
from . import functional as F

__all__ = ["elu", "selu", "celu", "relu6", "hardtanh", "hardsigmoid", "hardswish", "mish", "softsign",
           "softmin", "hardshrink", "softshrink", "tanhshrink", "threshold", "glu", "prelu"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _elu(x: Tensor, alpha: float, scale: float = 1.0, input_scale: float = 1.0) -> Tensor:
    """scale * x for x > 0, alpha * scale * (exp(input_scale * x) - 1) otherwise."""
    positive = ops.greater(x, 0)
    negative = ops.where(positive, 0.0, x)            # exp never sees a large x, so no inf * 0 in backward
    curve = ops.expm1(negative * input_scale) * (alpha * scale)
    return ops.where(positive, x * scale if scale != 1.0 else x, curve)


def _result(x: Tensor, out: Tensor, inplace: bool) -> Tensor:
    """``out``, or with inplace=True and no gradient involved, ``x`` overwritten with it (as PyTorch).

    A tensor that takes part in a recorded graph is never overwritten: the result is a new
    tensor then, so use the returned value.
    """
    if inplace and not x.requires_grad and not out.requires_grad and out.dtype == x.dtype:
        return x.copy_(out)
    return out


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    x = F._tensor(input)
    return _result(x, _elu(x, alpha), inplace)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    """scale * elu(x, alpha) with the self-normalising constants of Klambauer et al. (2017)."""
    x = F._tensor(input)
    return _result(x, _elu(x, _SELU_ALPHA, _SELU_SCALE), inplace)


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x for x > 0, alpha * (exp(x / alpha) - 1) otherwise."""
    if alpha == 0:
        raise RuntimeError("celu: ZeroDivisionError: alpha must not be 0")
    x = F._tensor(input)
    return _result(x, _elu(x, alpha, 1.0, 1.0 / alpha), inplace)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """x clamped to [min_val, max_val]; gradient 1 strictly inside, 0 elsewhere (also at the bounds)."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    x = F._tensor(input)
    inside = ops.logical_and(ops.greater(x, min_val), ops.less(x, max_val))
    return _result(x, ops.where(inside, x, ops.clip(x.detach(), min_val, max_val)), inplace)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6): hardtanh(x, 0, 6)."""
    return hardtanh(input, 0.0, 6.0, inplace)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """relu6(x + 3) / 6: 0 below -3, 1 above 3, linear between (gradient 1/6 strictly inside)."""
    x = F._tensor(input)
    return _result(x, hardtanh(x + 3.0, 0.0, 6.0) / 6.0, inplace)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6; its gradient is x / 3 + 1/2 for -3 < x < 3, 0 at -3 and below, 1 from 3 on."""
    x = F._tensor(input)
    middle = x * (x + 3.0) / 6.0
    inner = ops.where(ops.less_equal(x, -3.0), 0.0, middle)
    return _result(x, ops.where(ops.less(x, 3.0), inner, x), inplace)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x)) (Misra, 2019), with softplus computed without overflow."""
    x = F._tensor(input)
    softplus = ops.maximum(x, 0.0) + ops.log1p(ops.exp(-ops.abs(x)))
    return _result(x, x * ops.tanh(softplus), inplace)


def softsign(input: Tensor) -> Tensor:
    """x / (1 + |x|)."""
    x = F._tensor(input)
    return x / (ops.abs(x) + 1.0)


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """softmax(-x) along ``dim``: weights that favour the smallest entries."""
    x = F._tensor(input)
    if dtype is not None:
        x = x.to(dtype)
    return F.softmax(-x, dim)


def _outside(x: Tensor, lambd: float) -> Tensor:
    """|x| > lambd: where the shrink functions pass the gradient (0 on the closed band, as PyTorch)."""
    return ops.greater(ops.abs(x), lambd)


def hardshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """x where |x| > lambd, 0 elsewhere."""
    x = F._tensor(input)
    return ops.where(_outside(x, lambd), x, 0.0)


def softshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """x - lambd sign(x) where |x| > lambd, 0 elsewhere."""
    if lambd < 0:
        raise RuntimeError(f"softshrink: lambda must be greater or equal to 0, but found to be {lambd}")
    x = F._tensor(input)
    return ops.where(_outside(x, lambd), x - ops.sign(x.detach()) * lambd, 0.0)


def tanhshrink(input: Tensor) -> Tensor:
    """x - tanh(x)."""
    x = F._tensor(input)
    return x - ops.tanh(x)


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    """x where x > threshold, ``value`` elsewhere."""
    x = F._tensor(input)
    return _result(x, ops.where(ops.greater(x, threshold), x, value), inplace)


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """a * sigmoid(b), with a and b the two halves of the input along ``dim``."""
    x = F._tensor(input)
    if x.ndim == 0:
        raise RuntimeError("glu: does not support scalars (0-d tensors)")
    axis = dim % x.ndim if -x.ndim <= dim < x.ndim else dim
    if not 0 <= axis < x.ndim:
        raise IndexError(f"glu: dimension {dim} is out of range for a tensor of shape {x.shape}")
    half = x.shape[axis] // 2
    if x.shape[axis] % 2:
        raise RuntimeError(f"glu: halving dimension must be even, but dimension {dim} of shape {x.shape} is "
                           f"size {x.shape[axis]}")
    lead = (slice(None),) * axis
    return x[lead + (slice(0, half),)] * ops.sigmoid(x[lead + (slice(half, None),)])


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """x where x > 0, weight * x elsewhere; weight has one entry, or one per channel (dimension 1)."""
    x, w = F._tensor(input), F._tensor(weight)
    if w.ndim != 1 or (w.shape[0] != 1 and (x.ndim < 2 or w.shape[0] != x.shape[1])):
        channels = x.shape[1] if x.ndim >= 2 else 1
        raise RuntimeError(f"prelu: mismatch of parameter numbers and input channel size: weight of shape "
                           f"{w.shape} for input of shape {x.shape} (expected 1 or {channels} entries)")
    if w.shape[0] != 1:
        w = ops.reshape(w, (w.shape[0],) + (1,) * (x.ndim - 2))
    return ops.where(ops.greater(x, 0), x, x * w)
