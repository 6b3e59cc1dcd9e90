"""Per-parameter update rules: plain array code, one function per algorithm.

Each function updates one parameter (and its state buffers) in place, written against
``xp`` (numpy or cupy) only, with ``out=`` into reusable work arrays (``Scratch``) instead of
temporaries. They are the reference a fused CUDA kernel must equal: a kernel registered in
``FUSED`` under the same name, with the same signature less ``scratch``, replaces the
function for CuPy arrays (``update`` calls whichever applies). The formulas are PyTorch's
(torch.optim, single-tensor path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import backend

# name -> fused implementation with the reference's signature, used for CuPy arrays only
FUSED: dict[str, Callable[..., None]] = {}
# name -> a multi-tensor fused update (CuPy arrays only; see pick_multi)
FUSED_MULTI: dict[str, Callable[..., None]] = {}
# gg.jit, while it traces a step: jit_hook.update(reference, xp, arrays, hyper) runs the reference
# update on traced arrays, jit_hook.multi(kernel) records a multi-tensor update (NotImplemented /
# the kernel itself when this thread is not tracing)
jit_hook: Any = None


class Scratch:
    """Work arrays for the reference updates, kept from step to step so that no step allocates.

    Parameters are updated one after the other, so they can share their work arrays: per
    dtype and device this keeps a few flat buffers as long as the largest parameter seen and
    lends them out as views of a parameter's shape (Adam's two cost twice the largest
    parameter, not twice the model). Reusing them matters beyond the allocation: a fresh large
    array's pages fault in on first touch, every step (``p - lr * g`` on a 4096x4096 float32
    weight takes ~1.5x as long as the same arithmetic into a buffer that already exists).
    """

    def __init__(self) -> None:
        self._flat: dict[tuple, list[Any]] = {}       # (device, dtype) -> flat buffers
        self._views: dict[tuple, tuple] = {}          # (shape, dtype, device) -> views of them

    def take(self, xp: Any, like: Any, n: int) -> tuple:
        """At least ``n`` distinct arrays of ``like``'s shape, dtype and device (contents: garbage)."""
        key = (like.shape, like.dtype, backend.device_of(like))
        views = self._views.get(key)
        if views is None or len(views) < n:
            views = self._grow(xp, like, key, n)
        return views

    def _grow(self, xp: Any, like: Any, key: tuple, n: int) -> tuple:
        shape, dtype, device = key
        size = math.prod(shape)
        flat = self._flat.get((device, dtype), [])
        if len(flat) < n or flat[0].size < size:
            size = max(size, flat[0].size if flat else 1)
            flat = [xp.empty_like(like, shape=(size,)) for _ in range(max(n, len(flat)))]
            self._flat[(device, dtype)] = flat
            # views of the old buffers would keep them alive: drop every view of this dtype and device
            self._views = {k: v for k, v in self._views.items() if k[1:] != (dtype, device)}
        views = self._views[key] = tuple(f[:math.prod(shape)].reshape(shape) for f in flat)
        return views


def _signed_l2(xp: Any, param: Any, grad: Any, out: Any, weight_decay: float, maximize: bool) -> Any:
    """The gradient an update follows, ``(-)grad + wd * param``: ``grad`` itself, or written into ``out``."""
    if weight_decay != 0:                                # L2 penalty; (-g) + x is x - g, bit for bit
        xp.multiply(param, weight_decay, out=out)
        (xp.subtract if maximize else xp.add)(out, grad, out=out)
        return out
    if maximize:
        return xp.negative(grad, out=out)
    return grad


