"""The array layer: which array library holds a tensor's data, and on which device.

NumPy serves the CPU. CuPy (the CUDA backend) is imported lazily, only when a
user asks for a CUDA device, so `import gpugrad` needs neither CuPy nor a GPU.
This module and gpugrad/cuda/ are the only places that may import cupy. With
GPUGRAD_EMULATE_CUDA=1 the CPU stand-in of gpugrad.cuda.emulator takes CuPy's place.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

_cupy: Any = None          # the cupy module once a CUDA device has been requested
_cupyx: Any = None         # and its cupyx
_cupy_error: str | None = None
emulated = False           # True when _cupy is gpugrad.cuda.emulator's stand-in (GPUGRAD_EMULATE_CUDA)
# gpugrad.cuda.checks.raise_pending while a check made on the device is unread: every read of
# device data by the host (to_numpy, host_scalar, moves to the CPU) calls it first
pending_device_checks: Any = None
cuda_active = False        # True once CuPy is loaded: until then every array is a NumPy array
multi_gpu = False          # more than one CUDA device: each op must make its operands' GPU current
_NO_SCOPE = contextlib.nullcontext()
logical_array_type: Any = None   # gpugrad.batched.LogicalArray: a batched tensor's data (shape, no values)


class Device:
    """A device: ``Device("cpu")``, ``Device("cuda")`` or ``Device("cuda:1")``."""

    __slots__ = ("type", "index")

    def __init__(self, spec: str | Device = "cpu", index: int | None = None) -> None:
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string like 'cpu' or 'cuda:0', got {spec!r}")
        kind, _, num = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {spec!r}; use 'cpu', 'cuda' or 'cuda:N'")
        if num:
            if not num.isdigit():
                raise ValueError(f"bad device index in {spec!r}; use 'cuda:N' with N >= 0")
            index = int(num)
        if kind == "cpu":
            if index not in (None, 0):
                raise ValueError(f"the cpu device has no index, got {spec!r}")
            index = None
        elif index is None:
            index = 0
        self.type, self.index = kind, index

    def __repr__(self) -> str:
        return f"device(type='{self.type}')" if self.index is None else \
            f"device(type='{self.type}', index={self.index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except (TypeError, ValueError):
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = Device("cpu")


def as_device(device: str | Device | None) -> Device:
    """Normalise a device spelling; None means the CPU."""
    if device is None:
        return CPU
    return device if isinstance(device, Device) else Device(device)


def _import_cupy() -> tuple[Any, Any, bool]:
    """(cupy, cupyx, emulated): the emulator's stand-ins when GPUGRAD_EMULATE_CUDA asks for them."""
    from .cuda import emulator  # noqa: PLC0415 - reads only the environment until it is asked for

    devices = emulator.requested_devices()
    if devices:
        return (*emulator.load(devices), True)
    import cupy  # noqa: PLC0415 - lazy by design
    import cupyx  # noqa: PLC0415
    return cupy, cupyx, False


