"""The emulated ``cupy.cuda``: devices, streams, events, the memory pool, and RawModule/RawKernel.

Work runs on the CPU as soon as it is launched, so streams and events only keep their
interface; synchronising is counted as a host read (array.record_host_read). There is no
timing (``get_elapsed_time`` raises), no device memory accounting (the pool's byte counts
raise); stream capture records launches into a graph (graph.py). RawModule and RawKernel
build their CUDA source for the CPU with g++ (host_build) and check every launch's arguments
against the kernel's parameters.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np

from . import DEVICE_NAME, array, graph, host_build

# A launch of (grid, block) runs as at most RUN_BLOCKS blocks of RUN_THREADS threads each: gpugrad's
# kernels are grid-stride loops, right for any configuration. The real launches' blocks (32 to 256
# threads) are run by tests/test_kernels_cpu.py (test_every_kernel_family_at_the_block_sizes_of_the_
# real_launches, and its CONFIGS with several threads through real barriers). Here shim.h starts a CPU
# thread per GPU thread per launch: measured on the loaded 2-core machine, one tanh_backward launch takes
# 0.37 ms with 1 thread a block, 7.6 ms with 32 and 36 ms with 256, and tests/test_cuda.py emulated took
# 30 s with 1 and over 9 minutes with 32, so the suite-wide setting stays at one thread.
RUN_BLOCKS, RUN_THREADS = 2, 1
_SMS = 1                                  # multiProcessorCount: grid-stride launches stay small
_launch_lock = threading.Lock()           # shim.h keeps blockDim and gridDim in globals


def _no_timing(what: str) -> RuntimeError:
    return RuntimeError(f"{what}: the CUDA emulator has no timing (it runs each kernel on the CPU when it is "
                        "launched); time on a real GPU")


class Device:
    """``cupy.cuda.Device(i)``: a context that makes device i current."""

    def __init__(self, device: Any = None) -> None:
        self.id = array.current_device() if device is None else int(device)
        if not 0 <= self.id < array.device_total:
            raise ValueError(f"Invalid device ID {self.id}: the CUDA emulator has {array.device_total} "
                             "device(s) (GPUGRAD_EMULATE_CUDA=N emulates N)")
        self._saved: list[int] = []

    def __enter__(self) -> Device:
        self._saved.append(array.current_device())
        array.set_current_device(self.id)
        return self

    def __exit__(self, *exc: object) -> None:
        array.set_current_device(self._saved.pop())

    def use(self) -> None:
        array.set_current_device(self.id)

    def synchronize(self) -> None:
        array.record_host_read(f"cuda.Device({self.id}).synchronize()")

    @property
    def compute_capability(self) -> str:
        return "90"

    def __int__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id} (emulated)>"


class _Runtime:
    """``cupy.cuda.runtime``."""

    CUDARuntimeError = RuntimeError

    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802 - CUDA's names
        return array.device_total

    @staticmethod
    def getDevice() -> int:  # noqa: N802
        return array.current_device()

    @staticmethod
    def setDevice(index: int) -> None:  # noqa: N802
        array.set_current_device(int(index))

    @staticmethod
    def getDeviceProperties(index: int) -> dict[str, Any]:  # noqa: N802
        Device(index)                                         # checks the index
        return {"name": DEVICE_NAME, "totalGlobalMem": 0, "multiProcessorCount": _SMS, "major": 9,
                "minor": 0, "clockRate": 0, "warpSize": 32, "maxThreadsPerBlock": 1024,
                "sharedMemPerBlock": 48 * 1024, "emulated": True}

    @staticmethod
    def runtimeGetVersion() -> int:  # noqa: N802
        return 0

    @staticmethod
    def driverGetVersion() -> int:  # noqa: N802
        return 0

    @staticmethod
    def deviceSynchronize() -> None:  # noqa: N802
        array.record_host_read("cuda.runtime.deviceSynchronize()")

    @staticmethod
    def deviceCanAccessPeer(device: int, peer: int) -> int:  # noqa: N802
        return 0

    @staticmethod
    def memGetInfo() -> tuple[int, int]:  # noqa: N802
        raise RuntimeError("cuda.runtime.memGetInfo: the CUDA emulator has no device memory")


runtime = _Runtime()


class Stream:
    """``cupy.cuda.Stream``: work is done when launched, so a stream only keeps its interface."""

    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False) -> None:
        self.ptr = 0 if null else id(self)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def use(self) -> Stream:
        return self

    def synchronize(self) -> None:
        array.record_host_read("cuda.Stream.synchronize()")

    @property
    def done(self) -> bool:
        return True

    def record(self, event: Event | None = None) -> Event:
        """An event at this point of the stream (the work before it is already done)."""
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Later work on this stream waits for ``event``: here it is already done."""

    def begin_capture(self, mode: Any = None) -> None:
        graph.begin()                          # launches are recorded until end_capture (graph.py)

    def end_capture(self) -> graph.Graph:
        return graph.end()

    def is_capturing(self) -> bool:
        return graph.capturing()


Stream.null = Stream(null=True)


def get_current_stream() -> Stream:
    return Stream.null


