"""The emulated ``cupy.cuda.nccl``: CuPy's NCCL bindings for a job of one process on one device.

The names, constants and call signatures are CuPy's (``NcclCommunicator(ndev, commId, rank)``,
``allReduce(sendbuf, recvbuf, count, datatype, op, stream)`` on device pointers...). With one
rank every collective's result is that rank's data, so each call checks its arguments as NCCL
would and copies ``count`` elements from the send buffer to the receive buffer (nothing when
they are the same memory). The pointers must lie, with all ``count`` elements, in one live
emulated device array on the communicator's device: a wrong count, a host pointer, freed
memory or another device's memory raise ``NcclError``, where a GPU would fault or corrupt.
A communicator of more than one rank is refused: the emulator runs one process.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import array
from .runtime import Device

available = True
NCCL_UNIQUE_ID_BYTES = 128
_VERSION = 22105                                  # reported as NCCL 2.21.5, the API emulated

NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG = 0, 1, 2, 3, 4
NCCL_INT8 = NCCL_CHAR = 0
NCCL_UINT8 = 1
NCCL_INT32 = NCCL_INT = 2
NCCL_UINT32 = 3
NCCL_INT64 = 4
NCCL_UINT64 = 5
NCCL_FLOAT16 = NCCL_HALF = 6
NCCL_FLOAT32 = NCCL_FLOAT = 7
NCCL_FLOAT64 = NCCL_DOUBLE = 8
NCCL_BFLOAT16 = 9

_ITEMSIZE = {NCCL_INT8: 1, NCCL_UINT8: 1, NCCL_INT32: 4, NCCL_UINT32: 4, NCCL_INT64: 8, NCCL_UINT64: 8,
             NCCL_FLOAT16: 2, NCCL_FLOAT32: 4, NCCL_FLOAT64: 8, NCCL_BFLOAT16: 2}
_OPS = (NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG)

# ncclResult_t, with the names CuPy's NcclError gives them (NCCL 2)
_SUCCESS, _UNHANDLED_CUDA_ERROR, _INVALID_ARGUMENT, _INVALID_USAGE = 0, 1, 4, 5
_ERRORS = {1: ("NCCL_ERROR_UNHANDLED_CUDA_ERROR", "unhandled cuda error"),
           2: ("NCCL_ERROR_SYSTEM_ERROR", "unhandled system error"),
           3: ("NCCL_ERROR_INTERNAL_ERROR", "internal error"),
           4: ("NCCL_ERROR_INVALID_ARGUMENT", "invalid argument"),
           5: ("NCCL_ERROR_INVALID_USAGE", "invalid usage")}


class NcclError(RuntimeError):
    """CuPy's NCCL error: the status's name and text, then what the emulator found wrong."""

    def __init__(self, status: int, detail: str = "") -> None:
        self.status = status
        name, text = _ERRORS[status]
        super().__init__(f"{name}: {text}" + (f" ({detail}; the CUDA emulator's NCCL)" if detail else ""))

    def __reduce__(self) -> tuple:
        return type(self), (self.status,)


def get_version() -> int:
    return _VERSION


def get_build_version() -> int:
    return _VERSION


def get_unique_id() -> tuple[int, ...]:
    """128 signed bytes, as CuPy returns ncclUniqueId."""
    return tuple(int(b) for b in np.frombuffer(os.urandom(NCCL_UNIQUE_ID_BYTES), dtype=np.int8))


_group_depth = 0


def groupStart() -> None:  # noqa: N802 - CuPy's names
    global _group_depth
    _group_depth += 1


def groupEnd() -> None:  # noqa: N802
    global _group_depth
    if _group_depth == 0:
        raise NcclError(_INVALID_USAGE, "groupEnd() without a groupStart()")
    _group_depth -= 1


class NcclCommunicator:
    """One rank's NCCL communicator, on the device current when it is created (as ncclCommInitRank)."""

    def __init__(self, ndev: int, commId: tuple, rank: int) -> None:  # noqa: N803 - CuPy's names
        if not isinstance(commId, tuple) or len(commId) != NCCL_UNIQUE_ID_BYTES:
            raise NcclError(_INVALID_ARGUMENT, f"commId must be the {NCCL_UNIQUE_ID_BYTES}-byte tuple of "
                            "get_unique_id()")
        if ndev != 1:
            raise NcclError(_INVALID_ARGUMENT, f"a communicator of {ndev} ranks: the emulator runs one "
                            "process, so NCCL jobs of one rank only; run jobs of several on a GPU, or use "
                            "the mpi backend")
        if rank != 0:
            raise NcclError(_INVALID_ARGUMENT, f"rank {rank} in a communicator of 1 rank")
        self._device: int | None = array.current_device()

    @staticmethod
    def initAll(devices: Any) -> list[NcclCommunicator]:  # noqa: N802
        count = len(devices) if isinstance(devices, list) else devices
        if count != 1:
            raise NcclError(_INVALID_ARGUMENT, f"initAll over {count} devices: the emulator's NCCL has "
                            "communicators of one rank only")
        with Device(devices[0] if isinstance(devices, list) else 0):
            return [NcclCommunicator(1, get_unique_id(), 0)]

    # -- the communicator
    def device_id(self) -> int:
        return self._live()

    def rank_id(self) -> int:
        self._live()
        return 0

    def size(self) -> int:
        self._live()
        return 1

    def destroy(self) -> None:
        self._device = None

    def abort(self) -> None:
        self._device = None

    def check_async_error(self) -> None:
        self._live()

    # -- collectives (one rank: the result is this rank's data)
    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int,  # noqa: N802
                  stream: int) -> None:
        self._copy("allReduce", sendbuf, recvbuf, count, count, datatype, stream, op=op)

    def reduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, root: int,
               stream: int) -> None:
        self._copy("reduce", sendbuf, recvbuf, count, count, datatype, stream, op=op, root=root)

    def broadcast(self, sendbuff: int, recvbuff: int, count: int, datatype: int, root: int,
                  stream: int) -> None:
        self._copy("broadcast", sendbuff, recvbuff, count, count, datatype, stream, root=root)

    def bcast(self, buff: int, count: int, datatype: int, root: int, stream: int) -> None:
        self._copy("bcast", buff, buff, count, count, datatype, stream, root=root)

    def reduceScatter(self, sendbuf: int, recvbuf: int, recvcount: int, datatype: int, op: int,  # noqa: N802
                      stream: int) -> None:
        self._copy("reduceScatter", sendbuf, recvbuf, recvcount, recvcount, datatype, stream, op=op)

    def allGather(self, sendbuf: int, recvbuf: int, count: int, datatype: int, stream: int) -> None:  # noqa: N802
        self._copy("allGather", sendbuf, recvbuf, count, count, datatype, stream)

    # -- the machinery
    def _live(self) -> int:
        if self._device is None:
            raise NcclError(_INVALID_ARGUMENT, "the communicator was destroyed or aborted")
        return self._device

    def _copy(self, call: str, send: int, recv: int, send_count: int, recv_count: int, datatype: int,
              stream: Any, op: int | None = None, root: int | None = None) -> None:
        device = self._live()
        for name, value in (("count", send_count), ("datatype", datatype), ("stream", stream)) + \
                (() if op is None else (("op", op),)) + (() if root is None else (("root", root),)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{call}: {name} must be an integer, got {type(value).__name__}")
        if send_count < 0:
            raise OverflowError(f"{call}: can't convert negative count {send_count} to size_t")
        if datatype not in _ITEMSIZE:
            raise NcclError(_INVALID_ARGUMENT, f"{call}: unknown datatype {datatype}")
        if op is not None and op not in _OPS:
            raise NcclError(_INVALID_ARGUMENT, f"{call}: unknown reduction op {op}")
        if root is not None and root != 0:
            raise NcclError(_INVALID_ARGUMENT, f"{call}: root {root} in a communicator of 1 rank")
        if send_count == 0:
            return
        itemsize = _ITEMSIZE[datatype]
        source = self._memory(call, "send", send, send_count * itemsize, device)
        target = self._memory(call, "receive", recv, recv_count * itemsize, device)
        if send != recv:
            target[...] = source

    @staticmethod
    def _memory(call: str, which: str, ptr: int, nbytes: int, device: int) -> np.ndarray:
        found = array.device_memory(ptr, nbytes, np.uint8)
        if found is None:
            raise NcclError(_UNHANDLED_CUDA_ERROR, f"{call}: the {which} buffer, {nbytes} bytes at {ptr:#x}, "
                            "is not inside one live device array (a wrong count or dtype, a host or freed "
                            "pointer): an illegal memory access on a GPU")
        dev, memory = found
        if dev != device:
            raise NcclError(_INVALID_ARGUMENT, f"{call}: the {which} buffer is on device {dev}, the "
                            f"communicator on device {device}")
        return memory

