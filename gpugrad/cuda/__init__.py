"""``gg.cuda``: is there a GPU, how many, and waiting for one (as ``torch.cuda``)."""

from __future__ import annotations

from typing import Any

from .. import backend


def is_available() -> bool:
    """True when CuPy is installed and at least one CUDA device is usable."""
    return backend.cuda_unavailable_reason() is None


def unavailable_reason() -> str | None:
    """Why CUDA cannot be used here (CuPy's own reason), or None when it can."""
    return backend.cuda_unavailable_reason()


def device_count() -> int:
    """The number of usable CUDA devices (0 without CuPy or a driver)."""
    if not is_available():
        return 0
    return int(backend.load_cupy().cuda.runtime.getDeviceCount())


def synchronize(device: Any = None) -> None:
    """Wait until all work queued on ``device`` (default: the current one) has finished."""
    cp = backend.load_cupy()
    if device is None:
        cp.cuda.Device().synchronize()
        return
    dev = backend.as_device(device)
    if dev.type != "cuda":
        raise ValueError(f"synchronize: {dev} is not a CUDA device")
    cp.cuda.Device(dev.index).synchronize()


def current_device() -> int:
    """The index of the current CUDA device."""
    return int(backend.load_cupy().cuda.Device().id)


__all__ = ["is_available", "unavailable_reason", "device_count", "synchronize", "current_device"]
