"""Checking gradients numerically (``gradcheck``, ``gradgradcheck``) and comparing results (``assert_close``).

For a random cotangent v, the analytic vector-Jacobian product vᵀJ from the tape is compared
with central differences of the scalar <v, fn(x)>: along several random directions (cheap
for any size), then element by element for inputs up to ``full_check_limit`` elements. While
the analytic pass runs, every VJP rule's result is checked against its input: one gradient
per input, of the input's shape and dtype. A failure message shows both Jacobians when they
are small enough to read.

Tolerances. In float64, central differences with ``eps=1e-6`` have a truncation error of
about eps²/6·|f'''| ≈ 1e-13 and a rounding error of about 2⁻⁵²·|f|/eps ≈ 2e-10·|f|, so a
correct gradient agrees to ~1e-9. The defaults (``rtol=1e-5``, ``atol=1e-8``, plus that
rounding floor computed from the values of f) leave three orders of magnitude for
ill-conditioned samples and still reject a gradient scaled by 1.0001; PyTorch's defaults
(rtol 1e-3, atol 1e-5) would let a 1.001 error through.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import backend
from .engine import Node, enable_grad, no_grad, run_backward
from .tensor import Tensor

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-8
DIRECTIONS = 4
FULL_CHECK_LIMIT = 200
_ROUNDING = 100 * np.finfo(np.float64).eps     # the rounding floor: 100 ulps of |f|, over 2 eps


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with finite differences, or a rule's gradient is malformed."""


# ----------------------------------------------------------------------------- rule outputs

@contextlib.contextmanager
def _checked_rules() -> Iterator[None]:
    """Within: each op records its output's shape and dtype, and each VJP rule's results are checked.

    The engine casts a gradient to its input's dtype and leaves shapes to the rules, so a rule
    that returns float32 for a float64 input, or shape (1,) for a 0-d one, would go unseen.
    """
    from .ops.registry import OpDef  # noqa: PLC0415 - ops import this package's engine

    outputs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # node -> (shape, dtype)
    call, run_vjp, run_vjp_graph = OpDef.__call__, OpDef.run_vjp, OpDef.run_vjp_graph

    def recording_call(self: OpDef, *args: Any, **params: Any) -> Tensor:
        result = call(self, *args, **params)
        if result._node is not None:
            outputs[result._node] = (tuple(result.shape), result.dtype)
        return result

    def checking(runner: Callable) -> Callable:
        def run(self: OpDef, g: Any, node: Node) -> tuple:
            grads = runner(self, g, node)
            _check_rule_result(self.name, node, grads, outputs)
            return grads
        return run

    OpDef.__call__, OpDef.run_vjp, OpDef.run_vjp_graph = recording_call, checking(run_vjp), \
        checking(run_vjp_graph)
    try:
        yield
    finally:
        OpDef.__call__, OpDef.run_vjp, OpDef.run_vjp_graph = call, run_vjp, run_vjp_graph


def _check_rule_result(name: str, node: Node, grads: Any, outputs: weakref.WeakKeyDictionary) -> None:
    if not isinstance(grads, (tuple, list)) or len(grads) != len(node):
        raise GradcheckError(f"gradcheck: the VJP rule of {name} returned {type(grads).__name__} "
                             f"{_count(grads)}; expected a tuple of {len(node)} (one gradient per input)")
    for k, (parent, gi) in enumerate(zip(node, grads)):
        if parent is None or gi is None:
            continue
        if type(parent) is Node:
            if parent not in outputs:
                continue                    # made outside the checked call (a custom Function)
            shape, dtype = outputs[parent]
        else:
            shape, dtype = tuple(parent.shape), parent.dtype
        if tuple(gi.shape) != shape or gi.dtype not in (dtype, node.dtype):
            raise GradcheckError(f"gradcheck: the VJP rule of {name} returned a gradient of shape "
                                 f"{tuple(gi.shape)} and dtype {gi.dtype} for input {k}, which has shape "
                                 f"{shape} and dtype {dtype}")


def _count(grads: Any) -> str:
    return f"of {len(grads)}" if isinstance(grads, (tuple, list)) else ""


# ----------------------------------------------------------------------------- differences

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


