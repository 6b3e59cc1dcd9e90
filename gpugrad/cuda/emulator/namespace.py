"""The emulated ``cupy`` and ``cupyx`` modules.

``cupy.<name>`` is NumPy's function of that name run on device arrays (array.device_function;
ufuncs as array.Ufunc), looked up on first use, so any op NumPy has works without a list
here; NumPy's submodules (linalg, fft) are wrapped the same way, and NumPy's types and
constants pass through. What differs from a NumPy call is written out below: the host
copies (asarray, array, asnumpy), uninitialised memory (empty), the calls that read a size
back from the device (nonzero, unique...), ``cupy.random``, ``cupy.cuda`` (runtime.py) and
the kernels (RawModule, RawKernel).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numpy as np

from . import array, graph, nccl, runtime
from .array import ndarray, unwrap, wrap

# NumPy functions that CuPy runs with a device-to-host read of a size or a count
_READS_BACK = ("nonzero", "argwhere", "flatnonzero", "unique", "compress", "extract", "bincount",
               "trim_zeros", "histogram")


class Namespace(types.ModuleType):
    """A module whose missing attributes are the NumPy ones, wrapped to run on device arrays."""

    def __init__(self, name: str, source: types.ModuleType) -> None:
        super().__init__(name)
        self._source = source

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            obj = getattr(self._source, name)
        except AttributeError:
            raise AttributeError(f"module {self.__name__!r} (emulated) has no attribute {name!r}") from None
        value = _adapt(obj, name, self.__name__)
        setattr(self, name, value)                       # looked up once
        return value


def _adapt(obj: Any, name: str, module: str) -> Any:
    if isinstance(obj, np.ufunc):
        return array.ufunc(obj)
    if isinstance(obj, types.ModuleType):
        return Namespace(f"{module}.{name}", obj)
    if isinstance(obj, type) or not callable(obj):
        return obj                                       # dtypes and other classes, constants
    return array.device_function(obj, name, reads=name in _READS_BACK)


# ----------------------------------------------------------------------------- host <-> device

def _to_device(x: Any, dtype: Any, copy: bool, **kwargs: Any) -> ndarray:
    if graph.capturing() and (copy or type(x) is not ndarray):
        raise graph.refuse("a copy to a new device array (cupy.asarray / cupy.array)")
    if type(x) is ndarray:                   # another device's array is copied over, as CuPy does
        copy = copy or x._dev != array.current_device()
        a = x._a
        return wrap(np.array(a, dtype=dtype, copy=True, **kwargs) if copy else np.asarray(a, dtype=dtype,
                                                                                           **kwargs))
    if hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray):
        raise TypeError(f"the CUDA emulator cannot read {type(x).__name__} (another library's device array)")
    # host data: a copy in "device" memory, never a view of the host array
    return wrap(np.array(unwrap_host(x), dtype=dtype, copy=True, **kwargs))


def unwrap_host(x: Any) -> Any:
    """Host data for a host-to-device copy: lists of device arrays are unwrapped too."""
    if type(x) is ndarray:
        return x._a
    if type(x) in (list, tuple):
        return type(x)([unwrap_host(v) for v in x])
    return x


def asarray(a: Any, dtype: Any = None, order: Any = None, *, blocking: bool = False) -> ndarray:
    """cupy.asarray: the device array itself, or a host value copied to the device."""
    kwargs = {"order": order} if order is not None else {}
    return _to_device(a, dtype, False, **kwargs)


def array_(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", subok: bool = False,
           ndmin: int = 0, *, blocking: bool = False) -> ndarray:
    """cupy.array: a copy on the device (of a device array or of host data)."""
    out = _to_device(obj, dtype, bool(copy), order=order)
    if ndmin > out.ndim:
        out = wrap(out._a.reshape((1,) * (ndmin - out.ndim) + out.shape), out._dev)
    return out


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> Any:
    """cupy.asnumpy: a host copy of a device array (a counted read); host data as a NumPy array."""
    if type(a) is ndarray:
        return a._host_copy("cupy.asnumpy", order, out)
    return np.asarray(a, order=order)


def from_dlpack(x: Any, *, device: Any = None, copy: bool | None = None) -> ndarray:
    """cupy.from_dlpack: an emulated array, or a producer that exports one (a gpugrad tensor), shared.

    Other producers' capsules hold memory the emulator does not own (the host's, or a real
    GPU's), so they are refused rather than read as device memory.
    """
    if type(x) is ndarray:
        source = x.__dlpack__(copy=copy).array
    elif hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        capsule = x.__dlpack__() if copy is None else x.__dlpack__(copy=copy)
        if type(capsule) is not array.DeviceCapsule:
            raise TypeError(f"cupy.from_dlpack: the CUDA emulator cannot import a {type(x).__module__}."
                            f"{type(x).__qualname__} (DLPack device {x.__dlpack_device__()}): its memory is "
                            "not the emulator's; copy host data to the device with cupy.asarray")
        source = capsule.array
    else:
        raise TypeError(f"cupy.from_dlpack: a {type(x).__name__} does not implement __dlpack__ / "
                        "__dlpack_device__")
    if device is not None and tuple(device) != source.__dlpack_device__():
        raise BufferError(f"cupy.from_dlpack: the array is on DLPack device {source.__dlpack_device__()}, "
                          f"not {tuple(device)}; the CUDA emulator copies between devices with cupy.asarray")
    return wrap(source._a, source._dev)


def get_array_module(*args: Any) -> Any:
    return cupy if any(type(a) is ndarray for a in args) else np


def _uninitialised(fn: Callable) -> Callable:
    def make(*args: Any, **kwargs: Any) -> ndarray:
        if graph.capturing():
            raise graph.refuse(f"cupy.{fn.__name__} allocated a new array")
        return wrap(array.garbage(fn(*unwrap(args), **kwargs)))
    make.__name__ = fn.__name__
    return make


def _not_emulated(name: str) -> Callable:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"cupy.{name} is not emulated: the CUDA emulator runs RawModule and "
                                  "RawKernel sources (kernels/*.cu) through their g++ host builds")
    return refuse


# ----------------------------------------------------------------------------- random

class RandomState:
    """cupy.random.RandomState on a NumPy generator (other numbers than CuPy's cuRAND draws)."""

    def __init__(self, seed: Any = None) -> None:
        self.seed(seed)

    def seed(self, seed: Any = None) -> None:
        self._rng = np.random.default_rng(seed)

    def _out(self, values: Any, dtype: Any) -> ndarray:
        return wrap(np.asarray(values, dtype=dtype))

    def random_sample(self, size: Any = None, dtype: Any = float) -> ndarray:
        return self._out(self._rng.random(size, dtype=np.dtype(dtype).type), dtype)

    random = random_sample

    def rand(self, *size: int, dtype: Any = float) -> ndarray:
        return self.random_sample(size, dtype)

    def standard_normal(self, size: Any = None, dtype: Any = float) -> ndarray:
        return self._out(self._rng.standard_normal(size, dtype=np.dtype(dtype).type), dtype)

    def randn(self, *size: int, dtype: Any = float) -> ndarray:
        return self.standard_normal(size, dtype)

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None, dtype: Any = float) -> ndarray:
        return self._out(self._rng.normal(loc, scale, size), dtype)

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None, dtype: Any = float) -> ndarray:
        return self._out(self._rng.uniform(low, high, size), dtype)

    def randint(self, low: int, high: int | None = None, size: Any = None, dtype: Any = int) -> ndarray:
        return self._out(self._rng.integers(low, high, size), dtype)

    def permutation(self, n: Any) -> ndarray:
        return wrap(self._rng.permutation(unwrap(n)))


