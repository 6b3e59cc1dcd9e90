"""Neural-network functions (PyTorch's ``torch.nn.functional``) as composites of gpugrad ops.

None of these has its own VJP rule: each is built from primitives, so it is
differentiable to any order. Class dimensions follow PyTorch: ``dim=1`` for inputs
of shape (N, C, ...), ``dim=0`` for an unbatched (C,) input.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .. import backend, dtypes, ops, random, versions
from ..batched import BatchedTensor, all_entries
from ..batched import state as batched_state
from ..ops import erf
from ..ops.nn import check_class_indices
from ..ops.util import normalize_axis
from ..tensor import Tensor

__all__ = [
    "relu", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "softplus", "logsigmoid", "softmax",
    "log_softmax", "linear", "linear_activation", "dropout", "layer_norm", "one_hot", "nll_loss",
    "cross_entropy", "mse_loss", "l1_loss", "binary_cross_entropy_with_logits", "erf",
]

_REDUCTIONS = ("mean", "sum", "none")


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return ops.mean(loss)
    if reduction == "sum":
        return ops.sum(loss)
    return loss


# ----------------------------------------------------------------------------- activations


def relu(x: Tensor) -> Tensor:
    """max(x, 0); gradient 0 at x == 0."""
    return ops.relu(x)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """x for x > 0, negative_slope * x otherwise."""
    return ops.where(ops.greater(x, 0), x, ops.multiply(x, negative_slope))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SQRT_HALF = math.sqrt(0.5)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) with the exact normal CDF (``approximate='none'``) or its tanh approximation."""
    x = _tensor(x)
    if approximate == "none":
        return 0.5 * x * (1.0 + erf(x * _SQRT_HALF))             # Phi(x) = (1 + erf(x / sqrt 2)) / 2
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
        return 0.5 * x * (1.0 + ops.tanh(inner))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + exp(-x)), computed without overflow."""
    return ops.sigmoid(x)


def tanh(x: Tensor) -> Tensor:
    return ops.tanh(x)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x) (also called swish)."""
    return x * ops.sigmoid(x)


def logsigmoid(x: Tensor) -> Tensor:
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), exact for large |x| of either sign."""
    # NOTE: minimum splits the gradient at a tie, so d/dx at 0 is 0.5 = sigmoid(-0), as it should be
    return ops.minimum(x, 0.0) - ops.log1p(ops.exp(-ops.abs(x)))


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's rule)."""
    bx = x * beta
    smooth = (ops.maximum(bx, 0.0) + ops.log1p(ops.exp(-ops.abs(bx)))) / beta
    return ops.where(ops.greater(bx, threshold), x, smooth)


def _class_dim(op: str, x: Tensor, dim: int | None) -> int:
    """``dim`` checked against x in the name of ``op``; a 0-d tensor takes 0 or -1 (PyTorch)."""
    if dim is None:
        raise TypeError(f"{op}: pass dim= explicitly (the axis that sums to 1), e.g. dim=-1")
    if x.ndim == 0 and dim in (0, -1):
        return dim
    return normalize_axis(op, dim, x.ndim)


def softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim``, computed as exp(x - logsumexp(x)); empty stays empty."""
    x = _tensor(x) if dtype is None else _tensor(x).to(dtype)
    return ops.exp(_log_softmax(x, _class_dim("softmax", x, dim)))


def log_softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    """x - logsumexp(x) along ``dim``: never overflows, and exact for very negative log-probabilities."""
    x = _tensor(x) if dtype is None else _tensor(x).to(dtype)
    return _log_softmax(x, _class_dim("log_softmax", x, dim))


def _log_softmax(x: Tensor, dim: int) -> Tensor:
    if x.dtype.kind != "f":
        x = x.to(dtypes.default_float)           # integers: log-probabilities are floats
    return x - ops.logsumexp(x, axis=dim, keepdims=True)


# ----------------------------------------------------------------------------- layers as functions


def _check_linear(name: str, x: Tensor, weight: Tensor) -> tuple[int, ...]:
    """The weight's shape, after checking that it fits the input's last dimension."""
    w_shape = tuple(getattr(weight, "shape", ()))
    if not w_shape or x.ndim == 0 or x.shape[-1] != w_shape[-1]:
        raise ValueError(f"{name}: input of shape {x.shape} has {x.shape[-1] if x.ndim else 0} features "
                         f"in its last dimension, but weight of shape {w_shape} expects "
                         f"{w_shape[-1] if w_shape else '?'} (in_features); reshape the input or fix "
                         "the layer")
    return w_shape


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, with weight of shape (out_features, in_features)."""
    x = _tensor(x)
    w_shape = _check_linear("linear", x, weight)
    if bias is not None and len(w_shape) == 2 and getattr(bias, "shape", None) == (w_shape[0],):
        return ops.linear(x, weight, bias)              # one primitive: one node, one matmul per input
    out = ops.matmul(x, weight if len(w_shape) == 1 else ops.swapaxes(weight, -1, -2))
    return out if bias is None else out + bias


def linear_activation(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    """activation(linear(x, weight, bias)) for "relu", "tanh" or "sigmoid".

    With a bias this is one primitive (``ops.linear_activation``): one node instead of
    two, the activation applied in place, and on CUDA one fused kernel for the
    activation's gradient and the bias's. The result equals the composition.
    """
    if activation not in ops.LINEAR_ACTIVATIONS:
        raise ValueError(f"linear_activation: activation must be one of {', '.join(ops.LINEAR_ACTIVATIONS)}, "
                         f"got {activation!r}")
    x = _tensor(x)
    w_shape = _check_linear("linear_activation", x, weight)
    if bias is not None and len(w_shape) == 2 and getattr(bias, "shape", None) == (w_shape[0],):
        return ops.linear_activation(x, weight, bias, activation=activation)
    return getattr(ops, activation)(linear(x, weight, bias))


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 - p) (identity when not training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p}")
    x = _tensor(x)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if batched_state.levels:           # inside vmap: the mask follows vmap's randomness policy
        keep = random.uniform_like(x, "dropout") >= p
        return x * (keep / (1.0 - p)).astype(x.dtype)
    # a Bernoulli(1 - p) mask, drawn where x lives (on a GPU by CuPy's generator: nothing is copied)
    with backend.device_scope(x.data):
        keep = random.uniform_on(backend.namespace(x.data), x.shape, np.float32) >= p
        scale = (keep / (1.0 - p)).astype(x.dtype)
    return x * Tensor._wrap(scale)


