"""Per-parameter update rules: plain array code, one function per algorithm.

Each function updates one parameter (and its state buffers) in place, written against
``xp`` (numpy or cupy) only. They are the reference a fused CUDA kernel must equal: a
kernel registered in ``FUSED`` under the same name, with the same signature, replaces
the function for CuPy arrays. The formulas are PyTorch's (torch.optim, single-tensor path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

# name -> fused implementation with the reference's signature, used for CuPy arrays only
FUSED: dict[str, Callable[..., None]] = {}
# name -> a multi-tensor fused update (CuPy arrays only; see pick_multi)
FUSED_MULTI: dict[str, Callable[..., None]] = {}


def sgd_update(xp: Any, param: Any, grad: Any, buf: Any, *, lr: float, momentum: float, dampening: float,
               weight_decay: float, nesterov: bool, maximize: bool, first_step: bool) -> None:
    """One SGD step for one parameter, in place on ``param`` and ``buf`` (None when momentum is 0)."""
    d_p = -grad if maximize else grad
    if weight_decay != 0:
        d_p = d_p + weight_decay * param                 # L2 penalty: g + wd * p
    if momentum != 0:
        if first_step:
            xp.copyto(buf, d_p)                          # b_1 = g
        else:
            xp.multiply(buf, momentum, out=buf)          # b_t = mu * b_{t-1} + (1 - dampening) * g
            xp.add(buf, d_p if dampening == 0 else (1 - dampening) * d_p, out=buf)
        d_p = d_p + momentum * buf if nesterov else buf  # nesterov: g + mu * b_t
    xp.subtract(param, lr * d_p, out=param)              # p -= lr * d_p


def adam_update(xp: Any, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any, *,
                step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                decoupled_weight_decay: bool, amsgrad: bool, maximize: bool) -> None:
    """One Adam/AdamW step (``step`` counts from 1) for one parameter, in place on it and its moments."""
    if maximize:
        grad = -grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            xp.multiply(param, 1 - lr * weight_decay, out=param)   # AdamW: p *= 1 - lr * wd
        else:
            grad = grad + weight_decay * param                     # Adam: L2 penalty g + wd * p
    # m_t = beta1 * m + (1 - beta1) * g, evaluated as torch's lerp(m, g, w = 1 - beta1)
    w = 1 - beta1
    if w < 0.5:
        xp.add(exp_avg, w * (grad - exp_avg), out=exp_avg)
    else:
        xp.subtract(grad, (grad - exp_avg) * (1 - w), out=exp_avg)
    # v_t = beta2 * v + (1 - beta2) * g^2
    xp.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
    xp.add(exp_avg_sq, (1 - beta2) * grad * grad, out=exp_avg_sq)
    # p -= lr / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    if amsgrad:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)  # v_max = max(v_max, v_t)
    v = max_exp_avg_sq if amsgrad else exp_avg_sq
    denom = xp.sqrt(v, out=xp.empty_like(v))                   # out=: an array even when 0-d
    xp.divide(denom, bias_correction2_sqrt, out=denom)
    xp.add(denom, eps, out=denom)
    xp.subtract(param, step_size * exp_avg / denom, out=param)


REFERENCE: dict[str, Callable[..., None]] = {"sgd": sgd_update, "adam": adam_update}


def pick_multi(name: str, xp: Any) -> Callable[..., None] | None:
    """The multi-tensor update for ``xp``'s arrays (a kernel over many parameters at once), or None.

    Only CuPy arrays have one (kernels.OPTIMIZER_MULTI_UPDATES); its signature is
    ``update(tensors, *, step, **hyperparameters)`` (see kernels.adam_step_multi).
    """
    if xp is np:
        return None
    if not FUSED_MULTI:
        from ..cuda import kernels  # noqa: PLC0415 - only ever reached with CuPy arrays
        FUSED_MULTI.update(kernels.OPTIMIZER_MULTI_UPDATES)
    return FUSED_MULTI.get(name)


def pick(name: str, xp: Any) -> Callable[..., None]:
    """The update for ``xp``'s arrays: a registered fused kernel on CuPy, else the reference."""
    if xp is not np:
        if not FUSED:                # first CUDA step: the single-pass kernels of kernels/optimizer.cu
            from ..cuda import kernels  # noqa: PLC0415 - only ever reached with CuPy arrays
            FUSED.update(kernels.OPTIMIZER_UPDATES)
        fused = FUSED.get(name)
        if fused is not None:
            return fused
    return REFERENCE[name]