class _Random(types.ModuleType):
    """cupy.random: module-level draws from one RandomState per device."""

    RandomState = RandomState

    def __init__(self) -> None:
        super().__init__("cupy.random")
        self._states: dict[int, RandomState] = {}

    def get_random_state(self) -> RandomState:
        dev = array.current_device()
        state = self._states.get(dev)
        if state is None:
            state = self._states[dev] = RandomState()
        return state

    def seed(self, seed: Any = None) -> None:
        self.get_random_state().seed(seed)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get_random_state(), name)


# ----------------------------------------------------------------------------- cupyx

def _scatter(uf: np.ufunc, dtypes: str) -> Callable:
    """cupyx.scatter_<op>: with an integer index array, only the dtypes CUDA has atomics for (CuPy's
    rule: no int64, int8, int16, bool; scatter_max and scatter_min no float16 either)."""
    allowed = [np.dtype(c) for c in dtypes]

    def scatter(a: ndarray, slices: Any, value: Any) -> None:
        target = unwrap(a)
        index = array._index(target, slices)
        items = index if type(index) is tuple else (index,)
        arrays = [k for k in items if isinstance(k, np.ndarray)]
        if arrays and not (len(items) == 1 and arrays[0].dtype == np.bool_) and target.dtype not in allowed:
            raise TypeError(f"cupy.{uf.__name__}.at only supports {', '.join(str(d) for d in allowed)}, as "
                            "data type")
        if graph.capturing():
            graph.record(f"cupyx.scatter_{uf.__name__}", lambda: uf.at(target, index, unwrap(value)))
            return
        uf.at(target, index, unwrap(value))
    scatter.__name__ = f"scatter_{uf.__name__}"
    return scatter


cupyx = types.ModuleType("cupyx")
cupyx.__doc__ = "The emulated cupyx: the scatter functions gpugrad uses."
cupyx.scatter_add = _scatter(np.add, "iefdIQ")  # type: ignore[attr-defined]
cupyx.scatter_max = _scatter(np.maximum, "ifdIQ")  # type: ignore[attr-defined]
cupyx.scatter_min = _scatter(np.minimum, "ifdIQ")  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- cupy

cupy = Namespace("cupy", np)
cupy.__doc__ = "The CUDA emulator's cupy (gpugrad.cuda.emulator): NumPy on the CPU, with CuPy's rules."
_cuda = types.ModuleType("cupy.cuda")
for _name in ("Device", "Stream", "Event", "MemoryPool", "get_current_stream", "get_elapsed_time", "runtime",
              "is_available", "compiler"):
    setattr(_cuda, _name, getattr(runtime, _name))
_cuda.Graph = graph.Graph  # type: ignore[attr-defined]
_cuda.MemoryPointer = array.MemoryPointer  # type: ignore[attr-defined]
_cuda.nccl = nccl  # type: ignore[attr-defined]
_POOL = runtime.MemoryPool()

cupy.__dict__.update({
    "__version__": f"emulated (NumPy {np.__version__})",
    "ndarray": ndarray, "asarray": asarray, "array": array_, "asanyarray": asarray, "asnumpy": asnumpy,
    "get_array_module": get_array_module, "from_dlpack": from_dlpack, "empty": _uninitialised(np.empty),
    "empty_like": _uninitialised(np.empty_like), "cuda": _cuda, "random": _Random(),
    "RawModule": runtime.RawModule, "RawKernel": runtime.RawKernel,
    "get_default_memory_pool": lambda: _POOL, "get_default_pinned_memory_pool": lambda: _POOL,
    "ElementwiseKernel": _not_emulated("ElementwiseKernel"),
    "ReductionKernel": _not_emulated("ReductionKernel"),
    "fuse": lambda *args, **kwargs: (args[0] if args and callable(args[0]) else (lambda f: f)),
})
