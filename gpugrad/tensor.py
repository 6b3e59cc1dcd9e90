"""Tensor: an array (NumPy or CuPy) plus what autodiff needs, with NumPy/PyTorch-style methods.

Every method and operator here is a thin call into the op functions (gpugrad.ops);
no arithmetic happens in this file.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import numpy as np

from . import backend, versions
from .dtypes import is_floating
from .engine import Node, grad_mode, run_backward


class Tensor:
    """An n-dimensional array that can record the ops applied to it for reverse-mode autodiff."""

    __slots__ = ("data", "_requires_grad", "_grad", "_node", "_hooks", "__weakref__")
    __array_ufunc__ = None      # numpy defers to our reflected operators: np.float32(2) * t is a Tensor

    def __init__(self, data: Any, dtype: Any = None, device: Any = None,
                 requires_grad: bool = False) -> None:
        from .creation import as_array  # noqa: PLC0415
        self.data = as_array(data, dtype, device)
        self._requires_grad = False
        self._grad: Tensor | None = None
        self._node: Node | None = None
        self._hooks: list | None = None
        if requires_grad:
            self.requires_grad_()

    @classmethod
    def _wrap(cls, data: Any, node: Node | None = None) -> Tensor:
        """Make a tensor around an array without any conversion (the engine's fast path)."""
        t = object.__new__(Tensor)
        t.data = data
        t._requires_grad = node is not None
        t._grad = None
        t._node = node
        t._hooks = None
        return t

    # ------------------------------------------------------------------ autodiff state
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        self.requires_grad_(flag)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Mark this leaf tensor as needing gradients (in place); returns self."""
        if self._node is not None:
            if not requires_grad:
                raise RuntimeError(
                    "requires_grad_: cannot turn off requires_grad on a non-leaf tensor (it was computed "
                    f"by {self._node.op.name}); use .detach() to get a tensor outside the graph")
            return self
        if requires_grad and not is_floating(self.data.dtype):
            raise TypeError(
                f"requires_grad_: only floating-point tensors can require gradients, this one is "
                f"{self.data.dtype}; convert it first, e.g. t.to(gg.float32).requires_grad_()")
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient (leaves, and non-leaves after ``retain_grad()``)."""
        if self._grad is None and self._node is not None and not self._retains_grad():
            warnings.warn(
                "reading .grad of a non-leaf tensor: it stays None because backward fills .grad only "
                "for leaves. Call .retain_grad() on it before backward if you need it, or read "
                "the leaf's .grad instead", UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"grad: expected a Tensor or None, got {type(value).__name__}")
            if value.shape != self.shape or value.dtype != self.dtype or value.device != self.device:
                raise ValueError(
                    f"grad: assigned a gradient of shape {value.shape}, {value.dtype} on {value.device} "
                    f"to a tensor of shape {self.shape}, {self.dtype} on {self.device}; they must match")
        self._grad = value

    def _retains_grad(self) -> bool:
        hooks = self._node.hooks if self._node is not None else None
        return bool(hooks) and any(getattr(h, "retains_grad", False) for h in hooks)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> Node | None:
        return self._node

    def backward(self, gradient: Any = None, retain_graph: bool | None = None,
                 create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (weighted by ``gradient``).

        With ``create_graph`` the accumulated gradients are themselves recorded, so
        they can be differentiated again; the graph is then retained by default.
        """
        if not self._requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no grad_fn, so there is nothing "
                "to differentiate. Call .requires_grad_() on the inputs before computing it, and "
                "do not compute it under gg.no_grad()")
        if create_graph:
            from .autograd import backward  # noqa: PLC0415
            backward([self], None if gradient is None else [gradient], retain_graph, True)
            return
        run_backward([self], [_root_gradient("backward", self, gradient)],
                     retain_graph=bool(retain_graph))

    def register_hook(self, hook: Any) -> RemovableHandle:
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a replacement."""
        if not self._requires_grad:
            raise RuntimeError("register_hook: this tensor does not require grad, so no gradient "
                               "will ever reach it")
        if self._node is None:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        else:
            if self._node.hooks is None:
                self._node.hooks = []
            hooks = self._node.hooks
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` after backward (leaves always do)."""
        if self._node is None or self._retains_grad():
            return
        me = weakref.ref(self)

        def keep(g: Tensor) -> None:
            t = me()
            if t is not None:
                t._grad = g.detach() if t._grad is None else t._grad + g.detach()

        keep.retains_grad = True  # type: ignore[attr-defined]   (the engine runs it last)
        if self._node.hooks is None:
            self._node.hooks = []
        self._node.hooks.append(keep)

    def detach(self) -> Tensor:
        """The same data as a new leaf that does not require grad: a constant for backward."""
        return Tensor._wrap(self.data)

    def detach_(self) -> Tensor:
        self._node = None
        self._requires_grad = False
        return self

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def device(self) -> backend.Device:
        return backend.device_of(self.data)

    @property
    def T(self) -> Tensor:
        return _ops.transpose(self)

    @property
    def mT(self) -> Tensor:
        return _ops.swapaxes(self, -1, -2)

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    # ------------------------------------------------------------------ conversion
    def item(self) -> float | int | bool:
        if self.data.size != 1:
            raise ValueError(f"item: only one-element tensors can be converted to a Python scalar, "
                             f"this one has shape {self.shape}")
        return backend.host_scalar(self.data)

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (shares memory on the CPU; copies from a GPU)."""
        if self._requires_grad:
            raise RuntimeError("numpy: can't call numpy() on a tensor that requires grad; "
                               "use t.detach().numpy()")
        return backend.to_numpy(self.data)

    def tolist(self) -> Any:
        return backend.to_numpy(self.data).tolist()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = backend.to_numpy(self.data)
        if dtype is not None:
            arr = arr.astype(dtype)
        return arr.copy() if copy else arr

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.data.size} elements (shape "
                             f"{self.shape}) is ambiguous; use .any() or .all()")
        return bool(backend.host_scalar(self.data))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.data.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError(f"only one-element integer tensors can be used as an index, got "
                            f"{self.data.dtype} {self.shape}")
        return int(self.item())

    def to(self, *args: Any, dtype: Any = None, device: Any = None) -> Tensor:
        """``t.to(gg.float64)``, ``t.to("cuda")`` or ``t.to("cuda", gg.float16)``; differentiable."""
        for a in args:
            is_device = isinstance(a, str) and a.partition(":")[0] in ("cpu", "cuda")
            if is_device or isinstance(a, backend.Device):
                device = a
            else:
                dtype = a
        out = self
        if dtype is not None:
            out = out.astype(dtype)
        if device is not None:
            out = _ops.to_device(out, backend.as_device(device))
        return out

    def astype(self, dtype: Any) -> Tensor:
        return _ops.astype(self, dtype)

    def type(self, dtype: Any) -> Tensor:
        return _ops.astype(self, dtype)

    def float(self) -> Tensor:
        return _ops.astype(self, "float32")

    def double(self) -> Tensor:
        return _ops.astype(self, "float64")

    def half(self) -> Tensor:
        return _ops.astype(self, "float16")

    def long(self) -> Tensor:
        return _ops.astype(self, "int64")

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> Tensor:
        return self.to(f"cuda:{device}" if isinstance(device, int) else (device or "cuda"))

    def clone(self) -> Tensor:
        return _ops.clone(self)

    # ------------------------------------------------------------------ in-place (off the tape)
    def _check_inplace(self, name: str) -> None:
        if self._requires_grad and grad_mode.enabled:
            raise RuntimeError(
                f"{name}: in-place change of a tensor that requires grad would make its gradients "
                "wrong; wrap it in `with gg.no_grad():`, or compute a new tensor instead")

    def _inplace(self, name: str, fn: Any) -> Tensor:
        """Run ``fn(data)`` that changes the data in place, and record the change."""
        self._check_inplace(name)
        try:
            fn(self.data)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{name}: {err} (tensor {self.shape} {self.dtype})") from None
        versions.bump(self.data, name)
        return self

    def zero_(self) -> Tensor:
        return self._inplace("zero_", lambda d: d.fill(0))

    def fill_(self, value: float) -> Tensor:
        return self._inplace("fill_", lambda d: d.fill(value))

    def copy_(self, src: Any) -> Tensor:
        src = src.data if isinstance(src, Tensor) else src
        return self._inplace("copy_", lambda d: d.__setitem__(Ellipsis, src))

    def add_(self, other: Any, alpha: float = 1.0) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return self._inplace("add_", lambda d: d.__iadd__(other if alpha == 1 else alpha * other))

    def sub_(self, other: Any, alpha: float = 1.0) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return self._inplace("sub_", lambda d: d.__isub__(other if alpha == 1 else alpha * other))

    def mul_(self, other: Any) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return self._inplace("mul_", lambda d: d.__imul__(other))

    def div_(self, other: Any) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return self._inplace("div_", lambda d: d.__itruediv__(other))

    def clamp_(self, min: float | None = None, max: float | None = None) -> Tensor:
        return self._inplace("clamp_", lambda d: backend.namespace(d).clip(d, min, max, out=d))

    def _augmented(self, other: Any, in_place: str, op: Any) -> Tensor:
        """``t += other`` and friends: in place off the tape; recorded (out of place) on it."""
        if self._requires_grad and grad_mode.enabled:
            return op(self, other)          # Python rebinds the name to the recorded result
        return getattr(self, in_place)(other)

    def __iadd__(self, other: Any) -> Tensor: return self._augmented(other, "add_", _ops.add)
    def __isub__(self, other: Any) -> Tensor: return self._augmented(other, "sub_", _ops.subtract)
    def __imul__(self, other: Any) -> Tensor: return self._augmented(other, "mul_", _ops.multiply)
    def __itruediv__(self, other: Any) -> Tensor: return self._augmented(other, "div_", _ops.divide)

    def __setitem__(self, index: Any, value: Any) -> None:
        if self._node is not None and grad_mode.enabled:
            raise RuntimeError("__setitem__: assigning into a tensor computed by a recorded op is not "
                               "supported; build the result with gg.where or gg.concatenate")
        value = value.data if isinstance(value, Tensor) else value
        index = _ops.plain_index(index)
        self._inplace("__setitem__", lambda d: d.__setitem__(index, value))

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        arr = backend.to_numpy(self.data)
        body = np.array2string(arr, separator=", ", prefix="tensor(")
        extras = []
        if arr.dtype not in (np.float32, np.int64, np.bool_) or arr.size == 0:
            extras.append(f"dtype={arr.dtype}")
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self._node is not None:
            extras.append(f"grad_fn=<{self._node.name}>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body, *extras]) + ")"

    __hash__ = object.__hash__   # tensors hash by identity (== is elementwise)

    # ------------------------------------------------------------------ operators
    def __add__(self, other: Any) -> Tensor: return _ops.add(self, other)
    def __radd__(self, other: Any) -> Tensor: return _ops.add(other, self)
    def __sub__(self, other: Any) -> Tensor: return _ops.subtract(self, other)
    def __rsub__(self, other: Any) -> Tensor: return _ops.subtract(other, self)
    def __mul__(self, other: Any) -> Tensor: return _ops.multiply(self, other)
    def __rmul__(self, other: Any) -> Tensor: return _ops.multiply(other, self)
    def __truediv__(self, other: Any) -> Tensor: return _ops.divide(self, other)
    def __rtruediv__(self, other: Any) -> Tensor: return _ops.divide(other, self)
    def __pow__(self, other: Any) -> Tensor: return _ops.power(self, other)
    def __rpow__(self, other: Any) -> Tensor: return _ops.power(other, self)
    def __matmul__(self, other: Any) -> Tensor: return _ops.matmul(self, other)
    def __rmatmul__(self, other: Any) -> Tensor: return _ops.matmul(other, self)
    def __neg__(self) -> Tensor: return _ops.negative(self)
    def __pos__(self) -> Tensor: return self
    def __abs__(self) -> Tensor: return _ops.abs(self)
    def __eq__(self, other: Any) -> Tensor: return _ops.equal(self, other)  # type: ignore[override]
    def __ne__(self, other: Any) -> Tensor: return _ops.not_equal(self, other)  # type: ignore[override]
    def __lt__(self, other: Any) -> Tensor: return _ops.less(self, other)
    def __le__(self, other: Any) -> Tensor: return _ops.less_equal(self, other)
    def __gt__(self, other: Any) -> Tensor: return _ops.greater(self, other)
    def __ge__(self, other: Any) -> Tensor: return _ops.greater_equal(self, other)
    def __invert__(self) -> Tensor: return _ops.logical_not(self)
    def __and__(self, other: Any) -> Tensor: return _ops.logical_and(self, other)
    def __or__(self, other: Any) -> Tensor: return _ops.logical_or(self, other)
    def __getitem__(self, index: Any) -> Tensor: return _ops.getitem(self, index)

    # ------------------------------------------------------------------ methods that mirror functions
    def exp(self) -> Tensor: return _ops.exp(self)
    def log(self) -> Tensor: return _ops.log(self)
    def log1p(self) -> Tensor: return _ops.log1p(self)
    def expm1(self) -> Tensor: return _ops.expm1(self)
    def sqrt(self) -> Tensor: return _ops.sqrt(self)
    def sin(self) -> Tensor: return _ops.sin(self)
    def cos(self) -> Tensor: return _ops.cos(self)
    def tanh(self) -> Tensor: return _ops.tanh(self)
    def sigmoid(self) -> Tensor: return _ops.sigmoid(self)
    def relu(self) -> Tensor: return _ops.relu(self)
    def abs(self) -> Tensor: return _ops.abs(self)
    def sign(self) -> Tensor: return _ops.sign(self)
    def square(self) -> Tensor: return _ops.square(self)

    def clip(self, min: Any = None, max: Any = None) -> Tensor:
        return _ops.clip(self, min, max)

    clamp = clip

    def maximum(self, other: Any) -> Tensor: return _ops.maximum(self, other)
    def minimum(self, other: Any) -> Tensor: return _ops.minimum(self, other)
    def add(self, other: Any) -> Tensor: return _ops.add(self, other)
    def sub(self, other: Any) -> Tensor: return _ops.subtract(self, other)
    def mul(self, other: Any) -> Tensor: return _ops.multiply(self, other)
    def div(self, other: Any) -> Tensor: return _ops.divide(self, other)
    def pow(self, other: Any) -> Tensor: return _ops.power(self, other)
    def matmul(self, other: Any) -> Tensor: return _ops.matmul(self, other)
    def dot(self, other: Any) -> Tensor: return _ops.dot(self, other)

    def isclose(self, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> Tensor:
        return _ops.isclose(self, other, rtol=rtol, atol=atol, equal_nan=equal_nan)

    def allclose(self, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
        return _ops.allclose(self, other, rtol=rtol, atol=atol, equal_nan=equal_nan)

    def sum(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.sum(self, axis, keepdims, **kw)

    def mean(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.mean(self, axis, keepdims, **kw)

    def max(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.max(self, axis, keepdims, **kw)

    def min(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.min(self, axis, keepdims, **kw)

    def prod(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.prod(self, axis, keepdims, **kw)

    def var(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.var(self, axis, keepdims, **kw)

    def std(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.std(self, axis, keepdims, **kw)

    def logsumexp(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.logsumexp(self, axis, keepdims, **kw)

    def argmax(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.argmax(self, axis, keepdims, **kw)

    def argmin(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.argmin(self, axis, keepdims, **kw)

    def all(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.all(self, axis, keepdims, **kw)

    def any(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.any(self, axis, keepdims, **kw)

    def reshape(self, *shape: Any) -> Tensor:
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    view = reshape

    def transpose(self, *axes: Any) -> Tensor:
        """No axes: reverse them. Two axes: swap them (PyTorch). A full permutation: NumPy."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if len(axes) == 2:
            return _ops.swapaxes(self, axes[0], axes[1])
        return _ops.transpose(self, axes or None)

    def permute(self, *dims: Any) -> Tensor:
        return _ops.permute(self, dims[0] if len(dims) == 1 else dims)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return _ops.swapaxes(self, axis1, axis2)

    def unsqueeze(self, dim: int) -> Tensor:
        return _ops.unsqueeze(self, dim)

    def squeeze(self, axis: Any = None, **kw: Any) -> Tensor:
        return _ops.squeeze(self, axis, **kw)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _ops.flatten(self, start_dim, end_dim)

    def broadcast_to(self, shape: Any) -> Tensor:
        return _ops.broadcast_to(self, shape)

    def expand(self, *sizes: Any) -> Tensor:
        """PyTorch's expand: broadcast to ``sizes``, where -1 keeps a dimension."""
        sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        lead = len(sizes) - self.ndim
        shape = tuple(self.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(sizes))
        return _ops.broadcast_to(self, shape)


class RemovableHandle:
    """Returned by ``register_hook``; ``.remove()`` unregisters the hook."""

    def __init__(self, hooks: list, hook: Any) -> None:
        self._hooks = hooks
        self._hook = hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _root_gradient(op_name: str, out: Tensor, gradient: Any) -> Any:
    """The seed gradient for a backward pass from ``out``: ones for a scalar, else ``gradient``."""
    if gradient is None:
        if out.data.size != 1:
            raise RuntimeError(
                f"{op_name}: the output has shape {out.shape}, and a gradient can be created "
                "implicitly only for a scalar output. Pass gradient= a tensor of the same shape "
                "(the weight of each element, e.g. gradient=gg.ones_like(y)), or reduce the "
                "output to a scalar first, e.g. y.sum().backward()")
        if not is_floating(out.data.dtype):
            raise TypeError(f"{op_name}: the output is {out.data.dtype}; only floating-point outputs "
                            "can be differentiated")
        with backend.device_scope(out.data):          # *_like allocate on the current GPU
            return backend.namespace(out.data).ones_like(out.data)
    if isinstance(gradient, Tensor) and is_floating(gradient.dtype) and gradient.dtype != out.data.dtype:
        raise TypeError(f"{op_name}: gradient is {gradient.dtype} but the output is {out.data.dtype}; "
                        f"pass gradient.to({str(out.data.dtype)!r})")
    g = gradient.data if isinstance(gradient, Tensor) else gradient
    xp = backend.namespace(out.data)
    if backend.namespace(g) is not xp and hasattr(g, "shape") and not np.isscalar(g):
        raise RuntimeError(f"{op_name}: gradient is on {backend.device_of(g)} but the output is on "
                           f"{out.device}; move it with .to({str(out.device)!r})")
    g = xp.asarray(g)
    if g.shape != out.data.shape:
        raise ValueError(f"{op_name}: gradient has shape {tuple(g.shape)} but the output has shape "
                         f"{out.shape}; they must be equal")
    if not is_floating(g.dtype):
        raise TypeError(f"{op_name}: gradient must be floating point, got {g.dtype}")
    return g.astype(out.data.dtype, copy=False)


from . import ops as _ops  # noqa: E402  (the op functions need the Tensor class defined above)
