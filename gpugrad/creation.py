"""Creating tensors: from data, ranges, constants and random numbers."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


_MAX_BYTES = np.iinfo(np.intp).max      # no array can be larger, whatever the machine


def _bytes_text(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@contextmanager
def allocating(name: str, shape: tuple[int, ...], dtype: Any) -> Iterator[None]:
    """Around the allocation of an array of ``shape`` and ``dtype`` by the user's call ``name``: a size
    no array can have is a ValueError, one this machine cannot hold a MemoryError, both naming the call,
    the size and the bytes."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > _MAX_BYTES:
        raise ValueError(f"{name}: size {shape} of {dtype} would take {nbytes} bytes, more than any array "
                         f"can hold ({_MAX_BYTES}); check the size")
    try:
        yield
    except MemoryError:
        raise MemoryError(f"{name}: not enough memory for size {shape} of {dtype} ({_bytes_text(nbytes)}); "
                          "use a smaller size") from None


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
    if any(s > _MAX_BYTES for s in shape):
        raise ValueError(f"{name}: dimension too large in size {shape}: at most {_MAX_BYTES} per dimension")
    return shape


def _dim(name: str, arg: str, value: Any) -> int:
    """One size argument (``eye``'s n or m) as an int >= 0, else a TypeError or ValueError naming it."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name}: {arg} must be an int, got {value!r} ({type(value).__name__})")
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{name}: {arg} must be >= 0, got {value}")
    return value


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
    return _filled("zeros", parse_size(shape, size, "zeros"), 0, as_dtype(dtype) or dtypes.default_float,
                   device, requires_grad)


def ones(*shape: Any, size: Any = None, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor of ones."""
    return _filled("ones", parse_size(shape, size, "ones"), 1, as_dtype(dtype) or dtypes.default_float,
                   device, requires_grad)


def _filled(name: str, shape: tuple[int, ...], value: Any, dtype: Any, device: Any,
            requires_grad: bool) -> Tensor:
    with allocating(name, shape, dtype):
        arr = np.full(shape, value, dtype=dtype)
    return _finish(arr, device, requires_grad)


def _fill_dtype(value: Any, dtype: Any) -> np.dtype:
    if dtype is not None:
        return as_dtype(dtype)
    if isinstance(value, (bool, np.bool_)):
        return np.dtype(bool)
    if isinstance(value, numbers.Integral):
        return np.dtype(np.int64)
    return dtypes.default_float


def empty(*shape: Any, size: Any = None, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """An uninitialised tensor (its values are whatever the memory held), as torch.empty."""
    shape = parse_size(shape, size, "empty")
    dtype = as_dtype(dtype) or dtypes.default_float
    with allocating("empty", shape, dtype):
        arr = np.empty(shape, dtype=dtype)
    return _finish(arr, device, requires_grad)


def _fill_value(name: str, value: Any, dtype: np.dtype) -> Any:
    """``value`` checked to be a real number that ``dtype`` holds (a float is truncated to an int
    dtype, as PyTorch); else a TypeError, or an OverflowError / ValueError naming it and the dtype."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: fill_value must be a number or a one-element Tensor, got a Tensor "
                             f"of shape {value.shape}")
        value = value.item()
    if isinstance(value, complex) or not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(f"{name}: fill_value must be a real number (float, int or bool), got {value!r} "
                        f"({type(value).__name__})")
    if dtype.kind in "iu" and not isinstance(value, (bool, np.bool_)):
        if isinstance(value, numbers.Integral):
            whole = int(value)
        elif math.isfinite(value):
            whole = math.trunc(value)
        else:
            raise ValueError(f"{name}: fill_value {value} cannot be stored in {dtype}; pass a finite "
                             "value, or a float dtype")
        info = np.iinfo(dtype)
        if not info.min <= whole <= info.max:
            raise OverflowError(f"{name}: fill_value {_short(value)} does not fit in {dtype} (from "
                                f"{info.min} to {info.max}); pass a float, or a wider dtype")
    elif dtype.kind == "f" and not isinstance(value, (bool, np.bool_)):
        try:
            too_big = math.isfinite(float(value)) and abs(float(value)) > float(np.finfo(dtype).max)
        except OverflowError:               # an int beyond even float64
            too_big = True
        if too_big:
            raise OverflowError(f"{name}: fill_value {_short(value)} is beyond the range of {dtype} (at most "
                                f"{np.finfo(dtype).max}); pass dtype=gg.float64, or a smaller value")
    return value


def _short(value: Any) -> str:
    """A number as an error message shows it: a huge int by its size, not its thousand digits."""
    if isinstance(value, int) and value.bit_length() > 64:
        try:
            return f"{float(value):.6g}"
        except OverflowError:
            return f"(an int of {value.bit_length()} bits)"
    return repr(value)


def full(size: Any, fill_value: Any, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor of ``size`` filled with ``fill_value`` (its dtype by default: bool, int64 or float32)."""
    shape = parse_size((size,), None, "full")
    if isinstance(fill_value, Tensor) and fill_value.numel() == 1:
        fill_value = fill_value.item()
    dtype = _fill_dtype(fill_value, dtype)
    return _filled("full", shape, _fill_value("full", fill_value, dtype), dtype, device, requires_grad)


_UNINITIALISED = object()     # empty_like's "fill": no values written


def _like(x: Any, fill: Any, dtype: Any, device: Any, requires_grad: bool, name: str) -> Tensor:
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    dtype = as_dtype(dtype) or data.dtype
    xp = backend.namespace(data)
    if fill is not _UNINITIALISED:
        fill = _fill_value(name, fill, np.dtype(dtype))
    with allocating(name, tuple(data.shape), dtype):
        if fill is _UNINITIALISED:
            arr = xp.empty(data.shape, dtype)
        else:
            arr = xp.full(data.shape, fill, dtype=dtype)
    return _finish(arr, device, requires_grad)


def empty_like(x: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(x, _UNINITIALISED, dtype, device, requires_grad, "empty_like")


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
    with allocating("arange", (_arange_length(start, stop, step),), dtype):
        arr = np.arange(start, stop, step).astype(dtype)
    return _finish(arr, device, requires_grad)


def _arange_length(start: Any, stop: Any, step: Any) -> int:
    """How many values ``arange`` makes (0 for arguments that are not numbers: NumPy names those)."""
    try:
        span = (float(stop) - float(start)) / float(step)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(span):
        raise ValueError(f"arange: cannot make a range from {start} to {stop} in steps of {step}; "
                         "give finite numbers")
    return max(0, math.ceil(span))


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
    shape = (_dim("eye", "n", n), _dim("eye", "m", n if m is None else m))
    dtype = as_dtype(dtype) or dtypes.default_float
    with allocating("eye", shape, dtype):
        arr = np.eye(*shape, dtype=dtype)
    return _finish(arr, device, requires_grad)


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor sharing memory with a NumPy array."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(arr).__name__}")
    return Tensor._wrap(arr)
