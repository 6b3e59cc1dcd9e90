"""Normalisation functions: batch_norm (with running statistics), group_norm, normalize.

Composites of primitives, so they differentiate to any order. batch_norm updates the
running statistics in place, off the tape and on the device (no value is read back),
with PyTorch's rule: the running variance takes the unbiased batch variance, while the
batch is normalised with the biased one.
"""

from __future__ import annotations

import math
from typing import Any

from .. import ops
from ..engine import no_grad
from ..tensor import Tensor
from . import functional as F

__all__ = ["batch_norm", "instance_norm", "group_norm", "normalize"]


def _check_channel_vector(op: str, name: str, t: Any, channels: int, dtype: Any) -> None:
    if t is None:
        return
    if tuple(getattr(t, "shape", ())) != (channels,):
        raise RuntimeError(f"{op}: {name} should contain {channels} elements (one per channel), got shape "
                           f"{tuple(getattr(t, 'shape', ()))}")
    if t.dtype != dtype:
        raise RuntimeError(f"{op}: mixed dtypes: input is {dtype} but {name} is {t.dtype}; give all of them "
                           "one dtype")


def _affine(out: Tensor, weight: Any, bias: Any, shape: tuple[int, ...]) -> Tensor:
    if weight is not None:
        out = out * ops.reshape(weight, shape)
    if bias is not None:
        out = out + ops.reshape(bias, shape)
    return out


def _update_running(running: Tensor, batch: Any, momentum: Any) -> None:
    """running <- (1 - momentum) running + momentum batch, in place (momentum: a float or a 0-d array)."""
    with no_grad():
        running.mul_(1 - momentum)
        running.add_(batch * momentum)


def _channel_input(op: str, input: Any, min_ndim: int, layout: str, running_mean: Any, running_var: Any,
                   weight: Any, bias: Any) -> tuple[Tensor, tuple[int, ...]]:
    """The input as a Tensor, checked with its per-channel vectors, and the shape (1, C, 1...) they take."""
    x = F._tensor(input)
    if x.ndim < min_ndim:
        raise ValueError(f"{op}: expected input of shape {layout} with at least {min_ndim} dimensions, got "
                         f"{x.shape}")
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_channel_vector(op, name, t, x.shape[1], x.dtype)
    return x, (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _by_running_stats(op: str, x: Tensor, running_mean: Any, running_var: Any, weight: Any, bias: Any,
                      eps: float, shape: tuple[int, ...]) -> Tensor:
    """Normalise with given statistics: one scale and one shift per channel, two full-size operations."""
    if running_mean is None or running_var is None:
        raise RuntimeError(f"{op}: running_mean and running_var must be defined to normalise with running "
                           "statistics (evaluation mode)")
    scale = 1.0 / ops.sqrt(ops.reshape(running_var, shape) + eps)
    if weight is not None:
        scale = scale * ops.reshape(weight, shape)
    shift = -ops.reshape(running_mean, shape) * scale
    if bias is not None:
        shift = shift + ops.reshape(bias, shape)
    return x * scale + shift


def _moments(x: Tensor, axes: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, x - mean, biased variance) over ``axes``, kept as size-1 axes."""
    mean = ops.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    return mean, centred, ops.mean(centred * centred, axis=axes, keepdims=True)


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel (dimension 1) by its batch statistics (training) or the running ones (eval).

    In training, ``running_mean`` and ``running_var`` (if given) move towards the batch mean
    and the unbiased batch variance by ``momentum``; in eval they must be given.
    """
    x, shape = _channel_input("batch_norm", input, 2, "(N, C, ...)", running_mean, running_var, weight, bias)
    if not training:
        return _by_running_stats("batch_norm", x, running_mean, running_var, weight, bias, eps, shape)
    channels = x.shape[1]
    count = math.prod(x.shape) // channels
    if count <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input of "
                         f"shape {x.shape}")
    mean, centred, var = _moments(x, (0,) + tuple(range(2, x.ndim)))   # biased var normalises the batch
    if running_mean is not None:
        _update_running(running_mean, mean.data.reshape(channels), momentum)
    if running_var is not None:
        _update_running(running_var, var.data.reshape(channels) * (count / (count - 1)), momentum)
    return _affine(centred / ops.sqrt(var + eps), weight, bias, shape)


def instance_norm(input: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None,
                  weight: Tensor | None = None, bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel of each sample over its positions (batch_norm per instance).

    With ``use_input_stats`` the running statistics (if given) move towards the batch average
    of the per-instance mean and unbiased variance, as PyTorch's; without, they normalise.
    """
    x, shape = _channel_input("instance_norm", input, 3, "(N, C, *positions)", running_mean, running_var,
                              weight, bias)
    if not use_input_stats:
        return _by_running_stats("instance_norm", x, running_mean, running_var, weight, bias, eps, shape)
    count = math.prod(x.shape[2:])
    if count <= 1:
        raise ValueError(f"instance_norm: expected more than 1 spatial element when training, got input of "
                         f"shape {x.shape}")
    mean, centred, var = _moments(x, tuple(range(2, x.ndim)))
    if running_mean is not None:
        _update_running(running_mean, mean.data.reshape(x.shape[:2]).mean(axis=0), momentum)
    if running_var is not None:
        unbiased = var.data.reshape(x.shape[:2]).mean(axis=0) * (count / (count - 1))
        _update_running(running_var, unbiased, momentum)
    return _affine(centred / ops.sqrt(var + eps), weight, bias, shape)


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalise each group of channels of each sample over the group's channels and positions."""
    x = F._tensor(input)
    if x.ndim < 2:
        raise RuntimeError(f"group_norm: expected input of shape (N, C, ...) with at least 2 dimensions, got "
                           f"{x.shape}")
    channels = x.shape[1]
    if not isinstance(num_groups, int) or num_groups <= 0 or channels % num_groups:
        raise RuntimeError(f"group_norm: expected number of channels in input to be divisible by num_groups, "
                           f"but got input of shape {x.shape} and num_groups={num_groups!r}")
    for name, t in (("weight", weight), ("bias", bias)):
        _check_channel_vector("group_norm", name, t, channels, x.dtype)
    _, centred, var = _moments(ops.reshape(x, (x.shape[0], num_groups, -1)), (2,))
    out = ops.reshape(centred / ops.sqrt(var + eps), x.shape)
    return _affine(out, weight, bias, (1, channels) + (1,) * (x.ndim - 2))


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None) -> Tensor:
    """input / max(||input||_p along dim, eps): unit vectors along ``dim``."""
    if out is not None:
        raise TypeError("normalize: out= is not supported; use the returned tensor")
    x = F._tensor(input)
    if x.ndim == 0:
        raise IndexError(f"normalize: dimension {dim} is out of range for a 0-d tensor")
    norm = ops.norm(x, ord=p, axis=dim, keepdims=True)
    return x / ops.clip(norm, eps, None)
