"""The hand-written NumPy floor: each workload's arithmetic with no tape, the backward derived by hand.

What an autodiff library on NumPy cannot beat without changing the arithmetic: the same
forward, the gradient written out, and the optimizer update, in plain NumPy with ``out=``
where it saves a temporary. The gap between gpugrad and this column is gpugrad's own cost
(dispatch, recording, the backward walk, temporaries).

* Chains (B1, B4): the forward keeps each ``tanh`` output ``t``; the backward is
  ``g = g - g * t * t`` (tanh, with no Python scalar: NumPy takes longer for ``1 - a``) then
  ``g = g * m`` (the multiply; the add passes ``g`` through), from ``g = ones`` (the sum).
* Optimizer steps (U1, U2): SGD with momentum and Adam (torch.optim's defaults otherwise),
  in place on the parameter and its state through two preallocated buffers.
* MLPs (B2, B3): ``z = h @ W.T + b`` and ReLU in place; cross-entropy (mean) through a
  row-wise log-sum-exp; ``dz = (softmax - onehot) / N``; per layer ``dW = dz.T @ h``,
  ``db = dz.sum(0)``, ``dh = (dz @ W) * (h > 0)`` (none for the input batch); then
  ``p -= lr * g`` through a preallocated buffer, after the whole backward.

The builders take the shared inputs of benchmarks/workloads.py and return the same kind of
step callable as the libraries' (returns the loss; ``grads()`` and ``params()`` as NumPy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def chain_step(x0: np.ndarray, a0: np.ndarray, m0: np.ndarray, n_ops: int) -> Callable[[], Any]:
    """One chain of ``n_ops`` ops forward (``tanh((y + a) * m)``, ``n_ops // 3`` times) and its gradient."""
    x, a, m = x0.copy(), a0.copy(), m0.copy()
    tanh, cycles = np.tanh, n_ops // 3
    out: dict[str, Any] = {}

    def step() -> Any:
        y = x
        kept = []
        for _ in range(cycles):
            y = y + a
            y = y * m
            y = tanh(y)
            kept.append(y)
        loss = y.sum()
        g = np.ones_like(x)
        for t in reversed(kept):
            g = g - g * t * t                     # d tanh = 1 - t^2
            g = g * m
        out["grad"] = g
        return loss

    step.grads = lambda: [out["grad"]]             # type: ignore[attr-defined]
    step.params = lambda: [x]                      # type: ignore[attr-defined]
    return step


def mlp_step(params: list[np.ndarray], batches: list, sizes: tuple[int, ...], lr: float) -> Callable[[], Any]:
    """One training step of the ReLU MLP (forward, cross-entropy, backward, SGD) in plain NumPy."""
    weights = [p.copy() for p in params]
    grads = [np.empty_like(p) for p in params]
    scaled = [np.empty_like(p) for p in params]     # lr * g, so the gradients stay readable
    data = [(x.copy(), y.copy()) for x, y in batches]
    n_layers = len(weights) // 2
    state = {"i": 0}

    def step() -> Any:
        i = state["i"]
        state["i"] = (i + 1) % len(data)
        x, labels = data[i]
        n = x.shape[0]
        rows = np.arange(n)
        inputs = []                                 # each layer's input, for its backward
        h = x
        for k in range(n_layers):
            inputs.append(h)
            h = h @ weights[2 * k].T
            h += weights[2 * k + 1]
            if k < n_layers - 1:
                np.maximum(h, 0, out=h)
        zmax = h.max(axis=1, keepdims=True)
        e = np.subtract(h, zmax)
        np.exp(e, out=e)
        s = e.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(s[:, 0]) + zmax[:, 0] - h[rows, labels])
        e /= s                                      # softmax
        e[rows, labels] -= 1                        # d loss / d logits = (softmax - onehot) / n
        e /= n
        dz = e
        for k in reversed(range(n_layers)):
            np.matmul(dz.T, inputs[k], out=grads[2 * k])
            np.sum(dz, axis=0, out=grads[2 * k + 1])
            if k > 0:
                dh = dz @ weights[2 * k]
                np.multiply(dh, inputs[k] > 0, out=dh)     # ReLU: the layer's input is a ReLU output
                dz = dh
        for w, g, buf in zip(weights, grads, scaled):
            np.multiply(g, lr, out=buf)
            np.subtract(w, buf, out=w)
        return loss

    step.grads = lambda: grads                     # type: ignore[attr-defined]
    step.params = lambda: weights                  # type: ignore[attr-defined]
    return step


def sgd_momentum_step(p0: np.ndarray, g0: np.ndarray, *, lr: float, momentum: float) -> Callable[[], Any]:
    """SGD with momentum: ``b = mu * b + g`` (``b = g`` the first time), ``p -= lr * b``."""
    p, g = p0.copy(), g0.copy()
    buf, scaled = np.empty_like(p), np.empty_like(p)
    state = {"first": True}

    def step() -> Any:
        if state["first"]:
            np.copyto(buf, g)
            state["first"] = False
        else:
            np.multiply(buf, momentum, out=buf)
            np.add(buf, g, out=buf)
        np.multiply(buf, lr, out=scaled)
        np.subtract(p, scaled, out=p)
        return p[0, 0]

    step.grads = lambda: [g]                       # type: ignore[attr-defined]
    step.params = lambda: [p]                      # type: ignore[attr-defined]
    return step


def adam_step(p0: np.ndarray, g0: np.ndarray, *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8) -> Callable[[], Any]:
    """Adam: ``m += (1 - b1)(g - m)``, ``v = b2 v + (1 - b2) g^2``, ``p -= lr_t m / (sqrt(v) / c + eps)``."""
    p, g = p0.copy(), g0.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    a, b = np.empty_like(p), np.empty_like(p)
    beta1, beta2 = betas
    state = {"t": 0}

    def step() -> Any:
        state["t"] = t = state["t"] + 1
        np.subtract(g, m, out=a)
        np.multiply(a, 1 - beta1, out=a)
        np.add(m, a, out=m)
        np.multiply(v, beta2, out=v)
        np.multiply(g, g, out=a)
        np.multiply(a, 1 - beta2, out=a)
        np.add(v, a, out=v)
        np.sqrt(v, out=b)
        np.divide(b, (1 - beta2 ** t) ** 0.5, out=b)
        np.add(b, eps, out=b)
        np.multiply(m, lr / (1 - beta1 ** t), out=a)
        np.divide(a, b, out=a)
        np.subtract(p, a, out=p)
        return p[0, 0]

    step.grads = lambda: [g]                       # type: ignore[attr-defined]
    step.params = lambda: [p]                      # type: ignore[attr-defined]
    return step