class Event:
    """``cupy.cuda.Event``: records nothing to time (see get_elapsed_time)."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        pass

    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        array.record_host_read("cuda.Event.synchronize()")

    @property
    def done(self) -> bool:
        return True


def get_elapsed_time(start: Event, end: Event) -> float:
    raise _no_timing("cuda.get_elapsed_time")


class MemoryPool:
    """``cupy.get_default_memory_pool()``: nothing to free, and no byte counts to give."""

    def free_all_blocks(self, stream: Any = None) -> None:
        pass

    def _no_memory(self, *args: Any) -> int:
        raise RuntimeError("the CUDA emulator has no device memory pool (arrays live in host memory): its "
                           "byte counts are only meaningful on a real GPU")

    used_bytes = total_bytes = free_bytes = n_free_blocks = get_limit = _no_memory

    def set_limit(self, size: Any = None, fraction: Any = None) -> None:
        pass


def is_available() -> bool:
    return True


# ----------------------------------------------------------------------------- kernels

_LINE = re.compile(r'#line\s+\d+\s+"([^"]+)"')


def _dims(value: Any, what: str) -> tuple[int, int, int]:
    dims = tuple(int(v) for v in (value if isinstance(value, tuple) else (value,)))
    if not 1 <= len(dims) <= 3 or any(d < 1 for d in dims):
        raise ValueError(f"invalid {what} {value!r}: 1 to 3 dimensions, each at least 1 "
                         "(CUDA: cudaErrorInvalidConfiguration)")
    return (dims + (1, 1))[:3]  # type: ignore[return-value]


class _Function:
    """A compiled kernel, launched like CuPy's: ``kernel(grid, block, args)``."""

    def __init__(self, kernel: host_build.HostKernel) -> None:
        self._kernel = kernel
        self.max_threads_per_block = 1024

    def __call__(self, grid: Any, block: Any, args: tuple, *, shared_mem: int = 0, stream: Any = None,
                 enable_cooperative_groups: bool = False) -> None:
        name = self._kernel.entry
        g, b = _dims(grid, "grid"), _dims(block, "block")
        if b[0] * b[1] * b[2] > 1024:
            raise ValueError(f"{name}: a block of {b} threads is over 1024 (cudaErrorInvalidConfiguration)")
        if g[1:] != (1, 1) or b[1:] != (1, 1):
            raise NotImplementedError(f"{name}: the CUDA emulator launches 1-d grids and blocks only")
        params = self._kernel.params
        marshalled = []
        for i, a in enumerate(args):
            kind = params[i][0] if i < len(params) else None
            if type(a) is array.ndarray:
                if a._dev != array.current_device():
                    raise ValueError(f"{name}: argument {i} is on device {a._dev}, the launch on device "
                                     f"{array.current_device()}")
                a = a._a
            elif isinstance(a, np.ndarray):
                if a.size != 1:
                    raise TypeError(f"You are trying to pass a numpy.ndarray of shape {a.shape} as a "
                                    "kernel parameter. Only numpy.ndarrays of size one can be passed by "
                                    "value. If you meant to pass a pointer to __global__ memory, you need "
                                    "to pass a cupy.ndarray instead.")
                if kind in host_build.POINTER_KINDS:
                    raise TypeError(f"{name}: argument {i} is a pointer, but got a numpy.ndarray (host "
                                    "memory): CuPy would pass its bytes by value; pass a cupy.ndarray")
            marshalled.append(a)
        if graph.capturing():                  # recorded with its arguments: pointers are baked in
            graph.record(name, lambda: self._run(g, b, marshalled))
            return
        self._run(g, b, marshalled)

    def _run(self, g: tuple, b: tuple, marshalled: list) -> None:
        with _launch_lock:
            self._kernel(min(g[0], RUN_BLOCKS), min(b[0], RUN_THREADS), tuple(marshalled))


class RawModule:
    """``cupy.RawModule(code=...)``: compiled on first use (compile() or get_function()), as CuPy's."""

    def __init__(self, *, code: str | None = None, path: str | None = None, options: tuple = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False,
                 enable_cooperative_groups: bool = False, name_expressions: Any = None,
                 jitify: bool = False) -> None:
        if code is None:
            raise ValueError("the CUDA emulator cannot run a cubin or PTX file (path=...); pass code=")
        if name_expressions:
            raise NotImplementedError('the CUDA emulator finds extern "C" kernels only (no name_expressions)')
        self.code, self.options = code, tuple(options)
        self._built: tuple[Any, tuple[str, ...]] | None = None
        self._functions: dict[str, _Function] = {}

    def _label(self) -> str:
        found = _LINE.search(self.code)
        return found.group(1) if found else "RawModule source"

    def compile(self, log_stream: Any = None) -> None:
        """Build the source for the CPU (once); raises host_build.CompileException with g++'s messages."""
        if self._built is None:
            self._built = host_build.build(self.code, self.options, name=self._label())

    def get_function(self, name: str) -> _Function:
        self.compile()
        fn = self._functions.get(name)
        if fn is None:
            lib, entries = self._built  # type: ignore[misc]
            if name not in entries:
                raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: no extern \"C\" kernel "
                                   f"{name!r} in {self._label()} (it has {', '.join(entries) or 'none'})")
            fn = self._functions[name] = _Function(host_build.HostKernel(lib, name))
        return fn


class RawKernel:
    """``cupy.RawKernel(code, name)``: one kernel of a source, compiled on first use."""

    def __init__(self, code: str, name: str, options: tuple = (), backend: str = "nvrtc",
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 jitify: bool = False) -> None:
        self.code, self.name, self.options = code, name, tuple(options)
        self._module = RawModule(code=code, options=options)

    def compile(self, log_stream: Any = None) -> None:
        self._module.get_function(self.name)

    def __call__(self, grid: Any, block: Any, args: tuple, **kwargs: Any) -> None:
        self._module.get_function(self.name)(grid, block, args, **kwargs)


class compiler:  # noqa: N801 - cupy.cuda.compiler
    CompileException = host_build.CompileException
