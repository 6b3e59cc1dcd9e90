"""The emulated ``cupy.ndarray``: NumPy memory that behaves as device memory does under CuPy.

An ``ndarray`` wraps a NumPy array and the index of the emulated device it lives on.
Every NumPy function and method works on it, and returns emulated arrays (reductions
give 0-d arrays, as CuPy's do), but the host cannot reach the data by accident:

- ``numpy.asarray(a)`` raises TypeError, as CuPy's ``__array__`` does;
- a host ``numpy.ndarray`` among an op's operands raises TypeError ("Unsupported type"),
  as CuPy's kernels do; only ``asarray``/``array`` (and index arrays, and values
  assigned with ``a[...] = v``) copy host data to the device;
- integer-array indices out of bounds wrap around, as in CuPy (NumPy would raise);
- with several emulated devices, an operand on another device than the current one
  raises ValueError, as CuPy does without peer access;
- every read of device data by the host (``get``, ``item``, ``tolist``, ``float``,
  ``int``, ``bool``, ``repr``, ``cupy.asnumpy``, and the calls that read a size back:
  boolean-mask indexing, ``nonzero``, ``unique``...) and every explicit synchronisation is
  counted, and recorded inside ``host_reads()``.

``empty`` memory is filled with 0xFF bytes (NaN, -1), so code that reads memory it did
not write shows it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import graph as _graph

_HERE = os.path.dirname(os.path.abspath(__file__))
_new = object.__new__

# ----------------------------------------------------------------------------- devices

device_total = 1                      # how many emulated devices (GPUGRAD_EMULATE_CUDA=N)
_local = threading.local()            # the current device, per thread (as CUDA's)


def current_device() -> int:
    return getattr(_local, "device", 0)


def set_current_device(index: int) -> None:
    if not 0 <= index < device_total:
        raise ValueError(f"the CUDA emulator has {device_total} device(s); there is no device {index} "
                         f"(set GPUGRAD_EMULATE_CUDA=N for N devices)")
    _local.device = index


def _check_device(a: ndarray) -> None:
    dev = current_device()
    if a._dev != dev:
        raise ValueError(f"The device where the array resides ({a._dev}) is different from the current "
                         f"device ({dev}). Peer access is unavailable between these devices.")


# ----------------------------------------------------------------------------- host reads

read_count = 0                                   # every host read and synchronisation so far
_recorders: list[list[str]] = []


def _caller() -> str:
    """file:line of the first frame outside the emulator (where the read came from)."""
    frame = sys._getframe(2)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _HERE:
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def record_host_read(what: str) -> None:
    """Count one point where the host waits for the device (and record it in host_reads() blocks)."""
    global read_count
    if _graph.capturing():
        raise _graph.refuse(f"a host read ({what})")
    read_count += 1
    if _recorders:
        entry = f"{what} at {_caller()}"
        for r in _recorders:
            r.append(entry)


def _read(kind: str, a: ndarray) -> None:
    record_host_read(f"{kind} of a {a._a.shape} {a._a.dtype} array")


@contextlib.contextmanager
def host_reads() -> Iterator[list[str]]:
    """Record, in the list this yields, every device-to-host read and synchronisation in the block."""
    log: list[str] = []
    _recorders.append(log)
    try:
        yield log
    finally:
        _recorders.remove(log)


# ----------------------------------------------------------------------------- wrapping

def wrap(a: np.ndarray, dev: int | None = None) -> ndarray:
    obj = _new(ndarray)
    obj._a = a
    obj._dev = current_device() if dev is None else dev
    return obj


def _unsupported(x: Any) -> TypeError:
    return TypeError(f"Unsupported type {type(x)}")


def unwrap(x: Any) -> Any:
    """Device arrays (also inside lists and tuples) to their NumPy memory; host arrays are refused."""
    t = type(x)
    if t is ndarray:
        if device_total > 1:
            _check_device(x)
        return x._a
    if t is list or t is tuple:
        return t([unwrap(v) for v in x])
    if isinstance(x, np.ndarray):
        raise _unsupported(x)
    return x


def _unwrap_kwargs(kwargs: dict) -> dict:
    return {k: unwrap(v) for k, v in kwargs.items()}


def wrap_result(r: Any, dev: int) -> Any:
    """NumPy results as device arrays (scalars as 0-d arrays, as CuPy returns them)."""
    t = type(r)
    if t is np.ndarray:
        return wrap(r, dev)
    if isinstance(r, np.generic):
        return wrap(np.asarray(r), dev)
    if t is tuple or t is list:
        return t([wrap_result(v, dev) for v in r])
    return r


def _result(r: Any, out: Any, dev: int) -> Any:
    if out is not None and type(out) is ndarray and r is out._a:
        return out                                  # out= returns the array given, as CuPy does
    return wrap_result(r, dev)


def device_function(fn: Callable, name: str, *, reads: bool = False) -> Callable:
    """``fn`` (a NumPy function) on device arrays; ``reads``: it reads a size back from the device."""
    def call(*args: Any, **kwargs: Any) -> Any:
        if _graph.capturing():
            return _graph.call(name, lambda: _run_device(fn, args, kwargs, reads, name), kwargs.get("out"),
                               _fresh)
        return _run_device(fn, args, kwargs, reads, name)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"cupy.{name} (emulated: numpy.{name} on the emulator's memory)"
    return call


def _fresh(r: Any) -> bool:
    """Whether a result owns new memory (an allocation) rather than viewing an array's."""
    return type(r) is ndarray and r._a.base is None and r._a.size > 0


