"""The "nccl" backend: GPU collectives through CuPy's NCCL bindings (cupy.cuda.nccl).

Each process drives one GPU. Rank 0 creates the NCCL unique id and MPI broadcasts it (MPI
also runs the barrier and the object collectives); a job of one needs no MPI. Every
collective is enqueued on the current CUDA stream, which is where gpugrad's ops run, so the
host never waits: ``Work.wait()`` only makes the then-current stream wait for the collective.

The group takes its communicator, NCCL's constants and the current-stream query as
arguments (``NcclGroup.create`` passes CuPy's), so its logic runs under a stand-in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .group import ProcessGroup, ReduceOp, Work

_NCCL_DTYPE = {"b": "NCCL_INT8", "B": "NCCL_UINT8", "?": "NCCL_UINT8", "i": "NCCL_INT32",
               "I": "NCCL_UINT32", "l": "NCCL_INT64", "L": "NCCL_UINT64", "q": "NCCL_INT64",
               "Q": "NCCL_UINT64", "e": "NCCL_FLOAT16", "f": "NCCL_FLOAT32", "d": "NCCL_FLOAT64"}
_NCCL_OP = {ReduceOp.SUM: "NCCL_SUM", ReduceOp.AVG: "NCCL_AVG", ReduceOp.PRODUCT: "NCCL_PROD",
            ReduceOp.MIN: "NCCL_MIN", ReduceOp.MAX: "NCCL_MAX"}
# bool travels as uint8: or is max, and is min
_NCCL_BOOL_OP = {ReduceOp.SUM: "NCCL_MAX", ReduceOp.MAX: "NCCL_MAX", ReduceOp.PRODUCT: "NCCL_MIN",
                 ReduceOp.MIN: "NCCL_MIN"}


def load_nccl() -> tuple[Any, Any]:
    """(cupy, cupy.cuda.nccl) when NCCL can run here; a RuntimeError saying why not."""
    from .. import backend  # noqa: PLC0415

    cp = backend.load_cupy()
    if backend.emulated:
        return cp, cp.cuda.nccl                 # the CUDA emulator's stand-in: a job of one process
    try:
        from cupy.cuda import nccl  # noqa: PLC0415 - optional, lazy by design
    except ImportError as err:
        raise RuntimeError(f"CuPy's NCCL bindings are missing ({err})") from None
    if not getattr(nccl, "available", False) or not hasattr(nccl, "NcclCommunicator"):
        raise RuntimeError('CuPy cannot load the NCCL library; pip install "nvidia-nccl-cu12" '
                           "(or -cu13 to match CuPy), or put libnccl.so.2 on LD_LIBRARY_PATH")
    return cp, nccl


def nccl_version() -> str:
    """NCCL's version as text (e.g. "2.21.5"), or why NCCL cannot be used."""
    from .. import backend  # noqa: PLC0415

    try:
        _, nccl = load_nccl()
        code = int(nccl.get_version())
    except RuntimeError as err:
        return f"unavailable: {err}"
    version = f"{code // 10000}.{code // 100 % 100}.{code % 100}" if code >= 10000 else \
        f"{code // 1000}.{code // 100 % 10}.{code % 100}"
    return f"{version} (the CUDA emulator's stand-in: jobs of one process)" if backend.emulated else version


