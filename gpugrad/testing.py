"""Checking gradients numerically: ``gradcheck(fn, *inputs)``.

For a random cotangent v, the analytic vector-Jacobian product vᵀJ from the tape
is compared with central differences of the scalar <v, fn(x)>: first along a
random direction (cheap for any size), then element by element for inputs up to
``full_check_limit`` elements. A failure message shows both Jacobians when they
are small enough to read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import backend
from .engine import enable_grad, no_grad, run_backward
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with finite differences."""


def _checked_inputs(inputs: tuple) -> list[int]:
    positions = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not positions:
        raise ValueError("gradcheck: no input requires grad; pass tensors made with requires_grad=True")
    for i in positions:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need "
                            "float64 inputs (use .to(gg.float64))")
        if not inputs[i].is_leaf:
            raise ValueError(f"gradcheck: input {i} is not a leaf; pass x.detach().requires_grad_()")
    return positions


def _scalarised(fn: Callable, inputs: tuple, v: np.ndarray) -> float:
    with no_grad():
        out = fn(*inputs)
    return float(np.sum(backend.to_numpy(out.data).astype(np.float64) * v))


def _numeric_directional(fn, inputs, v, i, direction, eps) -> float:
    x = inputs[i].data
    direction = backend.namespace(x).asarray(direction)       # perturb on the input's device
    saved = x.copy()
    x += eps * direction
    plus = _scalarised(fn, inputs, v)
    x[...] = saved - eps * direction
    minus = _scalarised(fn, inputs, v)
    x[...] = saved
    return (plus - minus) / (2 * eps)


def _numeric_gradient(fn, inputs, v, i, eps) -> np.ndarray:
    x = inputs[i].data
    out = np.zeros(x.shape)
    for j in np.ndindex(x.shape):
        e = np.zeros(x.shape)
        e[j] = 1.0
        out[j] = _numeric_directional(fn, inputs, v, i, e, eps)
    return out


def _analytic(fn: Callable, inputs: tuple, positions: list[int], v: np.ndarray) -> list[np.ndarray]:
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if not out.requires_grad:
        return [np.zeros(inputs[i].shape) for i in positions]
    xp = backend.namespace(out.data)
    seed = xp.asarray(v, dtype=out.dtype)
    grads = run_backward([out], [seed], capture=[inputs[i] for i in positions])
    result = []
    for i, g in zip(positions, grads):
        if g is None:
            result.append(np.zeros(inputs[i].shape))
            continue
        if tuple(g.shape) != inputs[i].shape or g.dtype != inputs[i].dtype:
            raise GradcheckError(f"gradcheck: gradient for input {i} has shape {tuple(g.shape)} and "
                                 f"dtype {g.dtype}; expected {inputs[i].shape} {inputs[i].dtype}")
        result.append(backend.to_numpy(g))
    return result


def _jacobians(fn: Callable, inputs: tuple, i: int, eps: float) -> str:
    out_shape = fn(*inputs).shape
    n_out, n_in = int(np.prod(out_shape)), inputs[i].numel()
    if n_out * n_in > 400:
        return f"(Jacobians of {n_out}x{n_in} are too large to show)"
    analytic = np.zeros((n_out, n_in))
    numeric = np.zeros((n_out, n_in))
    for k in range(n_out):
        v = np.zeros(n_out)
        v[k] = 1.0
        v = v.reshape(out_shape)
        analytic[k] = _analytic(fn, inputs, [i], v)[0].ravel()
        numeric[k] = _numeric_gradient(fn, inputs, v, i, eps).ravel()
    with np.printoptions(precision=5, suppress=True):
        return f"analytic Jacobian:\n{analytic}\nnumeric Jacobian:\n{numeric}"


def gradcheck(fn: Callable[..., Tensor], *inputs: Any, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, full_check_limit: int = 200, seed: int = 0,
              raise_exception: bool = True) -> bool:
    """Check the gradients of ``fn`` at ``inputs`` (float64 tensors) against central differences.

    Returns True, or raises GradcheckError (returns False with raise_exception=False).
    """
    positions = _checked_inputs(inputs)
    rng = np.random.default_rng(seed)
    with no_grad():
        out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    v = rng.standard_normal(out.shape)
    analytic = _analytic(fn, inputs, positions, v)
    for i, a in zip(positions, analytic):
        problem = None
        direction = rng.standard_normal(inputs[i].shape)
        numeric_dir = _numeric_directional(fn, inputs, v, i, direction, eps)
        analytic_dir = float(np.sum(a * direction))
        if not np.isclose(analytic_dir, numeric_dir, atol=atol, rtol=rtol):
            problem = f"directional derivative: analytic {analytic_dir:.8g}, numeric {numeric_dir:.8g}"
        elif inputs[i].numel() <= full_check_limit:
            numeric = _numeric_gradient(fn, inputs, v, i, eps)
            if not np.allclose(a, numeric, atol=atol, rtol=rtol):
                worst = np.unravel_index(np.argmax(np.abs(a - numeric)), a.shape)
                problem = (f"vector-Jacobian product differs most at {worst}: analytic {a[worst]:.8g}, "
                           f"numeric {numeric[worst]:.8g}")
        if problem:
            if not raise_exception:
                return False
            raise GradcheckError(f"gradcheck failed for input {i} of shape {inputs[i].shape}: "
                                 f"{problem}\n{_jacobians(fn, inputs, i, eps)}")
    return True


def gradgradcheck(fn: Callable[..., Tensor], *inputs: Any, eps: float = 1e-6, atol: float = 1e-5,
                  rtol: float = 1e-3, seed: int = 0, raise_exception: bool = True) -> bool:
    """Check second derivatives: gradcheck of (inputs, v) -> vᵀ d fn / d inputs, computed with
    ``create_graph=True``, so the backward pass itself is differentiated by the engine."""
    from . import autograd  # noqa: PLC0415
    from .ops import concatenate, reshape  # noqa: PLC0415

    positions = _checked_inputs(inputs)
    with no_grad():
        out = fn(*inputs)
    rng = np.random.default_rng(seed + 1)
    device = inputs[positions[0]].device
    v = Tensor(rng.standard_normal(out.shape), device=device, requires_grad=True)

    def first_order(*args: Any) -> Tensor:
        xs, cotangent = args[:-1], args[-1]
        with enable_grad():
            result = fn(*xs)
            grads = autograd.grad(result, [xs[i] for i in positions], grad_outputs=cotangent,
                                  create_graph=True, allow_unused=True)
        flat = [reshape(g, (-1,)) if g is not None else
                Tensor(np.zeros(int(np.prod(xs[i].shape))), device=device) for g, i in zip(grads, positions)]
        return concatenate(flat)

    return gradcheck(first_order, *inputs, v, eps=eps, atol=atol, rtol=rtol, seed=seed,
                     raise_exception=raise_exception)