def _run_device(fn: Callable, args: tuple, kwargs: dict, reads: bool, name: str) -> Any:
    dev = current_device()
    out = kwargs.get("out")
    with np.errstate(all="ignore"):               # CuPy never warns about NaN, inf or 0 / 0
        r = fn(*unwrap(args), **_unwrap_kwargs(kwargs))
    if reads:
        record_host_read(f"cupy.{name} (its result's size is read from the device)")
    return _result(r, out, dev)


class Ufunc:
    """A NumPy ufunc as CuPy's: operands are device arrays or scalars; lists and host arrays raise."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def _operands(self, args: tuple) -> list:
        ops = []
        for x in args:
            if type(x) is ndarray:
                if device_total > 1:
                    _check_device(x)
                ops.append(x._a)
            elif isinstance(x, (np.ndarray, list, tuple)):
                raise _unsupported(x)
            else:
                ops.append(x)
        return ops

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _graph.capturing():
            return _graph.call(self.__name__, lambda: self._run(args, kwargs), kwargs.get("out"), _fresh)
        return self._run(args, kwargs)

    def _run(self, args: tuple, kwargs: dict) -> Any:
        dev = current_device()
        out = kwargs.get("out")
        with np.errstate(all="ignore"):           # CuPy never warns about NaN, inf or 0 / 0
            r = self._ufunc(*self._operands(args), **_unwrap_kwargs(kwargs))
        return _result(r, out, dev)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ufunc, name)
        if callable(attr):                           # reduce, accumulate, outer, at
            return device_function(attr, f"{self.__name__}.{name}")
        return attr

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}' (emulated)>"


_UFUNCS: dict[np.ufunc, Ufunc] = {}


def ufunc(u: np.ufunc) -> Ufunc:
    w = _UFUNCS.get(u)
    if w is None:
        w = _UFUNCS[u] = Ufunc(u)
    return w


# ----------------------------------------------------------------------------- indexing


def _index(a: np.ndarray, key: Any) -> tuple:
    """An index for NumPy memory: device and host index arrays unwrapped, integer arrays wrapped
    around (CuPy's rule for out-of-bounds indices), boolean masks counted as a read of their size."""
    items = key if type(key) is tuple else (key,)
    arrays = [None] * len(items)
    consumed = 0
    for i, k in enumerate(items):
        if type(k) is ndarray:
            if device_total > 1:
                _check_device(k)
            arrays[i] = k._a
        elif isinstance(k, np.ndarray):
            arrays[i] = k                             # host index arrays are copied over, as CuPy does
        elif isinstance(k, list):
            arrays[i] = np.asarray(k)
        if arrays[i] is not None:
            consumed += arrays[i].ndim if arrays[i].dtype == np.bool_ else 1
        elif k is not None and k is not Ellipsis:
            consumed += 1
    if all(x is None for x in arrays):
        return key
    out = list(items)
    axis = 0
    for i, k in enumerate(items):
        arr = arrays[i]
        if arr is not None:
            if arr.dtype == np.bool_:
                record_host_read(f"boolean-mask indexing of a {a.shape} array (the count of True is read)")
                axis += arr.ndim
                out[i] = arr
                continue
            if arr.dtype.kind in "iu" and axis < a.ndim and a.shape[axis] > 0:
                arr = np.mod(arr, a.shape[axis])
            out[i] = arr
            axis += 1
        elif k is Ellipsis:
            axis += a.ndim - consumed
        elif k is not None:
            axis += 1
    return tuple(out)


# ----------------------------------------------------------------------------- the array

_HOST_ONLY = {"ctypes", "__array_interface__", "__array_struct__", "tofile", "tobytes", "dump", "dumps",
              "__buffer__"}
KDL_CUDA = 2                          # DLPack's device type for CUDA memory (dlpack.h: DLDeviceType)


class DeviceCapsule:
    """What an emulated array's ``__dlpack__`` gives: a stand-in for a DLPack capsule of device memory.

    Only the emulator's ``cupy.from_dlpack`` reads it. It is not a PyCapsule: NumPy or PyTorch
    would take a real capsule of the host buffer for host (or real GPU) memory and read the
    device data unseen, so they refuse this, as they cannot read a real GPU's memory either.
    """

    __slots__ = ("array",)

    def __init__(self, array: ndarray) -> None:
        self.array = array


class _Allocations:
    """The device memory whose address left the emulator (``a.data.ptr``), so that code handed only a
    pointer (the NCCL stand-in) can check it, as the GPU would fault on a bad one."""

    def __init__(self) -> None:
        self._live: dict[int, tuple[weakref.ref, int, int, int]] = {}   # id -> (owner, start, nbytes, dev)

    def note(self, a: np.ndarray, dev: int) -> None:
        owner = a
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        key = id(owner)
        if key not in self._live:
            self._live[key] = (weakref.ref(owner, lambda _, key=key: self._live.pop(key, None)),
                               owner.ctypes.data, owner.nbytes, dev)

    def find(self, ptr: int, nbytes: int) -> int | None:
        """The device of the live allocation holding bytes [ptr, ptr + nbytes), or None."""
        for _, start, size, dev in list(self._live.values()):
            if start <= ptr and ptr + nbytes <= start + size:
                return dev
        return None


_allocations = _Allocations()


def device_memory(ptr: int, nbytes: int, dtype: Any) -> tuple[int, np.ndarray] | None:
    """(device, the memory at ``ptr`` as ``nbytes // itemsize`` elements of ``dtype``) if those bytes lie
    in one emulated device array whose address was taken; None if they do not."""
    dev = _allocations.find(ptr, nbytes)
    if dev is None:
        return None
    buffer = (ctypes.c_char * nbytes).from_address(ptr)
    return dev, np.frombuffer(buffer, dtype=dtype)


class MemoryPointer:
    """``a.data``: the address of an array's first element, and its device."""

    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr: int, device_id: int) -> None:
        self.ptr, self.device_id = ptr, device_id

    @property
    def device(self) -> Any:
        from .runtime import Device  # noqa: PLC0415 - runtime imports this module

        return Device(self.device_id)


