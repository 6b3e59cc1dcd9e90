"""What a training loop needs around DDP: rank 0 alone writes, metrics are combined over ranks, and a
stop that one rank asks for (Ctrl-C) is taken by every rank at the same step.

Each works without a process group too (a job of one), so a loop calls them unconditionally:

    if dist.is_main_process():
        gg.save(checkpoint, path)
    final = dist.reduce_metrics({"test_loss": loss, "test_accuracy": acc}, weight=len(test_shard))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from . import api
from .group import ReduceOp, as_reduce_op

F = TypeVar("F", bound=Callable[..., Any])


def is_main_process() -> bool:
    """True on rank 0, and in a process that joined no process group."""
    return not api.is_initialized() or api.get_rank() == 0


def rank_zero_only(fn: F) -> F:
    """Decorate ``fn`` to run on rank 0 only (other ranks get None): logging, progress bars, files."""
    @functools.wraps(fn)
    def on_rank_zero(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if is_main_process() else None

    return on_rank_zero  # type: ignore[return-value]


def reduce_metrics(metrics: Mapping[str, float], weight: float = 1.0,
                   op: ReduceOp | str = ReduceOp.AVG) -> dict[str, float]:
    """Every rank's ``metrics`` combined, on every rank: their mean weighted by ``weight`` (AVG;
    e.g. the number of samples a rank evaluated), or their SUM, MAX or MIN. One collective.

    Every rank must pass the same names. Without a process group the metrics come back as floats.
    """
    op = as_reduce_op(op, "reduce_metrics")
    if op is ReduceOp.PRODUCT:
        raise ValueError("reduce_metrics: use ReduceOp.AVG, SUM, MAX or MIN")
    names = list(metrics)
    try:
        values = [float(metrics[k]) for k in names]
    except (TypeError, ValueError):
        shown = {k: type(v).__name__ for k, v in metrics.items()}
        raise TypeError(f"reduce_metrics: every metric must be a number, got {shown}") from None
    weight = float(weight)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"reduce_metrics: weight must be a finite number >= 0, got {weight!r}")
    if not api.is_initialized():
        return dict(zip(names, values))
    # a few numbers per rank: gathered as objects (any backend, GPU or not), combined in rank
    # order, so every rank computes the same bits
    gathered = api.default_group("reduce_metrics").all_gather_object((names, values, weight))
    if any(other != names for other, _, _ in gathered):
        raise ValueError(f"reduce_metrics: the ranks passed different metrics: {[g[0] for g in gathered]}")
    table = np.array([v for _, v, _ in gathered], dtype=np.float64).reshape(len(gathered), len(names))
    if op is ReduceOp.AVG:
        weights = np.array([w for _, _, w in gathered])
        if weights.sum() == 0:
            raise ValueError("reduce_metrics: the weights sum to 0 over all ranks; nothing to average")
        combined = (table * weights[:, None]).sum(axis=0) / weights.sum()
    else:
        combined = {ReduceOp.SUM: np.sum, ReduceOp.MAX: np.max, ReduceOp.MIN: np.min}[op](table, axis=0)
    return {k: float(v) for k, v in zip(names, combined)}


class AnyRankFlag:
    """A flag each rank may raise (a stop asked for by Ctrl-C or a signal), seen by every rank at the
    same step: ``poll(mine)`` once per step on every rank returns whether any rank's flag was up at
    the previous poll.

    Each poll starts a nonblocking MPI all-reduce (max) of this rank's flag and finishes the one the
    previous poll started, which has had a whole step to complete: the loop waits for nothing. On
    its own communicator, so it never mixes with the process group's collectives. Without a
    process group (a job of one) ``poll`` returns ``mine`` at once.
    """

    def __init__(self) -> None:
        self._comm: Any = None
        self._pending: tuple[Any, np.ndarray, np.ndarray] | None = None    # request, result, sent
        if api.is_initialized() and api.get_world_size() > 1:
            from .mpi import load_mpi  # noqa: PLC0415 - every backend rendezvous through MPI

            self._MPI = load_mpi()
            self._comm = self._MPI.COMM_WORLD.Dup()

    def poll(self, mine: bool) -> bool:
        """Share ``mine``; True if any rank's flag was up at the previous poll (one of one: ``mine``)."""
        if self._comm is None:
            return bool(mine)
        seen = self._finish()
        sent, result = np.array([int(bool(mine))], np.int32), np.zeros(1, np.int32)
        self._pending = (self._comm.Iallreduce(sent, result, op=self._MPI.MAX), result, sent)
        return seen

    def close(self) -> None:
        """Finish the last poll's reduction and free the communicator (every rank, after its last poll)."""
        if self._comm is not None:
            self._finish()
            self._comm.Free()
            self._comm = None

    def _finish(self) -> bool:
        if self._pending is None:
            return False
        request, result, _ = self._pending
        self._pending = None
        request.Wait()
        return bool(result[0])
