"""Primitives that neural networks lean on: linear (x Wᵀ + b) and softmax cross-entropy.

Both could be composed from other ops, and nn.functional does so for the general
cases; as primitives they record one node instead of four or ten, allocate fewer
temporaries, and on CUDA run as fused kernels (the cross-entropy forward and backward).
Their rules use only names gpugrad provides, so they support create_graph too.
"""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor
from . import batching
from .elementwise import stable_sigmoid
from .registry import defop
from .samples import Const, Sample, samples, uniform

# ----------------------------------------------------------------------------- linear


def _linear_case(x_shape: tuple, out: int):
    def make(rng):
        n_in = x_shape[-1]
        return Sample([uniform(rng, -1, 1, x_shape), uniform(rng, -1, 1, (out, n_in)),
                       uniform(rng, -1, 1, (out,))], name=f"{x_shape}->{out}")
    return make


@defop(save=("x", "weight"), dtype_rule="same", samples=samples(
    _linear_case((3, 4), 2), _linear_case((4,), 3),
                                              _linear_case((2, 3, 4), 5)))
def linear(xp, x, weight, bias):
    out = xp.matmul(x, weight.T)
    out += bias                      # in place: the product is a fresh array
    return out


@linear.vjp
def _(xp, g, out, x, weight, bias, needs):
    gx = gw = gb = None
    if needs[0]:
        gx = xp.matmul(g, weight)                                   # dL/dx = G W
    if needs[1] or needs[2]:
        if g.ndim != 2:                                             # fold the batch dimensions
            n_out, n_in = weight.shape
            g, x = xp.reshape(g, (-1, n_out)), xp.reshape(x, (-1, n_in))
        if needs[1]:
            gw = xp.matmul(g.T, x)                                  # dL/dW = Gᵀ X
        if needs[2]:
            gb = g.sum(axis=0)                                      # dL/db = column sums of G
    return (gx, gw, gb)


@linear.batch
def _(batch, x, weight, bias):
    if batch[1] is None and batch[2] is None:    # shared parameters: the entries are more rows of x
        return linear(batching.to_front(x, batch[0]), weight, bias), 0
    return batching.decompose(batch, _linear_composite, x, weight, bias)


def _linear_composite(x, weight, bias, activation=None):
    """x Wᵀ + b (and its activation) from matmul and add: per-entry parameters under vmap."""
    from .elementwise import add, relu, sigmoid, tanh  # noqa: PLC0415
    from .linalg import matmul  # noqa: PLC0415
    from .shape import swapaxes  # noqa: PLC0415

    out = add(matmul(x, swapaxes(weight, 0, 1)), bias)
    return out if activation is None else {"relu": relu, "tanh": tanh, "sigmoid": sigmoid}[activation](out)


# ----------------------------------------------------------------------------- linear + activation

# activations whose derivative is a function of their output, so the fused node needs no
# pre-activation array (x Wᵀ + b) beside it
LINEAR_ACTIVATIONS = ("relu", "tanh", "sigmoid")


def _linear_activation_case(x_shape: tuple, out: int, activation: str):
    def make(rng):
        sample = _linear_case(x_shape, out)(rng)
        sample.params = {"activation": activation}
        sample.name += f"-{activation}"
        return sample
    return make


# bias is saved for the CUDA rule (its fused kernel takes the bias's address); the plain rule reads none
@defop(save=("x", "weight", "bias", "out"), fused="linear_activation_backward", dtype_rule="same",
       samples=samples(
    *(_linear_activation_case((3, 4), 2, a) for a in LINEAR_ACTIVATIONS),
    _linear_activation_case((2, 3, 4), 5, "relu")))
