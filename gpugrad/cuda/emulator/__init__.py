"""The CUDA emulator: a CPU stand-in for CuPy, so the CUDA code path runs without a GPU.

With the environment variable ``GPUGRAD_EMULATE_CUDA=1`` (``=N`` for N devices) set before
the first CUDA tensor, gpugrad loads this module where it would load CuPy:
``gg.cuda.is_available()`` is True, ``"cuda"`` tensors hold emulated device arrays, every
op takes the CUDA path (the backend's CUDA namespace, device scopes, the fused kernels
through the same launch code and argument marshalling), and the kernels of kernels/*.cu
run as g++ builds of their CUDA source on the CPU (g++ is needed then). It is never
enabled unless the variable is set.

What it shows: that the CUDA path runs and gives the CPU's results; that nothing on it
converts device data to NumPy implicitly or mixes host and device arrays (both raise, as
in CuPy); how often the host reads from the device (``host_reads()``); that kernel
arguments match the kernels' C parameters. What it cannot show: timing, device memory,
concurrency (each kernel runs when it is launched), or anything about a real GPU's
compiler and hardware. docs/gpu.md says more.

    GPUGRAD_EMULATE_CUDA=1 python -m pytest          # the suite through the CUDA path

    from gpugrad.cuda import emulator
    with emulator.host_reads() as reads:
        loss.backward()
    assert reads == []                               # no device-to-host read in backward
"""

from __future__ import annotations

import os
from typing import Any

ENV = "GPUGRAD_EMULATE_CUDA"
MAX_DEVICES = 8
DEVICE_NAME = "gpugrad CUDA emulator (the CPU, not a GPU)"


def requested_devices() -> int:
    """How many devices GPUGRAD_EMULATE_CUDA asks for: 0 (unset, empty or "0") means no emulation."""
    value = os.environ.get(ENV, "").strip()
    if value in ("", "0"):
        return 0
    if not value.isdigit() or not 1 <= int(value) <= MAX_DEVICES:
        raise ValueError(f"{ENV}={value!r}: set it to 1 (or a number of emulated devices, at most "
                         f"{MAX_DEVICES}), or unset it to use a real GPU")
    return int(value)


def load(devices: int) -> tuple[Any, Any]:
    """The emulated (cupy, cupyx) modules, with ``devices`` emulated devices."""
    from . import array, namespace  # noqa: PLC0415 - only when the emulator is asked for

    array.device_total = devices
    return namespace.cupy, namespace.cupyx


def host_reads() -> Any:
    """A context that records, in the list it yields, each device-to-host read and synchronisation.

    Only arrays of the emulator are watched; on a real GPU use a profiler.
    """
    from .array import host_reads as recorder  # noqa: PLC0415

    return recorder()


def host_read_count() -> int:
    """Device-to-host reads and synchronisations so far in this process (0 before the emulator loads)."""
    from . import array  # noqa: PLC0415

    return array.read_count


__all__ = ["ENV", "DEVICE_NAME", "requested_devices", "load", "host_reads", "host_read_count"]
