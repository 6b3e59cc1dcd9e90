"""The Python array API standard's namespace over gpugrad: what ``tensor.__array_namespace__()`` returns.

Code written against the standard (``xp = x.__array_namespace__()``, then ``xp.sum``,
``xp.concat``, ``xp.permute_dims``...) runs on gpugrad tensors. Where gpugrad has the op, the
name is gpugrad's own function, differentiable on the tape (``concat`` is
``gg.concatenate``, ``acos`` would be ``gg.arccos``). The standard's other functions run on
the tensor's array module (NumPy or CuPy, whose main namespaces follow the standard) without
a gradient: they refuse a tensor that requires grad while recording, rather than cut the
graph silently. gpugrad tensors are real: ``complex64`` and ``complex128`` exist as names
only (the standard requires them) and ``__array_namespace_info__().dtypes()`` omits them. Measured with the
standard's test suite (data-apis/array-api-tests): see docs/architecture.md.
"""

from __future__ import annotations

import builtins
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import backend
from . import creation as _creation
from . import ops as _ops
from .dtypes import as_dtype
from .engine import grad_mode
from .interop import from_dlpack
from .tensor import Tensor

__array_api_version__ = "2023.12"
VERSIONS = ("2021.12", "2022.12", "2023.12")

e, inf, nan, pi, newaxis = math.e, math.inf, math.nan, math.pi, None
bool = np.dtype("bool")  # noqa: A001 - the standard's names
int8, int16, int32, int64 = (np.dtype(f"int{n}") for n in (8, 16, 32, 64))
uint8, uint16, uint32, uint64 = (np.dtype(f"uint{n}") for n in (8, 16, 32, 64))
float32, float64 = np.dtype("float32"), np.dtype("float64")
# the standard requires these names; gpugrad tensors cannot hold them (creating one is a TypeError)
complex64, complex128 = np.dtype("complex64"), np.dtype("complex128")
_DTYPES = {"bool": bool, "int8": int8, "int16": int16, "int32": int32, "int64": int64, "uint8": uint8,
           "uint16": uint16, "uint32": uint32, "uint64": uint64, "float32": float32, "float64": float64}


def namespace(api_version: str | None = None) -> Any:
    """This module, after checking that it serves ``api_version``."""
    if api_version is not None and api_version not in VERSIONS:
        raise ValueError(f"__array_namespace__: gpugrad implements the array API standard "
                         f"{', '.join(VERSIONS)}, not {api_version!r}")
    return sys.modules[__name__]


# ----------------------------------------------------------------------------- gpugrad's own ops
# the standard's name -> gpugrad's (differentiable) function; names that are the same need no entry
_RENAMED = {"concat": "concatenate", "permute_dims": "transpose", "pow": "power", "acos": "arccos",
            "asin": "arcsin", "atan": "arctan", "acosh": "arccosh", "asinh": "arcsinh", "atanh": "arctanh",
            "atan2": "arctan2", "bitwise_invert": "invert", "bitwise_left_shift": "left_shift",
            "bitwise_right_shift": "right_shift"}


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: bool | None = None) -> Tensor:
    """A tensor of ``obj``, sharing a Tensor's or array's memory unless a copy is needed or asked for."""
    dt = as_dtype(dtype)
    if not isinstance(obj, (Tensor, np.ndarray)) and hasattr(obj, "__dlpack__"):    # torch, JAX...
        obj = from_dlpack(obj)
    data = obj.data if isinstance(obj, Tensor) else obj
    if isinstance(data, np.ndarray) or backend.namespace(data) is not np:
        same_device = device is None or backend.as_device(device) == backend.device_of(data)
        if copy is not True and same_device and dt in (None, data.dtype):
            return obj if isinstance(obj, Tensor) else Tensor._wrap(data)
    if copy is False:
        raise ValueError("asarray: copy=False, but a copy is needed (another dtype, device, or Python data)")
    return Tensor(data, dtype=dt, device=device)


# ---- creation, with the standard's signatures
def arange(start: float, /, stop: float | None = None, step: float = 1, *, dtype: Any = None,
           device: Any = None) -> Tensor:
    return _creation.arange(start, stop, step, dtype=dtype, device=device)