def linear_activation(xp, x, weight, bias, *, activation):
    """act(x Wᵀ + b): a Linear layer and its activation as one node, the activation in place."""
    out = xp.matmul(x, weight.T)
    if xp is not np:                          # CUDA: the bias and the activation in one pass
        from ..cuda import kernels  # noqa: PLC0415 - only ever reached with CuPy arrays
        if kernels.bias_activation_forward(activation, out, bias) is not None:
            return out
    out += bias
    if activation == "relu":
        xp.maximum(out, 0, out=out)
    elif activation == "tanh":
        xp.tanh(out, out=out)
    elif activation == "sigmoid":                   # the sigmoid op's own formula: exact for z << 0
        out = stable_sigmoid(xp, out)
    else:
        raise ValueError(f"unknown activation {activation!r}; one of {', '.join(LINEAR_ACTIVATIONS)}")
    return out


@linear_activation.vjp
def _(xp, g, out, x, weight, bias, *, activation, needs):
    # back through the activation (from its output, as the tanh/sigmoid/relu rules), then linear's rule
    if activation == "relu":
        g = g * (out > 0)
    elif activation == "tanh":
        g = g - g * out * out
    else:
        g = g * (out - out * out)
    return linear.vjp_rule(xp, g, None, x, weight, bias, needs=needs)


@linear_activation.batch
def _(batch, x, weight, bias, *, activation):
    if batch[1] is None and batch[2] is None:
        return linear_activation(batching.to_front(x, batch[0]), weight, bias, activation=activation), 0
    return batching.decompose(batch, lambda x, w, b: _linear_composite(x, w, b, activation), x, weight, bias)


# ----------------------------------------------------------------------------- softmax cross-entropy


def _ce_case(n: int, c: int, **params):
    def make(rng):
        target = rng.integers(0, c, size=n)
        if params.get("ignore_index", -100) >= 0:
            target[0] = params["ignore_index"]
        return Sample([uniform(rng, -2, 2, (n, c)), Const(target)], dict(params), f"{params}")
    return make


_CE_DEFAULTS = {"ignore_index": -100, "label_smoothing": 0.0, "reduction": "mean"}


def class_index_message(op: str | None):
    """The error for a class index out of range, as message(value, n_classes, ignore_index)."""
    def message(value: int, n_classes: int, ignore_index: int) -> str:
        return (f"{op + ': ' if op else ''}target {value} is out of bounds for {n_classes} classes (valid "
                f"targets are 0..{n_classes - 1}, or ignore_index={ignore_index})")
    return message


def check_class_indices(op: str | None, target, n_classes: int, ignore_index: int):
    """The mask of targets that count (not ignore_index); an IndexError for one outside [0, n_classes).

    On the CPU it raises here. On a GPU, waiting for the answer would stall every call, so
    the check runs on the device and raises at the next read from it (gpugrad.cuda.checks).
    """
    valid = target != ignore_index
    if target.size == 0:
        return valid
    bad = valid & ((target < 0) | (target >= n_classes))
    if isinstance(target, np.ndarray):
        if bad.any():
            value = int(target.reshape(-1)[bad.reshape(-1).argmax()])
            raise IndexError(class_index_message(op)(value, n_classes, ignore_index))
    else:
        from ..cuda import checks  # noqa: PLC0415 - only ever reached with CuPy arrays
        checks.record(op or "softmax_cross_entropy", target, bad, class_index_message(op), n_classes,
                      ignore_index)
    return valid


def _log_softmax_parts(xp, x):
    """(shifted logits, logsumexp per row with the row's max added back) for a stable softmax."""
    m = xp.max(x, axis=1, keepdims=True)        # the function: Tensor.max(dim) gives (values, indices)
    shifted = x - m
    return shifted, xp.log(xp.exp(shifted).sum(axis=1, keepdims=True)) + m


@defop(save=("x", "target"), fused="softmax_cross_entropy_backward", samples=samples(
    _ce_case(4, 5, **_CE_DEFAULTS), _ce_case(3, 4, **{**_CE_DEFAULTS, "reduction": "sum"}),
    _ce_case(3, 4, **{**_CE_DEFAULTS, "reduction": "none"}),
    _ce_case(5, 3, **{**_CE_DEFAULTS, "ignore_index": 1}),
    _ce_case(4, 6, **{**_CE_DEFAULTS, "label_smoothing": 0.2})))
