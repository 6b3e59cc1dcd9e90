"""Zero-copy exchange with other array libraries through DLPack (NumPy, PyTorch, JAX, CuPy).

``gg.from_dlpack(x)`` wraps any array that implements ``__dlpack__`` without copying it:
a CPU array becomes a NumPy-backed tensor (``numpy.from_dlpack``), a CUDA one a CuPy-backed
tensor (``cupy.from_dlpack``, which also orders the producer's stream before ours). The other
way, ``Tensor.__dlpack__`` hands out the tensor's own buffer, so ``torch.from_dlpack(t)``,
``torch.as_tensor(t)``, ``numpy.from_dlpack(t)``, ``jax.numpy.from_dlpack(t)`` and
``cupy.from_dlpack(t)`` share its memory (``torch.tensor(t)`` copies, as it always does).
"""

from __future__ import annotations

from typing import Any

from . import backend
from .tensor import Tensor

# DLPack device types (dlpack.h: DLDeviceType)
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_DEVICE_NAMES = {4: "OpenCL", 7: "Vulkan", 8: "Metal", 9: "VPI", 10: "ROCm", 11: "ROCm host",
                 12: "ExtDev", 14: "oneAPI", 15: "WebGPU", 16: "Hexagon", 17: "MAIA"}


def from_dlpack(x: Any, /, *, device: Any = None, copy: bool | None = None) -> Tensor:
    """A Tensor sharing ``x``'s memory (``x``: any array with ``__dlpack__``), as ``torch.from_dlpack``.

    ``device`` moves the result there (a copy when it differs); ``copy=True`` always copies,
    ``copy=False`` refuses to (the array API standard's meaning).
    """
    if isinstance(x, Tensor):
        data = x.data
    elif not hasattr(x, "__dlpack__") or not hasattr(x, "__dlpack_device__"):
        raise TypeError(f"from_dlpack: a {type(x).__module__}.{type(x).__qualname__} does not implement "
                        "__dlpack__ / __dlpack_device__; give an array from NumPy, PyTorch, JAX or CuPy, or "
                        "copy it with gg.tensor(x)")
    else:
        data = _import(x)
    target = backend.device_of(data) if device is None else backend.as_device(device)
    if target != backend.device_of(data):
        if copy is False:
            raise ValueError(f"from_dlpack: the array is on {backend.device_of(data)} and device={target} "
                             "asks for a copy, but copy=False forbids one")
        return Tensor._wrap(backend.to_device(data, target))
    return Tensor._wrap(data.copy() if copy else data)


def _import(x: Any) -> Any:
    """The NumPy or CuPy array that views ``x``'s buffer."""
    kind, _ = x.__dlpack_device__()
    what = f"from_dlpack: {type(x).__module__}.{type(x).__qualname__}"
    if kind in (KDL_CPU, KDL_CUDA_HOST):
        import numpy as np  # noqa: PLC0415
        module = np
    elif kind in (KDL_CUDA, KDL_CUDA_MANAGED):
        module = backend.load_cupy()            # a RuntimeError saying why when there is no usable GPU
    else:
        name = _DEVICE_NAMES.get(int(kind), f"DLPack device type {kind}")
        raise ValueError(f"{what} lives on a {name} device; gpugrad holds CPU and CUDA arrays: move it to "
                         "the CPU first")
    try:
        return module.from_dlpack(x)
    except (RuntimeError, TypeError, BufferError, ValueError) as err:   # requires grad, bfloat16...
        hint = "; convert it to a dtype NumPy has (e.g. in PyTorch: t.float())" if "dtype" in str(err) else ""
        raise type(err)(f"{what} cannot be shared through DLPack: {err}{hint}") from None


def export_dlpack(t: Tensor, stream: Any, max_version: Any, dl_device: Any, copy: bool | None) -> Any:
    """``Tensor.__dlpack__``: the data's own capsule, refused (as in PyTorch) while it requires grad."""
    if t.requires_grad:
        raise RuntimeError("__dlpack__: can't export a tensor that requires grad (the other library "
                           "would not see its gradients); use t.detach()")
    options = {"stream": stream, "max_version": max_version, "dl_device": dl_device, "copy": copy}
    return t.data.__dlpack__(**{k: v for k, v in options.items() if v is not None})


__all__ = ["from_dlpack"]