def sgd_update(xp: Any, param: Any, grad: Any, buf: Any, *, lr: float, momentum: float, dampening: float,
               weight_decay: float, nesterov: bool, maximize: bool, first_step: bool,
               scratch: Scratch | None = None) -> None:
    """One SGD step for one parameter, in place on ``param`` and ``buf`` (None when momentum is 0).

    ``grad`` is only read; every intermediate goes into ``scratch``'s arrays (a fresh Scratch
    when None), so the step allocates nothing. Bit for bit the same as writing each formula
    out with temporaries: the same operations in the same order.
    """
    # d_p and mu * b_t are alive together only for Nesterov on a gradient already changed
    work = (scratch or Scratch()).take(xp, param, 2 if nesterov and (maximize or weight_decay != 0) else 1)
    s = work[0]
    d_p = _signed_l2(xp, param, grad, s, weight_decay, maximize)
    if momentum != 0:
        if first_step:
            xp.copyto(buf, d_p)                          # b_1 = g
        else:
            xp.multiply(buf, momentum, out=buf)          # b_t = mu * b_{t-1} + (1 - dampening) * g
            if dampening != 0:                           # (no Nesterov then: d_p is not read again)
                xp.multiply(d_p, 1 - dampening, out=s)
                d_p = s
            xp.add(buf, d_p, out=buf)
        if nesterov:                                     # nesterov: g + mu * b_t
            t = work[1] if d_p is s else s
            xp.multiply(buf, momentum, out=t)
            xp.add(d_p, t, out=t)
            d_p = t
        else:
            d_p = buf
    out = d_p if d_p is s or d_p is work[-1] else s
    xp.multiply(d_p, lr, out=out)                        # p -= lr * d_p
    xp.subtract(param, out, out=param)


def adam_update(xp: Any, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any, *,
                step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                decoupled_weight_decay: bool, amsgrad: bool, maximize: bool,
                scratch: Scratch | None = None) -> None:
    """One Adam/AdamW step (``step`` counts from 1) for one parameter, in place on it and its moments.

    ``grad`` is only read; the intermediates go into two of ``scratch``'s arrays (a fresh
    Scratch when None), bit for bit the same as the formulas written out with temporaries.
    """
    a, b = (scratch or Scratch()).take(xp, param, 2)[:2]
    g = _signed_l2(xp, param, grad, a, 0 if decoupled_weight_decay else weight_decay, maximize)
    if weight_decay != 0 and decoupled_weight_decay:
        xp.multiply(param, 1 - lr * weight_decay, out=param)     # AdamW: p *= 1 - lr * wd
    # m_t = beta1 * m + (1 - beta1) * g, evaluated as torch's lerp(m, g, w = 1 - beta1)
    w = 1 - beta1
    xp.subtract(g, exp_avg, out=b)
    if w < 0.5:
        xp.multiply(b, w, out=b)                                 # m + w * (g - m)
        xp.add(exp_avg, b, out=exp_avg)
    else:
        xp.multiply(b, 1 - w, out=b)                             # g - (g - m) * (1 - w)
        xp.subtract(g, b, out=exp_avg)
    # v_t = beta2 * v + (1 - beta2) * g^2, the square as ((1 - beta2) * g) * g
    xp.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
    xp.multiply(g, 1 - beta2, out=b)
    xp.multiply(b, g, out=b)
    xp.add(exp_avg_sq, b, out=exp_avg_sq)
    # p -= (lr / (1 - beta1^t) * m_t) / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = _sqrt(1 - beta2 ** step)
    if amsgrad:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)  # v_max = max(v_max, v_t)
    denom = b                                                    # g is not read again: a and b are free
    xp.sqrt(max_exp_avg_sq if amsgrad else exp_avg_sq, out=denom)
    xp.divide(denom, bias_correction2_sqrt, out=denom)
    xp.add(denom, eps, out=denom)
    xp.multiply(exp_avg, step_size, out=a)
    xp.divide(a, denom, out=a)
    xp.subtract(param, a, out=param)


def _sqrt(x: Any) -> Any:
    """math.sqrt, or a symbolic square root (gg.jit traces hyperparameters as symbols)."""
    return math.sqrt(x) if isinstance(x, (int, float)) else x.sqrt()


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
    fn = FUSED_MULTI.get(name)
    return fn if jit_hook is None or fn is None else jit_hook.multi(fn)


def update(name: str, xp: Any, scratch: Scratch, *arrays: Any, **hyper: Any) -> None:
    """Run update ``name`` on one parameter: the fused kernel on CuPy, else the reference with ``scratch``."""
    if jit_hook is not None and jit_hook.update(REFERENCE[name], xp, arrays, hyper) is not NotImplemented:
        return
    fn = pick(name, xp)
    if fn is REFERENCE[name]:
        fn(xp, *arrays, scratch=scratch, **hyper)
    else:
        fn(xp, *arrays, **hyper)


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