def softmax_cross_entropy(xp, x, target, *, ignore_index, label_smoothing, reduction):
    """-log softmax(x)[target] per row (mixed with the uniform target when smoothing), reduced."""
    if xp is not np:                                      # CUDA: one fused pass per row
        from ..cuda import checks, kernels  # noqa: PLC0415 - only ever reached with CuPy arrays
        # the kernel records a target out of range; it raises at the next read from the device
        flags = checks.flags("cross_entropy", x, class_index_message("cross_entropy"))
        return kernels.cross_entropy_forward(x, target, reduction=reduction, ignore_index=ignore_index,
                                             label_smoothing=label_smoothing, flags=flags)[0]
    _, lse = _log_softmax_parts(xp, x)
    lse = lse[:, 0]
    valid = check_class_indices(None, target, x.shape[1], ignore_index)
    every = bool(valid.all())
    rows = np.arange(x.shape[0])
    loss = lse - x[rows, target if every else np.where(valid, target, 0)]   # -log p[target]
    if label_smoothing:
        loss = (1 - label_smoothing) * loss + label_smoothing * (lse - x.mean(axis=1))
    if not every:
        loss = np.where(valid, loss, 0)
    if reduction == "none":
        return loss.astype(x.dtype, copy=False)
    total = loss.sum(dtype=x.dtype)
    return total if reduction == "sum" else total / x.dtype.type(valid.sum())


def _classes(xp, n_classes: int, like):
    """0..n_classes-1 on like's device: gpugrad's namespace (create_graph) needs the device named,
    NumPy's and CuPy's make arrays on the current one."""
    return xp.arange(n_classes, device=like.device) if isinstance(like, Tensor) else xp.arange(n_classes)


@softmax_cross_entropy.vjp
def _(xp, g, out, x, target, *, ignore_index, label_smoothing, reduction):
    # d loss_i / d x_ic = softmax(x_i)_c - q_ic, with q the (smoothed) one-hot target; 0 for ignored rows
    shifted, lse = _log_softmax_parts(xp, x)
    p = xp.exp(x - lse)
    n_classes = x.shape[1]
    valid = target != ignore_index
    onehot = (_classes(xp, n_classes, x) == xp.where(valid, target, 0)[:, None]).astype(x.dtype)
    q = onehot * (1 - label_smoothing) + label_smoothing / n_classes if label_smoothing else onehot
    grad = xp.where(valid[:, None], p - q, 0)
    if reduction == "none":
        return (grad * g[:, None], None)
    if reduction == "mean":
        g = g / xp.sum(valid).astype(x.dtype)
    return (grad * g, None)


@softmax_cross_entropy.batch
def _(batch, x, target, *, ignore_index, label_smoothing, reduction):
    # every entry's rows as one (B*N, C) batch, reduced per entry after ("mean": over its counted rows)
    from .convert import astype  # noqa: PLC0415
    from .elementwise import divide, not_equal  # noqa: PLC0415
    from .reduce import _sum  # noqa: PLC0415
    from .shape import _reshape  # noqa: PLC0415

    x = batching.materialize(x, batch[0], batch.size)
    target = batching.materialize(target, batch[1], batch.size)
    b, n, c = x.shape
    rows = softmax_cross_entropy(_reshape(x, shape=(b * n, c)), _reshape(target, shape=(b * n,)),
                                 ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="none")
    losses = _reshape(rows, shape=(b, n))
    if reduction == "none":
        return losses, 0
    total = _sum(losses, axis=(1,), keepdims=False)
    if reduction == "sum":
        return total, 0
    counted = _sum(not_equal(target, ignore_index), axis=(1,), keepdims=False)
    return divide(total, astype(counted, x.dtype)), 0
