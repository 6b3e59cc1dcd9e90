"""The plain (unfused) rule behind each fused kernel, written once against ``xp`` (numpy or cupy).

Each function computes what one kernel of gpugrad.cuda.kernels computes, the way gpugrad does
without the kernel: the ops' own VJP rules where an op exists (relu, sigmoid, tanh,
multiply, divide), the optimizers' reference updates (gpugrad.optim.functional), and
array-op compositions for the rest. Three users:

- tests/test_cuda.py: every fused kernel equals these on a GPU (xp = cupy);
- benchmarks/gpu/bench_kernels.py: these, with xp = cupy, are the "composed CuPy ops"
  each kernel is timed against;
- tests/test_gpu_scripts.py: these equal gpugrad's CPU rules and float64 references
  (xp = numpy), so the two above compare against something right.
"""

from __future__ import annotations

import math
from typing import Any

from gpugrad import backend
from gpugrad.ops.registry import REGISTRY
from gpugrad.ops.special import erf_array
from gpugrad.optim import functional

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu_tanh", "gelu_erf")
SAVES_OUTPUT = frozenset({"relu", "sigmoid", "tanh"})   # the others' kernels read the input x
BIAS_FORWARD_ACTIVATIONS = ("relu", "sigmoid", "tanh")  # bias_ACT_forward (linear_activation's forward)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(xp: Any, x: Any) -> Any:
    """erf elementwise: CuPy's one-kernel erf on a GPU, gpugrad's own (float64 inside) elsewhere."""
    if xp.__name__ == "cupy" and not backend.emulated:
        import cupyx.scipy.special  # noqa: PLC0415 - GPU only

        return cupyx.scipy.special.erf(x)
    return erf_array(xp, x)


# ----------------------------------------------------------------------------- activations


def activation_forward(xp: Any, act: str, x: Any, alpha: float = 0.01) -> Any:
    """act(x): what an output-saving kernel reads as ``saved``."""
    if act == "relu":
        return xp.maximum(x, 0)
    if act == "sigmoid":
        return 0.5 * xp.tanh(0.5 * x) + 0.5
    if act == "tanh":
        return xp.tanh(x)
    if act == "leaky_relu":
        return xp.where(x > 0, x, alpha * x)
    if act == "gelu_tanh":
        return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
    if act == "gelu_erf":
        return 0.5 * x * (1 + erf(xp, x * _INV_SQRT_2))
    raise ValueError(f"unknown activation {act!r}; one of {', '.join(ACTIVATIONS)}")


def bias_activation_forward(xp: Any, act: str, z: Any, bias: Any) -> Any:
    """act(z + bias), bias over the last dim: bias_ACT_forward (linear_activation's `z += b; act(z)`)."""
    return activation_forward(xp, act, z + bias)


def activation_backward(xp: Any, act: str, g: Any, saved: Any, alpha: float = 0.0) -> Any:
    """dx of ``act`` from g and the saved output (relu, sigmoid, tanh) or input (the others)."""
    if act in SAVES_OUTPUT:
        return REGISTRY[act].vjp_rule(xp, g, saved, None)[0]          # the op's own rule
    x = saved
    if act == "leaky_relu":
        return xp.where(x > 0, g, alpha * g)
    if act == "gelu_tanh":                                             # d/dx 0.5 x (1 + tanh(u))
        t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
        du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
    if act == "gelu_erf":                                              # d/dx x Phi(x) = Phi + x phi
        cdf = 0.5 * (1 + erf(xp, x * _INV_SQRT_2))
        pdf = xp.exp(-0.5 * x * x) * _INV_SQRT_2PI
        return g * (cdf + x * pdf)
    raise ValueError(f"unknown activation {act!r}; one of {', '.join(ACTIVATIONS)}")