def layer_norm(x: Tensor, normalized_shape: int | tuple[int, ...] | list[int],
               weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` dimensions, then scale and shift."""
    x = _tensor(x)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or x.shape[x.ndim - k:] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} must match the last {k} dimension(s) of "
                         f"the input, whose shape is {x.shape}")
    axes = tuple(range(x.ndim - k, x.ndim))
    centred = x - ops.mean(x, axis=axes, keepdims=True)
    var = ops.mean(centred * centred, axis=axes, keepdims=True)      # biased variance, as PyTorch
    out = centred / ops.sqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def one_hot(x: Tensor, num_classes: int = -1) -> Tensor:
    """Integer class indices of shape (...) to an int64 tensor of shape (..., num_classes)."""
    x = _tensor(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"one_hot: class indices must be an integer tensor, got {x.dtype}")
    data = all_entries(x)                              # under vmap: the whole batch's indices
    xp = backend.namespace(data)
    if num_classes < 0:
        num_classes = int(data.max()) + 1 if data.size else 0
    if data.size and (int(data.min()) < 0 or int(data.max()) >= num_classes):
        raise ValueError(f"one_hot: class values must be in [0, {num_classes}), got values from "
                         f"{int(data.min())} to {int(data.max())}")
    if type(x) is BatchedTensor:
        classes = Tensor._wrap(xp.arange(num_classes))
        return ops.astype(ops.equal(ops.expand_dims(x, -1), classes), np.int64)
    return Tensor._wrap((data[..., None] == xp.arange(num_classes)).astype(np.int64))


# ----------------------------------------------------------------------------- lookup and padding

__all__ += ["embedding", "pad"]


def embedding(input: Any, weight: Tensor, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """The rows of ``weight`` (num_embeddings, embedding_dim) at the integer indices ``input`` (any shape).

    Repeated indices add up their gradients; the row at ``padding_idx`` receives none. With
    ``max_norm``, the looked-up rows whose ``norm_type``-norm exceeds it are first scaled down
    to it in place, as PyTorch does.
    """
    if sparse:
        raise NotImplementedError("embedding: sparse gradients are not supported; gpugrad's gradients are "
                                  "dense (use sparse=False)")
    if scale_grad_by_freq:
        raise NotImplementedError("embedding: scale_grad_by_freq is not supported; scale the loss or the "
                                  "gradient instead")
    weight = _tensor(weight)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-d (num_embeddings, embedding_dim), got shape "
                         f"{weight.shape}")
    batched = type(input) is BatchedTensor            # under vmap: indices per batch entry
    idx = input if batched else input.data if isinstance(input, Tensor) else np.asarray(input)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be an integer tensor (e.g. .long()), got {idx.dtype}")
    every = all_entries(idx) if batched else idx       # checks read every example's indices under vmap
    if backend.namespace(every) is not backend.namespace(weight.data):
        raise RuntimeError(f"embedding: the indices are on {backend.device_of(idx)} and the weight on "
                           f"{weight.device}; move them to one device with .to(...)")
    n = weight.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx {padding_idx} must be within num_embeddings ({n})")
        padding_idx %= n
    if every.size and backend.namespace(every) is np and (int(every.min()) < 0 or int(every.max()) >= n):
        bad = int(every.min()) if int(every.min()) < 0 else int(every.max())
        raise IndexError(f"embedding: index {bad} is out of range for {n} embeddings (valid indices are "
                         f"0..{n - 1})")
    if max_norm is not None:                         # under vmap: every example's rows, as a loop would
        _renorm_rows(weight, every, float(max_norm), float(norm_type))
    out = weight[idx]                                # gather; the VJP scatter-adds repeated rows
    if padding_idx is not None and out.requires_grad:
        padding = ops.equal(idx, padding_idx) if batched else Tensor._wrap(idx == padding_idx)
        out = ops.where(ops.expand_dims(padding, -1), out.detach(), out)
    return out


def _renorm_rows(weight: Tensor, idx: Any, max_norm: float, norm_type: float) -> None:
    """Scale the rows of ``weight`` that ``idx`` uses down to norm ``max_norm``, in place (off the tape)."""
    data = weight.data
    xp = backend.namespace(data)
    rows = xp.unique(idx.reshape(-1))
    picked = data[rows]
    size = xp.abs(picked)
    if math.isinf(norm_type):
        norms = size.max(axis=1)
    else:
        norms = (size ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(data.dtype)
    data[rows] = picked * scale[:, None]
    versions.bump(data, "embedding(max_norm=...)")


PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input: Tensor, pad: Any, mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad (or, with negative amounts, crop) the last dimensions: ``pad`` is (left, right) for the last
    dimension, then for the one before it, and so on, as in PyTorch.

    "constant" fills with ``value`` (0); "reflect" mirrors without repeating the edge; "replicate"
    repeats the edge; "circular" wraps around. The last three pad the last 1-3 dimensions of a
    batched input (2-d/3-d for 1 dimension, 3-d/4-d for 2, 4-d/5-d for 3).
    """
    x = _tensor(input)
    try:
        amounts = tuple(p.__index__() for p in pad)
    except (TypeError, AttributeError):
        raise TypeError(f"pad: pad must be a sequence of integers, got {pad!r}") from None
    if len(amounts) % 2:
        raise ValueError(f"pad: the padding length must be divisible by 2, got {len(amounts)}: {amounts}")
    k = len(amounts) // 2
    if mode not in PAD_MODES:
        raise ValueError(f"pad: mode must be one of {', '.join(PAD_MODES)}, got {mode!r}")
    if mode == "constant":
        if k > x.ndim:
            raise ValueError(f"pad: padding of length {len(amounts)} covers {k} dimensions, but the input "
                             f"has only {x.ndim} (shape {x.shape})")
    else:
        if value not in (None, 0):
            raise ValueError(f"pad: mode {mode!r} takes no value argument")
        if k not in (1, 2, 3) or x.ndim not in (k + 1, k + 2):
            raise NotImplementedError(f"pad: mode {mode!r} pads the last 1-3 dimensions of a batched input: "
                                      "2-d or 3-d input for 2 amounts, 3-d or 4-d for 4, 4-d or 5-d for 6; "
                                      f"got {len(amounts)} amounts for a {x.ndim}-d input")
    for i in range(k):
        x = _pad_dim(x, x.ndim - 1 - i, amounts[2 * i], amounts[2 * i + 1], mode, value or 0)
    return x


def _crop(x: Tensor, d: int, left: int, right: int) -> Tensor:
    """Remove ``-left``/``-right`` entries (the negative amounts) from the ends of dimension ``d``."""
    n = x.shape[d]
    cut_left, cut_right = -min(left, 0), -min(right, 0)
    if cut_left + cut_right > n:
        raise RuntimeError(f"pad: cropping ({left}, {right}) removes more than the {n} entries of "
                           f"dimension {d}")
    return x[(slice(None),) * d + (slice(cut_left, n - cut_right),)] if cut_left or cut_right else x


def _pad_dim(x: Tensor, d: int, left: int, right: int, mode: str, value: float) -> Tensor:
    """Pad dimension ``d`` by ``left``/``right``; negative amounts crop (PyTorch's order: after the
    padding, except in circular mode, which wraps the cropped tensor)."""
    if mode == "circular":
        x = _crop(x, d, left, right)
    n = x.shape[d]
    grow_left, grow_right = max(left, 0), max(right, 0)
    grow = max(grow_left, grow_right)
    if {"reflect": grow >= n, "circular": grow > n, "replicate": grow > 0 and n == 0}.get(mode, False):
        raise RuntimeError(f"pad: padding ({left}, {right}) is too large for mode {mode!r} at dimension {d} "
                           f"of an input of shape {x.shape} (reflect needs padding < size, circular <= size)")

    def along(item: Any) -> Tensor:
        return x[(slice(None),) * d + (item,)]

    def side(amount: int, at_left: bool) -> Tensor:
        if mode == "constant":
            shape = x.shape[:d] + (amount,) + x.shape[d + 1:]
            return Tensor._wrap(backend.namespace(x.data).full(shape, value, dtype=x.dtype))
        if mode == "reflect":        # the mirror image, without the edge element itself
            return along(slice(amount, 0, -1)) if at_left else \
                along(slice(n - 2, n - 2 - amount if n - 2 - amount >= 0 else None, -1))
        if mode == "replicate":
            edge = along(slice(0, 1) if at_left else slice(n - 1, n))
            return ops.broadcast_to(edge, x.shape[:d] + (amount,) + x.shape[d + 1:])
        return along(slice(n - amount, n) if at_left else slice(0, amount))      # circular

    parts = [side(grow_left, True)] if grow_left else []
    parts += [x] + ([side(grow_right, False)] if grow_right else [])
    padded = ops.concatenate(parts, axis=d) if len(parts) > 1 else x
    return padded if mode == "circular" else _crop(padded, d, min(left, 0), min(right, 0))


# ----------------------------------------------------------------------------- losses


def _class_layout(op: str, x: Tensor, target: Tensor) -> tuple[Tensor, Any, tuple[int, ...]]:
    """Flatten (N, C, d1...) scores and (N, d1...) targets to (M, C) and (M,); also the target shape."""
    if x.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: class-index targets must be an integer tensor (e.g. .long()), got "
                        f"{target.dtype}; for class probabilities pass a float target shaped like the input")
    batch_shape = x.shape[:1] + x.shape[2:] if x.ndim >= 2 else ()
    if target.shape != batch_shape:
        raise ValueError(f"{op}: for input of shape {x.shape} the target must have shape {batch_shape} "
                         f"(the input without its class dimension {1 if x.ndim >= 2 else 0}), got "
                         f"{target.shape}")
    n_classes = x.shape[1] if x.ndim >= 2 else x.shape[0]
    if x.ndim == 1:
        flat = ops.reshape(x, (1, n_classes))
    elif x.ndim == 2:
        flat = x
    else:
        flat = ops.reshape(ops.swapaxes(ops.flatten(x, 2), 1, 2), (-1, n_classes))   # (N, C, L) -> (NL, C)
    return flat, ops.reshape(target, (-1,)).data, batch_shape


def _check_weight(op: str, weight: Any, n_classes: int) -> Tensor:
    weight = _tensor(weight)
    if weight.shape != (n_classes,):
        raise ValueError(f"{op}: weight must have one entry per class, shape ({n_classes},), got "
                         f"{weight.shape}")
    return weight


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """-input[n, target[n]] * weight[target[n]]: the loss for log-probabilities of shape (N, C, ...).

    'mean' divides by the total weight of the targets that are not ignored (by their
    count without weights), as PyTorch does; it is nan when every target is ignored.
    """
    return _nll_loss("nll_loss", input, target, weight, ignore_index, reduction)


def _nll_loss(op: str, input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
              reduction: str) -> Tensor:
    """nll_loss, its errors naming ``op`` (the function the user called)."""
    _check_reduction(op, reduction)
    x, target = _tensor(input), _tensor(target)
    flat, t, batch_shape = _class_layout(op, x, target)
    n_classes = flat.shape[1]
    xp = backend.namespace(t)
    valid = check_class_indices(op, t, n_classes, ignore_index)   # on a GPU: raised at the next read
    safe = xp.where(valid, t, 0)
    picked = flat[xp.arange(t.shape[0]), safe]                 # gather: its VJP scatter-adds
    if weight is not None:
        w = ops.where(Tensor._wrap(valid), _check_weight(op, weight, n_classes)[safe], 0.0)
    else:
        w = Tensor._wrap(valid.astype(flat.dtype))
    loss = -(picked * w)
    if reduction == "none":
        return ops.reshape(loss, batch_shape)
    total = ops.sum(loss)
    return total if reduction == "sum" else total / ops.sum(w)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy from unnormalised scores of shape (N, C, ...) or (C,).

    ``target`` holds class indices (integers, shape (N, ...)) or class probabilities
    (floats, the input's shape). With ``label_smoothing`` e, the target is mixed with
    the uniform distribution: (1 - e) * target + e / C.
    """
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    x, target = _tensor(input), _tensor(target)
    if x.ndim == 0:
        raise ValueError("cross_entropy: input must have a class dimension, got a 0-d tensor")
    if x.ndim == 1 and weight is None and target.dtype.kind in "iu" and target.ndim == 0 \
            and x.dtype.kind == "f":      # one example (and each one under vmap): the primitive on one row
        one = cross_entropy(ops.reshape(x, (1, x.shape[0])), ops.reshape(target, (1,)), None, ignore_index,
                            reduction, label_smoothing)
        return ops.reshape(one, ()) if reduction == "none" else one
    if x.ndim == 2 and weight is None and target.dtype.kind in "iu" and target.shape == (x.shape[0],) \
            and x.dtype.kind == "f":
        # the common case as one primitive (a fused kernel on CUDA); the rest is composed below
        if isinstance(target.data, np.ndarray):     # on a GPU the fused kernel checks, without waiting
            check_class_indices("cross_entropy", target.data, x.shape[1], ignore_index)
        return ops.softmax_cross_entropy(x, target, ignore_index=ignore_index,
                                         label_smoothing=float(label_smoothing), reduction=reduction)
    class_dim = 1 if x.ndim >= 2 else 0
    n_classes = x.shape[class_dim]
    logp = log_softmax(x, dim=class_dim)
    w_shape = [1] * x.ndim
    w_shape[class_dim] = n_classes

    if target.dtype.kind == "f":                      # class probabilities
        if target.shape != x.shape:
            raise ValueError(f"cross_entropy: probability targets must have the input's shape {x.shape}, "
                             f"got {target.shape}; for class indices pass an integer target")
        if ignore_index >= 0:
            raise ValueError("cross_entropy: ignore_index is not supported for probability (float) targets")
        if label_smoothing > 0:
            target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
        terms = logp * target
        if weight is not None:
            terms = terms * ops.reshape(_check_weight("cross_entropy", weight, n_classes), tuple(w_shape))
        if reduction == "none":
            return -ops.sum(terms, axis=class_dim)
        total = -ops.sum(terms)
        return total if reduction == "sum" else total / (x.numel() // n_classes if n_classes else 0)

    nll = _nll_loss("cross_entropy", logp, target, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return nll
    # smoothing term: -sum_c w_c log p_c per sample (0 where ignored), reduced like nll_loss
    terms = logp if weight is None else \
        logp * ops.reshape(_check_weight("cross_entropy", weight, n_classes), tuple(w_shape))
    valid = target.data != ignore_index
    smooth = ops.where(Tensor._wrap(valid), -ops.sum(terms, axis=class_dim), 0.0)
    if reduction == "sum":
        smooth = ops.sum(smooth)
    elif reduction == "mean":
        xp = backend.namespace(valid)
        if weight is None:
            denominator: Any = ops.sum(Tensor._wrap(valid.astype(smooth.dtype)))
        else:
            t = xp.where(valid, target.data, 0)
            denominator = ops.sum(ops.where(Tensor._wrap(valid), _tensor(weight)[t], 0.0))
        smooth = ops.sum(smooth) / denominator
    return (1.0 - label_smoothing) * nll + smooth * (label_smoothing / n_classes)


def _broadcast_pair(op: str, x: Tensor, target: Any) -> Tensor:
    target = _tensor(target)
    if target.shape != x.shape:
        warnings.warn(f"{op}: target shape {target.shape} differs from input shape {x.shape}; they "
                      "will be broadcast, which is likely not what you want", stacklevel=3)
    return target


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """(input - target)^2, averaged (or summed, or kept elementwise)."""
    _check_reduction("mse_loss", reduction)
    x = _tensor(input)
    diff = x - _broadcast_pair("mse_loss", x, target)
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """|input - target|, averaged (or summed, or kept elementwise); gradient 0 where they are equal."""
    _check_reduction("l1_loss", reduction)
    x = _tensor(input)
    return _reduce(ops.abs(x - _broadcast_pair("l1_loss", x, target)), reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     pos_weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """-[pos_weight * t * log sigmoid(x) + (1 - t) * log(1 - sigmoid(x))] * weight, computed stably."""
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    x, target = _tensor(input), _tensor(target)
    if target.shape != x.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target size {target.shape} must be the same "
                         f"as input size {x.shape}")
    # log(1 - sigmoid(x)) = log sigmoid(x) - x, so the loss is (1 - t) x - (1 + (pw - 1) t) log sigmoid(x)
    log_sig = logsigmoid(x)
    if pos_weight is not None:
        log_sig = log_sig * (1.0 + (_tensor(pos_weight) - 1.0) * target)
    loss = (1.0 - target) * x - log_sig
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


# ----------------------------------------------------------------------------- convolution, pooling, norms,
# more activations and losses, attention: their own modules, gathered here as torch.nn.functional has them
from ._activations import *  # noqa: E402,F403
from ._activations import __all__ as _activation_names  # noqa: E402
from ._attention import *  # noqa: E402,F403
from ._attention import __all__ as _attention_names  # noqa: E402
from ._losses import *  # noqa: E402,F403
from ._losses import __all__ as _loss_names  # noqa: E402
from ._normalization import *  # noqa: E402,F403
from ._normalization import __all__ as _normalization_names  # noqa: E402
from ._spatial import *  # noqa: E402,F403
from ._spatial import __all__ as _spatial_names  # noqa: E402

__all__ += [*_activation_names, *_attention_names, *_loss_names, *_normalization_names, *_spatial_names]