def _output(fn: Callable, inputs: tuple) -> Tensor:
    with no_grad():
        out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype.kind == "f" and out.dtype != np.float64:
        raise GradcheckError(f"gradcheck: fn returned {out.dtype} for float64 inputs; finite differences "
                             "need float64 throughout (an op that drops to a narrower dtype is a bug)")
    return out


def _scalarised(fn: Callable, inputs: tuple, v: np.ndarray) -> float:
    return float(np.sum(backend.to_numpy(_output(fn, inputs).data).astype(np.float64) * v))


def _numeric_directional(fn, inputs, v, i, direction, eps) -> tuple[float, float]:
    """The central difference of <v, fn> along ``direction``, and its rounding error."""
    x = inputs[i].data
    direction = backend.namespace(x).asarray(direction)       # perturb on the input's device
    saved = x.copy()
    x += eps * direction
    plus = _scalarised(fn, inputs, v)
    x[...] = saved - eps * direction
    minus = _scalarised(fn, inputs, v)
    x[...] = saved
    return (plus - minus) / (2 * eps), _ROUNDING * (abs(plus) + abs(minus)) / (2 * eps)


def _numeric_gradient(fn, inputs, v, i, eps) -> tuple[np.ndarray, np.ndarray]:
    x = inputs[i].data
    out, noise = np.zeros(x.shape), np.zeros(x.shape)
    for j in np.ndindex(x.shape):
        e = np.zeros(x.shape)
        e[j] = 1.0
        out[j], noise[j] = _numeric_directional(fn, inputs, v, i, e, eps)
    return out, noise


def _analytic(fn: Callable, inputs: tuple, positions: list[int], v: np.ndarray) -> list[np.ndarray]:
    with _checked_rules():
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
    out_shape = _output(fn, inputs).shape
    n_out, n_in = math.prod(out_shape), inputs[i].numel()
    if n_out * n_in > 400:
        return f"(Jacobians of {n_out}x{n_in} are too large to show)"
    analytic = np.zeros((n_out, n_in))
    numeric = np.zeros((n_out, n_in))
    for k in range(n_out):
        v = np.zeros(n_out)
        v[k] = 1.0
        v = v.reshape(out_shape)
        analytic[k] = _analytic(fn, inputs, [i], v)[0].ravel()
        numeric[k] = _numeric_gradient(fn, inputs, v, i, eps)[0].ravel()
    with np.printoptions(precision=5, suppress=True):
        return f"analytic Jacobian:\n{analytic}\nnumeric Jacobian:\n{numeric}"


def _mismatch(fn, inputs, v, i, a, rng, *, eps, atol, rtol, directions, full_check_limit) -> str | None:
    """What disagrees between the analytic vᵀJ ``a`` of input i and finite differences, or None."""
    for _ in range(directions):
        direction = rng.standard_normal(inputs[i].shape)
        numeric, noise = _numeric_directional(fn, inputs, v, i, direction, eps)
        terms = a * direction
        analytic = float(np.sum(terms))
        scale = float(np.sqrt(np.sum(terms * terms)))          # robust to cancellation in the sum
        if not abs(analytic - numeric) <= atol + rtol * max(scale, abs(numeric)) + noise:
            return (f"directional derivative: analytic {analytic:.10g}, numeric {numeric:.10g} "
                    f"(difference {abs(analytic - numeric):.3g})")
    if inputs[i].numel() <= full_check_limit:
        numeric, noise = _numeric_gradient(fn, inputs, v, i, eps)
        bad = ~(np.abs(a - numeric) <= atol + rtol * np.abs(numeric) + noise)
        if bad.any():
            flat = int(np.argmax(np.where(bad, np.abs(a - numeric), -1.0)))
            worst = tuple(int(k) for k in np.unravel_index(flat, a.shape))
            return (f"{int(bad.sum())} of {a.size} elements of the vector-Jacobian product differ; the "
                    f"most at {worst}: analytic {a[worst]:.10g}, numeric {numeric[worst]:.10g}")
    return None


