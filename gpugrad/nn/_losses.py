"""Losses and similarities: binary_cross_entropy, smooth_l1_loss, huber_loss, kl_div, cosine_similarity.

Composites, except binary cross-entropy's elementwise term (``ops.loss``), whose PyTorch
gradient is not the derivative of its clamped forward. ``size_average`` and ``reduce``,
PyTorch's deprecated spellings of ``reduction``, are accepted where PyTorch accepts them.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import backend, ops
from ..ops.loss import binary_cross_entropy as _bce_terms
from ..ops.util import normalize_axis
from ..tensor import Tensor
from . import functional as F

__all__ = ["binary_cross_entropy", "smooth_l1_loss", "huber_loss", "kl_div", "cosine_similarity"]


def _legacy_reduction(op: str, size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's mapping of the deprecated size_average / reduce flags to ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn(f"{op}: size_average and reduce are deprecated, please use reduction='mean', 'sum' or "
                  "'none' instead", stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """-weight * (t log x + (1 - t) log(1 - x)) for probabilities x in [0, 1]; each log is clamped at -100."""
    reduction = _legacy_reduction("binary_cross_entropy", size_average, reduce, reduction)
    F._check_reduction("binary_cross_entropy", reduction)
    x, target = F._tensor(input), F._tensor(target)
    if target.shape != x.shape:
        raise ValueError(f"binary_cross_entropy: using a target size ({target.shape}) that is different to "
                         f"the input size ({x.shape}) is not supported; please ensure they have the same "
                         "size")
    if x.dtype.kind != "f" or target.dtype != x.dtype:
        raise RuntimeError(f"binary_cross_entropy: input and target must be floating point tensors of one "
                           f"dtype, got {x.dtype} and {target.dtype}")
    data = F.all_entries(x)                  # under vmap: every entry's values
    if backend.namespace(data) is np:        # on a GPU this check would wait for the device
        if data.size and not bool(((data >= 0) & (data <= 1)).all()):
            raise RuntimeError("binary_cross_entropy: all elements of input should be between 0 and 1 "
                               "(probabilities; for scores use binary_cross_entropy_with_logits)")
    loss = _bce_terms(x, target)
    if weight is not None:
        loss = loss * weight
    return F._reduce(loss, reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
                   reduce: bool | None = None, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (d = input - target); l1 for beta = 0."""
    reduction = _legacy_reduction("smooth_l1_loss", size_average, reduce, reduction)
    F._check_reduction("smooth_l1_loss", reduction)
    if beta < 0:
        raise RuntimeError(f"smooth_l1_loss does not support negative values for beta, got beta={beta}")
    x = F._tensor(input)
    diff = x - F._broadcast_pair("smooth_l1_loss", x, target)
    if beta == 0:
        return F._reduce(ops.abs(diff), reduction)
    return F._reduce(_piecewise_quadratic(diff, beta, 0.5 / beta, 1.0), reduction)


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere; times ``weight`` if given."""
    F._check_reduction("huber_loss", reduction)
    if delta <= 0:
        raise RuntimeError(f"huber_loss does not support non-positive values for delta, got delta={delta}")
    x = F._tensor(input)
    diff = x - F._broadcast_pair("huber_loss", x, target)
    loss = _piecewise_quadratic(diff, delta, 0.5, delta)
    if weight is not None:
        if tuple(getattr(weight, "shape", ())) != x.shape:
            raise ValueError(f"huber_loss: weights and input must have the same size, got weight of shape "
                             f"{tuple(getattr(weight, 'shape', ()))} and input of shape {x.shape}")
        loss = loss * weight
    return F._reduce(loss, reduction)


def _piecewise_quadratic(diff: Tensor, knot: float, curvature: float, slope: float) -> Tensor:
    """curvature d^2 inside |d| < knot, slope (|d| - knot / 2) outside: smooth l1 and huber."""
    size = ops.abs(diff)
    return ops.where(ops.less(size, knot), diff * diff * curvature, (size - 0.5 * knot) * slope)


def kl_div(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
           reduction: str = "mean", log_target: bool = False) -> Tensor:
    """target * (log target - input) elementwise: the KL divergence of ``target`` from exp(input).

    ``input`` holds log-probabilities; ``target`` probabilities (log-probabilities with
    ``log_target=True``). 'batchmean' divides the sum by the batch size, which is the KL
    divergence; 'mean' divides by the number of elements (PyTorch warns about it, so do we).
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction("kl_div", size_average, reduce, reduction)
    elif reduction == "mean":
        warnings.warn("kl_div: reduction 'mean' divides the total loss by both the batch size and the "
                      "support size; 'batchmean' divides only by the batch size and is the KL divergence",
                      stacklevel=2)
    if reduction not in ("mean", "batchmean", "sum", "none"):
        raise ValueError(f"kl_div: reduction must be 'mean', 'batchmean', 'sum' or 'none', got {reduction!r}")
    x = F._tensor(input)
    t = F._tensor(target)
    if log_target:
        loss = ops.exp(t) * (t - x)
    else:
        zero = ops.equal(t, 0)                           # xlogy: 0 log 0 is 0
        loss = ops.where(zero, 0.0, t * ops.log(ops.where(zero, 1.0, t))) - t * x
    if reduction == "batchmean":
        total = ops.sum(loss)
        return total / x.shape[0] if x.ndim else total
    return F._reduce(loss, reduction)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """sum(x1 * x2) / (max(||x1||, eps) max(||x2||, eps)) along ``dim`` (after broadcasting).

    As PyTorch, each norm is clamped at ``eps`` for its value only: the gradient flows
    through the norm as if it were not clamped.
    """
    a, b = F._tensor(x1), F._tensor(x2)
    if a.dtype.kind != "f":
        a = a.to(b.dtype if b.dtype.kind == "f" else "float32")
    if b.dtype.kind != "f":
        b = b.to(a.dtype)
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise RuntimeError(f"cosine_similarity: the shapes of x1 {a.shape} and x2 {b.shape} cannot be "
                           "broadcast together") from None
    if a.shape != shape:
        a = ops.broadcast_to(a, shape)
    if b.shape != shape:
        b = ops.broadcast_to(b, shape)
    axis = normalize_axis("cosine_similarity", dim, len(shape))
    return ops.sum((a / _clamped_norm(a, axis, eps)) * (b / _clamped_norm(b, axis, eps)), axis=axis)


def _clamped_norm(x: Tensor, axis: int, eps: float) -> Tensor:
    """||x|| along ``axis`` (kept) with its value raised to ``eps``, its gradient the norm's."""
    norm = ops.norm(x, axis=axis, keepdims=True)
    lift = ops.clip(norm.detach(), eps, None) - norm.detach()
    return norm + Tensor._wrap(lift.data)
