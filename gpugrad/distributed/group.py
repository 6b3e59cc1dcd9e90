"""What every backend provides: a process group running collectives on arrays, and its Work.

A backend (``mpi.MpiGroup``, ``nccl.NcclGroup``) implements the collectives on raw NumPy or
CuPy arrays, always asynchronously: each call starts the operation and returns a ``Work``
whose ``wait()`` finishes it. The public functions (``gpugrad.distributed.api``) check
their Tensor arguments, call the group, and wait unless ``async_op=True``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import numpy as np


class ReduceOp(enum.Enum):
    """How all_reduce and reduce_scatter combine the ranks' values (PyTorch's names)."""
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"

    def __repr__(self) -> str:
        return f"ReduceOp.{self.name}"


def as_reduce_op(op: Any, fn: str) -> ReduceOp:
    """``op`` as a ReduceOp (also given by name, e.g. "avg"); a clear error otherwise."""
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str):
        try:
            return ReduceOp(op.lower())
        except ValueError:
            pass
    names = ", ".join(f"ReduceOp.{o.name}" for o in ReduceOp)
    raise ValueError(f"{fn}: unknown reduce op {op!r}; use one of {names}")


def check_reducible(fn: str, dtype: np.dtype, op: ReduceOp) -> None:
    """AVG needs a floating dtype."""
    if op is ReduceOp.AVG and dtype.kind != "f":
        raise TypeError(f"{fn}: ReduceOp.AVG needs a floating-point tensor, got {dtype}; reduce with "
                        "ReduceOp.SUM and divide by the world size yourself")


class Work:
    """A collective in flight; ``wait()`` finishes it (idempotent) and returns True."""

    __slots__ = ("_wait", "_test", "_done")

    def __init__(self, wait: Callable[[], None] | None = None,
                 test: Callable[[], bool] | None = None) -> None:
        self._wait = wait
        self._test = test
        self._done = wait is None

    def wait(self) -> bool:
        """Block until the collective is complete (on the host for MPI; NCCL: order the stream)."""
        if not self._done:
            self._done = True
            self._wait()
        return True

    def is_completed(self) -> bool:
        """Whether ``wait()`` would return without blocking."""
        return self._done or (self._test is not None and self._test())


class ProcessGroup:
    """The ranks of one job and the collectives among them, on arrays (one backend each)."""

    backend: str = ""
    rank: int = 0
    size: int = 1

    # Every collective works in place where PyTorch's does, on contiguous arrays the caller
    # checked, and returns a Work; ``op`` is a ReduceOp the caller validated. With
    # ``async_op=False`` the caller waits at once, and a backend may block instead.
    def all_reduce(self, array: Any, op: ReduceOp, async_op: bool = True) -> Work:
        raise NotImplementedError

    def broadcast(self, array: Any, src: int, async_op: bool = True) -> Work:
        raise NotImplementedError

    def all_gather(self, out: Any, array: Any, async_op: bool = True) -> Work:
        """``out`` (size * array.size elements) gets every rank's ``array``, in rank order."""
        raise NotImplementedError

    def reduce_scatter(self, out: Any, array: Any, op: ReduceOp, async_op: bool = True) -> Work:
        """``out`` gets this rank's block (array.size / size elements) of the reduced ``array``."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's (picklable) ``obj``, in rank order."""
        raise NotImplementedError

    def broadcast_object(self, obj: Any, src: int) -> Any:
        raise NotImplementedError

    def abort(self) -> None:
        """End the whole job now (a rank failed): the other ranks must not wait for this one."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Release the group's resources (communicators, buffers)."""

    def describe(self) -> str:
        return f"{self.backend}, rank {self.rank} of {self.size}"