def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _creation.zeros(shape, dtype=dtype, device=device)


def ones(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _creation.ones(shape, dtype=dtype, device=device)


def full(shape: Any, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _creation.full(shape, fill_value, dtype=dtype, device=device)


def zeros_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _creation.zeros_like(x, dtype=dtype, device=device)


def ones_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _creation.ones_like(x, dtype=dtype, device=device)


def full_like(x: Tensor, /, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _creation.full_like(x, fill_value, dtype=dtype, device=device)


def linspace(start: float, stop: float, /, num: int, *, dtype: Any = None, device: Any = None,
             endpoint: bool = True) -> Tensor:
    if endpoint:
        return _creation.linspace(start, stop, num, dtype=dtype, device=device)
    step = (stop - start) / num if num else 0.0
    return _creation.linspace(start, stop - step, num, dtype=dtype, device=device)


def eye(n_rows: int, n_cols: int | None = None, /, *, k: int = 0, dtype: Any = None,
        device: Any = None) -> Tensor:
    xp = backend.array_on(backend.as_device(device))
    return Tensor._wrap(xp.eye(n_rows, n_cols, k=k, dtype=as_dtype(dtype) or float32))


def meshgrid(*arrays: Tensor, indexing: str = "xy") -> list[Tensor]:
    return list(_without_gradient("meshgrid")(*arrays, indexing=indexing))


def broadcast_arrays(*arrays: Tensor) -> list[Tensor]:
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    return [_ops.broadcast_to(a, shape) for a in arrays]


# ---- manipulation and statistics, differentiable
def concat(arrays: Any, /, *, axis: int | None = 0) -> Tensor:
    if axis is None:
        return _ops.concatenate([_ops.reshape(a, (-1,)) for a in arrays], axis=0)
    return _ops.concatenate(list(arrays), axis=axis)


def expand_dims(x: Tensor, /, axis: int) -> Tensor:
    if not -x.ndim - 1 <= axis <= x.ndim:
        raise IndexError(f"expand_dims: axis {axis} is out of range for a tensor with {x.ndim} dimension(s)")
    axis = axis % (x.ndim + 1)
    return _ops.reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def reshape(x: Tensor, /, shape: Any, *, copy: bool | None = None) -> Tensor:
    out = _ops.reshape(x, shape)
    return _ops.clone(out) if copy else out


def clip(x: Tensor, /, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 - the standard's names
    out = x if min is None else _ops.astype(_ops.maximum(x, min), x.dtype)
    out = out if max is None else _ops.astype(_ops.minimum(out, max), x.dtype)
    return _ops.clone(out) if out is x else out


def _summed_dtype(x: Tensor, dtype: Any) -> Any:
    """The standard's accumulation dtype: ``dtype``, else the default integer for narrower integers."""
    if dtype is not None:
        return as_dtype(dtype)
    if x.dtype.kind in "bi" and x.dtype.itemsize < 8:
        return int64
    return uint64 if x.dtype.kind == "u" and x.dtype.itemsize < 8 else None


def sum(x: Tensor, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    dt = _summed_dtype(x, dtype)
    return _ops.sum(x if dt is None else _ops.astype(x, dt), axis=axis, keepdims=keepdims)


def prod(x: Tensor, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Tensor:
    dt = _summed_dtype(x, dtype)
    return _ops.prod(x if dt is None else _ops.astype(x, dt), axis=axis, keepdims=keepdims)


def sort(x: Tensor, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> Tensor:
    out = _without_gradient("sort")(x, axis=axis, stable=stable)
    return _without_gradient("flip")(out, axis=axis) if descending else out


def argsort(x: Tensor, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> Tensor:
    if not descending:
        return _without_gradient("argsort")(x, axis=axis, stable=stable)
    # descending and stable: sort the reversed array, then map the positions back
    n = x.shape[axis] if x.ndim else 1
    flipped = _without_gradient("flip")(x, axis=axis)
    order = _without_gradient("argsort")(flipped, axis=axis, stable=stable)
    return _without_gradient("flip")(n - 1 - order, axis=axis)


def conj(x: Tensor, /) -> Tensor:
    return _ops.clone(x)                 # gpugrad tensors are real


def real(x: Tensor, /) -> Tensor:
    return _ops.clone(x)


def imag(x: Tensor, /) -> Tensor:
    return _creation.zeros_like(x)


def astype(x: Tensor, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Tensor:
    out = x if not copy and x.dtype == as_dtype(dtype) else _ops.astype(x, dtype)
    return out if device is None else out.to(device)


def empty(shape: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _creation.zeros(shape, dtype=dtype, device=device)


def empty_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _creation.zeros_like(x, dtype=dtype, device=device)


def matrix_transpose(x: Tensor, /) -> Tensor:
    return _ops.swapaxes(x, -1, -2)


def var(x: Tensor, /, *, axis: Any = None, correction: float = 0.0, keepdims: bool = False) -> Tensor:
    return _ops.var(x, axis=axis, keepdims=keepdims, ddof=correction)


def std(x: Tensor, /, *, axis: Any = None, correction: float = 0.0, keepdims: bool = False) -> Tensor:
    return _ops.std(x, axis=axis, keepdims=keepdims, ddof=correction)


def vecdot(x1: Tensor, x2: Tensor, /, *, axis: int = -1) -> Tensor:
    if x1.shape[axis:][:1] != x2.shape[axis:][:1] or builtins.min(x1.ndim, x2.ndim) < 1:
        raise ValueError(f"vecdot: axis {axis} has sizes {x1.shape} and {x2.shape}; they must be equal")
    out = _ops.sum(_ops.multiply(x1, x2), axis=axis)
    return _ops.astype(out, result_type(x1, x2))


def positive(x: Tensor, /) -> Tensor:
    return +x


# ----------------------------------------------------------------------------- data types
def isdtype(dtype: Any, kind: Any) -> bool:
    """The standard's dtype kinds: 'bool', 'signed integer', 'unsigned integer', 'integral',
    'real floating', 'numeric' (or a dtype, or a tuple of those)."""
    if isinstance(kind, tuple):
        return builtins.any(isdtype(dtype, k) for k in kind)      # any, sum... are the standard's here
    if not isinstance(kind, str):
        return np.dtype(dtype) == np.dtype(kind)
    letters = {"bool": "b", "signed integer": "i", "unsigned integer": "u", "integral": "iu",
               "real floating": "f", "complex floating": "c", "numeric": "iufc"}
    if kind not in letters:
        raise ValueError(f"isdtype: unknown kind {kind!r}; use one of {sorted(letters)}")
    return np.dtype(dtype).kind in letters[kind]


def result_type(*arrays_and_dtypes: Any) -> np.dtype:
    return np.result_type(*(a.dtype if isinstance(a, Tensor) else a for a in arrays_and_dtypes))


def can_cast(from_: Any, to: Any, /) -> np.bool_:
    return np.can_cast(from_.dtype if isinstance(from_, Tensor) else from_, to)


class _FInfo:
    """The standard's finfo object: Python floats, not NumPy scalars."""

    def __init__(self, info: Any) -> None:
        self.bits, self.dtype = int(info.bits), info.dtype
        self.eps, self.max, self.min = float(info.eps), float(info.max), float(info.min)
        self.smallest_normal = float(info.smallest_normal)


def finfo(type: Any, /) -> _FInfo:  # noqa: A002 - the standard's name
    return _FInfo(np.finfo(type.dtype if isinstance(type, Tensor) else type))


def iinfo(type: Any, /) -> Any:  # noqa: A002
    return np.iinfo(type.dtype if isinstance(type, Tensor) else type)


class _Info:
    """``__array_namespace_info__()``: the devices and dtypes this namespace serves."""

    def capabilities(self) -> dict[str, Any]:
        return {"boolean indexing": True, "data-dependent shapes": True, "max dimensions": 64}

    def default_device(self) -> backend.Device:
        return backend.CPU

    def devices(self) -> list[backend.Device]:
        reason = backend.cuda_unavailable_reason()
        count = 0 if reason else backend.load_cupy().cuda.runtime.getDeviceCount()
        return [backend.CPU, *(backend.Device("cuda", i) for i in range(count))]

    def default_dtypes(self, *, device: Any = None) -> dict[str, np.dtype]:
        return {"real floating": float32, "integral": int64, "indexing": int64}

    def dtypes(self, *, device: Any = None, kind: Any = None) -> dict[str, np.dtype]:
        return {name: dt for name, dt in _DTYPES.items() if kind is None or isdtype(dt, kind)}


def __array_namespace_info__() -> _Info:
    return _Info()


# ----------------------------------------------------------------------------- the rest, without a gradient
def _without_gradient(name: str) -> Callable[..., Any]:
    """The array module's function ``name`` on the tensors' arrays; no gradient, so no input may need one."""
    def call(*args: Any, **kwargs: Any) -> Any:
        found: list[Any] = []

        def unwrap(a: Any) -> Any:
            if isinstance(a, Tensor):
                if a.requires_grad and grad_mode.enabled:
                    raise RuntimeError(f"{name}: gpugrad has no gradient for {name}; call it on "
                                       "t.detach() (or under gg.no_grad()) if no gradient should flow")
                found.append(a.data)
                return a.data
            if isinstance(a, (list, tuple)):
                return type(a)(unwrap(v) for v in a)
            return a

        args = tuple(unwrap(a) for a in args)
        kwargs = {k: unwrap(v) for k, v in kwargs.items()}
        if "device" in kwargs:
            kwargs.pop("device")
        xp = backend.common_namespace(name, found) if found else np
        out = getattr(xp, name)(*args, **kwargs)
        return _wrap(out)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"The array API's ``{name}`` on the tensors' array module (no gradient)."
    return call


def _wrap(out: Any) -> Any:
    if isinstance(out, (list, tuple)):
        items = [_wrap(o) for o in out]
        return type(out)._make(items) if hasattr(out, "_fields") else type(out)(items)
    if hasattr(out, "shape") and hasattr(out, "dtype") and not isinstance(out, np.generic):
        return Tensor._wrap(out)
    if isinstance(out, np.generic):
        return Tensor._wrap(np.asarray(out))
    return out


STANDARD = (
    # elementwise
    "abs", "acos", "acosh", "add", "asin", "asinh", "atan", "atan2", "atanh", "bitwise_and",
    "bitwise_left_shift", "bitwise_invert", "bitwise_or", "bitwise_right_shift", "bitwise_xor", "ceil",
    "clip", "copysign", "cos", "cosh", "divide", "equal", "exp", "expm1", "floor", "floor_divide", "greater",
    "greater_equal", "hypot", "isfinite", "isinf", "isnan", "less", "less_equal", "log", "log1p", "log2",
    "log10", "logaddexp", "logical_and", "logical_not", "logical_or", "logical_xor", "maximum", "minimum",
    "multiply", "negative", "not_equal", "pow", "remainder", "round", "sign", "signbit", "sin", "sinh",
    "square", "sqrt", "subtract", "tan", "tanh", "trunc",
    # indexing, linear algebra, manipulation
    "take", "take_along_axis", "matmul", "tensordot", "broadcast_arrays", "broadcast_to", "concat",
    "expand_dims", "flip", "moveaxis", "permute_dims", "repeat", "reshape", "roll", "squeeze", "stack",
    "tile", "unstack",
    # searching, sets, sorting, statistics, utilities, creation
    "argmax", "argmin", "count_nonzero", "nonzero", "searchsorted", "where", "unique_all", "unique_counts",
    "unique_inverse", "unique_values", "argsort", "sort", "cumulative_sum", "cumulative_prod", "max",
    "mean", "min", "prod", "sum", "all", "any", "diff", "meshgrid", "tril", "triu",
)
_module = sys.modules[__name__]
for _name in STANDARD:
    if not hasattr(_module, _name):
        _own = getattr(_ops, _RENAMED.get(_name, _name), None)
        setattr(_module, _name, _own if _own is not None else _without_gradient(_name))

__all__ = ["__array_api_version__", "__array_namespace_info__", "asarray", "astype", "empty", "empty_like",
           "arange", "eye", "full", "full_like", "linspace", "ones", "ones_like", "zeros", "zeros_like",
           "from_dlpack", "isdtype", "result_type", "can_cast", "finfo", "iinfo", "matrix_transpose", "var",
           "std", "vecdot", "positive", "conj", "real", "imag", "e", "inf", "nan", "pi", "newaxis", *_DTYPES,
           *STANDARD]
