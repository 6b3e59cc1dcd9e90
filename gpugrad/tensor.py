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
from .engine import Node, add_post_accumulate_hook, grad_mode, run_backward


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

    def register_post_accumulate_grad_hook(self, hook: Any) -> RemovableHandle:
        """Call ``hook(self)`` each time backward has accumulated this leaf's gradient into ``.grad``."""
        if self._node is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only a leaf tensor accumulates a "
                               "gradient into .grad; use register_hook on a computed tensor")
        if not self._requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: this tensor does not require grad, "
                               "so no gradient will ever be accumulated into it")
        return RemovableHandle(add_post_accumulate_hook(self, hook), hook)

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` after backward (leaves always do)."""
        if self._node is None or self._retains_grad():
            return
        me = weakref.ref(self)

        def keep(g: Tensor) -> None:
            t = me()
            if t is not None:
                t._grad = g.detach().clone() if t._grad is None else t._grad + g.detach()   # writable, own

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
    def is_cuda(self) -> bool:
        return backend.namespace(self.data) is not np

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

    def int(self) -> Tensor:
        return _ops.astype(self, "int32")

    def bool(self) -> Tensor:
        return _ops.astype(self, "bool")

    def contiguous(self) -> Tensor:
        """This tensor when its data is C-contiguous, else a contiguous copy (differentiable)."""
        return self if self.data.flags.c_contiguous else _ops.clone(self)

    def new_zeros(self, *size: Any, dtype: Any = None, device: Any = None,
                  requires_grad: bool = False) -> Tensor:
        """Zeros of ``size`` with this tensor's dtype and device (unless given)."""
        return _creation.new_full(self, size, 0, dtype, device, requires_grad, "new_zeros")

    def new_ones(self, *size: Any, dtype: Any = None, device: Any = None,
                 requires_grad: bool = False) -> Tensor:
        return _creation.new_full(self, size, 1, dtype, device, requires_grad, "new_ones")

    def new_full(self, size: Any, fill_value: Any, *, dtype: Any = None, device: Any = None,
                 requires_grad: bool = False) -> Tensor:
        return _creation.new_full(self, (size,), fill_value, dtype, device, requires_grad, "new_full")

    def new_empty(self, *size: Any, dtype: Any = None, device: Any = None,
                  requires_grad: bool = False) -> Tensor:
        return _creation.new_full(self, size, None, dtype, device, requires_grad, "new_empty")

    def new_tensor(self, data: Any, dtype: Any = None, device: Any = None,
                   requires_grad: bool = False) -> Tensor:
        """A new tensor from ``data``, with this tensor's dtype and device unless given."""
        return Tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                      requires_grad=requires_grad)

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
        """``t[index] = value`` in place; recorded (as PyTorch) when ``t`` or ``value`` is in a graph."""
        recorded = grad_mode.enabled and (self._node is not None or getattr(value, "_requires_grad", False))
        if not recorded:
            value = value.data if isinstance(value, Tensor) else value
            self._inplace("__setitem__", lambda d: _ops.assign(d, index, value))
            return
        if self._node is None and self._requires_grad:
            self._check_inplace("__setitem__")           # a leaf that requires grad: raises
        if not is_floating(self.data.dtype):
            raise TypeError(f"__setitem__: a value that requires grad cannot be written into a {self.dtype} "
                            "tensor; make the tensor floating point, or assign value.detach()")
        if getattr(self.data, "base", None) is not None:
            raise RuntimeError(
                f"__setitem__: this tensor ({self.shape}) shares memory with another one (it is a view, e.g. "
                "from indexing or reshape), so a recorded assignment would change that tensor behind its "
                "graph's back; assign into a copy (t = t.clone()) or into the tensor it views")
        out = _ops.index.put_(self, index, value)
        self._node, self._requires_grad = out._node, True
        versions.bump(self.data, "__setitem__")

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
    def __floordiv__(self, other: Any) -> Tensor: return _ops.floor_divide(self, other)
    def __rfloordiv__(self, other: Any) -> Tensor: return _ops.floor_divide(other, self)
    def __mod__(self, other: Any) -> Tensor: return _ops.remainder(self, other)
    def __rmod__(self, other: Any) -> Tensor: return _ops.remainder(other, self)
    # bitwise on integer tensors, logical on bool tensors (PyTorch's and NumPy's meaning)
    def __invert__(self) -> Tensor: return _ops.bitwise_not(self)
    def __and__(self, other: Any) -> Tensor: return _ops.bitwise_and(self, other)
    def __rand__(self, other: Any) -> Tensor: return _ops.bitwise_and(other, self)
    def __or__(self, other: Any) -> Tensor: return _ops.bitwise_or(self, other)
    def __ror__(self, other: Any) -> Tensor: return _ops.bitwise_or(other, self)
    def __xor__(self, other: Any) -> Tensor: return _ops.bitwise_xor(self, other)
    def __rxor__(self, other: Any) -> Tensor: return _ops.bitwise_xor(other, self)
    def __lshift__(self, other: Any) -> Tensor: return _ops.left_shift(self, other)
    def __rlshift__(self, other: Any) -> Tensor: return _ops.left_shift(other, self)
    def __rshift__(self, other: Any) -> Tensor: return _ops.right_shift(self, other)
    def __rrshift__(self, other: Any) -> Tensor: return _ops.right_shift(other, self)
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
    def neg(self) -> Tensor: return _ops.negative(self)
    def negative(self) -> Tensor: return _ops.negative(self)
    def tan(self) -> Tensor: return _ops.tan(self)
    def asin(self) -> Tensor: return _ops.arcsin(self)
    def acos(self) -> Tensor: return _ops.arccos(self)
    def atan(self) -> Tensor: return _ops.arctan(self)
    def sinh(self) -> Tensor: return _ops.sinh(self)
    def cosh(self) -> Tensor: return _ops.cosh(self)
    def asinh(self) -> Tensor: return _ops.arcsinh(self)
    def acosh(self) -> Tensor: return _ops.arccosh(self)
    def atanh(self) -> Tensor: return _ops.arctanh(self)
    arcsin, arccos, arctan, arcsinh, arccosh, arctanh = asin, acos, atan, asinh, acosh, atanh
    def log2(self) -> Tensor: return _ops.log2(self)
    def log10(self) -> Tensor: return _ops.log10(self)
    def exp2(self) -> Tensor: return _ops.exp2(self)
    def rsqrt(self) -> Tensor: return _ops.rsqrt(self)
    def floor(self) -> Tensor: return _ops.floor(self)
    def ceil(self) -> Tensor: return _ops.ceil(self)
    def trunc(self) -> Tensor: return _ops.trunc(self)
    def round(self, decimals: int = 0) -> Tensor: return _ops.round(self, decimals)
    def isnan(self) -> Tensor: return _ops.isnan(self)
    def isinf(self) -> Tensor: return _ops.isinf(self)
    def isfinite(self) -> Tensor: return _ops.isfinite(self)
    def isposinf(self) -> Tensor: return _ops.isposinf(self)
    def isneginf(self) -> Tensor: return _ops.isneginf(self)

    def clip(self, min: Any = None, max: Any = None) -> Tensor:
        return _ops.clip(self, min, max)

    clamp = clip

    def clamp_min(self, min: Any) -> Tensor: return _ops.clip(self, min, None)
    def clamp_max(self, max: Any) -> Tensor: return _ops.clip(self, None, max)

    def maximum(self, other: Any) -> Tensor: return _ops.maximum(self, other)
    def minimum(self, other: Any) -> Tensor: return _ops.minimum(self, other)
    def add(self, other: Any) -> Tensor: return _ops.add(self, other)
    def sub(self, other: Any) -> Tensor: return _ops.subtract(self, other)
    def mul(self, other: Any) -> Tensor: return _ops.multiply(self, other)
    def div(self, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        return _ops.div(self, other, rounding_mode=rounding_mode)

    divide = div
    def true_divide(self, other: Any) -> Tensor: return _ops.divide(self, other)
    def floor_divide(self, other: Any) -> Tensor: return _ops.floor_divide(self, other)
    def remainder(self, other: Any) -> Tensor: return _ops.remainder(self, other)
    def fmod(self, other: Any) -> Tensor: return _ops.fmod(self, other)
    def atan2(self, other: Any) -> Tensor: return _ops.arctan2(self, other)
    arctan2 = atan2
    def logaddexp(self, other: Any) -> Tensor: return _ops.logaddexp(self, other)
    def copysign(self, other: Any) -> Tensor: return _ops.copysign(self, other)
    def lerp(self, end: Any, weight: Any) -> Tensor: return _ops.lerp(self, end, weight)
    def bitwise_and(self, other: Any) -> Tensor: return _ops.bitwise_and(self, other)
    def bitwise_or(self, other: Any) -> Tensor: return _ops.bitwise_or(self, other)
    def bitwise_xor(self, other: Any) -> Tensor: return _ops.bitwise_xor(self, other)
    def bitwise_not(self) -> Tensor: return _ops.bitwise_not(self)
    def logical_and(self, other: Any) -> Tensor: return _ops.logical_and(self, other)
    def logical_or(self, other: Any) -> Tensor: return _ops.logical_or(self, other)
    def logical_not(self) -> Tensor: return _ops.logical_not(self)
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

    def max(self, dim: Any = None, keepdim: bool = False, **kw: Any) -> Any:
        """PyTorch's max: the largest value; with ``dim``, (values, indices); with a tensor, maximum."""
        return _ops.max_dim("max", self, dim, keepdim, **kw)

    def min(self, dim: Any = None, keepdim: bool = False, **kw: Any) -> Any:
        """PyTorch's min: the smallest value; with ``dim``, (values, indices); with a tensor, minimum."""
        return _ops.max_dim("min", self, dim, keepdim, **kw)

    def amax(self, dim: Any = None, keepdim: bool = False, **kw: Any) -> Tensor:
        return _ops.amax(self, dim, keepdim, **kw)

    def amin(self, dim: Any = None, keepdim: bool = False, **kw: Any) -> Tensor:
        return _ops.amin(self, dim, keepdim, **kw)

    def prod(self, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
        return _ops.prod(self, axis, keepdims, **kw)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, **kw: Any) -> Tensor:
        """PyTorch's var: unbiased (correction=1) unless ``unbiased=False`` or ``correction=`` is given."""
        return _ops.var(self, **_ops.torch_variance_args("var", dim, unbiased, keepdim, kw))

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, **kw: Any) -> Tensor:
        """PyTorch's std: unbiased unless ``unbiased=False`` or ``correction=`` says otherwise."""
        return _ops.std(self, **_ops.torch_variance_args("std", dim, unbiased, keepdim, kw))

    def norm(self, p: Any = "fro", dim: Any = None, keepdim: bool = False) -> Tensor:
        """PyTorch's Tensor.norm: the vector p-norm over ``dim`` (all elements when None)."""
        return _ops.vector_norm(self, 2 if p == "fro" else p, dim, keepdim)

    def cumsum(self, dim: int, *, dtype: Any = None) -> Tensor:
        return _ops.cumsum(self, dim=_ops.scan_dim("cumsum", self, dim), dtype=dtype)

    def cumprod(self, dim: int, *, dtype: Any = None) -> Tensor:
        return _ops.cumprod(self, dim=_ops.scan_dim("cumprod", self, dim), dtype=dtype)

    def logcumsumexp(self, dim: int) -> Tensor:
        return _ops.logcumsumexp(self, dim=_ops.scan_dim("logcumsumexp", self, dim))

    def cummax(self, dim: int) -> Any:
        return _ops.cummax(self, dim=dim)

    def cummin(self, dim: int) -> Any:
        return _ops.cummin(self, dim=dim)

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
        """(values, indices) sorted along ``dim``, as torch.sort (ties keep their order)."""
        return _ops.sort_with_indices(self, dim, descending=descending)

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
        return _ops.argsort(self, dim, descending=descending)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:  # noqa: A002
        return _ops.topk(self, k, dim, largest, sorted)

    def softmax(self, dim: int, dtype: Any = None) -> Tensor:
        from .nn import functional  # noqa: PLC0415
        return functional.softmax(self, dim, dtype)

    def log_softmax(self, dim: int, dtype: Any = None) -> Tensor:
        from .nn import functional  # noqa: PLC0415
        return functional.log_softmax(self, dim, dtype)

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

    def t(self) -> Tensor:
        """The transpose of a 2-D tensor; 0-d and 1-d tensors come back as they are (PyTorch's t)."""
        if self.ndim > 2:
            raise RuntimeError(f"t: expects a tensor with <= 2 dimensions, but this one has shape "
                               f"{self.shape}; "
                               "use .transpose(dim0, dim1) or .mT")
        return _ops.transpose(self)

    def unsqueeze(self, dim: int) -> Tensor:
        return _ops.unsqueeze(self, dim)

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

    # --- indexing and shape methods (PyTorch's names, signatures and meanings)
    def squeeze(self, dim: Any = None) -> Tensor:
        """Remove size-1 dimensions; a named dimension whose size is not 1 is left as it is."""
        return _ops.squeeze(self) if dim is None else _ops.squeeze(self, dim=dim)

    def gather(self, dim: int, index: Any) -> Tensor:
        return _ops.gather(self, dim, index)

    def take_along_dim(self, indices: Any, dim: int | None = None) -> Tensor:
        return _ops.take_along_dim(self, indices, dim)

    def index_select(self, dim: int, index: Any) -> Tensor:
        return _ops.index_select(self, dim, index)

    def scatter(self, dim: int, index: Any, src: Any = None, *, value: Any = None,
                reduce: str | None = None) -> Tensor:
        return _ops.scatter(self, dim, index, src, value=value, reduce=reduce)

    def scatter_add(self, dim: int, index: Any, src: Any) -> Tensor:
        return _ops.scatter_add(self, dim, index, src)

    def scatter_reduce(self, dim: int, index: Any, src: Any, reduce: str, *,
                       include_self: bool = True) -> Tensor:
        return _ops.scatter_reduce(self, dim, index, src, reduce, include_self=include_self)

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        return _ops.masked_fill(self, mask, value)

    def masked_select(self, mask: Any) -> Tensor:
        return _ops.masked_select(self, mask)

    def nonzero(self, *, as_tuple: bool = False) -> Tensor | tuple[Tensor, ...]:
        """The (count, ndim) indices of the nonzero entries, or one 1-d tensor per dimension (as_tuple)."""
        if as_tuple:
            return _ops.nonzero(self if self.ndim else self.reshape(1))
        return _ops.argwhere(self)

    def scatter_(self, dim: int, index: Any, src: Any = None, *, value: Any = None,
                 reduce: str | None = None) -> Tensor:
        return self._replace("scatter_", lambda: self.scatter(dim, index, src, value=value, reduce=reduce))

    def scatter_add_(self, dim: int, index: Any, src: Any) -> Tensor:
        return self._replace("scatter_add_", lambda: self.scatter_add(dim, index, src))

    def scatter_reduce_(self, dim: int, index: Any, src: Any, reduce: str, *,
                        include_self: bool = True) -> Tensor:
        return self._replace("scatter_reduce_",
                             lambda: self.scatter_reduce(dim, index, src, reduce, include_self=include_self))

    def masked_fill_(self, mask: Any, value: Any) -> Tensor:
        return self._replace("masked_fill_", lambda: self.masked_fill(mask, value))

    def _replace(self, name: str, compute: Any) -> Tensor:
        """An in-place method off the tape: compute the result, then write it over this tensor's data."""
        from .engine import no_grad  # noqa: PLC0415 - keeps this section's imports to itself
        self._check_inplace(name)
        with no_grad():
            result = compute().data
        if result.shape != self.data.shape:
            raise RuntimeError(f"{name}: the result has shape {tuple(result.shape)}, which cannot be written "
                               f"in place into a tensor of shape {self.shape}")
        return self._inplace(name, lambda d: d.__setitem__(Ellipsis, result))

    @staticmethod
    def _sizes(args: tuple) -> tuple:
        """PyTorch's two spellings of a size list: ``t.repeat(2, 3)`` and ``t.repeat((2, 3))``."""
        return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)

    def flip(self, *dims: Any) -> Tensor:
        return _ops.flip(self, self._sizes(dims))

    def roll(self, shifts: Any, dims: Any = None) -> Tensor:
        if dims is not None and len(shifts if isinstance(shifts, (tuple, list)) else (shifts,)) != \
                len(dims if isinstance(dims, (tuple, list)) else (dims,)):
            raise RuntimeError(f"roll: shifts {shifts} and dims {dims} must have the same length")
        return _ops.roll(self, shifts, dims)

    def repeat(self, *sizes: Any) -> Tensor:
        """Tile the tensor ``sizes[d]`` times along each dimension (numpy.tile)."""
        sizes = self._sizes(sizes)
        if len(sizes) < self.ndim:
            raise RuntimeError(f"repeat: give at least one count per dimension: {len(sizes)} counts for a "
                               f"tensor of shape {self.shape}")
        return _ops.tile(self, sizes)

    def tile(self, *dims: Any) -> Tensor:
        return _ops.tile(self, self._sizes(dims))

    def repeat_interleave(self, repeats: Any, dim: int | None = None, *,
                          output_size: int | None = None) -> Tensor:
        return _ops.repeat_interleave(self, repeats, dim, output_size=output_size)

    def split(self, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the listed sizes."""
        return _ops.layout.split_sizes(self, split_size_or_sections, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return _ops.chunk(self, chunks, dim)

    def unflatten(self, dim: int, sizes: Any) -> Tensor:
        return _ops.unflatten(self, dim, sizes)

    def tril(self, diagonal: int = 0) -> Tensor:
        return _ops.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return _ops.triu(self, diagonal)

    def diag(self, diagonal: int = 0) -> Tensor:
        return _ops.diag(self, diagonal)

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
        return _ops.diagonal(self, offset, dim1, dim2)

    def unfold(self, dimension: int, size: int, step: int) -> Tensor:
        """The windows of ``size`` every ``step`` along ``dimension``, as a new last dimension."""
        return _ops.layout.unfold(self, dimension, size, step)
    # ------------------------------------------------------------------ interop (gpugrad/interop.py)
    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: bool | None = None) -> Any:
        """This tensor's buffer as a DLPack capsule, shared, not copied (refused if it requires grad)."""
        from .interop import export_dlpack  # noqa: PLC0415
        return export_dlpack(self, stream, max_version, dl_device, copy)

    def __dlpack_device__(self) -> tuple[int, int]:
        """(DLPack device type, device index): (1, 0) on the CPU, (2, N) on cuda:N."""
        return self.data.__dlpack_device__()

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        """The Python array API standard namespace over gpugrad's functions (gpugrad.array_api)."""
        from .array_api import namespace  # noqa: PLC0415
        return namespace(api_version)


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


from . import creation as _creation  # noqa: E402
from . import ops as _ops  # noqa: E402  (the op functions need the Tensor class defined above)
