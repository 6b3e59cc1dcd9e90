"""Creating tensors: from data, ranges, constants and random numbers."""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import backend, dtypes
from .dtypes import as_dtype
from .tensor import Tensor


def as_array(data: Any, dtype: Any = None, device: Any = None) -> Any:
    """An array (owned by the new tensor) from Python data, a NumPy/CuPy array or a Tensor.

    Python floats become the default float dtype (float32); NumPy arrays keep their dtype.
    """
    dtype = as_dtype(dtype)
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "__cuda_array_interface__") or type(data).__module__.startswith("cupy"):
        arr = data.astype(dtype) if dtype is not None else data.copy()
    else:
        from_numpy = isinstance(data, (np.ndarray, np.generic))
        try:
            arr = np.array(data, dtype=dtype)
        except (ValueError, TypeError, OverflowError) as err:
            raise TypeError(f"tensor: cannot make a tensor from {type(data).__name__}: {err}") from None
        if dtype is None and not from_numpy and arr.dtype == np.float64:
            arr = arr.astype(dtypes.default_float)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"tensor: unsupported data of dtype {arr.dtype}; "
                            "use numbers (float, int or bool)")
    return backend.to_device(arr, backend.as_device(device)) if device is not None else arr


def _finish(arr: Any, device: Any, requires_grad: bool) -> Tensor:
    if device is not None:
        arr = backend.to_device(arr, backend.as_device(device))
    t = Tensor._wrap(arr)
    if requires_grad:
        t.requires_grad_()
    return t


def parse_size(size: Sequence[Any], size_kw: Any, name: str) -> tuple[int, ...]:
    """Accept f(2, 3), f((2, 3)), f([2, 3]) and f(size=(2, 3))."""
    if size_kw is not None:
        if size:
            raise TypeError(f"{name}: give the size positionally or as size=, not both")
        size = (size_kw,)
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if len(size) == 1 and size[0] == ():
        size = ()
    try:
        shape = tuple(operator.index(s) for s in size)
    except TypeError:
        raise TypeError(f"{name}: size must be ints, got {size!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{name}: negative dimension in size {shape}")
    return shape


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data``."""
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """``data`` itself when it is already a Tensor of that dtype and device, else a new tensor."""
    if isinstance(data, Tensor) and (dtype is None or data.dtype == as_dtype(dtype)) and \
            (device is None or data.device == backend.as_device(device)):
        return data
    return Tensor(data, dtype=dtype, device=device)


def zeros(*shape: Any, size: Any = None, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """A tensor of zeros: ``zeros(2, 3)``, ``zeros((2, 3))`` or ``zeros(size=(2, 3))``."""
    arr = np.zeros(parse_size(shape, size, "zeros"), dtype=as_dtype(dtype) or dtypes.default_float)
    return _finish(arr, device, requires_grad)


def ones(*shape: Any, size: Any = None, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor of ones."""
    arr = np.ones(parse_size(shape, size, "ones"), dtype=as_dtype(dtype) or dtypes.default_float)
    return _finish(arr, device, requires_grad)


def _fill_dtype(value: Any, dtype: Any) -> np.dtype:
    if dtype is not None:
        return as_dtype(dtype)
    if isinstance(value, bool):
        return np.dtype(bool)
    if isinstance(value, numbers.Integral):
        return np.dtype(np.int64)
    return dtypes.default_float


def empty(*shape: Any, size: Any = None, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """An uninitialised tensor (its values are whatever the memory held), as torch.empty."""
    arr = np.empty(parse_size(shape, size, "empty"), dtype=as_dtype(dtype) or dtypes.default_float)
    return _finish(arr, device, requires_grad)


def full(size: Any, fill_value: Any, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    arr = np.full(parse_size((size,), None, "full"), fill_value, dtype=_fill_dtype(fill_value, dtype))
    return _finish(arr, device, requires_grad)


def _like(x: Any, fill: Any, dtype: Any, device: Any, requires_grad: bool, name: str) -> Tensor:
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    dtype = as_dtype(dtype) or data.dtype
    xp = backend.namespace(data)
    arr = xp.empty(data.shape, dtype) if fill is None else xp.full(data.shape, fill, dtype=dtype)
    return _finish(arr, device, requires_grad)


def empty_like(x: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(x, None, dtype, device, requires_grad, "empty_like")


def new_full(x: Tensor, size: Any, fill: Any, dtype: Any, device: Any, requires_grad: bool,
             name: str) -> Tensor:
    """Tensor.new_zeros/new_ones/new_full/new_empty: ``x``'s dtype and device unless given."""
    shape = parse_size(size, None, name)
    dtype = as_dtype(dtype) or x.dtype
    if device is not None and backend.as_device(device) != x.device:
        arr = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype=dtype)
        return _finish(arr, device, requires_grad)
    xp = backend.namespace(x.data)
    with backend.device_scope(x.data):              # made where x lives: no transfer
        arr = xp.empty(shape, dtype) if fill is None else xp.full(shape, fill, dtype=dtype)
    return _finish(arr, None, requires_grad)


def zeros_like(x: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(x, 0, dtype, device, requires_grad, "zeros_like")


def ones_like(x: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(x, 1, dtype, device, requires_grad, "ones_like")


def full_like(x: Any, fill_value: Any, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    return _like(x, fill_value, dtype, device, requires_grad, "full_like")


def arange(start: float, stop: float | None = None, step: float = 1, *, dtype: Any = None,
           device: Any = None, requires_grad: bool = False) -> Tensor:
    """Evenly spaced values in [start, stop); float arguments give float32 by default."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange: step must not be zero")
    dtype = as_dtype(dtype)
    if dtype is None:
        ints = all(isinstance(v, numbers.Integral) for v in (start, stop, step))
        dtype = np.dtype(np.int64) if ints else dtypes.default_float
    return _finish(np.arange(start, stop, step).astype(dtype), device, requires_grad)


def linspace(start: float, stop: float, num: int = 50, *, steps: int | None = None,
             endpoint: bool = True, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    """``num`` (PyTorch: ``steps``) evenly spaced values from start to stop."""
    num = steps if steps is not None else num
    dtype = as_dtype(dtype) or dtypes.default_float
    if dtype.kind == "b":
        raise TypeError("linspace: dtype bool is not supported (evenly spaced values are numbers); "
                        "use a float or integer dtype")
    return _finish(np.linspace(start, stop, num, endpoint=endpoint).astype(dtype), device, requires_grad)


def eye(n: int, m: int | None = None, *, dtype: Any = None, device: Any = None,
        requires_grad: bool = False) -> Tensor:
    """The identity matrix (n x m)."""
    return _finish(np.eye(n, m, dtype=as_dtype(dtype) or dtypes.default_float), device, requires_grad)


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor sharing memory with a NumPy array."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(arr).__name__}")
    return Tensor._wrap(arr)