class ndarray:  # noqa: N801 - CuPy's name
    """An array on an emulated CUDA device (see the module docstring)."""

    __slots__ = ("_a", "_dev", "__weakref__")
    __hash__ = None  # type: ignore[assignment]
    __array_priority__ = 100.0                      # CuPy's

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None,
                 order: str = "C") -> None:
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CUDA emulator's ndarray() takes shape, dtype and order only")
        self._a = garbage(np.empty(shape, dtype, order))
        self._dev = current_device()

    # -- attributes
    @property
    def shape(self) -> tuple:
        return self._a.shape

    @shape.setter
    def shape(self, value: Any) -> None:
        self._a.shape = value

    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: wrap(self._a.T, self._dev))
    mT = property(lambda self: wrap(self._a.mT, self._dev))
    real = property(lambda self: wrap(self._a.real, self._dev))
    imag = property(lambda self: wrap(self._a.imag, self._dev))
    base = property(lambda self: None if self._a.base is None else wrap(self._a.base, self._dev))

    @property
    def data(self) -> MemoryPointer:
        _allocations.note(self._a, self._dev)
        return MemoryPointer(self._a.ctypes.data, self._dev)

    @property
    def device(self) -> Any:
        return self.data.device

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "data": (self._a.ctypes.data, False),
                "version": 3, "strides": None if self._a.flags.c_contiguous else self._a.strides}

    def __getattr__(self, name: str) -> Any:
        if name in _HOST_ONLY or name.startswith("__"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r} (the CUDA emulator keeps "
                                 "device memory from the host; use .get())")
        attr = getattr(self._a, name)
        if callable(attr):
            return device_function(attr, f"ndarray.{name}", reads=name == "nonzero")
        return wrap_result(attr, self._dev)

    # -- reads by the host
    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> np.ndarray:
        """A copy of the array in host memory (a counted host read)."""
        return self._host_copy("get()", order, out)

    def _host_copy(self, kind: str, order: str, out: Any) -> np.ndarray:
        _read(kind, self)
        host = np.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Copy a host array into this one (host to device)."""
        self._a[...] = arr

    def item(self) -> Any:
        if self._a.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        _read("item()", self)
        return self._a.item()

    def __bool__(self) -> bool:
        if self._a.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous. Returning False, but in future "
                          "this will result in an error. Use `array.size > 0` to check that an array is not "
                          "empty.", DeprecationWarning, stacklevel=2)
            return False
        if self._a.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous. Use "
                             "a.any() or a.all()")
        _read("bool()", self)
        return bool(self._a)

    def __format__(self, spec: str) -> str:
        _read("format()", self)
        return format(self._a, spec)

    def __reduce__(self) -> tuple:
        return _rebuild, (self.get(), self._dev)

    # -- DLPack, as CuPy's: the array is on a CUDA device; the emulator's cupy.from_dlpack shares it
    def __dlpack_device__(self) -> tuple[int, int]:
        return (KDL_CUDA, self._dev)

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: bool | None = None) -> DeviceCapsule:
        if dl_device is not None and tuple(dl_device) != (KDL_CUDA, self._dev):
            raise BufferError(f"__dlpack__: the array is on CUDA device {self._dev} (DLPack device "
                              f"{(KDL_CUDA, self._dev)}); the CUDA emulator exports no copy to "
                              f"{tuple(dl_device)}: copy it with .get()")
        return DeviceCapsule(wrap(self._a.copy(), self._dev) if copy else self)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    # -- containers
    def __len__(self) -> int:
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    def __iter__(self) -> Iterator[ndarray]:
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key: Any) -> ndarray:
        return wrap_result(self._a[_index(self._a, key)], self._dev)

    def __setitem__(self, key: Any, value: Any) -> None:
        if type(value) is ndarray:
            value = unwrap(value)
        elif isinstance(value, list):
            value = np.asarray(value)
        if _graph.capturing():
            _graph.record("ndarray.__setitem__", lambda: self._a.__setitem__(_index(self._a, key), value))
            return
        self._a[_index(self._a, key)] = value

    def __copy__(self) -> ndarray:
        return wrap(self._a.copy(), self._dev)

    def __deepcopy__(self, memo: dict) -> ndarray:
        return wrap(self._a.copy(), self._dev)

    # -- NumPy's protocols: numpy.exp(a), numpy.concatenate([a, b]) run "on the device", as in CuPy
    def __array_ufunc__(self, uf: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if "out" in kwargs:
            (kwargs["out"],) = kwargs["out"]
        if uf.__name__ in ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal"):
            inputs = tuple(x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x for x in inputs)
        target = ufunc(uf)
        return (target if method == "__call__" else getattr(target, method))(*inputs, **kwargs)

    def __array_function__(self, func: Callable, types_: Any, args: tuple, kwargs: dict) -> Any:
        from .namespace import cupy  # noqa: PLC0415 - namespace imports this module

        module: Any = cupy
        for part in func.__module__.split(".")[1:]:
            module = getattr(module, part, None)
            if module is None:
                return NotImplemented
        own = getattr(module, func.__name__, None)
        return NotImplemented if own is None else own(*args, **kwargs)


ndarray.__module__ = "cupy"          # as CuPy's: code that tells device arrays by their module sees one


def _rebuild(host: np.ndarray, dev: int) -> ndarray:
    return wrap(np.array(host), dev)


def garbage(a: np.ndarray) -> np.ndarray:
    """Fill fresh "uninitialised" memory with NaN (floats), -1 (signed) or the largest value (unsigned)."""
    kind = a.dtype.kind
    if kind in "fc":
        a.fill(np.nan)
    elif kind == "i":
        a.fill(-1)
    elif kind == "u":
        a.fill(np.iinfo(a.dtype).max)
    return a


def _defers_to(other: Any) -> bool:
    """CuPy's operators leave the operation to an operand of higher ``__array_priority__`` (its reflected
    operator runs), as gg.jit's tracers have."""
    priority = getattr(other, "__array_priority__", 0.0)
    return isinstance(priority, float) and priority > ndarray.__array_priority__