def bias_activation_backward(xp: Any, act: str, g: Any, saved: Any, bias: Any,
                             alpha: float = 0.0) -> tuple[Any, Any]:
    """(dx, db) of out = act(x + b): saved is the output, or x before the bias; db sums the rows."""
    z = saved if act in SAVES_OUTPUT else saved + bias
    dx = activation_backward(xp, act, g, z, alpha)
    return dx, dx.sum(axis=tuple(range(dx.ndim - 1)))


# ----------------------------------------------------------------------------- binary


def multiply_backward(xp: Any, g: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """(g * y, g * x): multiply's own rule."""
    return REGISTRY["multiply"].vjp_rule(xp, g, None, x, y, needs=(True, True))


def divide_backward(xp: Any, g: Any, y: Any, out: Any) -> tuple[Any, Any]:
    """(g / y, -(g / y) * out): divide's own rule."""
    return REGISTRY["divide"].vjp_rule(xp, g, out, None, y, needs=(True, True))


# ----------------------------------------------------------------------------- cross-entropy


def _rows(xp: Any, x: Any, t: Any, ignore_index: int) -> tuple[Any, Any, Any]:
    valid = t != ignore_index
    return valid, xp.where(valid, t, 0), xp.arange(x.shape[0])


def cross_entropy_forward(xp: Any, x: Any, t: Any, *, reduction: str = "mean", ignore_index: int = -100,
                          label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """(loss, lse) as kernels.cross_entropy_forward: log-softmax, then the label-smoothed NLL."""
    m = x.max(axis=1, keepdims=True)
    lse = (m + xp.log(xp.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    logp = x - lse[:, None]
    valid, safe, rows = _rows(xp, x, t, ignore_index)
    per_row = -logp[rows, safe]
    if label_smoothing:
        per_row = (1 - label_smoothing) * per_row - label_smoothing * logp.mean(axis=1)
    per_row = xp.where(valid, per_row, 0)
    if reduction == "none":
        loss = per_row
    elif reduction == "sum":
        loss = per_row.sum()
    else:
        loss = per_row.sum() / valid.sum()
    return xp.asarray(loss).astype(x.dtype, copy=False), lse


def cross_entropy_backward(xp: Any, g: Any, x: Any, t: Any, lse: Any, *, reduction: str = "mean",
                           ignore_index: int = -100, label_smoothing: float = 0.0) -> Any:
    """dlogits = g * (softmax(x) - q) on counted rows, 0 on ignored ones (q: the smoothed one-hot)."""
    valid, safe, rows = _rows(xp, x, t, ignore_index)
    d = xp.exp(x - lse[:, None].astype(x.dtype, copy=False))
    cols = x.shape[1]
    if label_smoothing:
        d -= label_smoothing / cols
    d[rows, safe] -= 1 - label_smoothing
    if reduction == "none":
        scale = g
    elif reduction == "sum":
        scale = xp.broadcast_to(g, (x.shape[0],))
    else:
        scale = xp.broadcast_to(g / valid.sum(), (x.shape[0],))
    d *= xp.where(valid, scale, 0).astype(x.dtype, copy=False)[:, None]
    return d


# ----------------------------------------------------------------------------- optimizers


def sgd_step(xp: Any, param: Any, grad: Any, buf: Any | None, *, lr: float, momentum: float = 0.0,
             dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
             maximize: bool = False, first_step: bool = False) -> None:
    """kernels.sgd_step's plain twin: gpugrad.optim.functional.sgd_update, in place."""
    functional.sgd_update(xp, param, grad, buf, lr=lr, momentum=momentum, dampening=dampening,
                          weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                          first_step=first_step)


def adam_step(xp: Any, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any,
              max_exp_avg_sq: Any | None = None, *, step: int, lr: float, beta1: float = 0.9,
              beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
              maximize: bool = False, decoupled: bool = False) -> None:
    """kernels.adam_step's plain twin: gpugrad.optim.functional.adam_update, in place."""
    functional.adam_update(xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr,
                           beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                           decoupled_weight_decay=decoupled, amsgrad=amsgrad, maximize=maximize)