def gradcheck(fn: Callable[..., Tensor], *inputs: Any, eps: float = EPS, atol: float = ATOL,
              rtol: float = RTOL, directions: int = DIRECTIONS, full_check_limit: int = FULL_CHECK_LIMIT,
              seed: int = 0, raise_exception: bool = True) -> bool:
    """Check the gradients of ``fn`` at ``inputs`` (float64 tensors) against central differences.

    Returns True, or raises GradcheckError (returns False with raise_exception=False).
    """
    positions = _checked_inputs(inputs)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(_output(fn, inputs).shape)
    try:
        analytic = _analytic(fn, inputs, positions, v)
    except GradcheckError:
        if not raise_exception:
            return False
        raise
    for i, a in zip(positions, analytic):
        problem = _mismatch(fn, inputs, v, i, a, rng, eps=eps, atol=atol, rtol=rtol,
                            directions=directions, full_check_limit=full_check_limit)
        if problem:
            if not raise_exception:
                return False
            raise GradcheckError(f"gradcheck failed for input {i} of shape {inputs[i].shape}: "
                                 f"{problem}\n{_jacobians(fn, inputs, i, eps)}")
    return True


def gradgradcheck(fn: Callable[..., Tensor], *inputs: Any, eps: float = EPS, atol: float = ATOL,
                  rtol: float = RTOL, directions: int = DIRECTIONS, full_check_limit: int = FULL_CHECK_LIMIT,
                  seed: int = 0, raise_exception: bool = True) -> bool:
    """Check second derivatives: gradcheck of (inputs, v) -> vᵀ d fn / d inputs, computed with
    ``create_graph=True``, so the backward pass itself is differentiated by the engine."""
    from . import autograd  # noqa: PLC0415
    from .ops import concatenate, reshape  # noqa: PLC0415

    positions = _checked_inputs(inputs)
    out = _output(fn, inputs)
    rng = np.random.default_rng(seed + 1)
    device = inputs[positions[0]].device
    v = Tensor(rng.standard_normal(out.shape), device=device, requires_grad=True)

    def first_order(*args: Any, create_graph: bool = True) -> Tensor:
        xs, cotangent = args[:-1], args[-1]
        with enable_grad():
            result = fn(*xs)
            grads = autograd.grad(result, [xs[i] for i in positions], grad_outputs=cotangent,
                                  create_graph=create_graph, allow_unused=True)
        flat = [reshape(g, (-1,)) if g is not None else
                Tensor(np.zeros(math.prod(xs[i].shape)), device=device) for g, i in zip(grads, positions)]
        return concatenate(flat)

    # the rules run on Tensors (create_graph) must give the values they give on arrays
    with _checked_rules():
        recorded = backend.to_numpy(first_order(*inputs, v).data)
    plain = backend.to_numpy(first_order(*inputs, v, create_graph=False).data)
    if recorded.shape != plain.shape or not np.allclose(recorded, plain, rtol=1e-10, atol=1e-12):
        if not raise_exception:
            return False
        raise GradcheckError(f"gradgradcheck: the gradient with create_graph=True, {recorded}, differs "
                             f"from the first-order one, {plain}")
    return gradcheck(first_order, *inputs, v, eps=eps, atol=atol, rtol=rtol, directions=directions,
                     full_check_limit=full_check_limit, seed=seed, raise_exception=raise_exception)


# ----------------------------------------------------------------------------- comparing results

# default (rtol, atol) by dtype, as torch.testing.assert_close's; integers and bools compare exactly
_TOLERANCES = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
               "float64": (1e-7, 1e-7), "complex64": (1.3e-6, 1e-5), "complex128": (1e-7, 1e-7)}


def _described(value: Any, side: str) -> tuple[np.ndarray, Any, str]:
    """``value`` as a host array, its dtype (None for Python numbers and lists: they have none) and device."""
    if isinstance(value, Tensor):
        return backend.to_numpy(value.data), value.dtype, str(value.device)
    module = type(value).__module__.split(".")[0]
    if module == "torch":
        raise TypeError(f"assert_close: {side} is a torch.Tensor; convert it explicitly "
                        "(t.detach().numpy(), or gg.from_dlpack(t))")
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value), value.dtype, "cpu"
    if hasattr(value, "__cuda_array_interface__") or module in ("cupy", "gpugrad"):
        return backend.to_numpy(value), value.dtype, str(backend.device_of(value))   # an explicit host read
    if isinstance(value, (bool, int, float, complex, list, tuple)):
        try:
            array = np.asarray(value)
        except ValueError as err:
            raise TypeError(f"assert_close: {side} is a ragged sequence: {err}") from None
        if array.dtype == object:
            raise TypeError(f"assert_close: {side} is a sequence of {type(value[0]).__name__}; compare "
                            "its elements one by one")
        return array, None, "cpu"
    raise TypeError(f"assert_close: {side} is {type(value).__name__}; expected a Tensor, an array or a "
                    "number")