class NcclGroup(ProcessGroup):
    """One NCCL communicator over all ranks, one GPU per process."""

    backend = "nccl"

    def __init__(self, comm: Any, rank: int, size: int, device_id: int, *, constants: Any,
                 current_stream: Callable[[], Any], mpi_comm: Any = None, mpi: Any = None) -> None:
        self.comm = comm                        # NcclCommunicator (or a stand-in with its methods)
        self.rank, self.size, self.device_id = rank, size, device_id
        self._nccl = constants                  # the module holding NCCL_FLOAT32, NCCL_SUM, ...
        self._current_stream = current_stream
        self._mpi_comm = mpi_comm               # None in a job of one
        self._mpi = mpi
        self._has_avg = hasattr(constants, "NCCL_AVG")      # NCCL >= 2.10

    @classmethod
    def create(cls, device_id: int, mpi: Any = None) -> NcclGroup:
        """A group on GPU ``device_id`` over MPI_COMM_WORLD (``mpi``), or of one process (None)."""
        cp, nccl = load_nccl()
        cp.cuda.Device(device_id).use()
        mpi_comm = None if mpi is None else mpi.COMM_WORLD.Dup()
        rank, size = (0, 1) if mpi_comm is None else (mpi_comm.Get_rank(), mpi_comm.Get_size())
        unique_id = nccl.get_unique_id() if rank == 0 else None
        if mpi_comm is not None:
            unique_id = mpi_comm.bcast(unique_id, root=0)
        comm = nccl.NcclCommunicator(size, unique_id, rank)
        return cls(comm, rank, size, device_id, constants=nccl, current_stream=cp.cuda.get_current_stream,
                   mpi_comm=mpi_comm, mpi=mpi)

    # ------------------------------------------------------------------ collectives
    # (always asynchronous on the stream: ``async_op`` changes nothing here)
    def all_reduce(self, array: Any, op: ReduceOp, async_op: bool = True) -> Work:
        stream = self._current_stream()
        nccl_op, divide = self._op(op, array.dtype)
        self.comm.allReduce(_ptr(array), _ptr(array), array.size, self._dtype(array.dtype), nccl_op,
                            stream.ptr)
        if divide:
            array /= self.size                  # enqueued on the same stream
        return self._work(stream)

    def broadcast(self, array: Any, src: int, async_op: bool = True) -> Work:
        stream = self._current_stream()
        self.comm.broadcast(_ptr(array), _ptr(array), array.size, self._dtype(array.dtype), src, stream.ptr)
        return self._work(stream)

    def all_gather(self, out: Any, array: Any, async_op: bool = True) -> Work:
        stream = self._current_stream()
        self.comm.allGather(_ptr(array), _ptr(out), array.size, self._dtype(array.dtype), stream.ptr)
        return self._work(stream)

    def reduce_scatter(self, out: Any, array: Any, op: ReduceOp, async_op: bool = True) -> Work:
        stream = self._current_stream()
        nccl_op, divide = self._op(op, array.dtype)
        self.comm.reduceScatter(_ptr(array), _ptr(out), out.size, self._dtype(array.dtype), nccl_op,
                                stream.ptr)
        if divide:
            out /= self.size
        return self._work(stream)

    def barrier(self) -> None:
        self._current_stream().synchronize()   # this rank's GPU work is done...
        if self._mpi_comm is not None:
            self._mpi_comm.Barrier()            # ...and so is every other rank's

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj] if self._mpi_comm is None else self._mpi_comm.allgather(obj)

    def broadcast_object(self, obj: Any, src: int) -> Any:
        return obj if self._mpi_comm is None else self._mpi_comm.bcast(obj, root=src)

    def abort(self) -> None:
        self.comm.abort()
        if self._mpi is not None:
            self._mpi.COMM_WORLD.Abort(1)

    def destroy(self) -> None:
        self._current_stream().synchronize()
        self.comm.destroy()
        if self._mpi_comm is not None:
            self._mpi_comm.Free()

    def describe(self) -> str:
        return f"nccl, rank {self.rank} of {self.size} on cuda:{self.device_id}"

    # ------------------------------------------------------------------ the machinery
    def _dtype(self, dtype: np.dtype) -> int:
        name = _NCCL_DTYPE.get(dtype.char)
        if name is None:
            raise TypeError(f"the nccl backend has no collective for {dtype} tensors; use one of "
                            "bool, int8, uint8, int32, uint32, int64, uint64, float16, float32, float64")
        return getattr(self._nccl, name)

    def _op(self, op: ReduceOp, dtype: np.dtype) -> tuple[int, bool]:
        """NCCL's op for ``op`` on ``dtype``, and whether the result must still be divided (AVG)."""
        if dtype == np.bool_:
            return getattr(self._nccl, _NCCL_BOOL_OP[op]), False
        if op is ReduceOp.AVG and not self._has_avg:
            return self._nccl.NCCL_SUM, True
        return getattr(self._nccl, _NCCL_OP[op]), False

    def _work(self, stream: Any) -> Work:
        event = stream.record()
        return Work(lambda: self._current_stream().wait_event(event), lambda: event.done)


def _ptr(array: Any) -> int:
    return array.data.ptr