def _operator(name: str, uf: np.ufunc, reflected: bool = False, inplace: bool = False) -> Callable:
    target = ufunc(uf)
    if inplace:
        def method(self: ndarray, other: Any) -> ndarray:
            target(self, other, out=self)
            return self
    elif reflected:
        def method(self: ndarray, other: Any) -> Any:
            return target(other, self)
    else:
        def method(self: ndarray, other: Any) -> Any:
            if _defers_to(other):
                return NotImplemented
            return target(self, other)
    method.__name__ = name
    return method


_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
           "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "matmul": np.matmul,
           "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor, "lshift": np.left_shift,
           "rshift": np.right_shift}
for _name, _uf in _BINARY.items():
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__", _uf))
    setattr(ndarray, f"__r{_name}__", _operator(f"__r{_name}__", _uf, reflected=True))
    setattr(ndarray, f"__i{_name}__", _operator(f"__i{_name}__", _uf, inplace=True))
for _name, _uf in {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
                   "eq": np.equal, "ne": np.not_equal}.items():
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__", _uf))
for _name, _uf in {"neg": np.negative, "pos": np.positive, "abs": np.absolute, "invert": np.invert}.items():
    setattr(ndarray, f"__{_name}__", (lambda u: lambda self: ufunc(u)(self))(_uf))
ndarray.__divmod__ = lambda self, other: ufunc(np.divmod)(self, other)  # type: ignore[attr-defined]


def _host_conversion(kind: str, convert: Callable[[np.ndarray], Any]) -> Callable:
    def method(self: ndarray) -> Any:
        _read(kind, self)
        return convert(self._a)
    method.__name__ = kind.rstrip("()")
    return method


for _name, _kind, _convert in (("tolist", "tolist()", np.ndarray.tolist), ("__float__", "float()", float),
                               ("__int__", "int()", int), ("__complex__", "complex()", complex),
                               ("__repr__", "repr()", repr), ("__str__", "str()", str)):
    setattr(ndarray, _name, _host_conversion(_kind, _convert))     # each a counted host read