def _tolerances(dtypes: list, rtol: float | None, atol: float | None) -> tuple[float, float]:
    if rtol is not None or atol is not None:
        return rtol or 0.0, atol or 0.0             # NumPy's rule: the one not given is 0
    known = [_TOLERANCES.get(str(d), (0.0, 0.0)) for d in dtypes if d is not None]
    return max(known, default=(1e-7, 1e-7))         # the less precise side sets them


def assert_close(actual: Any, expected: Any, *, rtol: float | None = None, atol: float | None = None,
                 check_dtype: bool = True, check_device: bool = True, equal_nan: bool = False,
                 msg: str = "") -> None:
    """Assert that ``actual`` equals ``expected``: the same shape, dtype and device, then close values.

    Either side may be a Tensor, a NumPy array or scalar, a CuPy (or emulated) array, a Python
    number or a list of numbers (these have no dtype to check). Shapes are never broadcast:
    ``()`` and ``(1,)`` differ. Values are close when ``|actual - expected| <= atol + rtol *
    |expected|``; the defaults depend on the dtype, as torch.testing.assert_close's (integers and
    bools exactly equal); giving one tolerance makes the other 0, as in NumPy. Raises
    AssertionError saying what differs: shape, dtype or device first, then the values, with the
    greatest absolute and relative differences and where they are.
    """
    a, a_dtype, a_device = _described(actual, "actual")
    e, e_dtype, e_device = _described(expected, "expected")
    prefix = f"{msg}: " if msg else ""
    if a.shape != e.shape:
        raise AssertionError(f"{prefix}shapes differ: actual {a.shape}, expected {e.shape}")
    if check_dtype and a_dtype is not None and e_dtype is not None and a_dtype != e_dtype:
        raise AssertionError(f"{prefix}dtypes differ: actual {a_dtype}, expected {e_dtype} ({a.shape})")
    if check_device and a_device != e_device:
        raise AssertionError(f"{prefix}devices differ: actual on {a_device}, expected on {e_device}; move "
                             "one explicitly, or pass check_device=False")
    rtol, atol = _tolerances([a_dtype, e_dtype], rtol, atol)
    exact = a.dtype.kind in "biu" and e.dtype.kind in "biu"      # integers beyond 2**53 stay exact
    with np.errstate(all="ignore"):
        wide = np.complex128 if "c" in (a.dtype.kind, e.dtype.kind) else np.float64
        a64, e64 = a.astype(wide), e.astype(wide)
        diff = np.abs(a64 - e64)
        close = np.equal(a, e) if exact else (a64 == e64) | (diff <= atol + rtol * np.abs(e64))
        if equal_nan:
            close |= np.isnan(a64) & np.isnan(e64)
    if close.all():
        return
    bad = ~close
    with np.errstate(all="ignore"):
        absolute = np.where(bad, np.nan_to_num(diff, nan=np.inf), -1.0)
        relative = np.where(bad, np.nan_to_num(diff / np.abs(e64), nan=np.inf), -1.0)
    lines = [f"{prefix}{int(bad.sum())} of {a.size} elements differ (rtol={rtol:g}, atol={atol:g}, "
             f"shape {a.shape})"]
    for what, values in (("absolute", absolute), ("relative", relative)):
        at = np.unravel_index(int(np.argmax(values)), a.shape)
        where = f" at {tuple(int(k) for k in at)}" if a.ndim else ""
        lines.append(f"greatest {what} difference: {values[at]:.6g}{where} "
                     f"(actual {a[at].item()!r}, expected {e[at].item()!r})")
    raise AssertionError("\n".join(lines))