def load_cupy() -> Any:
    """Import CuPy and check that a CUDA device is usable; raise RuntimeError saying why not."""
    global _cupy, _cupyx, _cupy_error, cuda_active, multi_gpu, emulated
    if _cupy is not None:
        return _cupy
    if _cupy_error is None:
        try:
            cupy, cupyx, is_emulated = _import_cupy()
            count = cupy.cuda.runtime.getDeviceCount()
            if count < 1:
                raise RuntimeError("the CUDA runtime reports 0 devices")
        except ValueError as e:                     # a bad GPUGRAD_EMULATE_CUDA
            _cupy_error = str(e)
        except ImportError as e:
            _cupy_error = (f"CuPy is not installed ({e}); install it with pip install 'gpugrad[cuda12]' "
                           "(or [cuda13] for CUDA 13 drivers)")
        except Exception as e:  # noqa: BLE001 - CUDARuntimeError, driver errors...
            _cupy_error = (f"CuPy is installed but cannot use a GPU: {type(e).__name__}: {e}; check the "
                           "NVIDIA driver (nvidia-smi) and that the CuPy build matches its CUDA version")
        else:
            _cupy, _cupyx, emulated = cupy, cupyx, is_emulated
            multi_gpu = count > 1
            cuda_active = True
            return cupy
    raise RuntimeError(f"no CUDA device was found: {_cupy_error}. Use device='cpu' to run on the CPU.")


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot be used (None when it can)."""
    try:
        load_cupy()
    except RuntimeError as err:
        return str(err)
    return None


def namespace(data: Any) -> Any:
    """The array module (numpy or cupy) that owns ``data``."""
    if _cupy is not None:
        if isinstance(data, _cupy.ndarray):
            return _cupy
        if type(data) is logical_array_type:     # a batched tensor's data names the module of its batch
            return data.xp
    return np


def device_of(data: Any) -> Device:
    if _cupy is not None and isinstance(data, _cupy.ndarray):
        return Device("cuda", data.device.id)
    return CPU


def common_namespace(op_name: str, datas: list[Any]) -> Any:
    """The one array module of an op's operands; a clear error if they live on different devices.

    This runs for every op once CuPy is loaded, so it only counts array types; device
    indices are compared only on a machine with several GPUs.
    """
    if _cupy is None:          # fast path: no CUDA array can exist yet
        return np
    on_gpu = on_host = 0
    for d in datas:
        if isinstance(d, _cupy.ndarray):
            on_gpu += 1
        elif isinstance(d, np.ndarray):
            on_host += 1
    if not on_gpu:
        return np
    if on_host or (multi_gpu and len({d.device.id for d in datas if isinstance(d, _cupy.ndarray)}) > 1):
        shown = ", ".join(f"{device_of(d)} {tuple(d.shape)}" for d in datas if hasattr(d, "shape"))
        raise RuntimeError(
            f"{op_name}: tensors on different devices ({shown}); move them to one device with .to(...)"
        )
    return _cupy


def device_scope(data: Any) -> Any:
    """A context that makes ``data``'s GPU the current CUDA device (CuPy works on the current one).

    With a single GPU it is always current, and the context does nothing.
    """
    if multi_gpu and isinstance(data, _cupy.ndarray):
        return _cupy.cuda.Device(data.device.id)
    return _NO_SCOPE


def to_device(data: Any, device: Device) -> Any:
    """Copy an array to ``device`` (no copy when it is already there)."""
    if device.type == "cpu":
        if namespace(data) is np:
            return data
        return to_numpy(data)
    cp = load_cupy()
    count = cp.cuda.runtime.getDeviceCount()
    if device.index >= count:
        raise RuntimeError(f"device {device} does not exist: there are {count} CUDA device(s)")
    if isinstance(data, cp.ndarray) and data.device.id == device.index:
        return data
    with cp.cuda.Device(device.index):
        return cp.asarray(data)


def to_numpy(data: Any) -> np.ndarray:
    """The array in host memory (a copy from a GPU; raises first what a device check found)."""
    if _cupy is not None and isinstance(data, _cupy.ndarray):
        if pending_device_checks is not None:
            pending_device_checks()
        return data.get()
    return np.asarray(data)


def host_scalar(data: Any) -> Any:
    """The one element of an array as a Python scalar (read from a GPU; device checks raise first)."""
    if pending_device_checks is not None and _cupy is not None and isinstance(data, _cupy.ndarray):
        pending_device_checks()
    return data.item()


def array_on(device: Device) -> Any:
    """The array module for creating arrays on ``device``."""
    return np if device.type == "cpu" else load_cupy()


def scatter_add(target: Any, index: tuple, values: Any) -> None:
    """target[index] += values, where repeated indices add up (unbuffered)."""
    if namespace(target) is np:
        np.add.at(target, index, values)
    elif target.dtype in _ATOMIC_ADD:
        _cupyx.scatter_add(target, index, values)
    elif target.dtype == np.int64:             # CUDA has no int64 atomicAdd: the same two's-complement sum
        _cupyx.scatter_add(target.view(np.uint64), index, _cupy.asarray(values, np.int64).view(np.uint64))
    else:                                      # int8, int16, uint8, uint16, bool: added in 32 bits, cut back
        wide = target.astype(np.uint32)
        _cupyx.scatter_add(wide, index, _cupy.asarray(values, target.dtype).astype(np.uint32))
        target[...] = wide.astype(target.dtype)          # the low bits: the sum NumPy wraps to (bool: any)


# the dtypes CuPy's scatter_add takes (CUDA's atomicAdd)
_ATOMIC_ADD = frozenset(np.dtype(c) for c in "iIQefd")
