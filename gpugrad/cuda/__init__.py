"""``gg.cuda``: everything CUDA-specific, in one package.

This module answers the device questions, as ``torch.cuda`` does: is there a GPU, how
many, which one, waiting for one. Beside it:

    gpugrad.cuda.kernels    the fused kernels: kernels/*.cu compiled by CuPy, launched, and the
                            fused VJPs and optimizer updates of the CUDA path
    gpugrad.cuda.checks     checks made on the device (out-of-range class indices), raised at the
                            next read by the host
    gpugrad.cuda.emulator   the CPU stand-in for CuPy behind GPUGRAD_EMULATE_CUDA=1

Nothing here imports CuPy until a CUDA device is asked for.
"""

from __future__ import annotations

from typing import Any

from .. import backend


def is_available() -> bool:
    """True when CuPy is installed and at least one CUDA device is usable (or the emulator is on)."""
    return backend.cuda_unavailable_reason() is None


def unavailable_reason() -> str | None:
    """Why CUDA cannot be used here (CuPy's own reason), or None when it can."""
    return backend.cuda_unavailable_reason()


def is_emulated() -> bool:
    """True when "cuda" is gpugrad's CPU emulator (GPUGRAD_EMULATE_CUDA), not a GPU."""
    return is_available() and backend.emulated


def device_count() -> int:
    """The number of usable CUDA devices (0 without CuPy or a driver)."""
    if not is_available():
        return 0
    return int(backend.load_cupy().cuda.runtime.getDeviceCount())


def get_device_name(device: Any = None) -> str:
    """The name of a CUDA device (default: the current one); the emulator says it is the emulator."""
    cp = backend.load_cupy()
    index = current_device() if device is None else _index("get_device_name", device)
    name = cp.cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def synchronize(device: Any = None) -> None:
    """Wait until all work queued on ``device`` (default: the current one) has finished."""
    cp = backend.load_cupy()
    if device is None:
        cp.cuda.Device().synchronize()
        return
    cp.cuda.Device(_index("synchronize", device)).synchronize()


def current_device() -> int:
    """The index of the current CUDA device."""
    return int(backend.load_cupy().cuda.Device().id)


def _index(op: str, device: Any) -> int:
    if isinstance(device, int):
        return device
    dev = backend.as_device(device)
    if dev.type != "cuda":
        raise ValueError(f"{op}: {dev} is not a CUDA device")
    return dev.index


__all__ = ["is_available", "unavailable_reason", "is_emulated", "device_count", "get_device_name",
           "synchronize", "current_device"]
